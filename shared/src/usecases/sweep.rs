//! Use case: sweep. Run on a schedule, it finds executions that nobody will move on by itself
//! and puts them back on the stage queue:
//!
//! - RUNNING with an expired lease (the worker died mid-stage): the lease is cleared by a
//!   versioned write (so a late write of the dead worker fails), a RECOVERY_LEASE_EXPIRED event
//!   is appended and the stage message is sent again. The stage then runs again with the same
//!   `Idempotency-Key`.
//! - RUNNING without a lease and idle for [`UNLEASED_GRACE_SECS`] past its `not_before` (its
//!   next message was never sent, or was lost): the same, with RECOVERY_REQUEUED.
//! - RECEIVED for longer than [`RECEIVED_GRACE_SECS`] (intake recorded it but never queued
//!   it): the stage message is sent (respecting `not_before`), RECOVERY_REQUEUED is appended and
//!   the status becomes QUEUED.
//! - QUEUED and idle for [`QUEUED_GRACE_SECS`] past its `not_before` (intake's fast path
//!   records an execution QUEUED in the same write as its claim, then sends the message: if it
//!   died in between, or the message was lost, no worker ever picks the run up): a versioned
//!   write claims the recovery, RECOVERY_REQUEUED is appended and the message is sent again.
//!
//! Candidates come from [`ExecutionStore::stale`] (an eventually consistent index) and are
//! re-read with [`ExecutionStore::get`] before anything is decided. Every write is versioned, so
//! two sweeps that overlap recover an execution once (a duplicate message is harmless: the
//! executor's lease and stage checks absorb it).

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::app::App;
use crate::domain::execution::{ExecutionChange, ExecutionRecord, ExecutionStatus, UpdateOutcome};
use crate::domain::ids::ExecutionId;
use crate::domain::ledger::{AppendOutcome, EventKind, LedgerEvent};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{Backend, ExecutionStore, Ledger, StageMessage, StageQueue, ToolClient};
use crate::telemetry;

/// How long an execution may stay RECEIVED before the sweeper queues it.
pub const RECEIVED_GRACE_SECS: i64 = 60;

/// How long a RUNNING execution without a lease may sit idle (since its last write and its
/// `not_before`) before the sweeper re-sends its stage message. Generous, because a run waiting
/// in a queue backlog looks the same as a lost one.
pub const UNLEASED_GRACE_SECS: i64 = 300;

/// How long a QUEUED execution may sit idle (since its last write and its `not_before`) before
/// the sweeper re-sends its stage message. As generous as [`UNLEASED_GRACE_SECS`], for the same
/// reason: a message waiting in a backlog looks the same as one never sent.
pub const QUEUED_GRACE_SECS: i64 = UNLEASED_GRACE_SECS;

/// The most executions of each status one sweep inspects.
pub const SWEEP_LIMIT: u32 = 100;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Candidates read from the index.
    pub inspected: u32,
    /// RUNNING executions whose lease had expired, put back on the queue.
    pub recovered: u32,
    /// Executions put back on the queue because their message was never sent or was lost
    /// (RECEIVED, QUEUED and idle, or RUNNING without a lease).
    pub requeued: u32,
    /// Candidates that needed nothing (a live lease, moved on since the index was written).
    pub skipped: u32,
    /// Candidates whose recovery failed; the next sweep tries again.
    pub failed: u32,
    /// Whether a status had more candidates than [`SWEEP_LIMIT`]: some wait for the next sweep.
    pub truncated: bool,
}

/// The sweep could not list its candidates.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing stale {status} executions failed")]
    Stale {
        status: &'static str,
        #[source]
        source: StoreError,
    },
}

impl SweepError {
    /// Whether running the sweep again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SweepError::Stale { source, .. } => source.is_retryable(),
        }
    }
}

/// What to do with one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    RecoverExpiredLease,
    RequeueUnleased,
    RequeueQueued,
    QueueReceived,
}

