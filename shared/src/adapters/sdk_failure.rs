//! How a failed AWS SDK call of a query-protocol service (SQS, CloudWatch) is reported through
//! the ports: throttled, transient or rejected, decided by the service's error code first and the
//! HTTP status second. Each adapter names its service's codes in an [`ErrorCodes`].

use std::error::Error as StdError;

// Every SDK crate re-exports this same smithy response type.
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

use crate::error::StoreError;

/// A service's error codes that say "slow down" and "try again".
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodes {
    /// Codes with which the service sheds load.
    pub throttling: &'static [&'static str],
    /// Codes of failures on the service's side that a later retry may not meet.
    pub transient: &'static [&'static str],
}

/// How a failed call is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// [`StoreError::Throttled`].
    Throttled,
    /// [`StoreError::Transient`].
    Transient,
    /// [`StoreError::Rejected`].
    Rejected,
}

impl Failure {
    /// Classifies a service error by its code, then its HTTP status.
    pub fn classify(codes: &ErrorCodes, code: Option<&str>, status: Option<u16>) -> Failure {
        match (code, status) {
            (Some(code), _) if codes.throttling.contains(&code) => Failure::Throttled,
            (_, Some(429)) => Failure::Throttled,
            (Some(code), _) if codes.transient.contains(&code) => Failure::Transient,
            (_, Some(500..=599)) => Failure::Transient,
            _ => Failure::Rejected,
        }
    }

    /// Classifies an SDK error: timeouts, I/O failures and unreadable responses are transient,
    /// a request that could not be built is rejected, a service error goes by [`Self::classify`].
    pub fn of<E: ProvideErrorMetadata>(
        codes: &ErrorCodes,
        error: &SdkError<E, HttpResponse>,
    ) -> Failure {
        match error {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => Failure::Transient,
            SdkError::ConstructionFailure(_) => Failure::Rejected,
            _ => Self::classify(
                codes,
                error.code(),
                error.raw_response().map(|r| r.status().as_u16()),
            ),
        }
    }

    /// The [`StoreError`] of this kind for `operation`, keeping `source`.
    pub fn store_error(
        self,
        operation: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> StoreError {
        let source = Box::new(source);
        match self {
            Failure::Throttled => StoreError::Throttled { operation, source },
            Failure::Transient => StoreError::Transient { operation, source },
            Failure::Rejected => StoreError::Rejected { operation, source },
        }
    }
}

/// Maps an SDK error to a [`StoreError`], keeping it as the source.
pub fn store_error<E>(
    codes: &ErrorCodes,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    Failure::of(codes, &error).store_error(operation, error)
}
