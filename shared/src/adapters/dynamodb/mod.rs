//! DynamoDB adapters: every storage port on one table (single-table design, see
//! `docs/architecture.md`).
//!
//! Each port has its own file and struct holding a [`aws_sdk_dynamodb::Client`] and the table
//! name. Every write is one conditional request whose condition re-checks what the decision
//! behind it relied on; a failed condition is never an error but an outcome, explained from
//! the `ALL_OLD` item the same request returns. Keys and attribute names live in [`keys`], the
//! table's shape comes from `template.yaml` ([`table`]), and SDK failures map to
//! [`crate::StoreError`] in [`errors`].

mod alerts;
mod connector;
mod delivery;
pub mod errors;
mod execution;
mod expr;
mod intake;
pub mod keys;
mod ledger;
mod rate;
mod semaphore;
mod slots;
pub mod table;

pub use alerts::DynamoAlertStore;
pub use connector::DynamoConnectorStore;
pub use delivery::DynamoDeliveryStore;
pub use execution::DynamoExecutionStore;
pub use intake::{DynamoIntakeStore, CONFLICT_ROUNDS};
pub use ledger::{DynamoLedger, MAX_DETAIL_BYTES};
pub use rate::DynamoRateLimiter;
pub use semaphore::DynamoSemaphoreStore;
pub use table::{create_table, TableSpec, TableSpecError};
