//! Contract of [`RateLimiter`]: each minute admits at most `limit`; the rest is delayed into the
//! next minutes with room, spread evenly, never dropped.

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
