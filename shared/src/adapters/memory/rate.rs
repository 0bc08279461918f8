//! [`MemoryRateLimiter`]: per-source minute windows in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::ids::SourceId;
use crate::domain::rate::{
    decision_for, window_expiry, window_of, RateDecision, MAX_HORIZON_MINUTES,
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

/// Deliveries counted per (source, minute window).
#[derive(Debug, Clone, Default)]
pub struct MemoryRateLimiter {
    pub(super) windows: Arc<Mutex<Windows>>,
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
        for window in current..=current + MAX_HORIZON_MINUTES {
            let count = windows.entry((source.clone(), window)).or_insert(0);
            if *count < limit {
                *count += 1;
                return Ok(decision_for(window, *count, limit, now));
            }
        }
        let horizon = current + MAX_HORIZON_MINUTES;
        let count = windows.entry((source.clone(), horizon)).or_insert(0);
        *count = count.saturating_add(1);
        Ok(decision_for(horizon, limit, limit, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[tokio::test]
    async fn over_the_limit_spills_into_later_windows_then_parks_at_the_horizon() {
        let limiter = MemoryRateLimiter::new();
        let source = SourceId::parse("github").unwrap();
        let now = Timestamp::from_secs(600 + 15);
        let mut decisions = Vec::new();
        for _ in 0..(2 * (MAX_HORIZON_MINUTES as usize + 1) + 2) {
            decisions.push(limiter.register(&source, 2, now).await.unwrap());
        }
        assert_eq!(decisions[..2], [RateDecision::Within, RateDecision::Within]);
        assert_eq!(decisions[2], RateDecision::Over { delay_secs: 45 });
        assert_eq!(decisions[3], RateDecision::Over { delay_secs: 75 });
        let horizon = decision_for(window_of(now) + MAX_HORIZON_MINUTES, 2, 2, now);
        assert_eq!(decisions[decisions.len() - 3..], [horizon; 3]);
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
