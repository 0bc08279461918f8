//! [`MemoryRateLimiter`]: per-source minute windows and backlogs in memory (the same rules as
//! the DynamoDB adapter, see `domain::rate`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::ids::SourceId;
use crate::domain::rate::{
    backlog_position, backlog_slot, decision_for, window_expiry, window_of, RateDecision,
};
use crate::domain::time::Timestamp;
use crate::ports::{check_rate_limit, RateLimiter, StoreResult};

/// Deliveries counted per (source, minute window).
pub(super) type Windows = HashMap<(SourceId, i64), u32>;

/// Drops the windows past their TTL at `now`, as DynamoDB's reaper removes their items.
pub(super) fn prune(windows: &mut Windows, now: Timestamp) {
    let now_secs = now.epoch_secs();
    windows.retain(|(_, window), _| window_expiry(*window) >= now_secs);
}

/// Deliveries counted per (source, minute window), and each source's backlog: its next free
/// position and the limit it counts under.
#[derive(Debug, Clone, Default)]
pub struct MemoryRateLimiter {
    pub(super) windows: Arc<Mutex<Windows>>,
    backlogs: Arc<Mutex<HashMap<SourceId, (i64, u32)>>>,
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RateLimiter for MemoryRateLimiter {
    async fn register(
        &self,
        source: &SourceId,
        limit_per_minute: u32,
        now: Timestamp,
    ) -> StoreResult<RateDecision> {
        let limit = limit_per_minute;
        check_rate_limit("rate.register", limit)?;
        let current = window_of(now);
        let mut windows = lock(&self.windows);
        prune(&mut windows, now);
        let count = windows.entry((source.clone(), current)).or_insert(0);
        if *count < limit {
            *count += 1;
            return Ok(decision_for(current, *count, limit, now));
        }
        let position = {
            let mut backlogs = lock(&self.backlogs);
            let stored = backlogs.get(source).copied();
            let position = backlog_position(stored, limit, now);
            backlogs.insert(source.clone(), (position + 1, limit));
            position
        };
        let (window, count) = backlog_slot(position, limit);
        let counted = windows.entry((source.clone(), window)).or_insert(0);
        *counted = counted.saturating_add(1);
        Ok(decision_for(window, count, limit, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[tokio::test]
    async fn over_the_limit_fills_later_windows_in_order_however_long_the_backlog() {
        let limiter = MemoryRateLimiter::new();
        let source = SourceId::parse("github").unwrap();
        let now = Timestamp::from_secs(600 + 15);
        let mut decisions = Vec::new();
        for _ in 0..(2 * 100 + 2) {
            decisions.push(limiter.register(&source, 2, now).await.unwrap());
        }
        assert_eq!(decisions[..2], [RateDecision::Within, RateDecision::Within]);
        assert_eq!(decisions[2], RateDecision::Over { delay_secs: 45 });
        assert_eq!(decisions[3], RateDecision::Over { delay_secs: 75 });
        // The last two are 100 minutes ahead, not parked at a horizon with the others.
        let last = decision_for(window_of(now) + 100, 2, 2, now);
        assert_eq!(decisions[decisions.len() - 1], last);
        assert_ne!(decisions[decisions.len() - 2], last);
        // Another source has its own windows.
        let other = SourceId::parse("stripe").unwrap();
        assert_eq!(
            limiter.register(&other, 2, now).await.unwrap(),
            RateDecision::Within
        );
        let zero = limiter.register(&source, 0, now).await;
        assert!(matches!(zero, Err(StoreError::InvalidInput { .. })));
    }
}
