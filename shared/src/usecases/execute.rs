//! Use case: execute one stage of a pipeline run from a stage-queue message.
//!
//! For each message [`run_message`] takes the execution lease, (on the run's first stage) a
//! per-source pipeline slot, renders the stage's tool call, passes it through connector
//! admission (kill switches, breaker, connector slots), calls the tool with
//! `Idempotency-Key: {execution_id}:{stage}` (`{stage}`: the 0-based stage index), settles,
//! appends ledger events, and then advances to the next stage, finishes the run, schedules a
//! retry with backoff, or blocks it.
//!
//! # Who deletes the message
//!
//! `run_message` never deletes (acks) the message it was given; that is the caller's job, and
//! the rule is the same for every outcome: `Ok(_)` means "done with this message, delete it",
//! `Err(e)` with `e.is_retryable()` means "leave it for redelivery". A deferral or a scheduled
//! retry *sends a copy* of the message (with `not_before`) before returning `Ok`, so together
//! with the caller's delete it is exactly [`StageQueue::defer`], and the copy never counts
//! toward the receive count or the DLQ redrive. This is what lets one code path serve both
//! runtimes: the Lambda SQS trigger deletes every record not reported as a batch item failure,
//! and the local [`poll_queue`] loop calls [`StageQueue::ack`] itself.
//!
//! # The lease owner
//!
//! `worker` is the lease owner. A lease is re-entrant for its owner (a message redelivered to
//! the worker that failed on it resumes at once), so one worker must never run two messages of
//! one execution at the same time: [`run_batch`] runs the messages of one execution one after
//! another.
//!
//! # Time budget
//!
//! [`run_batch_within`] and [`run_message_within`] run under a [`Budget`] (the Lambda
//! deadline; none in the local run): a stage is not started unless its tool call, at the
//! connector's full timeout, and [`BEFORE_CALL_RESERVE`] + [`AFTER_CALL_RESERVE`] fit before the
//! deadline ([`ExecuteError::OutOfTime`], retryable, nothing written, the lease given back).
//! After the call, a retryable ledger failure is retried in process ([`append_backoff`], at
//! most [`POST_CALL_APPEND_ATTEMPTS`] attempts, within the budget) before the message is given
//! back: the redelivery would call the tool again (docs/architecture.md, "the crash window").
//!
//! # Ordering of writes
//!
//! Ledger events are written while the lease is held, before the record write that releases it,
//! so an event is never lost to a crash (a crash may repeat one instead). The next stage's
//! message is sent after the record moved to that stage; if that send fails the sweeper
//! re-queues the run (a RUNNING record without a lease).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value as Json};

use crate::alerts::{Alert, AlertType};
use crate::app::App;
use crate::domain::connector::{
    Admission, AdmissionRequest, AdmissionTicket, BreakerSignal, BreakerState, DeferReason,
    KillSwitch,
};
use crate::domain::execution::{
    ExecutionChange, ExecutionRecord, ExecutionStatus, LeaseOutcome, UpdateOutcome,
};
use crate::domain::ids::{ExecutionId, HolderId};
use crate::domain::ledger::{AppendOutcome, EventKind, LedgerEvent};
use crate::domain::retry::{jitter_of, DeferBackoff, RetryDecision, BREAKER_SPREAD_SECS};
use crate::domain::semaphore::{AcquireOutcome, SemaphoreKey};
use crate::domain::time::Timestamp;
use crate::domain::tool::{ToolFailure, ToolOutcome, ToolRequest};
use crate::error::StoreError;
use crate::manifest::{
    ConnectorSpec, PipelineSpec, StageSpec, TemplateContext, TemplateError, ToolSpec,
};
use crate::ports::{
    Backend, ConnectorStore, ExecutionStore, Ledger, ReceivedMessage, SemaphoreStore, StageMessage,
    StageQueue, ToolClient,
};
use crate::telemetry;

/// How many records of one batch run at the same time.
pub const BATCH_CONCURRENCY: usize = 4;

/// The largest stage output (serialized JSON) kept in a TOOL_SUCCEEDED event; a larger one is
/// recorded as truncated (the ledger caps an event's detail at 64 KiB), and a later stage that
/// reads it blocks with a template error.
pub const MAX_OUTPUT_BYTES: usize = 48 * 1024;

/// Local poll loop: messages per receive, their visibility timeout, and the long-poll wait.
const POLL_MAX: u32 = 10;
const POLL_VISIBILITY_SECS: u32 = 60;
const POLL_WAIT_SECS: u32 = 1;
/// Local poll loop: how long a message that failed with a retryable error stays hidden.
const POLL_RETRY_SECS: u32 = 5;

/// Time a record keeps in hand before its tool call: lease, pipeline slot, ledger read,
/// STAGE_STARTED, admission, TOOL_CALLED.
pub const BEFORE_CALL_RESERVE: Duration = Duration::from_secs(2);
/// Time a record keeps in hand after its tool call: settle, the outcome's appends (retried in
/// process, see [`append_backoff`]), the record write, the next stage's message.
pub const AFTER_CALL_RESERVE: Duration = Duration::from_secs(5);
/// Attempts at one ledger append after the tool call (the first included), when the budget
/// leaves room for them.
pub const POST_CALL_APPEND_ATTEMPTS: u32 = 8;
/// What one store request is given when deciding whether a retry still fits the budget.
const REQUEST_ALLOWANCE: Duration = Duration::from_millis(500);

/// The wait before retry `n` (from 1) of an append after the tool call: 100 ms doubling, at
/// most 1.6 s.
pub fn append_backoff(n: u32) -> Duration {
    Duration::from_millis(100 << n.saturating_sub(1).min(4))
}

/// The wall-clock time an invocation has left: the Lambda context's deadline (minus what the
/// handler keeps for itself), or none in the local run. A record is only started when its tool
/// call, at its full timeout, and the writes around it ([`BEFORE_CALL_RESERVE`],
/// [`AFTER_CALL_RESERVE`]) fit before the deadline; the appends after a call are retried only
/// while the retry fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    deadline: Option<Instant>,
    before_call: Duration,
    after_call: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl Budget {
    /// No deadline (the local run, tests).
    pub fn unlimited() -> Self {
        Self {
            deadline: None,
            before_call: BEFORE_CALL_RESERVE,
            after_call: AFTER_CALL_RESERVE,
        }
    }

    /// Work must be done by `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..Self::unlimited()
        }
    }

    /// The same deadline with other reserves around a tool call (tests use small ones).
    pub fn with_reserves(self, before_call: Duration, after_call: Duration) -> Self {
        Self {
            before_call,
            after_call,
            ..self
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// What a stage whose tool call may take `call_timeout` needs: the call and both reserves.
    pub fn need_for(&self, call_timeout: Duration) -> Duration {
        self.before_call + call_timeout + self.after_call
    }

    /// `Err((needed, remaining))` when a stage with this call timeout cannot finish in time.
    pub fn check_call(&self, call_timeout: Duration) -> Result<(), (Duration, Duration)> {
        let needed = self.need_for(call_timeout);
        match self.remaining() {
            Some(remaining) if remaining < needed => Err((needed, remaining)),
            _ => Ok(()),
        }
    }

    /// How long a call starting now may take and still leave the after-call reserve before the
    /// deadline (`None`: no deadline).
    pub fn call_room(&self) -> Option<Duration> {
        self.remaining()
            .map(|remaining| remaining.saturating_sub(self.after_call))
    }

    /// Whether waiting `wait` and then making one more request still fits.
    fn fits_retry(&self, wait: Duration) -> bool {
        self.remaining()
            .is_none_or(|remaining| remaining > wait + REQUEST_ALLOWANCE)
    }
}

/// Why a message was put off (re-sent with a later `not_before`) without spending an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferCause {
    /// The message (or the record) says not yet: rate delay, backoff, cooldown, a chained delay.
    NotBefore,
    /// Another worker holds the execution lease.
    LeaseHeld,
    /// The source's pipeline slots (`REPO_PIPELINE_CONCURRENCY_LIMIT`) are all taken.
    PipelineSlotsFull,
    /// The connector's breaker is open.
    BreakerOpen,
    /// The connector's half-open probe is in flight.
    ProbeInFlight,
    /// The connector's in-flight slots are all taken.
    ConnectorSlotsFull,
}

impl DeferCause {
    /// A stable name for logs, metrics and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            DeferCause::NotBefore => "not_before",
            DeferCause::LeaseHeld => "lease_held",
            DeferCause::PipelineSlotsFull => "pipeline_slots_full",
            DeferCause::BreakerOpen => "breaker_open",
            DeferCause::ProbeInFlight => "probe_in_flight",
            DeferCause::ConnectorSlotsFull => "connector_slots_full",
        }
    }

    /// Whether the deferral is the system holding work back (counted as
    /// `pipeline_throttled_total`): slots full, breaker open or probing. A wait for a delay
    /// decided earlier, or for another worker's lease, is not.
    pub fn is_throttle(self) -> bool {
        !matches!(self, DeferCause::NotBefore | DeferCause::LeaseHeld)
    }
}

/// The `blocked_reason` of a run stopped by loop protection (`MAX_PIPELINE_ATTEMPTS`).
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";

impl From<DeferReason> for DeferCause {
    fn from(reason: DeferReason) -> Self {
        match reason {
            DeferReason::BreakerOpen => DeferCause::BreakerOpen,
            DeferReason::ProbeInFlight => DeferCause::ProbeInFlight,
            DeferReason::SlotsFull => DeferCause::ConnectorSlotsFull,
        }
    }
}

impl fmt::Display for DeferCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was dropped without doing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No such execution.
    NotFound,
    /// The execution already reached a terminal status.
    Finished,
    /// The execution is at another stage than the message (a duplicate or an outdated message).
    StaleStage,
    /// The lease was taken over (it had expired, and the sweeper or another worker moved on).
    LeaseLost,
}

impl SkipReason {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotFound => "not_found",
            SkipReason::Finished => "finished",
            SkipReason::StaleStage => "stale_stage",
            SkipReason::LeaseLost => "lease_lost",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a message. Every variant means the message itself is done with: the
/// caller deletes it (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The last stage succeeded: the run is SUCCEEDED.
    Completed,
    /// The stage succeeded and the next stage's message was sent.
    Advanced,
    /// The call failed and will be tried again after `delay_secs` (`attempt` attempts made).
    RetryScheduled { attempt: u32, delay_secs: u64 },
    /// Put off until `until` without spending an attempt; a copy of the message was sent.
    Deferred {
        reason: DeferCause,
        until: Timestamp,
    },
    /// The run is BLOCKED with this `blocked_reason`.
    Blocked { reason: String },
    /// Nothing to do.
    Skipped { why: SkipReason },
}

impl Disposition {
    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Disposition::Completed => "completed",
            Disposition::Advanced => "advanced",
            Disposition::RetryScheduled { .. } => "retry_scheduled",
            Disposition::Deferred { .. } => "deferred",
            Disposition::Blocked { .. } => "blocked",
            Disposition::Skipped { .. } => "skipped",
        }
    }
}

/// A stage could not be run to a decision; the message should come back (if retryable).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// A port call failed.
    #[error("{step} failed for {execution_id}")]
    Store {
        step: &'static str,
        execution_id: ExecutionId,
        #[source]
        source: StoreError,
    },
    /// Other writers kept taking the ledger sequence numbers or the record version.
    #[error("{what} of {execution_id} kept changing under this worker")]
    Contention {
        what: &'static str,
        execution_id: ExecutionId,
    },
    /// The invocation's time budget cannot fit this stage's tool call and the writes around
    /// it: the stage was not started (nothing written, the lease given back).
    #[error(
        "{execution_id} not started: its tool call needs {needed_ms} ms of the {remaining_ms} ms \
         left before the deadline"
    )]
    OutOfTime {
        execution_id: ExecutionId,
        needed_ms: u64,
        remaining_ms: u64,
    },
}

impl ExecuteError {
    /// Whether the message should be redelivered (an SQS batch item failure).
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecuteError::Store { source, .. } => source.is_retryable(),
            ExecuteError::Contention { .. } | ExecuteError::OutOfTime { .. } => true,
        }
    }
}

