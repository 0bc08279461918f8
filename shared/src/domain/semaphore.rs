//! Leased semaphores: a bounded set of holders, each with an expiry, so a holder that dies
//! costs its slot for one lease TTL and no longer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::HolderId;
use super::time::Timestamp;

/// The holders of one semaphore. `in_flight` counts every holder not yet released or
/// reclaimed, expired or not: a store admits a new holder only while `in_flight < limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable {
    pub in_flight: u32,
    pub holders: BTreeMap<HolderId, Timestamp>,
}

/// What a store should do for an acquirer, given the table it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotDecision {
    /// A slot is free: take it.
    Take,
    /// All slots are counted, but these holders' leases have expired: remove exactly these
    /// (conditioned on their expiries being unchanged), then decide again.
    Reclaim(Vec<(HolderId, Timestamp)>),
    /// Every slot is held by a live lease; the earliest one expires at `earliest_expiry`.
    Full { earliest_expiry: Option<Timestamp> },
}

impl SlotTable {
    /// Decides for one acquirer at `now` under `limit`.
    pub fn decide(&self, limit: u32, now: Timestamp) -> SlotDecision {
        if self.in_flight < limit {
            return SlotDecision::Take;
        }
        let expired: Vec<_> = self
            .holders
            .iter()
            .filter(|(_, exp)| **exp <= now)
            .map(|(h, exp)| (h.clone(), *exp))
            .collect();
        if expired.is_empty() {
            SlotDecision::Full {
                earliest_expiry: self.holders.values().min().copied(),
            }
        } else {
            SlotDecision::Reclaim(expired)
        }
    }

    /// Adds a holder (the caller checked [`SlotDecision::Take`]).
    pub fn take(&mut self, holder: HolderId, expires_at: Timestamp) {
        if self.holders.insert(holder, expires_at).is_none() {
            self.in_flight += 1;
        }
    }

    /// Removes a holder; whether it was there.
    pub fn release(&mut self, holder: &HolderId) -> bool {
        let was = self.holders.remove(holder).is_some();
        if was {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        was
    }
}

/// Which semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SemaphoreKey {
    /// Concurrent pipeline runs of one source (REPO_PIPELINE_CONCURRENCY_LIMIT).
    SourcePipelines(super::ids::SourceId),
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The caller holds a slot until `expires_at` (or until it releases).
    Acquired { expires_at: Timestamp },
    /// Every slot is held by a live lease.
    Full { earliest_expiry: Option<Timestamp> },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> HolderId {
        HolderId::parse(format!("hld_{n}")).unwrap()
    }

    #[test]
    fn takes_until_full_then_reclaims_only_expired() {
        let mut t = SlotTable::default();
        let now = Timestamp::from_secs(1000);
        t.take(h(1), now.plus_secs(10));
        assert_eq!(t.decide(2, now), SlotDecision::Take);
        t.take(h(2), now.plus_secs(20));
        assert_eq!(
            t.decide(2, now),
            SlotDecision::Full {
                earliest_expiry: Some(now.plus_secs(10))
            }
        );
        assert_eq!(
            t.decide(2, now.plus_secs(10)),
            SlotDecision::Reclaim(vec![(h(1), now.plus_secs(10))])
        );
        assert!(t.release(&h(1)));
        assert!(!t.release(&h(1)));
        assert_eq!(t.in_flight, 1);
    }
}