impl Action {
    fn kind(self) -> EventKind {
        match self {
            Action::RecoverExpiredLease => EventKind::RecoveryLeaseExpired,
            Action::RequeueUnleased | Action::RequeueQueued | Action::QueueReceived => {
                EventKind::RecoveryRequeued
            }
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Action::RecoverExpiredLease => "lease_expired",
            Action::RequeueUnleased => "running_without_lease",
            Action::RequeueQueued => "queued_without_progress",
            Action::QueueReceived => "never_queued",
        }
    }
}

/// A recovery step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed")]
struct StepError {
    step: &'static str,
    #[source]
    source: StoreError,
}

fn step(step: &'static str) -> impl FnOnce(StoreError) -> StepError {
    move |source| StepError { step, source }
}

/// Sweeps once. Per-execution failures are counted (and logged) and do not stop the sweep.
#[tracing::instrument(skip_all)]
pub async fn sweep<B: Backend, T: ToolClient>(app: &App<B, T>) -> Result<SweepReport, SweepError> {
    let now = app.clock.now();
    let mut report = SweepReport::default();
    let executions = app.backend.executions();

    // The port calls below are boxed: unboxed, the DynamoDB adapter's futures nested in a
    // Lambda runtime's future overflow the compiler's layout query depth.
    let stale = |status: ExecutionStatus, grace_secs: i64| async move {
        Box::pin(executions.stale(status, now.plus_secs(-grace_secs), SWEEP_LIMIT))
            .await
            .map_err(|source| SweepError::Stale {
                status: status.as_str(),
                source,
            })
    };
    let running = Box::pin(stale(ExecutionStatus::Running, 0)).await?;
    let received = Box::pin(stale(ExecutionStatus::Received, RECEIVED_GRACE_SECS)).await?;
    let queued = Box::pin(stale(ExecutionStatus::Queued, QUEUED_GRACE_SECS)).await?;
    report.truncated = [&running, &received, &queued]
        .iter()
        .any(|found| found.len() >= SWEEP_LIMIT as usize);

    for candidate in running.iter().chain(&received).chain(&queued) {
        report.inspected += 1;
        match Box::pin(inspect(app, &candidate.id, now)).await {
            Ok(None) => report.skipped += 1,
            Ok(Some(Action::RecoverExpiredLease)) => {
                report.recovered += 1;
                app.metrics
                    .count(telemetry::RECOVERIES, &[("Kind", "lease_expired")]);
            }
            Ok(Some(Action::RequeueUnleased | Action::RequeueQueued | Action::QueueReceived)) => {
                report.requeued += 1;
                app.metrics
                    .count(telemetry::RECOVERIES, &[("Kind", "requeued")]);
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(
                    execution_id = %candidate.id,
                    error = %error,
                    source = ?std::error::Error::source(&error),
                    "recovery failed; the next sweep tries again"
                );
            }
        }
    }
    tracing::info!(
        inspected = report.inspected,
        recovered = report.recovered,
        requeued = report.requeued,
        skipped = report.skipped,
        failed = report.failed,
        truncated = report.truncated,
        "sweep done"
    );
    Ok(report)
}

/// Re-reads one candidate and recovers it if it still needs it; the action taken, if any.
async fn inspect<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    id: &ExecutionId,
    now: Timestamp,
) -> Result<Option<Action>, StepError> {
    let Some(record) = app
        .backend
        .executions()
        .get(id)
        .await
        .map_err(step("execution.get"))?
    else {
        return Ok(None);
    };
    let Some(action) = decide(&record, now) else {
        return Ok(None);
    };
    let done = match action {
        Action::RecoverExpiredLease | Action::RequeueUnleased | Action::RequeueQueued => {
            requeue(app, record, action).await?
        }
        Action::QueueReceived => queue_received(app, record).await?,
    };
    Ok(done.then_some(action))
}