/// The holder of an execution's per-source pipeline slot: `hld_` + the execution id, so every
/// worker that runs the execution (and the API) names the same holder.
pub fn pipeline_slot_holder(id: &ExecutionId) -> HolderId {
    HolderId::parse(format!("hld_{id}")).unwrap_or_else(|_| {
        // Only an execution id within 4 bytes of the id length cap gets here.
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(id.as_str().as_bytes()));
        HolderId::parse(format!("hld_{digest}")).unwrap_or_else(|_| HolderId::random())
    })
}

/// Runs the stage `received` names. See the module documentation for who deletes the message.
#[tracing::instrument(
    skip_all,
    fields(
        execution_id = %received.message.execution_id,
        stage = received.message.stage,
        receive_count = received.receive_count,
    )
)]
pub async fn run_message<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    received: &ReceivedMessage,
    worker: &HolderId,
) -> Result<Disposition, ExecuteError> {
    run_message_within(app, received, worker, &Budget::unlimited()).await
}

/// [`run_message`] within `budget`: a stage whose tool call cannot finish before the deadline
/// is not started ([`ExecuteError::OutOfTime`], retryable: the message comes back).
pub async fn run_message_within<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    received: &ReceivedMessage,
    worker: &HolderId,
    budget: &Budget,
) -> Result<Disposition, ExecuteError> {
    let result = run(app, &received.message, worker, budget).await;
    if let Ok(Disposition::Skipped { why }) = &result {
        app.metrics
            .count(telemetry::RUNS_SKIPPED, &[("Reason", why.as_str())]);
    }
    match &result {
        Ok(disposition) => tracing::info!(
            disposition = disposition.kind(),
            detail = ?disposition,
            "stage message handled"
        ),
        Err(error) => tracing::warn!(
            retryable = error.is_retryable(),
            error = %error,
            source = ?std::error::Error::source(error),
            "stage message failed"
        ),
    }
    result
}

async fn run<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    message: &StageMessage,
    worker: &HolderId,
    budget: &Budget,
) -> Result<Disposition, ExecuteError> {
    let id = &message.execution_id;
    let now = app.clock.now();
    if let Some(not_before) = message.not_before.filter(|nb| *nb > now) {
        // A delay chained past SQS's 900 s: the wait number travels on unchanged.
        send_copy(app, id, message.stage, not_before, message.wait).await?;
        return Ok(Disposition::Deferred {
            reason: DeferCause::NotBefore,
            until: not_before,
        });
    }

    let lease = app
        .backend
        .executions()
        .acquire_lease(id, worker, now, app.config.execution_lease_secs)
        .await
        .map_err(store("execution.acquire_lease", id))?;
    let record = match lease {
        LeaseOutcome::Acquired(record) => record,
        LeaseOutcome::NotFound => return Ok(skipped(SkipReason::NotFound)),
        LeaseOutcome::Finished(_) => return Ok(skipped(SkipReason::Finished)),
        LeaseOutcome::Held { expires_at, .. } => {
            let until = expires_at.min(backoff_until(app, message, DeferCause::LeaseHeld, now));
            send_copy(app, id, message.stage, until, message.wait + 1).await?;
            return Ok(Disposition::Deferred {
                reason: DeferCause::LeaseHeld,
                until,
            });
        }
    };

    let mut run = StageRun {
        app,
        worker,
        record,
        ledger: None,
        budget: *budget,
        called: false,
        wait: message.wait,
    };
    let result = run.stage(message).await;
    if result.is_err() {
        run.abandon().await;
    }
    result
}

fn skipped(why: SkipReason) -> Disposition {
    Disposition::Skipped { why }
}

fn store(step: &'static str, id: &ExecutionId) -> impl FnOnce(StoreError) -> ExecuteError {
    let execution_id = id.clone();
    move |source| ExecuteError::Store {
        step,
        execution_id,
        source,
    }
}

/// Sends a copy of a stage message to run at `until`, as wait number `wait` of its episode.
async fn send_copy<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    id: &ExecutionId,
    stage: u32,
    until: Timestamp,
    wait: u32,
) -> Result<(), ExecuteError> {
    let copy = StageMessage {
        execution_id: id.clone(),
        stage,
        not_before: Some(until),
        wait,
    };
    app.backend
        .queue()
        .send(&copy, app.clock.now())
        .await
        .map_err(store("queue.send", id))
}

/// The jitter of wait `message.wait` of this stage of this execution (reproducible; see
/// [`jitter_of`]).
fn wait_jitter(message: &StageMessage, cause: DeferCause) -> f64 {
    jitter_of(&[
        message.execution_id.as_str().as_bytes(),
        &message.stage.to_be_bytes(),
        &message.wait.to_be_bytes(),
        cause.as_str().as_bytes(),
    ])
}

/// When a stage deferred by `cause` (not a breaker) at wait `message.wait` asks again: the
/// full-jitter backoff of [`DeferBackoff`] over `BREAKER_DEFER_SECONDS`.
fn backoff_until<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    message: &StageMessage,
    cause: DeferCause,
    now: Timestamp,
) -> Timestamp {
    let backoff = DeferBackoff::new(app.config.breaker.defer_secs);
    now.plus_secs(backoff.delay_secs(message.wait, wait_jitter(message, cause)))
}

/// What the executor reads from the ledger once per stage.
#[derive(Debug)]
struct LedgerView {
    /// The webhook payload (the RECEIVED event's `detail.payload`).
    payload: Option<Json>,
    /// Outputs of the stages that succeeded, by stage name.
    outputs: BTreeMap<String, Json>,
    /// Indexes of the stages whose tool call succeeded in this execution.
    tool_succeeded: BTreeSet<u32>,
    next_seq: u64,
}

impl LedgerView {
    fn read(events: &[LedgerEvent], pipeline: Option<&PipelineSpec>) -> Self {
        let mut payload = None;
        let mut outputs = BTreeMap::new();
        let mut tool_succeeded = BTreeSet::new();
        for event in events {
            match event.kind {
                EventKind::Received if payload.is_none() => {
                    payload = event.detail.get("payload").cloned();
                    // A replay from a later stage may carry the earlier outputs along.
                    if let Some(Json::Object(stages)) = event.detail.get("stages") {
                        outputs.extend(stages.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                EventKind::ToolSucceeded => {
                    tool_succeeded.extend(event.stage);
                    let name = event
                        .detail
                        .get("stage_name")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                        .or_else(|| {
                            let index = event.stage? as usize;
                            Some(pipeline?.stages.get(index)?.name.clone())
                        });
                    if let (Some(name), Some(output)) = (name, event.detail.get("output")) {
                        outputs.insert(name, output.clone());
                    }
                }
                _ => {}
            }
        }
        let next_seq = events.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
        Self {
            payload,
            outputs,
            tool_succeeded,
            next_seq,
        }
    }
}

/// The manifest entries one stage needs.
struct StagePlan<'m> {
    pipeline: &'m PipelineSpec,
    stage: &'m StageSpec,
    connector: &'m ConnectorSpec,
    tool: &'m ToolSpec,
}

/// One worker's run of one stage, holding the execution lease.
struct StageRun<'a, B: Backend, T: ToolClient> {
    app: &'a App<B, T>,
    worker: &'a HolderId,
    /// The record as last written by this run (its version is the one to name).
    record: ExecutionRecord,
    /// Read on first use.
    ledger: Option<LedgerView>,
    /// The invocation's time budget.
    budget: Budget,
    /// The tool was called: from here on a failed append is retried in process (within the
    /// budget) before the message is given back, since a redelivery would call it again.
    called: bool,
    /// The message's wait number: 0 opens a wait episode, more repeats one.
    wait: u32,
}

impl<'a, B: Backend, T: ToolClient> StageRun<'a, B, T> {
    fn id(&self) -> &ExecutionId {
        &self.record.id
    }

    async fn stage(&mut self, message: &StageMessage) -> Result<Disposition, ExecuteError> {
        let app = self.app;
        let now = app.clock.now();
        if self.record.stage != message.stage {
            return self.release_and(skipped(SkipReason::StaleStage)).await;
        }
        if let Some(not_before) = self.record.not_before.filter(|nb| *nb > now) {
            return self.defer(DeferCause::NotBefore, not_before, false).await;
        }

        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(reason) => {
                let attempts = self.record.attempt_count;
                return self.block(reason, attempts, json!({})).await;
            }
        };

        // Not started unless the call, at its full timeout, and the writes around it fit
        // before the deadline: nothing is written, and the lease is given back (`abandon`).
        let call_timeout = Duration::from_millis(plan.connector.timeout_ms);
        if let Err((needed, remaining)) = self.budget.check_call(call_timeout) {
            return Err(ExecuteError::OutOfTime {
                execution_id: self.id().clone(),
                needed_ms: needed.as_millis() as u64,
                remaining_ms: remaining.as_millis() as u64,
            });
        }

        // The run's pipeline slot of its source: taken at the first stage and held until the
        // run ends (released at every terminal status). Every later stage, and every poll of a
        // wait, renews it (an acquire by its holder only moves its expiry), so a run longer
        // than the slot TTL keeps it. A run that lost it anyway (it waited past the TTL and
        // another run took the slot) waits for a slot again before it calls anything.
        let key = SemaphoreKey::SourcePipelines(self.record.source.clone());
        let acquired = app
            .backend
            .semaphores()
            .acquire(
                &key,
                &pipeline_slot_holder(self.id()),
                app.config.pipeline_concurrency_limit,
                app.config.pipeline_concurrency_ttl_secs,
                now,
            )
            .await
            .map_err(store("semaphore.acquire", self.id()))?;
        if let AcquireOutcome::Full { .. } = acquired {
            let until = backoff_until(app, message, DeferCause::PipelineSlotsFull, now);
            return self
                .defer(DeferCause::PipelineSlotsFull, until, false)
                .await;
        }
        if self.record.status != ExecutionStatus::Running {
            let running = ExecutionChange {
                status: Some(ExecutionStatus::Running),
                ..ExecutionChange::default()
            };
            if !self.write(running).await? {
                return Ok(skipped(SkipReason::LeaseLost));
            }
        }

        // Admission comes before the ledger is read: a poll that is deferred again reads
        // nothing and appends nothing (see `defer`).
        let attempt = self.record.attempt_count + 1;
        let admission = AdmissionRequest {
            connector: plan.stage.connector.clone(),
            tool: plan.stage.tool.clone(),
            tenant: self.record.tenant.clone(),
            holder: HolderId::random(),
            limit: plan.connector.concurrency_limit,
            slot_ttl_secs: plan.connector.slot_ttl_seconds,
            settings: plan.connector.breaker_settings(&app.config.breaker),
            now: app.clock.now(),
        };
        let ticket = match app
            .backend
            .connectors()
            .admit(&admission)
            .await
            .map_err(store("connector.admit", self.id()))?
        {
            Admission::Admitted(ticket) => ticket,
            Admission::Deferred { until, reason } => {
                let cause = DeferCause::from(reason);
                let until = match reason {
                    // Every waiter of an open breaker would come back at `open_until` at once:
                    // spread them over a window after it.
                    // The window is the cooldown itself when shorter than 60 s.
                    DeferReason::BreakerOpen => DeferBackoff {
                        spread_secs: BREAKER_SPREAD_SECS
                            .min(admission.settings.cooldown_secs)
                            .max(1),
                        ..DeferBackoff::new(app.config.breaker.defer_secs)
                    }
                    .after_open(until, wait_jitter(message, cause)),
                    DeferReason::ProbeInFlight | DeferReason::SlotsFull => {
                        backoff_until(app, message, cause, now)
                    }
                };
                return self.defer(cause, until, true).await;
            }
            Admission::Refused(switch) => {
                app.metrics.count(
                    telemetry::POLICY_VIOLATIONS,
                    &[("Connector", plan.stage.connector.as_str())],
                );
                return self.kill_switch(switch).await;
            }
        };

        // The call succeeded before, but the run stopped before it moved on (a crash between
        // the ledger and the record): the side effect is not made twice.
        let stage = self.record.stage;
        let already = match self.view().await {
            Ok(view) => view.tool_succeeded.contains(&stage),
            Err(error) => {
                self.unused(&ticket, &admission).await;
                return Err(error);
            }
        };
        if already {
            self.unused(&ticket, &admission).await;
            app.metrics.count(
                telemetry::SIDE_EFFECT_SKIPPED,
                &[("Connector", plan.stage.connector.as_str())],
            );
            tracing::info!(
                stage = self.record.stage,
                "tool call already succeeded; moving on without calling it again"
            );
            return self.succeed(&plan).await;
        }

