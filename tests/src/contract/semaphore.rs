//! Contract of [`SemaphoreStore`]: never more holders than the limit; dead holders cost one TTL.

use sluice::domain::ids::HolderId;
use sluice::domain::semaphore::{AcquireOutcome, SemaphoreKey};
use sluice::ports::SemaphoreStore;
use sluice::StoreError;

use super::t0;
use crate::id;

/// Runs the whole contract on an empty store.
pub async fn run<S: SemaphoreStore>(store: &S) {
    let now = t0();
    let key = SemaphoreKey::SourcePipelines(id!(SourceId, "github"));
    let other = SemaphoreKey::SourcePipelines(id!(SourceId, "stripe"));
    assert_eq!(store.in_flight(&key).await.expect("in_flight"), 0);

    let holders: Vec<HolderId> = (0..4).map(|_| HolderId::random()).collect();
    for (i, h) in holders[..3].iter().enumerate() {
        let got = store
            .acquire(&key, h, 3, 60, now.plus_secs(i as i64))
            .await
            .expect("acquire");
        assert_eq!(
            got,
            AcquireOutcome::Acquired {
                expires_at: now.plus_secs(60 + i as i64)
            }
        );
    }
    let full = store
        .acquire(&key, &holders[3], 3, 60, now)
        .await
        .expect("acquire");
    assert_eq!(
        full,
        AcquireOutcome::Full {
            earliest_expiry: Some(now.plus_secs(60))
        }
    );
    assert_eq!(store.in_flight(&key).await.expect("in_flight"), 3);
    assert_eq!(
        store.in_flight(&other).await.expect("in_flight"),
        0,
        "semaphores are independent"
    );

    // Re-acquiring renews without taking a second slot.
    let renewed = store
        .acquire(&key, &holders[0], 3, 60, now.plus_secs(10))
        .await
        .expect("acquire");
    assert_eq!(
        renewed,
        AcquireOutcome::Acquired {
            expires_at: now.plus_secs(70)
        }
    );
    assert_eq!(store.in_flight(&key).await.expect("in_flight"), 3);

    // Release frees a slot exactly once.
    assert!(store.release(&key, &holders[1]).await.expect("release"));
    assert!(!store.release(&key, &holders[1]).await.expect("release"));
    let got = store
        .acquire(&key, &holders[3], 3, 60, now)
        .await
        .expect("acquire");
    assert!(matches!(got, AcquireOutcome::Acquired { .. }));
    assert_eq!(store.in_flight(&key).await.expect("in_flight"), 3);

    // Holders that die are reclaimed once their lease expires, and only then.
    let late = now.plus_secs(65);
    let newcomer = HolderId::random();
    let got = store
        .acquire(&key, &newcomer, 3, 60, late)
        .await
        .expect("acquire");
    assert_eq!(
        got,
        AcquireOutcome::Acquired {
            expires_at: late.plus_secs(60)
        }
    );
    // holders[2] (+62) and holders[3] (+60) had expired and were reclaimed; holders[0], renewed
    // to +70, was not.
    assert_eq!(store.in_flight(&key).await.expect("in_flight"), 2);
    assert!(
        !store.release(&key, &holders[2]).await.expect("release"),
        "reclaimed holder"
    );
    assert!(
        !store.release(&key, &holders[3]).await.expect("release"),
        "reclaimed holder"
    );
    assert!(
        store.release(&key, &holders[0]).await.expect("release"),
        "live holder kept"
    );
    assert!(store.release(&key, &newcomer).await.expect("release"));

    let err = store
        .acquire(&key, &HolderId::random(), 0, 60, now)
        .await
        .expect_err("limit 0");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
}
