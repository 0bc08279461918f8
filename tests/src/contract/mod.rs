//! One contract suite per port. Each `run` function takes a fresh, empty store and checks the
//! port's whole observable behaviour; the same functions run against the memory adapters and
//! the DynamoDB/SQS adapters on real local engines (see `tests/tests/contract_*.rs`), so the
//! memory adapters cannot drift from DynamoDB.
//!
//! Times are near the real clock (DynamoDB's TTL reaper would otherwise delete test items), but
//! each suite moves its own `now` forward by hand instead of sleeping.

pub mod alerts;
pub mod connector;
pub mod delivery;
pub mod execution;
pub mod intake;
pub mod ledger;
pub mod queue;
pub mod rate;
pub mod semaphore;

use sluice::domain::time::Timestamp;
use sluice::{Clock, SystemClock};

/// A start time near the real clock: fifteen seconds into the current minute.
pub fn t0() -> Timestamp {
    let now = SystemClock.now().epoch_secs();
    Timestamp::from_secs(now - now.rem_euclid(60) + 15)
}

/// Parses a test id; the literals in the suites are all valid.
#[macro_export]
macro_rules! id {
    ($ty:ident, $s:expr) => {
        sluice::domain::ids::$ty::parse($s).expect("valid test id")
    };
}