/// Whether (and how) `record`, read at `now`, needs recovering.
fn decide(record: &ExecutionRecord, now: Timestamp) -> Option<Action> {
    match record.status {
        ExecutionStatus::Running => match &record.lease {
            Some(lease) if lease.expires_at <= now => Some(Action::RecoverExpiredLease),
            Some(_) => None,
            None => (idle_since(record).plus_secs(UNLEASED_GRACE_SECS) <= now)
                .then_some(Action::RequeueUnleased),
        },
        ExecutionStatus::Received => (record.updated_at.plus_secs(RECEIVED_GRACE_SECS) <= now)
            .then_some(Action::QueueReceived),
        ExecutionStatus::Queued => (idle_since(record).plus_secs(QUEUED_GRACE_SECS) <= now)
            .then_some(Action::RequeueQueued),
        _ => None,
    }
}

/// Since when `record` has been waiting: its last write, or its `not_before` if later.
fn idle_since(record: &ExecutionRecord) -> Timestamp {
    record
        .not_before
        .map_or(record.updated_at, |nb| nb.max(record.updated_at))
}

/// RUNNING or QUEUED: clear the lease if any (versioned: this claims the recovery), append the
/// event, send the stage message. False if the execution moved on since it was read.
async fn requeue<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    record: ExecutionRecord,
    action: Action,
) -> Result<bool, StepError> {
    // `not_before` is restated so that the index keeps the run's sweep position.
    let change = ExecutionChange {
        release_lease: true,
        not_before: Some(record.not_before),
        ..ExecutionChange::default()
    };
    let Some(updated) = claim(app, &record, change, action).await? else {
        return Ok(false);
    };
    let detail = json!({
        "reason": action.reason(),
        "expired_lease": record.lease.as_ref().map(|l| json!({
            "owner": l.owner,
            "expires_at": l.expires_at,
        })),
        "attempt_count": record.attempt_count,
    });
    // The message matters more than the event: it is sent even if the append fails (and the
    // failure is still reported, so it is counted).
    let appended = append(app, &updated, action.kind(), detail).await;
    send(app, &updated).await?;
    appended?;
    log_action(&updated, action);
    Ok(true)
}

/// RECEIVED: send the stage message first (so a failure cannot leave the run QUEUED without
/// one), then move it to QUEUED and append the event. False if intake or a worker moved it on
/// meanwhile (the message sent is then a harmless duplicate).
async fn queue_received<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    record: ExecutionRecord,
) -> Result<bool, StepError> {
    let action = Action::QueueReceived;
    send(app, &record).await?;
    let change = ExecutionChange {
        status: Some(ExecutionStatus::Queued),
        not_before: Some(record.not_before),
        ..ExecutionChange::default()
    };
    let Some(updated) = claim(app, &record, change, action).await? else {
        return Ok(false);
    };
    let detail = json!({
        "reason": action.reason(),
        "not_before": record.not_before,
        "received_at": record.created_at,
    });
    append(app, &updated, action.kind(), detail).await?;
    log_action(&updated, action);
    Ok(true)
}

/// Applies `change` under the version the sweep read: the write that claims the recovery.
/// `None` (logged) if the execution moved on since it was read.
async fn claim<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    record: &ExecutionRecord,
    change: ExecutionChange,
    action: Action,
) -> Result<Option<ExecutionRecord>, StepError> {
    let outcome = app
        .backend
        .executions()
        .update(&record.id, record.version, change, app.clock.now())
        .await
        .map_err(step("execution.update"))?;
    match outcome {
        UpdateOutcome::Updated(updated) => Ok(Some(updated)),
        _ => {
            log_moved_on(record, action);
            Ok(None)
        }
    }
}

fn log_action(record: &ExecutionRecord, action: Action) {
    tracing::info!(
        execution_id = %record.id,
        stage = record.stage,
        action = action.reason(),
        event = ?action.kind(),
        not_before = ?record.not_before,
        "execution put back on the stage queue"
    );
}

fn log_moved_on(record: &ExecutionRecord, action: Action) {
    tracing::info!(
        execution_id = %record.id,
        action = action.reason(),
        "execution moved on since it was read; left alone"
    );
}

