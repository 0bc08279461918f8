//! Contract of [`DeliveryStore`]: first claim wins, later claims learn the winner, expiry frees;
//! a delivery id is unique per (tenant, source).

use sluice::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryStatus};
use sluice::domain::ids::ExecutionId;
use sluice::ports::DeliveryStore;

use super::t0;
use crate::id;

fn claim(source: &str, delivery: &str, hash: &str) -> DeliveryClaim {
    claim_of("acme", source, delivery, hash)
}

fn claim_of(tenant: &str, source: &str, delivery: &str, hash: &str) -> DeliveryClaim {
    DeliveryClaim {
        source: id!(SourceId, source),
        delivery_id: id!(DeliveryId, delivery),
        tenant: id!(TenantId, tenant),
        execution_id: ExecutionId::random(),
        payload_hash: hash.to_string(),
    }
}

/// Runs the whole contract on an empty store.
pub async fn run<S: DeliveryStore>(store: &S) {
    let now = t0();
    let ttl = 3600;

    let first = claim("github", "d-1", "h1");
    let won = store.claim(first.clone(), now, ttl).await.expect("claim");
    let ClaimOutcome::Claimed(rec) = won else {
        panic!("first claim must win: {won:?}")
    };
    assert_eq!(rec.execution_id, first.execution_id);
    assert_eq!(rec.status, DeliveryStatus::Received);
    assert_eq!(rec.received_at, now);
    assert_eq!(rec.expires_at, now.plus_secs(ttl).epoch_secs());

    // A redelivery proposing another execution learns the first one, and nothing changes.
    let again = claim("github", "d-1", "h2");
    let dup = store
        .claim(again.clone(), now.plus_secs(5), ttl)
        .await
        .expect("claim");
    let ClaimOutcome::Duplicate(seen) = dup else {
        panic!("second claim must lose: {dup:?}")
    };
    assert_eq!(seen, rec, "the loser sees exactly what the winner stored");

    // The same delivery id from another source is another delivery.
    let other = store
        .claim(claim("stripe", "d-1", "h1"), now, ttl)
        .await
        .expect("claim");
    assert!(matches!(other, ClaimOutcome::Claimed(_)));

    // So is the same delivery id of the same source for another tenant: its own record.
    let beta = claim_of("beta", "github", "d-1", "h1");
    let other = store.claim(beta.clone(), now, ttl).await.expect("claim");
    let ClaimOutcome::Claimed(beta_rec) = other else {
        panic!("another tenant's claim must win: {other:?}")
    };
    assert_eq!(beta_rec.execution_id, beta.execution_id);
    assert_eq!(
        store
            .get(&beta.tenant, &beta.source, &beta.delivery_id)
            .await
            .expect("get"),
        Some(beta_rec.clone())
    );

    // Queued status is visible to later duplicates.
    assert!(store
        .mark_queued(&first.tenant, &first.source, &first.delivery_id)
        .await
        .expect("mark"));
    let dup = store
        .claim(again.clone(), now.plus_secs(6), ttl)
        .await
        .expect("claim");
    let ClaimOutcome::Duplicate(seen) = dup else {
        panic!("must stay duplicate")
    };
    assert_eq!(seen.status, DeliveryStatus::Queued);
    assert_eq!(seen.execution_id, first.execution_id);
    let got = store
        .get(&first.tenant, &first.source, &first.delivery_id)
        .await
        .expect("get");
    assert_eq!(got.map(|r| r.status), Some(DeliveryStatus::Queued));
    // Marking acme's delivery left beta's as it was.
    let beta_now = store
        .get(&beta.tenant, &beta.source, &beta.delivery_id)
        .await
        .expect("get");
    assert_eq!(beta_now.map(|r| r.status), Some(DeliveryStatus::Received));

    // Unknown deliveries.
    assert!(!store
        .mark_queued(
            &id!(TenantId, "acme"),
            &id!(SourceId, "github"),
            &id!(DeliveryId, "nope")
        )
        .await
        .expect("mark"));
    assert_eq!(
        store
            .get(
                &id!(TenantId, "acme"),
                &id!(SourceId, "github"),
                &id!(DeliveryId, "nope")
            )
            .await
            .expect("get"),
        None
    );

    // Once the record's TTL has passed (even if not yet reaped) a new claim wins again.
    let late = now.plus_secs(ttl + 1);
    let fresh = store.claim(again.clone(), late, ttl).await.expect("claim");
    let ClaimOutcome::Claimed(rec2) = fresh else {
        panic!("expired record must not block: {fresh:?}")
    };
    assert_eq!(rec2.execution_id, again.execution_id);
    assert_eq!(rec2.status, DeliveryStatus::Received);
}
