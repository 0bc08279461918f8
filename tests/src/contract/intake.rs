//! Contract of [`IntakeStore`]: the claim, the RECEIVED event, the QUEUED execution and the
//! rate count are written all together or not at all, and a refused write says why (duplicate,
//! joined, over the rate, unsettled). The stores the composite write spans are read back
//! through their own ports.

use serde_json::json;
use sluice::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryStatus};
use sluice::domain::execution::{ExecutionStatus, NewExecution};
use sluice::domain::ids::{ExecutionId, SourceId};
use sluice::domain::intake::{AcceptOutcome, IntakeWrite};
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::domain::rate::RateDecision;
use sluice::domain::time::Timestamp;
use sluice::ports::{DeliveryStore, ExecutionStore, IntakeStore, Ledger, RateLimiter};
use sluice::StoreError;

use super::t0;
use crate::id;

/// The stores one backend's intake write spans.
#[derive(Debug)]
pub struct Stores<'a, I, D, E, L, R> {
    pub intake: &'a I,
    pub deliveries: &'a D,
    pub executions: &'a E,
    pub ledger: &'a L,
    pub rate: &'a R,
}

/// A write for delivery `delivery` of `source` creating execution `execution`, at `now`.
pub fn write(
    source: &str,
    delivery: &str,
    execution: &ExecutionId,
    limit: u32,
    now: Timestamp,
) -> IntakeWrite {
    let source: SourceId = id!(SourceId, source);
    IntakeWrite {
        claim: DeliveryClaim {
            source: source.clone(),
            delivery_id: id!(DeliveryId, delivery),
            tenant: id!(TenantId, "acme"),
            execution_id: execution.clone(),
            payload_hash: format!("hash-{delivery}"),
        },
        ttl_secs: 3600,
        received: LedgerEvent {
            execution_id: execution.clone(),
            seq: 1,
            at: now,
            kind: EventKind::Received,
            stage: None,
            detail: json!({"payload": {"n": 1}, "delivery_id": delivery, "source": source}),
        },
        execution: NewExecution {
            id: execution.clone(),
            tenant: id!(TenantId, "acme"),
            source,
            pipeline: id!(PipelineName, "p"),
            run_key: id!(RunKey, "k"),
            replay_of: None,
            not_before: None,
        },
        rate_limit_per_minute: limit,
        now,
    }
}

impl<I, D, E, L, R> Stores<'_, I, D, E, L, R>
where
    I: IntakeStore,
    D: DeliveryStore,
    E: ExecutionStore,
    L: Ledger,
    R: RateLimiter,
{
    async fn accept(&self, write: IntakeWrite) -> AcceptOutcome {
        self.intake.accept(write).await.expect("accept")
    }

    /// Nothing of `write` is stored: no claim, no execution, no event.
    async fn assert_nothing_of(&self, write: &IntakeWrite) {
        let claim = &write.claim;
        let record = self
            .deliveries
            .get(&claim.tenant, &claim.source, &claim.delivery_id)
            .await
            .expect("get claim");
        assert_eq!(record, None, "a claim was stored");
        self.assert_no_run(&write.execution.id).await;
    }

    async fn assert_no_run(&self, id: &ExecutionId) {
        let execution = self.executions.get(id).await.expect("get execution");
        assert_eq!(execution, None, "an execution was stored");
        let events = self.ledger.events(id).await.expect("events");
        assert!(events.is_empty(), "events were stored: {events:?}");
    }
}

