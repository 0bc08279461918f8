//! The per-source intake rate window. Deliveries over the limit are delayed into later
//! one-minute windows, never dropped: each window admits at most `limit` deliveries, spread
//! evenly across its minute.

use super::time::Timestamp;

/// How many minutes ahead an over-limit delivery may be scheduled before it is parked at the
/// horizon (still counted and delayed, never dropped).
pub const MAX_HORIZON_MINUTES: i64 = 60;

/// The answer for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within this minute's limit: run now.
    Within,
    /// Over the limit: delay by `delay_secs`.
    Over { delay_secs: u64 },
}

/// The minute window that `now` falls in.
pub fn window_of(now: Timestamp) -> i64 {
    now.epoch_secs().div_euclid(60)
}

/// The decision for the delivery counted as number `count` (from 1) in window `window`,
/// under `limit` per minute, at `now`. Deliveries in later windows are spread evenly.
pub fn decision_for(window: i64, count: u32, limit: u32, now: Timestamp) -> RateDecision {
    if window <= window_of(now) {
        return RateDecision::Within;
    }
    let limit = limit.max(1) as i64;
    let slot = (count.max(1) as i64 - 1).min(limit - 1);
    let at = Timestamp::from_secs(window * 60).plus_millis(slot * 60_000 / limit);
    RateDecision::Over {
        delay_secs: now.secs_until(at).max(1),
    }
}

/// When a window's counter item may be removed by TTL (epoch seconds).
pub fn window_expiry(window: i64) -> i64 {
    (window + 1) * 60 + 3600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_window_is_within_later_ones_are_spread() {
        let now = Timestamp::from_secs(600 + 15);
        let w = window_of(now);
        assert_eq!(w, 10);
        assert_eq!(decision_for(w, 30, 30, now), RateDecision::Within);
        assert_eq!(
            decision_for(w + 1, 1, 30, now),
            RateDecision::Over { delay_secs: 45 }
        );
        assert_eq!(
            decision_for(w + 1, 2, 30, now),
            RateDecision::Over { delay_secs: 47 }
        );
        assert_eq!(
            decision_for(w + 2, 30, 30, now),
            RateDecision::Over {
                delay_secs: 105 + 58
            }
        );
    }
}
