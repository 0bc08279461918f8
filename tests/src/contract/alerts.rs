//! Contract of [`AlertStore`]: a dedup window is owned by its first claimer until it ends (a
//! losing claim never extends it); counters only add; dead letters list newest first, per
//! tenant on request, and only the newest `max` are kept.

use serde_json::json;
use sluice::alerts::model::{AlertCounts, AlertType, DeadLetter, MAX_DEAD_LETTERS};
use sluice::domain::ids::TenantId;
use sluice::domain::time::Timestamp;
use sluice::ports::AlertStore;
use sluice::StoreError;

use super::t0;
use crate::id;

/// Runs the whole contract on an empty store.
pub async fn run<S: AlertStore>(store: &S) {
    dedup_windows(store).await;
    counters(store).await;
    dead_letters(store).await;
}

async fn claim<S: AlertStore>(store: &S, key: &str, window: u64, now: Timestamp) -> bool {
    store
        .claim_dedup(key, window, now)
        .await
        .expect("claim_dedup")
}

async fn dedup_windows<S: AlertStore>(store: &S) {
    let now = t0();
    let key = "run.failed|1:p|-|8:HTTP_503";
    assert!(
        claim(store, key, 90, now).await,
        "first claim owns the window"
    );
    assert!(!claim(store, key, 90, now).await);
    assert!(!claim(store, key, 90, now.plus_millis(89_999)).await);
    // Another key has its own window.
    assert!(claim(store, "run.blocked|-|-|4:LOOP", 90, now).await);
    // The window ends exactly 90 s later; the next claim opens a new one.
    assert!(claim(store, key, 90, now.plus_secs(90)).await);
    assert!(!claim(store, key, 90, now.plus_secs(91)).await);
    // That losing claim did not move the end: the window opened at +90 ends at +180.
    assert!(!claim(store, key, 90, now.plus_millis(179_999)).await);
    assert!(claim(store, key, 90, now.plus_secs(180)).await);
    // A window of 0 never blocks.
    for _ in 0..3 {
        assert!(claim(store, "tool.step.failed|-|-|1:E", 0, now).await);
    }
    // Keys are compared whole (a prefix is another key).
    assert!(claim(store, "run.failed|1:p|-|8:HTTP_50", 90, now.plus_secs(10)).await);
}

async fn counters<S: AlertStore>(store: &S) {
    let read = || async { store.counts().await.expect("counts") };
    assert_eq!(read().await, AlertCounts::default(), "all zero at first");
    let add = |delta: AlertCounts| async move { store.add_counts(delta).await.expect("add") };
    add(AlertCounts {
        sent: 1,
        retried: 2,
        ..AlertCounts::default()
    })
    .await;
    add(AlertCounts::default()).await;
    add(AlertCounts {
        sent: 1,
        deduplicated: 3,
        retried: 0,
        dead_lettered: 1,
    })
    .await;
    assert_eq!(
        read().await,
        AlertCounts {
            sent: 2,
            deduplicated: 3,
            retried: 2,
            dead_lettered: 1,
        }
    );
}

fn letter(n: u32, at: Timestamp, tenant: Option<&TenantId>) -> DeadLetter {
    DeadLetter {
        id: format!("01J{n:023}"),
        at,
        alert_type: AlertType::RunFailed,
        tenant: tenant.cloned(),
        payload: json!({
            "alert_type": "run.failed",
            "severity": "high",
            "run_id": format!("exe_{n}"),
            "pipeline": null,
            "error_code": "HTTP_503",
            "ts": "2026-02-25T12:00:00Z",
            "n": n,
        }),
        error: "status 503".into(),
        attempts: 3,
    }
}

async fn dead_letters<S: AlertStore>(store: &S) {
    let now = t0();
    let (acme, globex) = (id!(TenantId, "acme"), id!(TenantId, "globex"));
    let list = |tenant: Option<TenantId>, limit: u32| async move {
        store
            .dead_letters(tenant.as_ref(), limit)
            .await
            .expect("dead_letters")
    };
    let ns = |letters: &[DeadLetter]| {
        letters
            .iter()
            .map(|l| l.payload["n"].clone())
            .collect::<Vec<_>>()
    };
    assert!(list(None, 10).await.is_empty());

    for bad in [0, MAX_DEAD_LETTERS + 1] {
        let err = store
            .push_dead_letter(letter(99, now, None), bad)
            .await
            .expect_err("bad max");
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
        let err = store.dead_letters(None, bad).await.expect_err("bad limit");
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }
    assert!(
        list(None, 10).await.is_empty(),
        "a refused push keeps nothing"
    );

    // Five letters, one second apart, tenants acme, globex, none, acme, globex; keep 3.
    let tenants = [Some(&acme), Some(&globex), None, Some(&acme), Some(&globex)];
    for (n, tenant) in tenants.into_iter().enumerate() {
        let n = n as u32;
        store
            .push_dead_letter(letter(n, now.plus_secs(n.into()), tenant), 3)
            .await
            .expect("push");
    }
    let kept = list(None, 10).await;
    assert_eq!(
        ns(&kept),
        [json!(4), json!(3), json!(2)],
        "newest 3, newest first"
    );
    assert_eq!(
        kept[0],
        letter(4, now.plus_secs(4), Some(&globex)),
        "every field round-trips"
    );
    assert_eq!(kept[2].tenant, None);
    assert_eq!(ns(&list(None, 2).await), [json!(4), json!(3)]);
    assert_eq!(ns(&list(Some(acme.clone()), 10).await), [json!(3)]);
    assert_eq!(ns(&list(Some(globex.clone()), 10).await), [json!(4)]);
    assert!(list(Some(id!(TenantId, "initech")), 10).await.is_empty());

    // Letters of one millisecond order by id; a larger max keeps more from then on.
    let late = now.plus_secs(10);
    store
        .push_dead_letter(letter(6, late, Some(&acme)), 5)
        .await
        .expect("push");
    store
        .push_dead_letter(letter(5, late, Some(&acme)), 5)
        .await
        .expect("push");
    assert_eq!(
        ns(&list(None, 10).await),
        [json!(6), json!(5), json!(4), json!(3), json!(2)]
    );
    assert_eq!(ns(&list(Some(acme), 1).await), [json!(6)]);
    // A smaller max trims on the next push.
    store
        .push_dead_letter(letter(7, now.plus_secs(11), None), 2)
        .await
        .expect("push");
    assert_eq!(ns(&list(None, 10).await), [json!(7), json!(6)]);
}