/// Runs the whole contract on empty stores of one backend.
pub async fn run<I, D, E, L, R>(s: &Stores<'_, I, D, E, L, R>)
where
    I: IntakeStore,
    D: DeliveryStore,
    E: ExecutionStore,
    L: Ledger,
    R: RateLimiter,
{
    let now = t0();
    let exec = ExecutionId::random();

    // Everything is written: the claim QUEUED, the execution QUEUED at version 1, seq 1.
    let first = write("github", "d-1", &exec, 2, now);
    let AcceptOutcome::Accepted(record) = s.accept(first.clone()).await else {
        panic!("a fresh write is accepted");
    };
    assert_eq!(record, first.execution_record());
    assert_eq!(
        (record.status, record.version),
        (ExecutionStatus::Queued, 1)
    );
    assert_eq!(s.executions.get(&exec).await.unwrap(), Some(record.clone()));
    let claim = s
        .deliveries
        .get(
            &first.claim.tenant,
            &first.claim.source,
            &first.claim.delivery_id,
        )
        .await
        .unwrap()
        .expect("the claim");
    assert_eq!(claim, first.delivery_record());
    assert_eq!(claim.status, DeliveryStatus::Queued);
    let events = s.ledger.events(&exec).await.unwrap();
    assert_eq!(events, vec![first.received.clone()]);

    // The same delivery again: a duplicate, with the stored claim; nothing changes.
    let again = write("github", "d-1", &ExecutionId::random(), 2, now.plus_secs(1));
    assert_eq!(
        s.accept(again.clone()).await,
        AcceptOutcome::Duplicate(claim.clone())
    );
    s.assert_no_run(&again.execution.id).await;
    assert_eq!(s.ledger.events(&exec).await.unwrap().len(), 1);

    // Another delivery of the same run: joined, with the execution; its claim is not stored.
    let joined = write("github", "d-2", &exec, 2, now);
    assert_eq!(
        s.accept(joined.clone()).await,
        AcceptOutcome::Joined(record.clone())
    );
    let unclaimed = s.deliveries.get(
        &joined.claim.tenant,
        &joined.claim.source,
        &joined.claim.delivery_id,
    );
    assert_eq!(unclaimed.await.unwrap(), None);
    assert_eq!(s.ledger.events(&exec).await.unwrap().len(), 1);

    // Duplicate and joined at once: the duplicate decides.
    let both = write("github", "d-1", &exec, 2, now);
    assert!(matches!(s.accept(both).await, AcceptOutcome::Duplicate(_)));

    // The limit is per source and minute: the accepted write counted once, refusals never.
    // With limit 2, one more fits, then the window is full.
    let second = write("github", "d-3", &ExecutionId::random(), 2, now);
    assert!(matches!(s.accept(second).await, AcceptOutcome::Accepted(_)));
    let over = write("github", "d-4", &ExecutionId::random(), 2, now.plus_secs(2));
    assert_eq!(s.accept(over.clone()).await, AcceptOutcome::OverRate);
    s.assert_nothing_of(&over).await;
    // The rate limiter sees the same window: full, so it delays.
    let github = id!(SourceId, "github");
    let decision = s.rate.register(&github, 2, now).await.unwrap();
    assert!(
        matches!(decision, RateDecision::Over { .. }),
        "{decision:?}"
    );
    // Another source has its own window.
    let other = write("gitlab", "d-4", &ExecutionId::random(), 2, now);
    assert!(matches!(s.accept(other).await, AcceptOutcome::Accepted(_)));

    // Seq 1 taken without an execution (an earlier attempt stopped half way): unsettled.
    let half = ExecutionId::random();
    let stray = write("stripe", "e-1", &half, 5, now);
    s.ledger.append(stray.received.clone()).await.unwrap();
    let unsettled = write("stripe", "e-2", &half, 5, now);
    assert_eq!(s.accept(unsettled.clone()).await, AcceptOutcome::Unsettled);
    let unclaimed = s.deliveries.get(
        &unsettled.claim.tenant,
        &unsettled.claim.source,
        &unsettled.claim.delivery_id,
    );
    assert_eq!(unclaimed.await.unwrap(), None);
    assert_eq!(s.executions.get(&half).await.unwrap(), None);

    // A claim past its expiry no longer blocks: the write replaces it.
    let old = DeliveryClaim {
        delivery_id: id!(DeliveryId, "e-3"),
        ..stray.claim.clone()
    };
    let claimed = s.deliveries.claim(old, now.plus_secs(-100), 10).await;
    assert!(matches!(claimed.unwrap(), ClaimOutcome::Claimed(_)));
    let fresh = ExecutionId::random();
    let renewed = write("stripe", "e-3", &fresh, 5, now);
    assert!(matches!(
        s.accept(renewed.clone()).await,
        AcceptOutcome::Accepted(_)
    ));
    let stored = s
        .deliveries
        .get(
            &renewed.claim.tenant,
            &renewed.claim.source,
            &renewed.claim.delivery_id,
        )
        .await
        .unwrap()
        .expect("the new claim");
    assert_eq!(stored.execution_id, fresh);

    // Invalid input writes nothing: a limit of 0, a detail over the ledger's cap.
    let zero = write("stripe", "e-4", &ExecutionId::random(), 0, now);
    let refused = s.intake.accept(zero.clone()).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput { .. })),
        "{refused:?}"
    );
    s.assert_nothing_of(&zero).await;
    let mut big = write("stripe", "e-5", &ExecutionId::random(), 5, now);
    big.received.detail = json!({"payload": "x".repeat(70 * 1024)});
    let refused = s.intake.accept(big.clone()).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput { .. })),
        "{refused:?}"
    );
    s.assert_nothing_of(&big).await;
}