        let request = match self.render(&plan).await {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                self.unused(&ticket, &admission).await;
                let reason = format!("template:{}", template_placeholder(&error));
                let detail = json!({"error": error.to_string()});
                return self.block(reason, self.record.attempt_count, detail).await;
            }
            Err(error) => {
                self.unused(&ticket, &admission).await;
                return Err(error);
            }
        };

        // The stage really starts now: admitted, inputs rendered.
        self.append(
            EventKind::StageStarted,
            json!({
                "stage_name": plan.stage.name,
                "connector": plan.stage.connector,
                "tool": plan.stage.tool,
                "attempt": attempt,
                "worker": self.worker,
                "waits": self.wait,
            }),
        )
        .await?;

        // The stage was started with room for the whole call; if the writes before it took more
        // than their reserve, the call is cut short rather than cut off by the deadline (a
        // timeout is an outcome the ledger and the breaker hear of; a killed invocation is not).
        let mut request = request;
        if let Some(room) = self.budget.call_room() {
            let room_ms = (room.as_millis() as u64).max(1);
            if room_ms < request.timeout_ms {
                tracing::warn!(
                    timeout_ms = request.timeout_ms,
                    room_ms,
                    "deadline near; the tool call's timeout is shortened to fit"
                );
                request.timeout_ms = room_ms;
            }
        }
        self.append(
            EventKind::ToolCalled,
            json!({
                "connector": request.connector,
                "tool": request.tool,
                "method": request.method,
                "idempotency_key": request.idempotency_key,
                "attempt": attempt,
                "probe": ticket.probe,
            }),
        )
        .await?;
        self.called = true;
        let outcome = app.tools.call(&request).await;
        app.metrics.tool_call(
            request.connector.as_str(),
            request.tool.as_str(),
            outcome.latency_ms(),
            !matches!(outcome, ToolOutcome::Succeeded { .. }),
        );
        // The call was made: its outcome must reach the ledger even if the settle fails. A
        // slot that is not released runs out with its TTL.
        let settled = app
            .backend
            .connectors()
            .settle(
                &ticket,
                outcome.breaker_signal(),
                &admission.settings,
                app.clock.now(),
            )
            .await;
        match settled {
            Ok(report) => {
                if let Some(t) = report.transition {
                    let to = t.to.as_str().to_ascii_lowercase();
                    app.metrics.count(
                        telemetry::BREAKER_TRANSITIONS,
                        &[("Connector", ticket.connector.as_str()), ("To", &to)],
                    );
                    if t.to == BreakerState::Open {
                        let alert =
                            Alert::new(AlertType::BreakerOpened, "breaker_open", app.clock.now())
                                .with_connector(ticket.connector.as_str());
                        app.alerts.raise(alert);
                    }
                    tracing::info!(
                        connector = %ticket.connector,
                        from = t.from.as_str(),
                        to = t.to.as_str(),
                        "breaker moved"
                    );
                }
            }
            Err(error) => tracing::warn!(
                connector = %ticket.connector,
                error = %error,
                "settle failed; the connector slot will run out with its TTL"
            ),
        }

