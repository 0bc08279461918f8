//! Ports: the narrow capabilities the use cases need from the outside world. Each has a
//! DynamoDB (or SQS) adapter and a memory adapter, and one contract suite (in `tests/`) that
//! both must pass.
//!
//! Outcomes the domain cares about (a duplicate, a conflict, a full semaphore, a deferral) are
//! values; `Err(StoreError)` means the backend failed.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::alerts::model::{AlertCounts, DeadLetter, MAX_DEAD_LETTERS};
use crate::domain::connector::{
    Admission, AdmissionRequest, AdmissionTicket, BreakerSettings, BreakerSignal, ConnectorState,
    KillSwitch, LimitOverride, SettleReport, SwitchTarget,
};
use crate::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryRecord};
use crate::domain::execution::ExecutionStatus;
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionRecord, LeaseOutcome, NewExecution, UpdateOutcome,
};
use crate::domain::ids::{ConnectorId, DeliveryId, ExecutionId, HolderId, SourceId, TenantId};
use crate::domain::intake::{AcceptOutcome, IntakeWrite};
use crate::domain::ledger::{AppendOutcome, LedgerEvent};
use crate::domain::rate::RateDecision;
use crate::domain::semaphore::{AcquireOutcome, SemaphoreKey};
use crate::domain::time::Timestamp;
use crate::domain::tool::{ToolOutcome, ToolRequest};
use crate::error::StoreError;

/// Result of a port call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Delivery dedupe records.
pub trait DeliveryStore: Send + Sync {
    /// Records `claim` unless (tenant, source, delivery id) is already recorded; either way in one
    /// request. The record is kept for `ttl_secs`.
    fn claim(
        &self,
        claim: DeliveryClaim,
        now: Timestamp,
        ttl_secs: i64,
    ) -> impl Future<Output = StoreResult<ClaimOutcome>> + Send;

