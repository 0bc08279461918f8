//! Memory adapters: every port held in process memory, with the same observable semantics as
//! the DynamoDB and SQS adapters (one contract suite runs against both). Used by the local run
//! and by fast tests.
//!
//! Each store keeps its state behind an `Arc<Mutex<..>>` (clones share it) and applies the
//! domain's pure decisions under that one lock, so every operation is atomic exactly as the
//! conditional writes of the DynamoDB adapters are. The lock is never held across an `.await`.

mod alerts;
mod connector;
mod delivery;
mod execution;
mod intake;
mod ledger;
mod queue;
mod rate;
mod semaphore;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use alerts::MemoryAlertStore;
pub use connector::MemoryConnectorStore;
pub use delivery::MemoryDeliveryStore;
pub use execution::MemoryExecutionStore;
pub use intake::MemoryIntakeStore;
pub use ledger::MemoryLedger;
pub use queue::MemoryStageQueue;
pub use rate::MemoryRateLimiter;
pub use semaphore::MemorySemaphoreStore;

/// Locks a store's state. A panic in another holder of the lock cannot leave the state half
/// written (every mutation is a few plain assignments after its decision), so a poisoned lock
/// is recovered rather than propagated as a panic.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
