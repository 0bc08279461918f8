//! [`MemoryAlertStore`]: the alert webhook's dedup windows, counters and dead letters in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::alerts::model::{AlertCounts, DeadLetter};
use crate::domain::ids::TenantId;
use crate::domain::time::Timestamp;
use crate::ports::{check_dead_letter_bound, AlertStore, StoreResult};

#[derive(Debug, Default)]
struct State {
    /// Dedup key -> end of its window.
    windows: HashMap<String, Timestamp>,
    counts: AlertCounts,
    /// (at, id) -> letter: ascending, as the DynamoDB sort key `{at:013}#{id}` orders them.
    letters: BTreeMap<(Timestamp, String), DeadLetter>,
}

/// Alert state shared by clones.
#[derive(Debug, Clone, Default)]
pub struct MemoryAlertStore {
    state: Arc<Mutex<State>>,
}

impl MemoryAlertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl AlertStore for MemoryAlertStore {
    async fn claim_dedup(&self, key: &str, window_secs: u64, now: Timestamp) -> StoreResult<bool> {
        let until = now.plus_secs(i64::try_from(window_secs).unwrap_or(i64::MAX / 1000));
        let mut state = lock(&self.state);
        // An ended window stays until a new claim replaces it, as an item DynamoDB's TTL
        // reaper has not removed yet does (dedup keys are few: type x pipeline x connector x
        // error code).
        if state.windows.get(key).is_some_and(|end| *end > now) {
            return Ok(false);
        }
        state.windows.insert(key.to_owned(), until);
        Ok(true)
    }

    async fn add_counts(&self, delta: AlertCounts) -> StoreResult<()> {
        let mut state = lock(&self.state);
        state.counts = state.counts.plus(delta);
        Ok(())
    }

    async fn counts(&self) -> StoreResult<AlertCounts> {
        Ok(lock(&self.state).counts)
    }

    async fn push_dead_letter(&self, letter: DeadLetter, max: u32) -> StoreResult<()> {
        check_dead_letter_bound("alerts.push_dead_letter", max)?;
        let mut state = lock(&self.state);
        state.letters.insert((letter.at, letter.id.clone()), letter);
        while state.letters.len() > max as usize {
            state.letters.pop_first();
        }
        Ok(())
    }

    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        check_dead_letter_bound("alerts.dead_letters", limit)?;
        let state = lock(&self.state);
        Ok(state
            .letters
            .values()
            .rev()
            .filter(|l| tenant.is_none() || l.tenant.as_ref() == tenant)
            .take(limit as usize)
            .cloned()
            .collect())
    }
}
