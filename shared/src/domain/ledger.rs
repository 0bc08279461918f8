//! The ledger: an append-only, ordered list of events per execution. An event, once written at
//! a sequence number, is never overwritten.

use serde::{Deserialize, Serialize};

use super::ids::ExecutionId;
use super::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Received,
    Delayed,
    Queued,
    StageStarted,
    ToolCalled,
    ToolSucceeded,
    ToolFailed,
    Deferred,
    RetryScheduled,
    StageSucceeded,
    Succeeded,
    Failed,
    Blocked,
    ReplayRequested,
    ReplayCreated,
    RecoveryLeaseExpired,
    RecoveryRequeued,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub execution_id: ExecutionId,
    /// Position in the execution's ledger, from 1, without gaps when written by the lease
    /// holder.
    pub seq: u64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub stage: Option<u32>,
    /// Free-form structured context (status codes, delays, reasons). Never secrets.
    pub detail: serde_json::Value,
}

/// The answer to an append.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// Written.
    Appended,
    /// That sequence number is taken; the event already there is unchanged.
    SeqTaken(LedgerEvent),
}
