//! Sluice's library crate: the reliability domain (pure), the ports it needs from the outside
//! world, the adapters that implement those ports on DynamoDB, SQS and memory, and the
//! configuration read at cold start.
//!
//! Layering: `domain` depends on nothing; `ports` names capabilities in domain terms; `adapters`
//! is the only place that imports AWS SDK crates.

pub mod adapters;
pub mod alerts;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod edge;
pub mod error;
pub mod manifest;
pub mod ports;
pub mod startup;
pub mod telemetry;
pub mod usecases;

pub use clock::{Clock, FakeClock, SystemClock};
pub use error::StoreError;