        self.conclude(&plan, attempt, outcome).await
    }

    /// Looks up the pipeline, the stage and its tool; the error is a `blocked_reason`.
    fn plan(&self) -> Result<StagePlan<'a>, String> {
        let app: &'a App<B, T> = self.app;
        let manifest = &*app.manifest;
        let pipeline = manifest
            .pipelines
            .get(&self.record.pipeline)
            .ok_or_else(|| format!("manifest:unknown_pipeline:{}", self.record.pipeline))?;
        let stage = pipeline
            .stages
            .get(self.record.stage as usize)
            .ok_or_else(|| format!("manifest:unknown_stage:{}", self.record.stage))?;
        let (connector, tool) = manifest
            .tool_for(stage)
            .ok_or_else(|| format!("manifest:unknown_tool:{}/{}", stage.connector, stage.tool))?;
        Ok(StagePlan {
            pipeline,
            stage,
            connector,
            tool,
        })
    }

    /// Renders the tool request; the inner error blocks the run.
    async fn render(
        &mut self,
        plan: &StagePlan<'_>,
    ) -> Result<Result<ToolRequest, TemplateError>, ExecuteError> {
        let record = &self.record;
        let app = self.app;
        let id = record.id.clone();
        let index = record.stage;
        let (tenant, source) = (record.tenant.clone(), record.source.clone());
        let view = self.view().await?;
        let Some(payload) = &view.payload else {
            return Ok(Err(TemplateError::Unresolved {
                placeholder: "payload".into(),
            }));
        };
        let ctx = TemplateContext {
            payload,
            stages: &view.outputs,
            execution_id: id.as_str(),
            tenant: tenant.as_str(),
            source: source.as_str(),
        };
        let rendered = (|| {
            let path = plan.tool.path.render(&ctx)?;
            let body = plan
                .tool
                .body
                .as_ref()
                .map(|b| b.render(&ctx))
                .transpose()?;
            Ok::<_, TemplateError>((path, body))
        })();
        let (path, body) = match rendered {
            Ok(parts) => parts,
            Err(error) => return Ok(Err(error)),
        };
        let headers = app
            .secrets
            .connector_auth(&plan.stage.connector)
            .map(|(name, value)| vec![(name.to_owned(), value.to_owned())])
            .unwrap_or_default();
        Ok(Ok(ToolRequest {
            connector: plan.stage.connector.clone(),
            tool: plan.stage.tool.clone(),
            method: plan.tool.method.clone(),
            url: format!("{}{}", plan.connector.base_url, path),
            headers,
            body,
            idempotency_key: format!("{id}:{index}"),
            timeout_ms: plan.connector.timeout_ms,
        }))
    }

    /// Records the call's outcome and moves the run on.
    async fn conclude(
        &mut self,
        plan: &StagePlan<'_>,
        attempt: u32,
        outcome: ToolOutcome,
    ) -> Result<Disposition, ExecuteError> {
        let app = self.app;
        let (status, failure, retry_after) = match &outcome {
            ToolOutcome::Succeeded {
                status,
                body,
                latency_ms,
            } => {
                let size = serde_json::to_string(body).map_or(usize::MAX, |s| s.len());
                let detail = if size <= MAX_OUTPUT_BYTES {
                    json!({
                        "stage_name": plan.stage.name,
                        "status": status,
                        "latency_ms": latency_ms,
                        "output": body,
                    })
                } else {
                    json!({
                        "stage_name": plan.stage.name,
                        "status": status,
                        "latency_ms": latency_ms,
                        "output_truncated": true,
                        "output_bytes": size,
                    })
                };
                self.append(EventKind::ToolSucceeded, detail).await?;
                return self.succeed(plan).await;
            }
            ToolOutcome::Failed {
                status,
                failure,
                retry_after_secs,
                latency_ms,
                excerpt,
            } => {
                self.append(
                    EventKind::ToolFailed,
                    json!({
                        "stage_name": plan.stage.name,
                        "status": status,
                        "failure": failure,
                        "retry_after_secs": retry_after_secs,
                        "latency_ms": latency_ms,
                        "excerpt": excerpt,
                        "attempt": attempt,
                    }),
                )
                .await?;
                let code = status.map_or_else(
                    || {
                        serde_json::to_value(failure)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    },
                    |s| format!("status_{s}"),
                );
                self.alert(AlertType::ToolStepFailed, &code);
                (*status, *failure, *retry_after_secs)
            }
        };

        // A 4xx the tool asks to retry; never a request that could not even be sent.
        let retry_4xx = plan.tool.retry_on_4xx
            && failure == ToolFailure::RejectedStatus
            && status.is_some_and(|s| (400..500).contains(&s));
        if !(outcome.is_retryable() || retry_4xx) {
            let what = status.map_or_else(|| "invalid_request".to_owned(), |s| s.to_string());
            return self
                .block(format!("non_retryable:{what}"), attempt, json!({}))
                .await;
        }

        let policy = plan.stage.retry_policy(&app.config.retry);
        match policy.after_failure(attempt, rand::random::<f64>(), retry_after) {
            RetryDecision::Exhausted { attempts } => {
                self.block(RETRIES_EXHAUSTED.to_owned(), attempts, json!({}))
                    .await
            }
            RetryDecision::RetryAfter { delay_secs } => {
                let now = app.clock.now();
                let until = now.plus_secs(i64::try_from(delay_secs).unwrap_or(i64::MAX / 4000));
                self.append(
                    EventKind::RetryScheduled,
                    json!({
                        "attempt": attempt,
                        "max_attempts": policy.max_attempts,
                        "delay_secs": delay_secs,
                        "not_before": until,
                    }),
                )
                .await?;
                let change = ExecutionChange {
                    attempt_count: Some(attempt),
                    not_before: Some(Some(until)),
                    release_lease: true,
                    ..ExecutionChange::default()
                };
                if !self.write(change).await? {
                    return Ok(skipped(SkipReason::LeaseLost));
                }
                send_copy(app, &self.record.id, self.record.stage, until, 0).await?;
                app.metrics.count(
                    telemetry::RETRIES,
                    &[("Pipeline", self.record.pipeline.as_str())],
                );
                Ok(Disposition::RetryScheduled {
                    attempt,
                    delay_secs,
                })
            }
        }
    }

    async fn succeed(&mut self, plan: &StagePlan<'_>) -> Result<Disposition, ExecuteError> {
        let next = self.record.stage + 1;
        if next as usize >= plan.pipeline.stages.len() {
            self.append(EventKind::Succeeded, json!({})).await?;
            let change = ExecutionChange {
                status: Some(ExecutionStatus::Succeeded),
                not_before: Some(None),
                release_lease: true,
                ..ExecutionChange::default()
            };
            if !self.write(change).await? {
                return Ok(skipped(SkipReason::LeaseLost));
            }
            self.release_pipeline_slot().await;
            self.app
                .metrics
                .count(telemetry::RUN_OUTCOMES, &[("Outcome", "succeeded")]);
            return Ok(Disposition::Completed);
        }
        self.append(
            EventKind::StageSucceeded,
            json!({"stage_name": plan.stage.name, "next_stage": next}),
        )
        .await?;
        let change = ExecutionChange {
            stage: Some(next),
            attempt_count: Some(0),
            not_before: Some(None),
            release_lease: true,
            ..ExecutionChange::default()
        };
        if !self.write(change).await? {
            return Ok(skipped(SkipReason::LeaseLost));
        }
        let message = StageMessage {
            execution_id: self.record.id.clone(),
            stage: next,
            not_before: None,
            wait: 0,
        };
        self.app
            .backend
            .queue()
            .send(&message, self.app.clock.now())
            .await
            .map_err(store("queue.send", &self.record.id))?;
        Ok(Disposition::Advanced)
    }

    async fn kill_switch(&mut self, switch: KillSwitch) -> Result<Disposition, ExecuteError> {
        let reason = format!("kill_switch:{}", switch.target.key());
        let detail = json!({
            "target": switch.target,
            "set_by": switch.set_by,
            "set_at": switch.set_at,
            "switch_reason": switch.reason,
        });
        let attempts = self.record.attempt_count;
        self.block(reason, attempts, detail).await
    }

    /// Blocks the run: ledger BLOCKED, status BLOCKED with the reason and attempt count, lease
    /// and pipeline slot released.
    async fn block(
        &mut self,
        reason: String,
        attempts: u32,
        extra: Json,
    ) -> Result<Disposition, ExecuteError> {
        let mut detail = json!({"reason": reason, "attempt_count": attempts});
        if let (Some(detail), Json::Object(extra)) = (detail.as_object_mut(), extra) {
            detail.extend(extra);
        }
        self.append(EventKind::Blocked, detail).await?;
        let change = ExecutionChange {
            status: Some(ExecutionStatus::Blocked),
            blocked_reason: Some(reason.clone()),
            attempt_count: Some(attempts),
            not_before: Some(None),
            release_lease: true,
            ..ExecutionChange::default()
        };
        if !self.write(change).await? {
            return Ok(skipped(SkipReason::LeaseLost));
        }
        self.release_pipeline_slot().await;
        // Loop protection and policy stop a run on purpose (blocked); anything else is the
        // run's own failure (a non-retryable answer, a template or manifest error).
        // The metric's Outcome follows the alert: `blocked` with run.blocked, `failed` with
        // run.failed (docs/runbook.md "Repeated blocking").
        let (alert_type, outcome) =
            if reason == RETRIES_EXHAUSTED || reason.starts_with("kill_switch:") {
                (AlertType::RunBlocked, "blocked")
            } else {
                (AlertType::RunFailed, "failed")
            };
        self.alert(alert_type, &reason);
        let metrics = &self.app.metrics;
        metrics.count(telemetry::RUN_OUTCOMES, &[("Outcome", outcome)]);
        if reason == RETRIES_EXHAUSTED {
            metrics.count(
                telemetry::LOOP_BLOCKED,
                &[("Pipeline", self.record.pipeline.as_str())],
            );
        }
        Ok(Disposition::Blocked { reason })
    }

    /// Puts the stage off without spending an attempt: (ledger DEFERRED,) lease released, a
    /// copy of the message sent to run at `until` as the next wait of the episode.
    ///
    /// A wait episode (the deferrals of one stage between two starts) writes at most one
    /// ledger event: the DEFERRED of its first deferral (wait 0). Repeats (wait 1, 2, ...)
    /// neither read nor write the ledger; their reason and time are in logs and metrics.
    async fn defer(
        &mut self,
        reason: DeferCause,
        until: Timestamp,
        in_ledger: bool,
    ) -> Result<Disposition, ExecuteError> {
        if in_ledger && self.wait == 0 {
            self.append(
                EventKind::Deferred,
                json!({"reason": reason.as_str(), "until": until}),
            )
            .await?;
        }
        // The record keeps `until` too: a duplicate message waits for it, and the sweeper does
        // not mistake the wait for a lost message.
        let release = ExecutionChange {
            not_before: Some(Some(until)),
            release_lease: true,
            ..ExecutionChange::default()
        };
        if !self.write(release).await? {
            return Ok(skipped(SkipReason::LeaseLost));
        }
        // A wait for a delay decided earlier does not grow the backoff.
        let wait = if reason == DeferCause::NotBefore {
            self.wait
        } else {
            self.wait.saturating_add(1)
        };
        send_copy(self.app, &self.record.id, self.record.stage, until, wait).await?;
        if reason.is_throttle() {
            self.app
                .metrics
                .count(telemetry::THROTTLED, &[("Cause", reason.as_str())]);
        }
        Ok(Disposition::Deferred { reason, until })
    }

    /// Raises an alert about this run (in the background: it never slows or fails the run).
    fn alert(&self, alert_type: AlertType, error_code: &str) {
        let record = &self.record;
        let mut alert = Alert::new(alert_type, error_code, self.app.clock.now())
            .for_run(record.id.clone(), record.tenant.clone())
            .with_pipeline(record.pipeline.as_str());
        let stage = self
            .app
            .manifest
            .pipelines
            .get(&record.pipeline)
            .and_then(|p| p.stages.get(record.stage as usize));
        if let Some(stage) = stage {
            alert = alert.with_connector(stage.connector.as_str());
        }
        self.app.alerts.raise(alert);
    }

    /// Hands back an admission that made no call. A closed-breaker slot is settled healthy
    /// (the breaker does not move on a success in CLOSED); a probe is left to run out with
    /// its timeout, since settling it either way would move the breaker with no evidence.
    async fn unused(&self, ticket: &AdmissionTicket, admission: &AdmissionRequest) {
        if ticket.probe {
            return;
        }
        let settled = self
            .app
            .backend
            .connectors()
            .settle(
                ticket,
                BreakerSignal::Healthy,
                &admission.settings,
                self.app.clock.now(),
            )
            .await;
        if let Err(error) = settled {
            tracing::warn!(
                error = %error,
                "releasing an unused connector slot failed; it will run out with its TTL"
            );
        }
    }

    async fn release_and(&mut self, then: Disposition) -> Result<Disposition, ExecuteError> {
        let release = ExecutionChange {
            release_lease: true,
            ..ExecutionChange::default()
        };
        self.write(release).await?;
        Ok(then)
    }

    /// Gives the run's pipeline slot back. A failure is only logged: the slot runs out with its
    /// TTL, and the run's outcome is already written.
    async fn release_pipeline_slot(&self) {
        let key = SemaphoreKey::SourcePipelines(self.record.source.clone());
        let holder = pipeline_slot_holder(self.id());
        if let Err(error) = self.app.backend.semaphores().release(&key, &holder).await {
            tracing::warn!(
                error = %error,
                "pipeline slot release failed; it will run out with its TTL"
            );
        }
    }

    /// After an error: gives the lease back if this run still holds it, so that a redelivery
    /// to another worker need not wait for it to expire. Best effort.
    async fn abandon(&mut self) {
        if self.record.lease.as_ref().map(|l| &l.owner) != Some(self.worker) {
            return;
        }
        let release = ExecutionChange {
            release_lease: true,
            ..ExecutionChange::default()
        };
        let now = self.app.clock.now();
        let executions = self.app.backend.executions();
        if let Err(error) = executions
            .update(&self.record.id, self.record.version, release, now)
            .await
        {
            tracing::debug!(error = %error, "could not give the lease back after a failure");
        }
    }

    /// Applies `change` under the version this run last wrote. A conflict caused by a write
    /// that left the lease with this worker (intake marking the run QUEUED) is retried on the
    /// fresh record; false when the lease is gone (taken over, or the run finished).
    async fn write(&mut self, change: ExecutionChange) -> Result<bool, ExecuteError> {
        const TRIES: usize = 3;
        for _ in 0..TRIES {
            let outcome = self
                .app
                .backend
                .executions()
                .update(
                    &self.record.id,
                    self.record.version,
                    change.clone(),
                    self.app.clock.now(),
                )
                .await
                .map_err(store("execution.update", &self.record.id))?;
            match outcome {
                UpdateOutcome::Updated(record) => {
                    self.record = record;
                    return Ok(true);
                }
                UpdateOutcome::VersionConflict(current) => {
                    let still_ours = current.lease.as_ref().map(|l| &l.owner) == Some(self.worker)
                        && current.stage == self.record.stage
                        && !current.status.is_terminal();
                    if !still_ours {
                        tracing::warn!(
                            current_version = current.version,
                            "the execution changed hands; abandoning the stage"
                        );
                        self.record = current;
                        return Ok(false);
                    }
                    self.record = current;
                }
                UpdateOutcome::IllegalTransition { from, to } => {
                    tracing::warn!(
                        from = from.as_str(),
                        to = to.as_str(),
                        "the execution moved on; abandoning the stage"
                    );
                    self.record.lease = None;
                    return Ok(false);
                }
                UpdateOutcome::NotFound => {
                    self.record.lease = None;
                    return Ok(false);
                }
            }
        }
        Err(ExecuteError::Contention {
            what: "the record version",
            execution_id: self.record.id.clone(),
        })
    }

    /// The ledger view, read on first use.
    async fn view(&mut self) -> Result<&LedgerView, ExecuteError> {
        if self.ledger.is_none() {
            let mut failures = 0;
            let events = loop {
                match self.app.backend.ledger().events(&self.record.id).await {
                    Ok(events) => break events,
                    Err(error) => {
                        match self.post_call_retry(&error, &mut failures, "ledger.events") {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => return Err(store("ledger.events", &self.record.id)(error)),
                        }
                    }
                }
            };
            let pipeline = self.app.manifest.pipelines.get(&self.record.pipeline);
            self.ledger = Some(LedgerView::read(&events, pipeline));
        }
        Ok(self.ledger.as_ref().expect("just read"))
    }

    /// Appends an event at the next sequence number; when another writer took it, re-reads the
    /// ledger and tries once more. After the tool call, a retryable failure (a throttle, a
    /// timeout) is retried here with [`append_backoff`] while the budget allows (at most
    /// [`POST_CALL_APPEND_ATTEMPTS`] attempts): giving the message back would call the tool
    /// again.
    async fn append(&mut self, kind: EventKind, detail: Json) -> Result<(), ExecuteError> {
        let mut failures = 0;
        for _ in 0..2 {
            let seq = self.view().await?.next_seq;
            let event = LedgerEvent {
                execution_id: self.record.id.clone(),
                seq,
                at: self.app.clock.now(),
                kind,
                stage: Some(self.record.stage),
                detail: detail.clone(),
            };
            let outcome = loop {
                match self.app.backend.ledger().append(event.clone()).await {
                    Ok(outcome) => break outcome,
                    Err(error) => {
                        match self.post_call_retry(&error, &mut failures, "ledger.append") {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => return Err(store("ledger.append", &self.record.id)(error)),
                        }
                    }
                }
            };
            match outcome {
                // A retried attempt finds its own earlier write (the failure was a lost answer).
                AppendOutcome::Appended => {}
                AppendOutcome::SeqTaken(existing) if existing == event => {}
                AppendOutcome::SeqTaken(_) => {
                    self.ledger = None;
                    continue;
                }
            }
            if let Some(view) = &mut self.ledger {
                view.next_seq = seq + 1;
            }
            return Ok(());
        }
        Err(ExecuteError::Contention {
            what: "the ledger sequence",
            execution_id: self.record.id.clone(),
        })
    }

    /// After the tool call: how long to wait before trying a failed ledger request again, or
    /// `None` to give up (not called yet, not retryable, out of attempts or of time).
    fn post_call_retry(
        &self,
        error: &StoreError,
        failures: &mut u32,
        step: &'static str,
    ) -> Option<Duration> {
        if !self.called || !error.is_retryable() {
            return None;
        }
        *failures += 1;
        let wait = append_backoff(*failures);
        if *failures >= POST_CALL_APPEND_ATTEMPTS || !self.budget.fits_retry(wait) {
            tracing::warn!(
                step,
                failures = *failures,
                error = %error,
                "ledger write after the tool call still failing; giving the message back"
            );
            return None;
        }
        tracing::info!(
            step,
            failures = *failures,
            wait_ms = wait.as_millis() as u64,
            error = %error,
            "ledger write after the tool call failed; retrying in process"
        );
        Some(wait)
    }
}

/// The placeholder a template error is about (the `blocked_reason` suffix).
fn template_placeholder(error: &TemplateError) -> String {
    match error {
        TemplateError::Unresolved { placeholder }
        | TemplateError::Unknown { placeholder }
        | TemplateError::Invalid { placeholder, .. } => placeholder.clone(),
        other => other.to_string(),
    }
}

/// Runs a batch of messages, at most [`BATCH_CONCURRENCY`] at a time; messages of one execution
/// run one after another (see the module documentation). Answers in input order, by receipt.
pub async fn run_batch<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    worker: &HolderId,
    messages: Vec<ReceivedMessage>,
) -> Vec<(String, Result<Disposition, ExecuteError>)> {
    run_batch_within(app, worker, messages, &Budget::unlimited()).await
}