    /// Marks a delivery's work as queued; false if there is no such record.
    fn mark_queued(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Reads one record.
    fn get(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> impl Future<Output = StoreResult<Option<DeliveryRecord>>> + Send;
}

/// Execution records.
pub trait ExecutionStore: Send + Sync {
    /// Creates the execution unless its id exists; in one request either way.
    fn create(
        &self,
        new: NewExecution,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<CreateOutcome>> + Send;

    /// Reads one record (strongly consistent).
    fn get(
        &self,
        id: &ExecutionId,
    ) -> impl Future<Output = StoreResult<Option<ExecutionRecord>>> + Send;

    /// Takes (or renews) the lease for `owner` until `now + ttl_secs`, if no other owner holds
    /// an unexpired one and the execution is not finished. Bumps the version.
    fn acquire_lease(
        &self,
        id: &ExecutionId,
        owner: &HolderId,
        now: Timestamp,
        ttl_secs: i64,
    ) -> impl Future<Output = StoreResult<LeaseOutcome>> + Send;

    /// Applies `change` if the stored version is `expected_version` and the status change (if
    /// any) moves forward.
    fn update(
        &self,
        id: &ExecutionId,
        expected_version: u64,
        change: ExecutionChange,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<UpdateOutcome>> + Send;

    /// A tenant's executions, newest first (by `created_at`), optionally of one status, at most
    /// `limit` (1..=[`MAX_PAGE`]) per page. A cursor that this store did not hand out is
    /// `StoreError::InvalidInput`. (DynamoDB: a query of GSI `gsi1`.)
    ///
    /// Bounded: one call evaluates at most [`MAX_LIST_EVALUATED`] of the tenant's executions
    /// (from the cursor on, newest first), matching or not. When it stops at that bound before
    /// the page is full, the page holds fewer than `limit` items (possibly none) and a
    /// `next_cursor` that resumes right after the last execution evaluated (even when that
    /// was the tenant's oldest: the next call then answers an empty last page). A caller walks
    /// the cursor until it is `None`, and the walk yields every match once.
    fn list(
        &self,
        tenant: &TenantId,
        status: Option<ExecutionStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = StoreResult<ExecutionPage>> + Send;

    /// Up to `limit` executions in the non-terminal `status` idle since before
    /// `updated_before` ([`ExecutionRecord::sweep_position`]: the last write, or `not_before`
    /// if later; RECEIVED by its last write), by that instant, oldest first: what the sweeper inspects. A run waiting on a
    /// future `not_before` is not listed before it. A terminal `status` is
    /// `StoreError::InvalidInput`. (DynamoDB: a query of the sparse GSI `gsi2`, whose sort key
    /// is that instant; a write that leaves `not_before` unset in the change positions the item
    /// at its own time, never later than the truth.)
    fn stale(
        &self,
        status: ExecutionStatus,
        updated_before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<ExecutionRecord>>> + Send;
}

/// One page of a tenant's executions, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionPage {
    pub items: Vec<ExecutionRecord>,
    /// Opaque; pass it back to get the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The longest page [`ExecutionStore::list`] returns.
pub const MAX_PAGE: u32 = 100;

/// The most executions one [`ExecutionStore::list`] call evaluates (reads from the store,
/// whether they match its status or not), so a request of a status few executions have never
/// scans a whole tenant. (DynamoDB: at most 5 `Query` requests of 200 items.)
pub const MAX_LIST_EVALUATED: u32 = 1000;

/// Refuses a page size outside `1..=MAX_PAGE`, as every [`ExecutionStore::list`] must.
pub fn check_page_limit(operation: &'static str, limit: u32) -> StoreResult<()> {
    if limit == 0 || limit > MAX_PAGE {
        let detail = format!("limit {limit} outside 1..={MAX_PAGE}");
        return Err(StoreError::InvalidInput { operation, detail });
    }
    Ok(())
}

/// The largest `detail` (serialized JSON) a ledger event may carry, in every adapter.
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// An event's `detail` as the ledgers store it (compact JSON text); over [`MAX_DETAIL_BYTES`]
/// is `StoreError::InvalidInput`, as every [`Ledger::append`] must refuse it.
pub fn stored_detail(operation: &'static str, detail: &serde_json::Value) -> StoreResult<String> {
    let text = serde_json::to_string(detail).map_err(|e| StoreError::InvalidInput {
        operation,
        detail: format!("detail does not serialize: {e}"),
    })?;
    if text.len() > MAX_DETAIL_BYTES {
        return Err(StoreError::InvalidInput {
            operation,
            detail: format!(
                "detail is {} bytes, over the {MAX_DETAIL_BYTES}-byte limit",
                text.len()
            ),
        });
    }
    Ok(text)
}

/// The append-only ledger.
pub trait Ledger: Send + Sync {
    /// Writes `event` at its sequence number unless that number is taken.
    fn append(&self, event: LedgerEvent)
        -> impl Future<Output = StoreResult<AppendOutcome>> + Send;

    /// Every event of an execution, by sequence number.
    fn events(
        &self,
        id: &ExecutionId,
    ) -> impl Future<Output = StoreResult<Vec<LedgerEvent>>> + Send;
}

/// Leased semaphores.
pub trait SemaphoreStore: Send + Sync {
    /// Takes a slot for `holder` until `now + ttl_secs` if fewer than `limit` are held;
    /// reclaims expired leases on the way.
    fn acquire(
        &self,
        key: &SemaphoreKey,
        holder: &HolderId,
        limit: u32,
        ttl_secs: i64,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<AcquireOutcome>> + Send;

    /// Gives a slot back; false if `holder` held none (already released, or reclaimed).
    fn release(
        &self,
        key: &SemaphoreKey,
        holder: &HolderId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// How many slots are counted as held.
    fn in_flight(&self, key: &SemaphoreKey) -> impl Future<Output = StoreResult<u32>> + Send;
}

/// Per-connector admission state: kill switches, breaker, in-flight slots.
pub trait ConnectorStore: Send + Sync {
    /// Admits a tool call, defers it, or says which kill switch refuses it.
    fn admit(&self, req: &AdmissionRequest) -> impl Future<Output = StoreResult<Admission>> + Send;

    /// Releases the ticket's slot and moves the breaker on `signal`.
    fn settle(
        &self,
        ticket: &AdmissionTicket,
        signal: BreakerSignal,
        settings: &BreakerSettings,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<SettleReport>> + Send;

    /// A consistent snapshot of one connector.
    fn state(
        &self,
        connector: &ConnectorId,
    ) -> impl Future<Output = StoreResult<ConnectorState>> + Send;

    /// Sets (or replaces) a kill switch: its durable record, and its copy on the state item of
    /// each of `connectors` it applies to.
    fn set_switch(
        &self,
        switch: KillSwitch,
        connectors: &[ConnectorId],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Clears a kill switch; false if it was not set.
    fn clear_switch(
        &self,
        target: &SwitchTarget,
        connectors: &[ConnectorId],
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Every active kill switch, by target key.
    fn switches(&self) -> impl Future<Output = StoreResult<Vec<KillSwitch>>> + Send;

    /// Sets (or replaces) the operator's concurrency limit of `connector`, which every later
    /// admission applies instead of the requested limit; `None` clears it. A limit of 0 is
    /// `StoreError::InvalidInput`. (DynamoDB: one `UpdateItem` on the state item.)
    fn set_limit(
        &self,
        connector: &ConnectorId,
        limit: Option<LimitOverride>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Intake's composite write. Its own port (rather than a method of [`DeliveryStore`]) because it
/// spans the items of four stores: the delivery claim, the ledger's RECEIVED event, the
/// execution and the rate window counter.
pub trait IntakeStore: Send + Sync {
    /// Writes `write`'s claim (unless the delivery id is claimed and unexpired), its RECEIVED
    /// event at seq 1 (unless taken), its execution, QUEUED (unless the id exists), and counts
    /// it in the current rate window (unless the window holds `rate_limit_per_minute`
    /// already): all of it or nothing, in one request (DynamoDB: one `TransactWriteItems`).
    /// When nothing is written, the outcome says why (see [`AcceptOutcome`]).
    fn accept(&self, write: IntakeWrite)
        -> impl Future<Output = StoreResult<AcceptOutcome>> + Send;
}

/// Refuses a rate limit of 0 per minute, as every [`RateLimiter`] and [`IntakeStore`] must.
pub fn check_rate_limit(operation: &'static str, limit_per_minute: u32) -> StoreResult<()> {
    if limit_per_minute == 0 {
        return Err(StoreError::InvalidInput {
            operation,
            detail: "limit_per_minute must be at least 1".into(),
        });
    }
    Ok(())
}

/// The per-source intake rate window.
pub trait RateLimiter: Send + Sync {
    /// Counts one delivery of `source` and says whether it runs now or how long it waits: in the
    /// current minute while it holds fewer than `limit_per_minute`, else at the next position of
    /// the source's backlog (`domain::rate`), in a constant number of requests however long the
    /// backlog (DynamoDB: 1 `UpdateItem` within, 3 over, 4 when the backlog starts again).
    fn register(
        &self,
        source: &SourceId,
        limit_per_minute: u32,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<RateDecision>> + Send;
}

/// SQS's own cap on a message delay.
pub const MAX_QUEUE_DELAY_SECS: u64 = 900;

/// A unit of work on the stage queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageMessage {
    pub execution_id: ExecutionId,
    pub stage: u32,
    /// Earliest time the stage may run; delays beyond SQS's 900 s are chained through it.
    pub not_before: Option<Timestamp>,
    /// How many times in a row this stage has been deferred (slots full, breaker open, probe
    /// in flight, lease held) since it last started: 0 on a fresh message. It sets the
    /// deferral backoff (`domain::retry::DeferBackoff`) and says whether a deferral opens a
    /// wait episode (0: one DEFERRED event) or repeats one (no event). Absent in older
    /// messages, read as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A message as received, with what is needed to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message: StageMessage,
    pub receipt: String,
    /// How many times this message (this send) has been received.
    pub receive_count: u32,
}

/// The stage queue.
pub trait StageQueue: Send + Sync {
    /// Sends `message`, delayed until its `not_before` (at most 900 s at once; the rest is
    /// chained by [`StageQueue::defer`] on receipt).
    fn send(
        &self,
        message: &StageMessage,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Receives up to `max` visible messages, hiding them for `visibility_secs`, waiting up to
    /// `wait_secs` for one to arrive.
    fn receive(
        &self,
        max: u32,
        visibility_secs: u32,
        wait_secs: u32,
    ) -> impl Future<Output = StoreResult<Vec<ReceivedMessage>>> + Send;

    /// Deletes a received message.
    fn ack(&self, receipt: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Re-sends `received` to run at `until` and acknowledges the original, so a deferral
    /// never counts toward the receive count (nor the DLQ's redrive).
    fn defer(
        &self,
        received: &ReceivedMessage,
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Makes a received message visible again after `delay_secs` (a failed attempt: this one
    /// does count toward the receive count).
    fn retry_later(
        &self,
        receipt: &str,
        delay_secs: u32,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The queue delay (seconds) for a message that should run at `not_before`, capped at 900.
pub fn queue_delay_secs(not_before: Option<Timestamp>, now: Timestamp) -> u32 {
    not_before.map_or(0, |nb| now.secs_until(nb).min(MAX_QUEUE_DELAY_SECS) as u32)
}

/// Calls tools on connectors. Failures are outcomes, never errors: a timeout, a refused
/// connection or a 5xx is a [`ToolOutcome::Failed`] the executor classifies.
pub trait ToolClient: Send + Sync {
    /// Sends `request` with its `Idempotency-Key` and waits at most its timeout.
    fn call(&self, request: &ToolRequest) -> impl Future<Output = ToolOutcome> + Send;
}

/// One implementation of every storage port, so use cases take one generic parameter instead
/// of eight.
pub trait Backend: Clone + Send + Sync + 'static {
    type Deliveries: DeliveryStore;
    type Executions: ExecutionStore;
    type Ledger: Ledger;
    type Semaphores: SemaphoreStore;
    type Connectors: ConnectorStore;
    type Rate: RateLimiter;
    type Queue: StageQueue;
    type Alerts: AlertStore + Clone;
    type Intake: IntakeStore;

    fn deliveries(&self) -> &Self::Deliveries;
    fn executions(&self) -> &Self::Executions;
    fn ledger(&self) -> &Self::Ledger;
    fn semaphores(&self) -> &Self::Semaphores;
    fn connectors(&self) -> &Self::Connectors;
    fn rate(&self) -> &Self::Rate;
    fn queue(&self) -> &Self::Queue;
    fn alerts(&self) -> &Self::Alerts;
    fn intake(&self) -> &Self::Intake;
}

/// The alert webhook's shared state: the dedup windows every instance claims, the counters
/// every instance adds to, and the dead letters an operator lists.
pub trait AlertStore: Send + Sync + 'static {
    /// Claims the dedup window of `key` for `window_secs` from `now`: true if this caller owns
    /// it (no window of `key` is open at `now`), false if another caller's window still is.
    /// One conditional write, so of many concurrent callers exactly one gets true.
    fn claim_dedup(
        &self,
        key: &str,
        window_secs: u64,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Adds `delta` to the counters (one write; nothing when `delta` is all zero).
    fn add_counts(&self, delta: AlertCounts) -> impl Future<Output = StoreResult<()>> + Send;

    /// The counters (all zero until something is added).
    fn counts(&self) -> impl Future<Output = StoreResult<AlertCounts>> + Send;

    /// Keeps `letter`, then drops the oldest letters beyond the newest `max`
    /// (1..=[`MAX_DEAD_LETTERS`], else `StoreError::InvalidInput`).
    fn push_dead_letter(
        &self,
        letter: DeadLetter,
        max: u32,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Up to `limit` (1..=[`MAX_DEAD_LETTERS`], else `StoreError::InvalidInput`) dead letters,
    /// newest first (by `at`, then id), only those of `tenant` when given.
    fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<DeadLetter>>> + Send;
}

/// Refuses a dead-letter `max` or `limit` outside `1..=MAX_DEAD_LETTERS`, as every
/// [`AlertStore`] must.
pub fn check_dead_letter_bound(operation: &'static str, n: u32) -> StoreResult<()> {
    if n == 0 || n > MAX_DEAD_LETTERS {
        let detail = format!("{n} outside 1..={MAX_DEAD_LETTERS}");
        return Err(StoreError::InvalidInput { operation, detail });
    }
    Ok(())
}

/// An alarm of this deployment that is firing, as the health and reliability summaries show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmState {
    /// The alarm's name (`<stack>-<suffix>`).
    pub name: String,
    /// Why it fired, in CloudWatch's words (the threshold and the datapoints that crossed it).
    pub reason: String,
    /// When it entered ALARM, RFC 3339 UTC; `None` if the backend did not say.
    pub since: Option<String>,
}

/// The alarms that are firing now (CloudWatch in a deployment).
pub trait AlarmSource: Send + Sync {
    /// This deployment's alarms in state ALARM, metric and composite, sorted by name.
    fn in_alarm(&self) -> impl Future<Output = StoreResult<Vec<AlarmState>>> + Send;
}

/// No alarm source: the local run without CloudWatch. Never anything in alarm.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAlarms;

impl AlarmSource for NoAlarms {
    fn in_alarm(&self) -> impl Future<Output = StoreResult<Vec<AlarmState>>> + Send {
        std::future::ready(Ok(Vec::new()))
    }
}
