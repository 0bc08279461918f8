//! Contract of [`RateLimiter`]: each minute admits at most `limit`; the rest is delayed into the
//! next minutes with room, spread evenly, never dropped, however long the backlog (no horizon
//! where deliveries pile up on one instant); a backlog the clock overtook starts again at the
//! next minute.

use sluice::domain::rate::{decision_for, window_of, RateDecision};
use sluice::ports::RateLimiter;
use sluice::StoreError;

use super::t0;
use crate::id;

/// Runs the whole contract on an empty limiter.
pub async fn run<R: RateLimiter>(limiter: &R) {
    let now = t0();
    let w = window_of(now);
    let github = id!(SourceId, "github");

    // Limit 2, six deliveries at once: two now, two in each of the next two minutes.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(limiter.register(&github, 2, now).await.expect("register"));
    }
    let want = vec![
        RateDecision::Within,
        RateDecision::Within,
        decision_for(w + 1, 1, 2, now),
        decision_for(w + 1, 2, 2, now),
        decision_for(w + 2, 1, 2, now),
        decision_for(w + 2, 2, 2, now),
    ];
    assert_eq!(got, want);
    assert_eq!(got[2], RateDecision::Over { delay_secs: 45 });
    assert_eq!(got[3], RateDecision::Over { delay_secs: 75 });

    // The next minute already holds two delayed deliveries: a new one there goes further.
    let next = now.plus_secs(60);
    let later = limiter.register(&github, 2, next).await.expect("register");
    assert_eq!(later, decision_for(w + 3, 1, 2, next));

    // A long backlog: every delivery gets its own slot, 100 minutes out and more.
    let gitlab = id!(SourceId, "gitlab");
    let mut delays = Vec::new();
    for _ in 0..(2 + 2 * 120) {
        match limiter.register(&gitlab, 2, now).await.expect("register") {
            RateDecision::Within => {}
            RateDecision::Over { delay_secs } => delays.push(delay_secs),
        }
    }
    assert_eq!(delays.len(), 240);
    assert!(delays.windows(2).all(|d| d[0] < d[1]), "{delays:?}");
    assert_eq!(
        RateDecision::Over {
            delay_secs: *delays.last().unwrap()
        },
        decision_for(w + 120, 2, 2, now)
    );

    // Ten minutes on, the clock is inside that backlog: a new delivery goes to its end, not
    // into a minute already taken.
    let inside = now.plus_secs(600);
    let queued = limiter
        .register(&gitlab, 2, inside)
        .await
        .expect("register");
    assert_eq!(queued, decision_for(w + 121, 1, 2, inside));

    // A backlog the clock overtook starts again at the next minute.
    let much_later = now.plus_secs(200 * 60);
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(
            limiter
                .register(&gitlab, 2, much_later)
                .await
                .expect("register"),
        );
    }
    let wl = window_of(much_later);
    assert_eq!(
        after,
        [
            RateDecision::Within,
            RateDecision::Within,
            decision_for(wl + 1, 1, 2, much_later)
        ]
    );

    // Sources are independent.
    let stripe = limiter
        .register(&id!(SourceId, "stripe"), 2, now)
        .await
        .expect("register");
    assert_eq!(stripe, RateDecision::Within);

    let err = limiter
        .register(&github, 0, now)
        .await
        .expect_err("limit 0");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
}