async fn send<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    record: &ExecutionRecord,
) -> Result<(), StepError> {
    let message = StageMessage {
        execution_id: record.id.clone(),
        stage: record.stage,
        not_before: record.not_before,
        wait: 0,
    };
    app.backend
        .queue()
        .send(&message, app.clock.now())
        .await
        .map_err(step("queue.send"))
}

/// Appends at the ledger's next sequence number, re-reading once if another writer took it.
async fn append<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    record: &ExecutionRecord,
    kind: EventKind,
    detail: Json,
) -> Result<(), StepError> {
    let ledger = app.backend.ledger();
    for _ in 0..2 {
        let events = ledger
            .events(&record.id)
            .await
            .map_err(step("ledger.events"))?;
        let event = LedgerEvent {
            execution_id: record.id.clone(),
            seq: events.iter().map(|e| e.seq).max().unwrap_or(0) + 1,
            at: app.clock.now(),
            kind,
            stage: Some(record.stage),
            detail: detail.clone(),
        };
        if let AppendOutcome::Appended =
            ledger.append(event).await.map_err(step("ledger.append"))?
        {
            return Ok(());
        }
    }
    Err(StepError {
        step: "ledger.append",
        source: StoreError::Transient {
            operation: "ledger.append",
            source: "the sequence number was taken twice".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ids::HolderId;
    use crate::usecases::execute::testkit::{failed, Harness};
    use crate::usecases::execute::Disposition;

    /// Seeds a run and has `owner` take its message, its lease, and mark it RUNNING, then die.
    async fn die_mid_stage(h: &Harness, run_key: &str, lease_secs: i64) -> ExecutionId {
        let id = h.seed(run_key, json!({"name": "Ada"})).await;
        let message = h.receive().await.unwrap();
        h.app.backend.queue().ack(&message.receipt).await.unwrap();
        let dead = HolderId::parse("hld_dead").unwrap();
        let executions = h.app.backend.executions();
        let crate::domain::execution::LeaseOutcome::Acquired(record) = executions
            .acquire_lease(&id, &dead, h.now(), lease_secs)
            .await
            .unwrap()
        else {
            panic!("leased");
        };
        let running = ExecutionChange {
            status: Some(ExecutionStatus::Running),
            ..ExecutionChange::default()
        };
        executions
            .update(&id, record.version, running, h.now())
            .await
            .unwrap();
        id
    }

    /// Records `run_key` QUEUED, as intake does, with `not_before`; its message is not sent.
    async fn queued_without_message(
        h: &Harness,
        run_key: &str,
        not_before: Option<Timestamp>,
    ) -> ExecutionId {
        let id = h.record_only("gh", run_key, json!({}), not_before).await;
        let queued = ExecutionChange {
            status: Some(ExecutionStatus::Queued),
            not_before: not_before.map(Some),
            ..ExecutionChange::default()
        };
        let executions = h.app.backend.executions();
        executions.update(&id, 1, queued, h.now()).await.unwrap();
        id
    }

    /// 1,000 runs rate-delayed by an hour, written before a QUEUED run whose message was lost:
    /// the first sweep past the grace requeues the lost run (they used to fill the 100 places
    /// of every sweep until their delay ran out).
    #[tokio::test]
    async fn runs_waiting_on_not_before_do_not_starve_a_lost_run() {
        let h = Harness::new(vec![]);
        let later = h.now().plus_secs(3_600);
        for n in 0..1_000 {
            queued_without_message(&h, &format!("delayed{n}"), Some(later)).await;
        }
        h.clock.advance_secs(1);
        let lost = queued_without_message(&h, "lost", None).await;
        h.clock.advance_secs(QUEUED_GRACE_SECS + 100);

        let report = sweep(&h.app).await.unwrap();
        assert_eq!((report.inspected, report.requeued), (1, 1), "{report:?}");
        assert!(!report.truncated);
        let message = h.receive().await.expect("requeued");
        assert_eq!(message.message.execution_id, lost);
        assert_eq!(
            h.kinds(&lost).await.last(),
            Some(&EventKind::RecoveryRequeued)
        );
        // The delayed runs come up once their delay (and the grace) ran out.
        h.clock.advance_secs(3_600);
        let report = sweep(&h.app).await.unwrap();
        assert_eq!(report.inspected, SWEEP_LIMIT);
    }

    #[tokio::test]
    async fn an_expired_lease_is_recovered_and_the_stage_runs_again() {
        let h = Harness::new(vec![]);
        let id = die_mid_stage(&h, "r1", 30).await;
        let alive = die_mid_stage(&h, "r2", 600).await;

        h.clock.advance_secs(29);
        let report = sweep(&h.app).await.unwrap();
        assert_eq!(
            (report.inspected, report.skipped, report.recovered),
            (2, 2, 0)
        );
        assert!(h.app.backend.queue.is_empty());

        h.clock.advance_secs(1);
        let report = sweep(&h.app).await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                inspected: 2,
                recovered: 1,
                skipped: 1,
                ..SweepReport::default()
            }
        );
        let record = h.record(&id).await;
        assert_eq!(record.status, ExecutionStatus::Running);
        assert_eq!(record.lease, None);
        assert!(h.record(&alive).await.lease.is_some());
        let events = h.events(&id).await;
        let recovery = events.last().unwrap();
        assert_eq!(recovery.kind, EventKind::RecoveryLeaseExpired);
        assert_eq!(recovery.seq, 2);
        assert_eq!(recovery.detail["reason"], json!("lease_expired"));
        assert_eq!(recovery.detail["expired_lease"]["owner"], json!("hld_dead"));
        assert_eq!(h.app.backend.queue.len(), 1);

        // The worker that picks the message up runs the stage again.
        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(h.tools.calls()[0].idempotency_key, format!("{id}:0"));
    }

    #[tokio::test]
    async fn a_run_that_was_recorded_but_never_queued_is_queued() {
        let h = Harness::new(vec![]);
        let old = h
            .record_only("gh", "r1", json!({"name": "Ada"}), None)
            .await;
        let later = h.now().plus_secs(500);
        let delayed = h
            .record_only("gh", "r2", json!({"name": "Bob"}), Some(later))
            .await;
        h.clock.advance_secs(30);
        let young = h.record_only("gh", "r3", json!({"name": "Cy"}), None).await;
        h.clock.advance_secs(31);

        let report = sweep(&h.app).await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                inspected: 2,
                requeued: 2,
                ..SweepReport::default()
            }
        );
        for id in [&old, &delayed] {
            assert_eq!(h.record(id).await.status, ExecutionStatus::Queued);
            let events = h.events(id).await;
            assert_eq!(events.last().unwrap().kind, EventKind::RecoveryRequeued);
            assert_eq!(
                events.last().unwrap().detail["reason"],
                json!("never_queued")
            );
        }
        assert_eq!(h.record(&young).await.status, ExecutionStatus::Received);

        // The undelayed one runs now; the delayed one's message waits for its not_before.
        let message = h.receive().await.unwrap();
        assert_eq!(message.message.execution_id, old);
        h.app.backend.queue().ack(&message.receipt).await.unwrap();
        assert!(h.receive().await.is_none());
        h.clock.set(later);
        let message = h.receive().await.unwrap();
        assert_eq!(message.message.execution_id, delayed);
        assert_eq!(message.message.not_before, Some(later));

        // Swept again: the young one is queued; the delayed one's message was just
        // received; the undelayed one's was taken (and dropped above) without the run moving
        // on for longer than the QUEUED grace, so it is sent again.
        assert!(later >= h.record(&old).await.updated_at.plus_secs(QUEUED_GRACE_SECS));
        let report = sweep(&h.app).await.unwrap();
        assert_eq!((report.requeued, report.recovered), (2, 0), "{report:?}");
        assert_eq!(h.record(&young).await.status, ExecutionStatus::Queued);
        let reasons: Vec<_> = h
            .events(&old)
            .await
            .iter()
            .map(|e| e.detail["reason"].clone())
            .collect();
        assert_eq!(reasons.last(), Some(&json!("queued_without_progress")));
        let delayed_events = h.events(&delayed).await;
        assert_eq!(
            delayed_events.last().unwrap().detail["reason"],
            json!("never_queued")
        );
    }

    #[tokio::test]
    async fn a_running_run_without_lease_or_message_is_requeued_after_the_grace() {
        let h = Harness::new(vec![failed(503, None)]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let Disposition::RetryScheduled { delay_secs, .. } = h.step().await else {
            panic!("a retry");
        };
        // The retry's message is lost.
        h.clock.advance_secs(delay_secs as i64);
        let lost = h.receive().await.unwrap();
        h.app.backend.queue().ack(&lost.receipt).await.unwrap();

        h.clock.advance_secs(UNLEASED_GRACE_SECS - 1);
        let report = sweep(&h.app).await.unwrap();
        assert_eq!((report.skipped, report.requeued), (1, 0));
        h.clock.advance_secs(1);
        let report = sweep(&h.app).await.unwrap();
        assert_eq!((report.skipped, report.requeued), (0, 1));
        let events = h.events(&id).await;
        assert_eq!(events.last().unwrap().kind, EventKind::RecoveryRequeued);
        assert_eq!(
            events.last().unwrap().detail["reason"],
            json!("running_without_lease")
        );
        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(h.record(&id).await.attempt_count, 0);
    }

    #[tokio::test]
    async fn finished_and_busy_runs_are_left_alone() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        h.step().await;
        h.step().await;
        assert_eq!(h.record(&id).await.status, ExecutionStatus::Succeeded);
        h.clock.advance_secs(3_600);
        assert_eq!(sweep(&h.app).await.unwrap(), SweepReport::default());
    }

    #[test]
    fn decisions_follow_lease_and_grace() {
        let now = Timestamp::from_secs(10_000);
        let record = ExecutionRecord {
            id: ExecutionId::parse("exe_1").unwrap(),
            tenant: crate::domain::ids::TenantId::parse("t").unwrap(),
            source: crate::domain::ids::SourceId::parse("s").unwrap(),
            pipeline: crate::domain::ids::PipelineName::parse("p").unwrap(),
            run_key: crate::domain::ids::RunKey::parse("k").unwrap(),
            stage: 0,
            status: ExecutionStatus::Running,
            attempt_count: 0,
            blocked_reason: None,
            lease: None,
            replay_of: None,
            not_before: Some(now.plus_secs(-UNLEASED_GRACE_SECS + 1)),
            version: 3,
            created_at: Timestamp::from_secs(0),
            updated_at: Timestamp::from_secs(0),
        };
        assert_eq!(decide(&record, now), None, "waiting on its not_before");
        let idle = ExecutionRecord {
            not_before: None,
            ..record.clone()
        };
        assert_eq!(decide(&idle, now), Some(Action::RequeueUnleased));
        let queued = ExecutionRecord {
            status: ExecutionStatus::Queued,
            ..idle.clone()
        };
        assert_eq!(decide(&queued, now), Some(Action::RequeueQueued));
        let fresh = ExecutionRecord {
            updated_at: now.plus_secs(-QUEUED_GRACE_SECS + 1),
            ..queued.clone()
        };
        assert_eq!(decide(&fresh, now), None, "within its grace");
        let waiting = ExecutionRecord {
            not_before: record.not_before,
            ..queued
        };
        assert_eq!(decide(&waiting, now), None, "waiting on its not_before");
        let received = ExecutionRecord {
            status: ExecutionStatus::Received,
            updated_at: now.plus_secs(-RECEIVED_GRACE_SECS),
            ..idle
        };
        assert_eq!(decide(&received, now), Some(Action::QueueReceived));
    }
}
