//! Sluice on one machine: the intake and API routes, executor loops and the sweeper in one
//! process on 127.0.0.1, over the same use cases the Lambda functions run, with in-memory state
//! by default or DynamoDB/SQS endpoints (ministack, or AWS) with `--aws`. It serves a demo
//! connector for the example manifest and verifies API calls with HS256 dev tokens
//! ([`dev_auth`]), something only this crate does. With `--cloudwatch` it also publishes its
//! metrics with PutMetricData ([`publish`]) and lists the alarms of `SLUICE_ALARM_PREFIX`.

pub mod banner;
pub mod demo;
pub mod dev_auth;
pub mod publish;
pub mod run;
pub mod server;
pub mod state;

pub use dev_auth::DevAuth;
pub use run::{run, Command, Options};
pub use server::router;
