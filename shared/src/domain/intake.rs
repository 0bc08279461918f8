//! The composite intake write: everything a new, within-rate delivery records, as one
//! all-or-nothing write (in DynamoDB one `TransactWriteItems`): its dedupe claim, its RECEIVED
//! event (seq 1), its execution (created QUEUED: its stage message goes out right after) and
//! its count in the source's current rate window.

use super::delivery::{DeliveryClaim, DeliveryRecord, DeliveryStatus};
use super::execution::{ExecutionRecord, ExecutionStatus, NewExecution};
use super::ledger::LedgerEvent;
use super::rate::window_of;
use super::time::Timestamp;

/// What [`crate::ports::IntakeStore::accept`] writes, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeWrite {
    /// The delivery's dedupe claim, kept for `ttl_secs`.
    pub claim: DeliveryClaim,
    pub ttl_secs: i64,
    /// The RECEIVED event, at seq 1 of the execution's ledger.
    pub received: LedgerEvent,
    /// The execution (`not_before` unset: a within-rate delivery runs now).
    pub execution: NewExecution,
    /// The source's deliveries per minute; the write needs a free place in the current window.
    pub rate_limit_per_minute: u32,
    pub now: Timestamp,
}

impl IntakeWrite {
    /// The delivery record the write stores: QUEUED from the start, because its execution is
    /// written with it (a redelivery has nothing to resume).
    pub fn delivery_record(&self) -> DeliveryRecord {
        DeliveryRecord {
            status: DeliveryStatus::Queued,
            ..DeliveryRecord::new(self.claim.clone(), self.now, self.ttl_secs)
        }
    }

    /// The execution record the write stores: QUEUED, version 1.
    pub fn execution_record(&self) -> ExecutionRecord {
        ExecutionRecord {
            status: ExecutionStatus::Queued,
            ..self.execution.clone().into_record(self.now)
        }
    }

    /// The rate window the delivery is counted in.
    pub fn window(&self) -> i64 {
        window_of(self.now)
    }
}

/// The answer to an intake write. Only `Accepted` wrote anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Everything was written; the execution as stored.
    Accepted(ExecutionRecord),
    /// The delivery id is claimed (and not expired); the claim as stored.
    Duplicate(DeliveryRecord),
    /// The delivery is new but its run key's execution exists; that execution.
    Joined(ExecutionRecord),
    /// The current rate window is full: the delivery must be delayed.
    OverRate,
    /// Nothing written for a reason the caller settles step by step: seq 1 of the execution's
    /// ledger is taken while the execution does not exist (an earlier attempt stopped half
    /// way), or concurrent writers kept conflicting with the transaction.
    Unsettled,
}

/// Which condition of an intake write failed, as a store observed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// The claim as stored, when the claim condition failed.
    pub claimed: Option<DeliveryRecord>,
    /// The execution as stored, when the create condition failed.
    pub existing: Option<ExecutionRecord>,
    /// Seq 1 of the ledger was taken.
    pub received_taken: bool,
    /// The current window was full.
    pub window_full: bool,
}

impl Refusals {
    /// The outcome of a write refused for these reasons, most decisive first: a duplicate
    /// needs nothing more, a joined delivery creates no work (so its rate does not matter),
    /// and a taken seq 1 without an execution needs the step-by-step path whatever the rate
    /// says. `None` if nothing was refused (the write happened).
    pub fn outcome(self) -> Option<AcceptOutcome> {
        if let Some(claim) = self.claimed {
            Some(AcceptOutcome::Duplicate(claim))
        } else if let Some(existing) = self.existing {
            Some(AcceptOutcome::Joined(existing))
        } else if self.received_taken {
            Some(AcceptOutcome::Unsettled)
        } else if self.window_full {
            Some(AcceptOutcome::OverRate)
        } else {
            None
        }
    }
}
