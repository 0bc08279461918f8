//! The error every port returns when its backend fails. Domain outcomes (a duplicate, a full
//! semaphore, a taken probe) are never errors: they are values of the port's outcome types.

use std::error::Error as StdError;

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// A backend (DynamoDB, SQS, memory) failed to do what a port asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend shed load (DynamoDB throughput exceeded, SQS throttling). Retry later.
    #[error("{operation}: throttled by the backend")]
    Throttled {
        operation: &'static str,
        #[source]
        source: Source,
    },
    /// A network fault, a timeout, a 5xx, or a transaction conflict. Retry later.
    #[error("{operation}: transient backend failure")]
    Transient {
        operation: &'static str,
        #[source]
        source: Source,
    },
    /// An item read back from the table is malformed, oversize, or holds an unknown enum value.
    #[error("{operation}: corrupt item {key}: {detail}")]
    Corrupt {
        operation: &'static str,
        key: String,
        detail: String,
        #[source]
        source: Option<Source>,
    },
    /// The backend refused the request itself (validation, access denied, missing table).
    #[error("{operation}: rejected by the backend")]
    Rejected {
        operation: &'static str,
        #[source]
        source: Source,
    },
    /// The caller's input breaks a limit of the port (too long an id, a zero limit, ...).
    #[error("{operation}: invalid input: {detail}")]
    InvalidInput {
        operation: &'static str,
        detail: String,
    },
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled { .. } | StoreError::Transient { .. }
        )
    }

    /// A corrupt-item error without an underlying source.
    pub fn corrupt(
        operation: &'static str,
        key: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        StoreError::Corrupt {
            operation,
            key: key.into(),
            detail: detail.into(),
            source: None,
        }
    }
}
