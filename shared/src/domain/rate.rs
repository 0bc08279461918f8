//! The per-source intake rate window. Deliveries over the limit are delayed into later
//! one-minute windows, never dropped: each window admits at most `limit` deliveries, spread
//! evenly across its minute.
//!
//! # The backlog
//!
//! Delayed deliveries take *positions* of a per-source backlog: position `p` (under `limit`)
//! is the `p % limit + 1`-th slot of window `p / limit`, at `p % limit` sixtieths-of-a-minute
//! / `limit` into it ([`backlog_slot`], [`decision_for`]). The store keeps the next free position
//! (with the limit it was counted under), and a delivery takes it and moves it on by one in a
//! single conditional write, however long the backlog; a backlog that fell behind the clock
//! (its next position is before the next window, [`backlog_floor`]) or was counted under
//! another limit starts again at the next window. Each delayed delivery is also counted in its
//! window's counter, so the deliveries within the rate in that minute leave room for it.

use super::time::Timestamp;

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

/// The first backlog position a delivery over the limit may take at `now`: the first slot of
/// the next window.
pub fn backlog_floor(now: Timestamp, limit: u32) -> i64 {
    (window_of(now) + 1) * i64::from(limit.max(1))
}

/// The window of backlog position `position` and the delivery's count (from 1) within it.
pub fn backlog_slot(position: i64, limit: u32) -> (i64, u32) {
    let limit = i64::from(limit.max(1));
    let count = position.rem_euclid(limit) + 1;
    (position.div_euclid(limit), count as u32)
}

/// The position a delivery takes when the backlog's stored next position is `stored` (with the
/// limit it was counted under): that one while it is still ahead under the same limit, else
/// the [`backlog_floor`].
pub fn backlog_position(stored: Option<(i64, u32)>, limit: u32, now: Timestamp) -> i64 {
    let floor = backlog_floor(now, limit);
    match stored {
        Some((next, counted_under)) if counted_under == limit && next >= floor => next,
        _ => floor,
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
    fn backlog_positions_fill_later_windows_in_order() {
        let now = Timestamp::from_secs(600 + 15);
        assert_eq!(backlog_floor(now, 30), 11 * 30);
        assert_eq!(backlog_slot(11 * 30, 30), (11, 1));
        assert_eq!(backlog_slot(11 * 30 + 29, 30), (11, 30));
        assert_eq!(backlog_slot(12 * 30, 30), (12, 1));
        // Ahead under the same limit: kept; behind, or under another limit: the floor.
        assert_eq!(backlog_position(Some((500, 30)), 30, now), 500);
        assert_eq!(backlog_position(Some((300, 30)), 30, now), 330);
        assert_eq!(backlog_position(Some((500, 20)), 30, now), 330);
        assert_eq!(backlog_position(None, 30, now), 330);
    }

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
