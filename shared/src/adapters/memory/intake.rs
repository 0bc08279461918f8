//! [`MemoryIntakeStore`]: intake's composite write over the memory stores it spans.

use super::delivery::MemoryDeliveryStore;
use super::execution::MemoryExecutionStore;
use super::ledger::{MemoryLedger, StoredEvent};
use super::lock;
use super::rate::{prune, MemoryRateLimiter};
use crate::domain::intake::{AcceptOutcome, IntakeWrite, Refusals};
use crate::ports::{check_rate_limit, IntakeStore, StoreResult};

/// The delivery, execution, ledger and rate stores of one memory backend (clones sharing their
/// state), written together.
#[derive(Debug, Clone)]
pub struct MemoryIntakeStore {
    deliveries: MemoryDeliveryStore,
    executions: MemoryExecutionStore,
    ledger: MemoryLedger,
    rate: MemoryRateLimiter,
}

impl MemoryIntakeStore {
    /// The composite write over these stores (pass clones of the backend's own).
    pub fn new(
        deliveries: MemoryDeliveryStore,
        executions: MemoryExecutionStore,
        ledger: MemoryLedger,
        rate: MemoryRateLimiter,
    ) -> Self {
        Self {
            deliveries,
            executions,
            ledger,
            rate,
        }
    }
}

impl IntakeStore for MemoryIntakeStore {
    async fn accept(&self, write: IntakeWrite) -> StoreResult<AcceptOutcome> {
        const OP: &str = "intake.accept";
        let limit = write.rate_limit_per_minute;
        check_rate_limit(OP, limit)?;
        let stored_event = StoredEvent::new(OP, write.received.clone())?;
        let delivery = write.delivery_record();
        let execution = write.execution_record();
        let (now, window) = (write.now, write.window());
        let claim_key = super::delivery::key_of(&delivery);
        let window_key = (delivery.source.clone(), window);

        // All four locks, always in this order (every other operation takes one at a time),
        // so the checks and the writes below are one atomic step, as a transaction is.
        let mut deliveries = lock(&self.deliveries.records);
        let mut executions = lock(&self.executions.records);
        let mut events = lock(&self.ledger.events);
        let mut windows = lock(&self.rate.windows);
        prune(&mut windows, now);

        let refusals = Refusals {
            claimed: deliveries
                .get(&claim_key)
                .filter(|r| r.blocks_claim_at(now))
                .cloned(),
            existing: executions.get(&execution.id).cloned(),
            received_taken: events
                .get(&execution.id)
                .is_some_and(|ledger| ledger.contains_key(&stored_event.event.seq)),
            window_full: windows.get(&window_key).is_some_and(|n| *n >= limit),
        };
        if let Some(refused) = refusals.outcome() {
            return Ok(refused);
        }
        deliveries.insert(claim_key, delivery);
        executions.insert(execution.id.clone(), execution.clone());
        events
            .entry(execution.id.clone())
            .or_default()
            .insert(stored_event.event.seq, stored_event);
        *windows.entry(window_key).or_insert(0) += 1;
        Ok(AcceptOutcome::Accepted(execution))
    }
}
