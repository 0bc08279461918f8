//! The reliability domain: pure types and decisions. Nothing here reads a clock, sleeps or does
//! I/O; the current time is always an argument.

pub mod connector;
pub mod delivery;
pub mod execution;
pub mod ids;
pub mod intake;
pub mod ledger;
pub mod rate;
pub mod retry;
pub mod semaphore;
pub mod signature;
pub mod time;
pub mod tool;