/// [`run_batch`] within `budget`. A message is not started once the deadline is too near for
/// the reserves around any call ([`Budget::check_call`] with no call time), nor is a stage
/// whose tool call, at its connector's full timeout, would not finish in time: both answer
/// [`ExecuteError::OutOfTime`] (retryable: the Lambda reports them as batch item failures).
pub async fn run_batch_within<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    worker: &HolderId,
    messages: Vec<ReceivedMessage>,
    budget: &Budget,
) -> Vec<(String, Result<Disposition, ExecuteError>)> {
    let mut groups: Vec<Vec<(usize, ReceivedMessage)>> = Vec::new();
    let mut group_of: HashMap<ExecutionId, usize> = HashMap::new();
    for (index, message) in messages.into_iter().enumerate() {
        let id = message.message.execution_id.clone();
        let group = *group_of.entry(id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push((index, message));
    }
    let mut results: Vec<(usize, String, Result<Disposition, ExecuteError>)> =
        futures::stream::iter(groups)
            .map(|group| async move {
                let mut out = Vec::with_capacity(group.len());
                for (index, message) in group {
                    let result = match budget.check_call(Duration::ZERO) {
                        Ok(()) => run_message_within(app, &message, worker, budget).await,
                        Err((needed, remaining)) => {
                            let execution_id = message.message.execution_id.clone();
                            tracing::info!(
                                execution_id = %execution_id,
                                remaining_ms = remaining.as_millis() as u64,
                                "deadline near; record given back unstarted"
                            );
                            Err(ExecuteError::OutOfTime {
                                execution_id,
                                needed_ms: needed.as_millis() as u64,
                                remaining_ms: remaining.as_millis() as u64,
                            })
                        }
                    };
                    out.push((index, message.receipt, result));
                }
                out
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
    results.sort_by_key(|(index, _, _)| *index);
    results
        .into_iter()
        .map(|(_, receipt, result)| (receipt, result))
        .collect()
}

/// The local run's executor: receives from the stage queue until `stop` turns true, runs each
/// batch, deletes the messages that are done with and hides the ones that failed with a
/// retryable error for a few seconds. Returns how many messages it handled.
pub async fn poll_queue<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    worker: HolderId,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let queue = app.backend.queue();
    let mut handled = 0;
    while !*stop.borrow() {
        let received = tokio::select! {
            _ = stop.changed() => break,
            received = queue.receive(POLL_MAX, POLL_VISIBILITY_SECS, POLL_WAIT_SECS) => received,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(error = %error, "receiving from the stage queue failed");
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        for (receipt, result) in run_batch(app, &worker, messages).await {
            handled += 1;
            let settled = match result {
                // As in Lambda: a failure, retryable or not, is received again and, past the
                // queue's redrive count, dead-lettered; never silently dropped.
                Err(error) => {
                    tracing::error!(error = %error, retryable = error.is_retryable(), "stage failed");
                    queue.retry_later(&receipt, POLL_RETRY_SECS).await
                }
                Ok(_) => queue.ack(&receipt).await,
            };
            if let Err(error) = settled {
                tracing::warn!(error = %error, "could not settle a stage message");
            }
        }
    }
    handled
}

/// What the executor's and the sweeper's tests share: a manifest, a scripted tool client, and
/// an App in memory on a fake clock.
#[cfg(test)]
pub(crate) mod testkit {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value as Json};

    use super::{run_message, Disposition};
    use crate::adapters::backend::MemoryBackend;
    use crate::app::App;
    use crate::clock::{Clock, FakeClock};
    use crate::config::ReliabilityConfig;
    use crate::domain::execution::{
        ExecutionChange, ExecutionRecord, ExecutionStatus, NewExecution,
    };
    use crate::domain::ids::{ExecutionId, HolderId, RunKey, SourceId, TenantId};
    use crate::domain::ledger::{EventKind, LedgerEvent};
    use crate::domain::time::Timestamp;
    use crate::domain::tool::{
        classify_status, StatusClass, ToolFailure, ToolOutcome, ToolRequest,
    };
    use crate::manifest::{Manifest, Secrets};
    use crate::ports::{
        Backend, ExecutionStore, Ledger, ReceivedMessage, StageMessage, StageQueue, ToolClient,
    };

    pub const MANIFEST: &str = r#"
sources:
  gh:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    pipeline: review
  probe:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    pipeline: probing
connectors:
  crm:
    base_url: http://crm.test
    auth:
      header: Authorization
      value_env: CRM_TOKEN
    concurrency_limit: 2
    tools:
      create_lead:
        method: POST
        path: /leads
        body:
          name: "{{payload/name}}"
          execution: "{{execution_id}}"
      notify:
        method: POST
        path: "/leads/{{stages.create/id}}/notify"
        body:
          lead: "{{stages.create/id}}"
          text: "Lead {{stages.create/id}} for {{tenant}}"
      lookup:
        method: GET
        path: /lookup
        retry_on_4xx: true
pipelines:
  review:
    stages:
      - name: create
        connector: crm
        tool: create_lead
        retry:
          max_attempts: 3
          base_backoff_seconds: 10
          max_backoff_seconds: 40
      - connector: crm
        tool: notify
  probing:
    stages:
      - connector: crm
        tool: lookup
"#;

    /// A tool client that answers from a script (then `200 {"id": 1}`) and records every request.
    #[derive(Debug, Clone, Default)]
    pub struct ScriptedTools {
        script: Arc<Mutex<VecDeque<ToolOutcome>>>,
        calls: Arc<Mutex<Vec<ToolRequest>>>,
    }

    impl ScriptedTools {
        pub fn new(outcomes: Vec<ToolOutcome>) -> Self {
            Self {
                script: Arc::new(Mutex::new(outcomes.into())),
                calls: Arc::default(),
            }
        }

        pub fn calls(&self) -> Vec<ToolRequest> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ToolClient for ScriptedTools {
        async fn call(&self, request: &ToolRequest) -> ToolOutcome {
            self.calls.lock().unwrap().push(request.clone());
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| ok(json!({"id": 1})))
        }
    }

    pub fn ok(body: Json) -> ToolOutcome {
        ToolOutcome::Succeeded {
            status: 200,
            body,
            latency_ms: 7,
        }
    }

    /// A failed call with HTTP `status`, classified as the HTTP client would.
    pub fn failed(status: u16, retry_after: Option<&str>) -> ToolOutcome {
        let StatusClass::Failure {
            failure,
            retry_after_secs,
        } = classify_status(status, retry_after, Timestamp::from_secs(0), false)
        else {
            panic!("{status} is not a failure");
        };
        ToolOutcome::Failed {
            status: Some(status),
            failure,
            retry_after_secs,
            latency_ms: 7,
            excerpt: format!("status {status}"),
        }
    }

    pub fn timed_out() -> ToolOutcome {
        ToolOutcome::Failed {
            status: None,
            failure: ToolFailure::Timeout,
            retry_after_secs: None,
            latency_ms: 10_000,
            excerpt: "timed out".into(),
        }
    }

    pub struct Harness {
        pub app: App<MemoryBackend, ScriptedTools>,
        pub clock: FakeClock,
        pub tools: ScriptedTools,
        pub worker: HolderId,
    }

    impl Harness {
        pub fn new(outcomes: Vec<ToolOutcome>) -> Self {
            Self::with_config(outcomes, |_| {})
        }

        pub fn with_config(
            outcomes: Vec<ToolOutcome>,
            tweak: impl FnOnce(&mut ReliabilityConfig),
        ) -> Self {
            let clock = FakeClock::at(Timestamp::from_secs(1_700_000_000));
            let shared: Arc<dyn Clock> = Arc::new(clock.clone());
            let manifest = Manifest::parse(MANIFEST, "test.yaml").expect("test manifest");
            let mut secrets = Secrets::default();
            secrets.insert_connector_auth(
                crate::domain::ids::ConnectorId::parse("crm").unwrap(),
                "Authorization",
                "Bearer t",
            );
            let mut config = ReliabilityConfig::from_lookup(|_| None).expect("defaults");
            tweak(&mut config);
            let tools = ScriptedTools::new(outcomes);
            let app = crate::startup::memory_app_with_tools(
                manifest,
                secrets,
                config,
                shared,
                tools.clone(),
            )
            .with_emf(crate::telemetry::EmfSink::Memory(Default::default()));
            Self {
                app,
                clock,
                tools,
                worker: HolderId::parse("hld_worker").unwrap(),
            }
        }

        pub fn now(&self) -> Timestamp {
            self.clock.now()
        }

        /// Records an execution of `source` as intake does, without queueing it: RECEIVED, with
        /// the payload in the ledger.
        pub async fn record_only(
            &self,
            source: &str,
            run_key: &str,
            payload: Json,
            not_before: Option<Timestamp>,
        ) -> ExecutionId {
            let source = SourceId::parse(source).unwrap();
            let pipeline = self.app.manifest.sources[&source].pipeline.clone();
            let run_key = RunKey::parse(run_key).unwrap();
            let id = ExecutionId::for_run_key(&TenantId::parse("acme").unwrap(), &source, &run_key);
            let new = NewExecution {
                id: id.clone(),
                tenant: TenantId::parse("acme").unwrap(),
                source,
                pipeline,
                run_key,
                replay_of: None,
                not_before,
            };
            let backend = &self.app.backend;
            backend.executions().create(new, self.now()).await.unwrap();
            let received = LedgerEvent {
                execution_id: id.clone(),
                seq: 1,
                at: self.now(),
                kind: EventKind::Received,
                stage: None,
                detail: json!({ "payload": payload }),
            };
            backend.ledger().append(received).await.unwrap();
            id
        }

        /// Records and queues an execution of source `gh`, as intake does.
        pub async fn seed(&self, run_key: &str, payload: Json) -> ExecutionId {
            self.seed_from("gh", run_key, payload).await
        }

        pub async fn seed_from(&self, source: &str, run_key: &str, payload: Json) -> ExecutionId {
            let id = self.record_only(source, run_key, payload, None).await;
            self.send(&id, 0, None).await;
            let queued = ExecutionChange {
                status: Some(ExecutionStatus::Queued),
                ..ExecutionChange::default()
            };
            let executions = self.app.backend.executions();
            executions.update(&id, 1, queued, self.now()).await.unwrap();
            id
        }

        pub async fn send(&self, id: &ExecutionId, stage: u32, not_before: Option<Timestamp>) {
            let message = StageMessage {
                execution_id: id.clone(),
                stage,
                not_before,
                wait: 0,
            };
            self.app
                .backend
                .queue()
                .send(&message, self.now())
                .await
                .unwrap();
        }

        pub async fn receive(&self) -> Option<ReceivedMessage> {
            self.app
                .backend
                .queue()
                .receive(1, 60, 0)
                .await
                .unwrap()
                .pop()
        }

        /// Receives the next visible message, runs it, and acks it (as the poll loop does).
        pub async fn step(&self) -> Disposition {
            let received = self.receive().await.expect("a visible message");
            let disposition = run_message(&self.app, &received, &self.worker)
                .await
                .expect("runs");
            self.app
                .backend
                .queue()
                .ack(&received.receipt)
                .await
                .unwrap();
            disposition
        }

        pub async fn record(&self, id: &ExecutionId) -> ExecutionRecord {
            let executions = self.app.backend.executions();
            executions.get(id).await.unwrap().expect("recorded")
        }

        pub async fn events(&self, id: &ExecutionId) -> Vec<LedgerEvent> {
            self.app.backend.ledger().events(id).await.unwrap()
        }

        pub async fn kinds(&self, id: &ExecutionId) -> Vec<EventKind> {
            self.events(id).await.into_iter().map(|e| e.kind).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::sync::Arc;

    use super::testkit::{failed, ok, timed_out, Harness};
    use super::*;
    use crate::domain::connector::{KillSwitch, SwitchTarget};
    use crate::domain::ids::{ConnectorId, SourceId, ToolName};

    fn crm() -> ConnectorId {
        ConnectorId::parse("crm").unwrap()
    }

    async fn pipeline_slots(h: &Harness) -> u32 {
        let key = SemaphoreKey::SourcePipelines(SourceId::parse("gh").unwrap());
        h.app.backend.semaphores().in_flight(&key).await.unwrap()
    }

    async fn connector_slots(h: &Harness) -> u32 {
        h.app
            .backend
            .connectors()
            .state(&crm())
            .await
            .unwrap()
            .slots
            .in_flight
    }

    fn received(id: &ExecutionId, stage: u32, not_before: Option<Timestamp>) -> ReceivedMessage {
        ReceivedMessage {
            message: StageMessage {
                execution_id: id.clone(),
                stage,
                not_before,
                wait: 0,
            },
            receipt: "injected".into(),
            receive_count: 1,
        }
    }

    #[tokio::test]
    async fn two_stages_run_in_order_and_the_second_reads_the_first() {
        let h = Harness::new(vec![ok(json!({"id": 17})), ok(json!({"sent": true}))]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;

        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(pipeline_slots(&h).await, 1, "held while the run goes on");
        let mid = h.record(&id).await;
        assert_eq!(
            (mid.status, mid.stage, mid.lease),
            (ExecutionStatus::Running, 1, None)
        );
        assert_eq!(h.step().await, Disposition::Completed);

        let done = h.record(&id).await;
        assert_eq!(done.status, ExecutionStatus::Succeeded);
        assert_eq!(done.lease, None);
        assert_eq!(
            h.kinds(&id).await,
            [
                EventKind::Received,
                EventKind::StageStarted,
                EventKind::ToolCalled,
                EventKind::ToolSucceeded,
                EventKind::StageSucceeded,
                EventKind::StageStarted,
                EventKind::ToolCalled,
                EventKind::ToolSucceeded,
                EventKind::Succeeded,
            ]
        );
        let events = h.events(&id).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
        assert_eq!(events[3].detail["output"], json!({"id": 17}));
        assert_eq!(events[3].stage, Some(0));
        assert_eq!(events[7].stage, Some(1));

        let calls = h.tools.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].url, "http://crm.test/leads");
        assert_eq!(calls[0].method, "POST");
        assert_eq!(
            calls[0].body,
            Some(json!({"name": "Ada", "execution": id.as_str()}))
        );
        assert_eq!(
            calls[0].headers,
            [("Authorization".to_owned(), "Bearer t".to_owned())]
        );
        assert_eq!(calls[0].idempotency_key, format!("{id}:0"));
        assert_eq!(calls[1].url, "http://crm.test/leads/17/notify");
        assert_eq!(
            calls[1].body,
            Some(json!({"lead": 17, "text": "Lead 17 for acme"}))
        );
        assert_eq!(calls[1].idempotency_key, format!("{id}:1"));

        assert_eq!(pipeline_slots(&h).await, 0, "released at the end");
        assert_eq!(connector_slots(&h).await, 0);
        assert!(h.app.backend.queue.is_empty());
    }

    #[tokio::test]
    async fn a_retryable_failure_is_retried_after_backoff_with_the_same_key() {
        let h = Harness::new(vec![failed(503, None), ok(json!({"id": 1}))]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let start = h.now();

        let Disposition::RetryScheduled {
            attempt,
            delay_secs,
        } = h.step().await
        else {
            panic!("a retry");
        };
        assert_eq!(attempt, 1);
        assert!((10..=40).contains(&delay_secs), "{delay_secs}");
        let record = h.record(&id).await;
        assert_eq!(record.attempt_count, 1);
        assert_eq!(record.status, ExecutionStatus::Running);
        assert_eq!(record.lease, None);
        assert_eq!(record.not_before, Some(start.plus_secs(delay_secs as i64)));
        let events = h.events(&id).await;
        let retry = events.last().unwrap();
        assert_eq!(retry.kind, EventKind::RetryScheduled);
        assert_eq!(retry.detail["attempt"], json!(1));
        assert_eq!(events[events.len() - 2].kind, EventKind::ToolFailed);
        assert_eq!(events[events.len() - 2].detail["status"], json!(503));
        assert_eq!(connector_slots(&h).await, 0);

        // The copy is on the queue, invisible until the backoff is over; the original is gone.
        assert_eq!(h.app.backend.queue.len(), 1);
        h.clock.advance_secs(delay_secs as i64 - 1);
        assert!(h.receive().await.is_none());
        h.clock.advance_secs(1);
        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(h.record(&id).await.attempt_count, 0);

        let calls = h.tools.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
        assert_eq!(calls[0].idempotency_key, format!("{id}:0"));
    }

    #[tokio::test]
    async fn retry_after_is_honoured_up_to_the_ceiling() {
        let h = Harness::new(vec![failed(429, Some("35")), failed(429, Some("3600"))]);
        h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(
            h.step().await,
            Disposition::RetryScheduled {
                attempt: 1,
                delay_secs: 35
            }
        );
        h.clock.advance_secs(35);
        assert_eq!(
            h.step().await,
            Disposition::RetryScheduled {
                attempt: 2,
                delay_secs: 40
            }
        );
    }

    #[tokio::test]
    async fn exhausted_retries_block_the_run() {
        let h = Harness::new(vec![failed(500, None), timed_out(), failed(502, None)]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        for attempt in 1..=2 {
            assert!(matches!(
                h.step().await,
                Disposition::RetryScheduled { attempt: a, .. } if a == attempt
            ));
            h.clock.advance_secs(40);
        }
        assert_eq!(
            h.step().await,
            Disposition::Blocked {
                reason: "retries_exhausted".into()
            }
        );
        let record = h.record(&id).await;
        assert_eq!(record.status, ExecutionStatus::Blocked);
        assert_eq!(record.blocked_reason.as_deref(), Some("retries_exhausted"));
        assert_eq!(record.attempt_count, 3);
        assert_eq!(record.lease, None);
        let events = h.events(&id).await;
        let blocked = events.last().unwrap();
        assert_eq!(blocked.kind, EventKind::Blocked);
        assert_eq!(blocked.detail["attempt_count"], json!(3));
        assert_eq!(h.tools.calls().len(), 3);
        assert_eq!(pipeline_slots(&h).await, 0);
        assert!(h.app.backend.queue.is_empty());
    }

    /// The EMF lines the harness's recorder wrote, parsed.
    fn emf(h: &Harness) -> Vec<Json> {
        h.app
            .metrics
            .emf_lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("an EMF line is JSON"))
            .collect()
    }

    /// The lines that carry metric `name`.
    fn lines_of(h: &Harness, name: &str) -> Vec<Json> {
        emf(h)
            .into_iter()
            .filter(|line| line.get(name).is_some())
            .collect()
    }

    #[tokio::test]
    async fn a_run_blocked_by_loop_protection_emits_its_metrics_as_emf() {
        let h = Harness::new(vec![failed(500, None), timed_out(), failed(502, None)]);
        h.seed("r1", json!({"name": "Ada"})).await;
        for _ in 1..=2 {
            h.step().await;
            h.clock.advance_secs(40);
        }
        assert!(matches!(h.step().await, Disposition::Blocked { .. }));
        let tool = h.tools.calls()[0].tool.to_string();

        let calls = lines_of(&h, "tool_latency_ms");
        assert_eq!(calls.len(), 3, "one line per call");
        let latencies: Vec<f64> = calls
            .iter()
            .map(|l| l["tool_latency_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(latencies, [7.0, 10_000.0, 7.0]);
        for line in &calls {
            assert_eq!(line["tool_error"], json!(1.0));
            assert_eq!(line["Connector"], json!("crm"));
            assert_eq!(line["Tool"], json!(tool));
            let directive = &line["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], json!("Sluice"));
            assert_eq!(
                directive["Dimensions"],
                json!([["Connector"], ["Connector", "Tool"], []])
            );
            assert_eq!(
                directive["Metrics"],
                json!([
                    {"Name": "tool_latency_ms", "Unit": "Milliseconds"},
                    {"Name": "tool_error", "Unit": "Count"}
                ])
            );
        }
        let retries = lines_of(&h, "pipeline_retry_total");
        assert_eq!(retries.len(), 2);
        assert_eq!(retries[0]["Pipeline"], json!("review"));
        let outcomes = lines_of(&h, "pipeline_run_outcome_total");
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0]["Outcome"], json!("blocked"));
        assert_eq!(lines_of(&h, "pipeline_loop_blocked_total").len(), 1);
        assert!(lines_of(&h, "policy_violations_total").is_empty());
        let m = &h.app.metrics;
        let by = [("Connector", "crm"), ("Tool", tool.as_str())];
        assert_eq!(m.total(telemetry::TOOL_ERROR, &by), 3.0);
        assert_eq!(m.total(telemetry::TOOL_LATENCY_MS, &by), 10_014.0);
    }

    #[tokio::test]
    async fn a_success_counts_one_outcome_and_errors_of_zero() {
        let h = Harness::new(vec![ok(json!({"id": 1})), ok(json!({"sent": true}))]);
        h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(h.step().await, Disposition::Completed);
        let calls = lines_of(&h, "tool_error");
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|l| l["tool_error"] == json!(0.0)));
        let outcomes = lines_of(&h, "pipeline_run_outcome_total");
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0]["Outcome"], json!("succeeded"));
    }

    #[tokio::test]
    async fn a_recorded_success_is_not_called_again_after_a_crash() {
        let h = Harness::new(vec![ok(json!({"sent": true}))]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        // A worker called stage 0's tool and recorded the success, then died before the
        // record moved on.
        let succeeded = LedgerEvent {
            execution_id: id.clone(),
            seq: 2,
            at: h.now(),
            kind: EventKind::ToolSucceeded,
            stage: Some(0),
            detail: json!({"status": 200, "output": {"id": 17}}),
        };
        h.app.backend.ledger().append(succeeded).await.unwrap();

        assert_eq!(h.step().await, Disposition::Advanced);
        assert!(
            h.tools.calls().is_empty(),
            "stage 0's side effect is not repeated"
        );
        assert_eq!(h.record(&id).await.stage, 1);
        let skipped = lines_of(&h, "side_effect_skipped_total");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0]["Connector"], json!("crm"));

        // Stage 1 was never called: it is.
        assert_eq!(h.step().await, Disposition::Completed);
        assert_eq!(h.tools.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_non_retryable_answer_blocks_at_once() {
        let h = Harness::new(vec![failed(404, None)]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(
            h.step().await,
            Disposition::Blocked {
                reason: "non_retryable:404".into()
            }
        );
        let record = h.record(&id).await;
        assert_eq!(record.status, ExecutionStatus::Blocked);
        assert_eq!(record.attempt_count, 1);
        assert_eq!(h.tools.calls().len(), 1);
        assert_eq!(pipeline_slots(&h).await, 0);
        assert!(h.app.backend.queue.is_empty());
        // A BLOCKED status, but the run's own failure: Outcome=failed, like its run.failed alert.
        let outcomes = lines_of(&h, "pipeline_run_outcome_total");
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert_eq!(outcomes[0]["Outcome"], json!("failed"));
    }

    #[tokio::test]
    async fn a_tool_marked_retry_on_4xx_retries_a_404() {
        let h = Harness::new(vec![failed(404, None)]);
        h.seed_from("probe", "p1", json!({})).await;
        assert!(matches!(
            h.step().await,
            Disposition::RetryScheduled { attempt: 1, .. }
        ));
    }

    /// The `until` of a deferral by `cause`; panics on anything else.
    fn deferred(disposition: Disposition, cause: DeferCause) -> Timestamp {
        match disposition {
            Disposition::Deferred { reason, until } if reason == cause => until,
            other => panic!("expected a deferral by {cause}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_open_breaker_defers_without_spending_an_attempt() {
        let h = Harness::with_config(vec![failed(500, None)], |c| {
            c.breaker.failure_threshold = 1;
        });
        let first = h.seed("r1", json!({"name": "Ada"})).await;
        let second = h.seed("r2", json!({"name": "Bob"})).await;
        assert!(matches!(h.step().await, Disposition::RetryScheduled { .. }));
        assert_eq!(h.record(&first).await.attempt_count, 1);

        let open_until = h.now().plus_secs(h.app.config.breaker.cooldown_secs);
        let until = deferred(h.step().await, DeferCause::BreakerOpen);
        // Spread over the window after `open_until`, never before it.
        assert!(until >= open_until && until < open_until.plus_secs(BREAKER_SPREAD_SECS));
        let record = h.record(&second).await;
        assert_eq!(record.attempt_count, 0);
        assert_eq!(record.lease, None);
        assert_eq!(record.not_before, Some(until));
        let events = h.events(&second).await;
        let deferred = events.last().unwrap();
        assert_eq!(deferred.kind, EventKind::Deferred);
        assert_eq!(deferred.detail["reason"], json!("breaker_open"));
        let opened = lines_of(&h, "breaker_transitions_total");
        assert_eq!(opened.len(), 1);
        assert_eq!(
            (&opened[0]["Connector"], &opened[0]["To"]),
            (&json!("crm"), &json!("open"))
        );
        let throttled = lines_of(&h, "pipeline_throttled_total");
        assert_eq!(throttled.len(), 1);
        assert_eq!(throttled[0]["Cause"], json!("breaker_open"));
        assert_eq!(
            h.tools.calls().len(),
            1,
            "no call while the breaker is open"
        );
    }

    /// 300 runs behind a breaker that stays open for 10 minutes (memory backend, fake clock,
    /// the real `run_batch` over the queue): each run writes at most one DEFERRED, the
    /// connector item is written at most N / 10 times in any second after the arrival burst
    /// (the waiters arrive over 60 s after `open_until`, two writes each), no
    /// message is dead-lettered, the probe is taken exactly once, and all 300 succeed.
    #[tokio::test]
    async fn a_long_breaker_open_backlog_waits_within_its_bounds() {
        const RUNS: usize = 300;
        let h = Harness::with_config(vec![failed(500, None)], |c| {
            c.breaker.failure_threshold = 1;
            c.breaker.cooldown_secs = 600;
            c.pipeline_concurrency_limit = 1_000;
        });
        let opener = h.seed_from("probe", "opener", json!({})).await;
        assert!(matches!(h.step().await, Disposition::RetryScheduled { .. }));
        let opened_at = h.now();
        let mut ids = vec![opener];
        for n in 0..RUNS - 1 {
            ids.push(h.seed_from("probe", &format!("r{n}"), json!({})).await);
        }
        let queue = h.app.backend.queue();
        let mut writes_per_second: Vec<(i64, usize)> = Vec::new();
        for second in 0..2_000i64 {
            let calls_before = h.tools.calls().len();
            let mut connector_deferrals = 0;
            loop {
                let batch = queue.receive(10, 60, 0).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for (receipt, result) in run_batch(&h.app, &h.worker, batch).await {
                    match result {
                        Ok(Disposition::Deferred {
                            reason:
                                DeferCause::BreakerOpen
                                | DeferCause::ProbeInFlight
                                | DeferCause::ConnectorSlotsFull,
                            ..
                        }) => {
                            connector_deferrals += 1;
                            queue.ack(&receipt).await.unwrap();
                        }
                        Ok(_) => queue.ack(&receipt).await.unwrap(),
                        Err(error) => {
                            assert!(error.is_retryable(), "{error}");
                            queue.retry_later(&receipt, 5).await.unwrap();
                        }
                    }
                }
            }
            // An admission deferral is one write; a call is two (admit, settle).
            let calls = h.tools.calls().len() - calls_before;
            writes_per_second.push((second, connector_deferrals + 2 * calls));
            if queue.is_empty() {
                break;
            }
            h.clock.advance_secs(1);
        }
        assert!(queue.is_empty(), "the backlog drained");
        assert!(queue.dead_letters().is_empty(), "nothing dead-lettered");
        for id in &ids {
            let record = h.record(id).await;
            assert_eq!(record.status, ExecutionStatus::Succeeded, "{id}");
            let kinds = h.kinds(id).await;
            let deferred = kinds.iter().filter(|k| **k == EventKind::Deferred).count();
            assert!(deferred <= 1, "{id}: {kinds:?}");
            let started = kinds
                .iter()
                .filter(|k| **k == EventKind::StageStarted)
                .count();
            // The opener started twice (its failed call, then its retry); the others once.
            assert!(started <= 2, "{id}: {kinds:?}");
            // RECEIVED, DEFERRED, STAGE_STARTED, TOOL_CALLED, TOOL_SUCCEEDED, SUCCEEDED; the
            // opener adds its failed attempt (STAGE_STARTED, TOOL_CALLED, TOOL_FAILED,
            // RETRY_SCHEDULED).
            let bound = if *id == ids[0] { 10 } else { 6 };
            assert!(
                kinds.len() <= bound,
                "{id}: {} events: {kinds:?}",
                kinds.len()
            );
        }
        // The failed call, the probe, then every other run once: nothing called twice.
        assert_eq!(h.tools.calls().len(), RUNS + 1);
        let mut probes = 0;
        for id in &ids {
            probes += h
                .events(id)
                .await
                .iter()
                .filter(|e| e.kind == EventKind::ToolCalled && e.detail["probe"] == json!(true))
                .count();
        }
        assert_eq!(probes, 1, "the first probe, exactly once");
        let after_burst: Vec<_> = writes_per_second.iter().skip(1).collect();
        let peak = after_burst.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let arrivals_start = opened_at.plus_secs(600);
        eprintln!(
            "connector item writes: peak {peak}/s after the burst, {} s in all, open until {arrivals_start:?}",
            writes_per_second.len()
        );
        // Documented bound: N / 10 in any second (the arrivals after `open_until` average
        // N / 60 a second, at most two writes each).
        assert!(
            peak <= RUNS / 10,
            "peak {peak} writes/s: {writes_per_second:?}"
        );
    }

    /// Limit 1, slot TTL 200 s, two runs; the first waits at its second stage (connector slots
    /// taken elsewhere) for 1,000 s, five times the TTL. Its polls renew its slot, so the
    /// second never starts (never RUNNING, never called) until the first ends, and the slot is
    /// released exactly once.
    #[tokio::test]
    async fn a_run_longer_than_the_slot_ttl_keeps_its_pipeline_slot() {
        let h = Harness::with_config(vec![], |c| {
            c.pipeline_concurrency_limit = 1;
            c.pipeline_concurrency_ttl_secs = 200;
        });
        let first = h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(h.step().await, Disposition::Advanced);
        let second = h.seed("r2", json!({"name": "Bob"})).await;
        // Two calls elsewhere hold both connector slots for 1,000 s.
        let mut tickets = Vec::new();
        for _ in 0..2 {
            let req = AdmissionRequest {
                connector: crm(),
                tool: ToolName::parse("notify").unwrap(),
                tenant: crate::domain::ids::TenantId::parse("other").unwrap(),
                holder: HolderId::random(),
                limit: 2,
                slot_ttl_secs: 5_000,
                settings: h.app.config.breaker,
                now: h.now(),
            };
            match h.app.backend.connectors().admit(&req).await.unwrap() {
                Admission::Admitted(ticket) => tickets.push(ticket),
                other => panic!("{other:?}"),
            }
        }
        let queue = h.app.backend.queue();
        let mut first_waits = 0;
        for second_of_run in 0..1_300i64 {
            if second_of_run == 1_000 {
                for ticket in &tickets {
                    let settings = h.app.config.breaker;
                    let connectors = h.app.backend.connectors();
                    connectors
                        .settle(ticket, BreakerSignal::Healthy, &settings, h.now())
                        .await
                        .unwrap();
                }
            }
            while let Some(received) = h.receive().await {
                let outcome = run_message(&h.app, &received, &h.worker).await.unwrap();
                if received.message.execution_id == first {
                    first_waits += usize::from(matches!(outcome, Disposition::Deferred { .. }));
                }
                queue.ack(&received.receipt).await.unwrap();
                let (a, b) = (h.record(&first).await, h.record(&second).await);
                assert!(pipeline_slots(&h).await <= 1);
                if !a.status.is_terminal() {
                    assert_ne!(
                        b.status,
                        ExecutionStatus::Running,
                        "both running at {second_of_run} s"
                    );
                }
            }
            h.clock.advance_secs(1);
        }
        assert!(first_waits >= 9, "the first run polled {first_waits} times");
        assert_eq!(h.record(&first).await.status, ExecutionStatus::Succeeded);
        assert_eq!(h.record(&second).await.status, ExecutionStatus::Succeeded);
        // r1 stage 0, r1 stage 1, r2 stage 0, r2 stage 1.
        assert_eq!(h.tools.calls().len(), 4);
        assert_eq!(
            pipeline_slots(&h).await,
            0,
            "released once per run, not below zero"
        );
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn full_pipeline_slots_defer_until_a_run_ends() {
        let h = Harness::with_config(vec![], |c| c.pipeline_concurrency_limit = 1);
        let first = h.seed("r1", json!({"name": "Ada"})).await;
        let second = h.seed("r2", json!({"name": "Bob"})).await;
        assert_eq!(h.step().await, Disposition::Advanced);
        let until = deferred(h.step().await, DeferCause::PipelineSlotsFull);
        assert!(until >= h.now().plus_secs(1) && until <= h.now().plus_secs(5));
        let waiting = h.record(&second).await;
        assert_eq!(waiting.status, ExecutionStatus::Queued);
        assert_eq!((waiting.attempt_count, waiting.lease), (0, None));
        assert_eq!(h.kinds(&second).await, [EventKind::Received]);

        assert_eq!(h.step().await, Disposition::Completed);
        assert_eq!(h.record(&first).await.status, ExecutionStatus::Succeeded);
        h.clock.advance_secs(5);
        assert_eq!(h.step().await, Disposition::Advanced);
        assert_eq!(h.tools.calls().len(), 3);
    }

    #[tokio::test]
    async fn full_connector_slots_defer_without_a_call() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        for _ in 0..2 {
            let req = AdmissionRequest {
                connector: crm(),
                tool: ToolName::parse("create_lead").unwrap(),
                tenant: crate::domain::ids::TenantId::parse("other").unwrap(),
                holder: HolderId::random(),
                limit: 2,
                slot_ttl_secs: 60,
                settings: h.app.config.breaker,
                now: h.now(),
            };
            let admitted = h.app.backend.connectors().admit(&req).await.unwrap();
            assert!(matches!(admitted, Admission::Admitted(_)));
        }
        let until = deferred(h.step().await, DeferCause::ConnectorSlotsFull);
        assert!(until >= h.now().plus_secs(1) && until <= h.now().plus_secs(5));
        assert_eq!(h.record(&id).await.attempt_count, 0);
        assert!(h.tools.calls().is_empty());
        assert_eq!(h.kinds(&id).await.last(), Some(&EventKind::Deferred));
    }

    #[tokio::test]
    async fn a_kill_switch_blocks_the_run() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let switch = KillSwitch {
            target: SwitchTarget::Connector { connector: crm() },
            set_by: "ops@example.com".into(),
            set_at: h.now(),
            reason: "incident 42".into(),
        };
        h.app
            .backend
            .connectors()
            .set_switch(switch, &[crm()])
            .await
            .unwrap();
        let reason = "kill_switch:connector#crm".to_owned();
        assert_eq!(
            h.step().await,
            Disposition::Blocked {
                reason: reason.clone()
            }
        );
        let record = h.record(&id).await;
        assert_eq!(record.status, ExecutionStatus::Blocked);
        assert_eq!(record.blocked_reason, Some(reason));
        let events = h.events(&id).await;
        let blocked = events.last().unwrap();
        assert_eq!(blocked.kind, EventKind::Blocked);
        assert_eq!(blocked.detail["set_by"], json!("ops@example.com"));
        assert_eq!(blocked.detail["switch_reason"], json!("incident 42"));
        assert!(h.tools.calls().is_empty());
        let refused = lines_of(&h, "policy_violations_total");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0]["Connector"], json!("crm"));
        assert_eq!(pipeline_slots(&h).await, 0);
        let outcomes = lines_of(&h, "pipeline_run_outcome_total");
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert_eq!(outcomes[0]["Outcome"], json!("blocked"));
    }

    #[tokio::test]
    async fn a_message_for_a_finished_execution_has_no_effect() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        h.step().await;
        assert_eq!(h.step().await, Disposition::Completed);
        let before = (h.record(&id).await, h.events(&id).await.len());

        h.send(&id, 0, None).await;
        assert_eq!(
            h.step().await,
            Disposition::Skipped {
                why: SkipReason::Finished
            }
        );
        assert_eq!((h.record(&id).await, h.events(&id).await.len()), before);
        assert_eq!(h.tools.calls().len(), 2);
        assert!(h.app.backend.queue.is_empty());

        let unknown = received(&ExecutionId::random(), 0, None);
        let outcome = run_message(&h.app, &unknown, &h.worker).await.unwrap();
        assert_eq!(
            outcome,
            Disposition::Skipped {
                why: SkipReason::NotFound
            }
        );
    }

    #[tokio::test]
    async fn a_lease_held_elsewhere_defers() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let other = HolderId::random();
        let executions = h.app.backend.executions();
        executions
            .acquire_lease(&id, &other, h.now(), 900)
            .await
            .unwrap();
        let version = h.record(&id).await.version;

        let until = deferred(h.step().await, DeferCause::LeaseHeld);
        assert!(until >= h.now().plus_secs(1) && until <= h.now().plus_secs(5));
        assert_eq!(h.record(&id).await.version, version, "nothing written");
        assert!(h.tools.calls().is_empty());
        assert_eq!(h.app.backend.queue.len(), 1, "the copy");

        // The lease runs out sooner than the usual wait: the copy comes back when it does.
        executions
            .acquire_lease(&id, &other, h.now().plus_secs(-898), 900)
            .await
            .unwrap();
        let copy = h.receive().await;
        assert!(copy.is_none());
        h.clock.advance_secs(5);
        let copy = h.receive().await.unwrap();
        let again = run_message(&h.app, &copy, &h.worker).await.unwrap();
        assert_eq!(
            again,
            Disposition::Advanced,
            "the lease expired: taken over"
        );
    }

    #[tokio::test]
    async fn not_before_in_the_future_defers() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let version = h.record(&id).await.version;
        let later = h.now().plus_secs(100);
        let outcome = run_message(&h.app, &received(&id, 0, Some(later)), &h.worker)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Disposition::Deferred {
                reason: DeferCause::NotBefore,
                until: later
            }
        );
        assert_eq!(h.record(&id).await.version, version, "no lease taken");
        assert_eq!(
            h.app.backend.queue.len(),
            2,
            "the seed message and the copy"
        );

        // The record's own not_before (a rate delay) holds back a message without one.
        let delayed = h
            .record_only("gh", "r2", json!({"name": "Bob"}), Some(later))
            .await;
        let outcome = run_message(&h.app, &received(&delayed, 0, None), &h.worker)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Disposition::Deferred {
                reason: DeferCause::NotBefore,
                until: later
            }
        );
        assert_eq!(h.record(&delayed).await.lease, None);
        assert!(h.tools.calls().is_empty());
    }

    #[tokio::test]
    async fn a_stale_stage_message_is_dropped_and_the_lease_given_back() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(h.step().await, Disposition::Advanced);
        let outcome = run_message(&h.app, &received(&id, 0, None), &h.worker)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Disposition::Skipped {
                why: SkipReason::StaleStage
            }
        );
        assert_eq!(h.record(&id).await.lease, None);
        assert_eq!(h.tools.calls().len(), 1);
        assert_eq!(h.step().await, Disposition::Completed);
    }

    #[tokio::test]
    async fn a_template_that_finds_nothing_blocks_the_run() {
        let h = Harness::new(vec![]);
        let id = h.seed("r1", json!({"title": "no name"})).await;
        assert_eq!(
            h.step().await,
            Disposition::Blocked {
                reason: "template:payload/name".into()
            }
        );
        assert_eq!(h.record(&id).await.status, ExecutionStatus::Blocked);
        assert!(h.tools.calls().is_empty());
        assert_eq!(pipeline_slots(&h).await, 0);
    }

    #[tokio::test]
    async fn an_oversize_output_is_recorded_as_truncated() {
        let blob = "x".repeat(MAX_OUTPUT_BYTES);
        let h = Harness::new(vec![ok(json!({ "id": 5, "blob": blob }))]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        assert_eq!(h.step().await, Disposition::Advanced);
        let events = h.events(&id).await;
        let succeeded = events.last().unwrap();
        assert_eq!(succeeded.kind, EventKind::StageSucceeded);
        let tool = &events[events.len() - 2];
        assert_eq!(tool.detail["output_truncated"], json!(true));
        assert!(tool.detail.get("output").is_none());
        // The next stage reads the output, which is not there.
        assert_eq!(
            h.step().await,
            Disposition::Blocked {
                reason: "template:stages.create/id".into()
            }
        );
    }

    #[tokio::test]
    async fn a_batch_runs_duplicates_of_one_execution_one_after_another() {
        let h = Harness::new(vec![]);
        let first = h.seed("r1", json!({"name": "Ada"})).await;
        h.send(&first, 0, None).await;
        let second = h.seed("r2", json!({"name": "Bob"})).await;
        let messages = h.app.backend.queue().receive(10, 60, 0).await.unwrap();
        assert_eq!(messages.len(), 3);
        let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();

        let results = run_batch(&h.app, &h.worker, messages).await;
        let got: Vec<(String, Disposition)> = results
            .into_iter()
            .map(|(receipt, result)| (receipt, result.unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (receipts[0].clone(), Disposition::Advanced),
                (
                    receipts[1].clone(),
                    Disposition::Skipped {
                        why: SkipReason::StaleStage
                    }
                ),
                (receipts[2].clone(), Disposition::Advanced),
            ]
        );
        assert_eq!(h.tools.calls().len(), 2);
        assert_eq!(h.record(&first).await.stage, 1);
        assert_eq!(h.record(&second).await.stage, 1);
    }

    #[tokio::test]
    async fn the_poll_loop_runs_a_pipeline_to_the_end_and_stops() {
        let h = Harness::new(vec![ok(json!({"id": 3}))]);
        let id = h.seed("r1", json!({"name": "Ada"})).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let watcher = async {
            for _ in 0..500 {
                if h.record(&id).await.status == ExecutionStatus::Succeeded {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            stop.send(true).unwrap();
        };
        let (handled, ()) = tokio::join!(poll_queue(&h.app, h.worker.clone(), stopped), watcher);
        assert_eq!(handled, 2);
        assert_eq!(h.record(&id).await.status, ExecutionStatus::Succeeded);
        assert!(h.app.backend.queue.is_empty(), "every message acked");
    }

    #[test]
    fn pipeline_slot_holders_follow_the_execution_id() {
        let id = ExecutionId::parse("exe_abc").unwrap();
        assert_eq!(pipeline_slot_holder(&id).as_str(), "hld_exe_abc");
        let long = ExecutionId::parse("e".repeat(256)).unwrap();
        let holder = pipeline_slot_holder(&long);
        assert_eq!(holder, pipeline_slot_holder(&long));
        assert!(holder.as_str().starts_with("hld_"));
    }

    /// A ledger that throttles the first `throttles` appends of TOOL_SUCCEEDED.
    #[derive(Debug, Clone)]
    struct ThrottledLedger {
        inner: crate::adapters::memory::MemoryLedger,
        throttles: Arc<std::sync::atomic::AtomicU32>,
        refused: Arc<std::sync::atomic::AtomicU32>,
    }

    impl Ledger for ThrottledLedger {
        async fn append(&self, event: LedgerEvent) -> crate::ports::StoreResult<AppendOutcome> {
            use std::sync::atomic::Ordering;
            if event.kind == EventKind::ToolSucceeded
                && self
                    .throttles
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::Throttled {
                    operation: "ledger.append",
                    source: "injected throttle".into(),
                });
            }
            self.inner.append(event).await
        }

        async fn events(&self, id: &ExecutionId) -> crate::ports::StoreResult<Vec<LedgerEvent>> {
            self.inner.events(id).await
        }
    }

    /// The memory backend with [`ThrottledLedger`].
    #[derive(Debug, Clone)]
    struct ThrottledBackend {
        memory: crate::adapters::backend::MemoryBackend,
        ledger: ThrottledLedger,
    }

    impl Backend for ThrottledBackend {
        type Deliveries = crate::adapters::memory::MemoryDeliveryStore;
        type Executions = crate::adapters::memory::MemoryExecutionStore;
        type Ledger = ThrottledLedger;
        type Semaphores = crate::adapters::memory::MemorySemaphoreStore;
        type Connectors = crate::adapters::memory::MemoryConnectorStore;
        type Rate = crate::adapters::memory::MemoryRateLimiter;
        type Queue = crate::adapters::memory::MemoryStageQueue;
        type Alerts = crate::adapters::memory::MemoryAlertStore;
        type Intake = crate::adapters::memory::MemoryIntakeStore;
        fn deliveries(&self) -> &Self::Deliveries {
            &self.memory.deliveries
        }
        fn executions(&self) -> &Self::Executions {
            &self.memory.executions
        }
        fn ledger(&self) -> &Self::Ledger {
            &self.ledger
        }
        fn semaphores(&self) -> &Self::Semaphores {
            &self.memory.semaphores
        }
        fn connectors(&self) -> &Self::Connectors {
            &self.memory.connectors
        }
        fn rate(&self) -> &Self::Rate {
            &self.memory.rate
        }
        fn queue(&self) -> &Self::Queue {
            &self.memory.queue
        }
        fn alerts(&self) -> &Self::Alerts {
            &self.memory.alerts
        }
        fn intake(&self) -> &Self::Intake {
            &self.memory.intake
        }
    }

    /// Runs one single-stage (`probing`) execution whose TOOL_SUCCEEDED append is throttled
    /// `throttles` times; the tools, the result, the refusals counted and the ledger.
    async fn run_throttled(
        throttles: u32,
    ) -> (
        super::testkit::ScriptedTools,
        Result<Disposition, ExecuteError>,
        u32,
        Vec<EventKind>,
    ) {
        use std::sync::atomic::{AtomicU32, Ordering};
        // The harness seeds the execution; the same stores then run behind the throttled ledger.
        let h = Harness::new(vec![]);
        let id = h.seed_from("probe", "t1", json!({})).await;
        let received = h.receive().await.expect("queued");
        let ledger = ThrottledLedger {
            inner: h.app.backend.ledger.clone(),
            throttles: Arc::new(AtomicU32::new(throttles)),
            refused: Arc::default(),
        };
        let refused = ledger.refused.clone();
        let backend = ThrottledBackend {
            memory: h.app.backend.clone(),
            ledger,
        };
        let app = App::new(
            backend,
            h.tools.clone(),
            h.app.clock.clone(),
            (*h.app.manifest).clone(),
            (*h.app.secrets).clone(),
            (*h.app.config).clone(),
        );
        let result = run_message(&app, &received, &h.worker).await;
        let kinds = h.kinds(&id).await;
        (h.tools, result, refused.load(Ordering::SeqCst), kinds)
    }

    #[tokio::test]
    async fn a_throttled_append_after_the_call_is_retried_without_calling_again() {
        let (tools, result, refused, kinds) = run_throttled(3).await;
        assert_eq!(result.expect("the run succeeds"), Disposition::Completed);
        assert_eq!(
            refused, 3,
            "three throttled appends, then the fourth went through"
        );
        assert_eq!(tools.calls().len(), 1, "the tool is called once");
        assert_eq!(
            kinds,
            [
                EventKind::Received,
                EventKind::StageStarted,
                EventKind::ToolCalled,
                EventKind::ToolSucceeded,
                EventKind::Succeeded,
            ]
        );
    }

    #[tokio::test]
    async fn appends_after_the_call_give_up_after_their_attempts() {
        let (tools, result, refused, kinds) = run_throttled(100).await;
        let error = result.expect_err("still throttled");
        assert!(error.is_retryable(), "{error}");
        assert_eq!(refused, POST_CALL_APPEND_ATTEMPTS);
        assert_eq!(tools.calls().len(), 1);
        assert_eq!(kinds.last(), Some(&EventKind::ToolCalled));
    }

    #[test]
    fn the_append_backoff_doubles_up_to_its_ceiling() {
        let waits: Vec<u64> = (1..=7)
            .map(|n| append_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 1600, 1600]);
    }

    #[test]
    fn a_budget_refuses_a_call_that_would_end_past_the_deadline() {
        let budget = Budget::until(Instant::now() + Duration::from_secs(20));
        assert!(budget.check_call(Duration::from_secs(10)).is_ok());
        let (needed, remaining) = budget.check_call(Duration::from_secs(14)).unwrap_err();
        assert_eq!(needed, Duration::from_secs(21));
        assert!(remaining <= Duration::from_secs(20));
        assert!(Budget::unlimited()
            .check_call(Duration::from_secs(3600))
            .is_ok());
        // A call starting now may take what is left minus the after-call reserve.
        let room = budget.call_room().expect("a deadline");
        assert!(
            room <= Duration::from_secs(15) && room > Duration::from_secs(14),
            "{room:?}"
        );
        assert_eq!(Budget::unlimited().call_room(), None);
    }

    #[test]
    fn errors_say_whether_to_redeliver() {
        let id = ExecutionId::parse("exe_abc").unwrap();
        let transient = ExecuteError::Store {
            step: "ledger.append",
            execution_id: id.clone(),
            source: StoreError::Transient {
                operation: "ledger.append",
                source: "timeout".into(),
            },
        };
        assert!(transient.is_retryable());
        let rejected = ExecuteError::Store {
            step: "ledger.append",
            execution_id: id.clone(),
            source: StoreError::InvalidInput {
                operation: "ledger.append",
                detail: "too big".into(),
            },
        };
        assert!(!rejected.is_retryable());
        let contention = ExecuteError::Contention {
            what: "the ledger sequence",
            execution_id: id,
        };
        assert!(contention.is_retryable());
    }
}
