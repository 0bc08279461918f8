//! How DynamoDB failures become [`StoreError`]s: SDK errors are classified as throttled,
//! transient or rejected (keeping the SDK error as the source); a `ConditionalCheckFailed` is
//! not an error at all but a [`Conditional::Failed`] carrying the `ALL_OLD` item; items that do
//! not parse become [`StoreError::Corrupt`].

use std::error::Error as StdError;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;

use super::keys::Item;
use crate::error::StoreError;

/// Error codes DynamoDB uses when it sheds load.
const THROTTLING_CODES: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Error codes of failures that may go away on their own.
const TRANSIENT_CODES: [&str; 4] = [
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// Failures the adapters detect themselves (used as the source of a [`StoreError`]).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The engine refused a conditional write, but the item it returned satisfies the
    /// condition: the engine is not consistent, or a writer outside Sluice raced us.
    #[error("condition failed, but the returned item satisfies it")]
    InconsistentCondition,
    /// Concurrent writers kept changing the item for every round this call allows.
    #[error("the item kept changing under {rounds} attempts")]
    Contention { rounds: usize },
    /// The table was created but did not become ACTIVE in time.
    #[error("table {table} not ACTIVE after {secs} s")]
    TableNotActive { table: String, secs: u64 },
    /// The engine answered a write without the attributes it was asked to return.
    #[error("the response lacks the item it was asked to return")]
    MissingReturnValues,
}

impl AdapterError {
    /// This failure as a retryable [`StoreError::Transient`].
    pub fn transient(self, operation: &'static str) -> StoreError {
        StoreError::Transient {
            operation,
            source: Box::new(self),
        }
    }
}

/// An item whose attributes parse one by one but do not fit together.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MalformedItem(pub &'static str);

/// Maps an SDK error to a [`StoreError`], keeping it as the source.
pub fn store_error<E>(operation: &'static str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    enum Kind {
        Throttled,
        Transient,
        Rejected,
    }
    let kind = match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            let status = ctx.raw().status();
            if THROTTLING_CODES.contains(&code) || status.as_u16() == 429 {
                Kind::Throttled
            } else if TRANSIENT_CODES.contains(&code) || status.is_server_error() {
                Kind::Transient
            } else {
                Kind::Rejected
            }
        }
        // The request could not even be built: retrying will not help.
        SdkError::ConstructionFailure(_) => Kind::Rejected,
        // Timeouts, dispatch (I/O) failures, unparsable or truncated responses.
        _ => Kind::Transient,
    };
    let source = Box::new(err);
    match kind {
        Kind::Throttled => StoreError::Throttled { operation, source },
        Kind::Transient => StoreError::Transient { operation, source },
        Kind::Rejected => StoreError::Rejected { operation, source },
    }
}

/// An operation error that may be a `ConditionalCheckFailedException`.
pub trait ConditionalError {
    /// The condition failure, if that is what this is.
    fn condition_failed(&self) -> Option<&ConditionalCheckFailedException>;
}

impl ConditionalError for PutItemError {
    fn condition_failed(&self) -> Option<&ConditionalCheckFailedException> {
        match self {
            PutItemError::ConditionalCheckFailedException(e) => Some(e),
            _ => None,
        }
    }
}

impl ConditionalError for UpdateItemError {
    fn condition_failed(&self) -> Option<&ConditionalCheckFailedException> {
        match self {
            UpdateItemError::ConditionalCheckFailedException(e) => Some(e),
            _ => None,
        }
    }
}

impl ConditionalError for DeleteItemError {
    fn condition_failed(&self) -> Option<&ConditionalCheckFailedException> {
        match self {
            DeleteItemError::ConditionalCheckFailedException(e) => Some(e),
            _ => None,
        }
    }
}

/// What a conditional write came to.
#[derive(Debug)]
pub enum Conditional<T> {
    /// The condition held and the write happened.
    Written(T),
    /// The condition failed; the item as it was (`ALL_OLD`), empty if there was no item.
    Failed(Item),
}

/// Whether an SDK error is a `ConditionalCheckFailed`.
pub fn is_condition_failed<E: ConditionalError>(err: &SdkError<E>) -> bool {
    err.as_service_error()
        .and_then(ConditionalError::condition_failed)
        .is_some()
}

/// The `ALL_OLD` item of a condition failure (empty when the item did not exist), or `None`
/// when the error is something else.
pub fn condition_failed_item<E: ConditionalError>(err: &SdkError<E>) -> Option<Item> {
    let failure = err.as_service_error()?.condition_failed()?;
    Some(failure.item().cloned().unwrap_or_default())
}

/// Turns the result of a conditional write into [`Conditional`], mapping every other error.
pub fn conditional<T, E>(
    operation: &'static str,
    result: Result<T, SdkError<E>>,
) -> Result<Conditional<T>, StoreError>
where
    E: ConditionalError + ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match result {
        Ok(output) => Ok(Conditional::Written(output)),
        Err(err) => match condition_failed_item(&err) {
            Some(old) => Ok(Conditional::Failed(old)),
            None => Err(store_error(operation, err)),
        },
    }
}

/// A numeric attribute that is not a number (or does not fit).
#[derive(Debug, thiserror::Error)]
#[error("attribute {attr}: expected a number, found {found}")]
pub struct BadNumber {
    pub attr: String,
    pub found: String,
}

/// Reads a number attribute; `None` if absent.
pub fn number<T: std::str::FromStr>(
    item: &Item,
    attr: &str,
    operation: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| {
            corrupt(
                operation,
                key,
                BadNumber {
                    attr: attr.to_owned(),
                    found: n.clone(),
                },
            )
        }),
        Some(other) => Err(corrupt(
            operation,
            key,
            BadNumber {
                attr: attr.to_owned(),
                found: format!("{other:?}"),
            },
        )),
    }
}

/// Deserializes a fixed-shape item; a malformed one is [`StoreError::Corrupt`].
pub fn parse_item<T: DeserializeOwned>(
    operation: &'static str,
    key: &str,
    item: Item,
) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| corrupt(operation, key, e))
}

/// A [`StoreError::Corrupt`] for the item at `key`, keeping `source`.
pub fn corrupt(
    operation: &'static str,
    key: &str,
    source: impl StdError + Send + Sync + 'static,
) -> StoreError {
    StoreError::Corrupt {
        operation,
        key: key.to_owned(),
        detail: source.to_string(),
        source: Some(Box::new(source)),
    }
}

/// Serializes a fixed-shape item. Our own types always serialize; a failure here is a bug in
/// an item type, reported as a rejected request rather than a panic.
pub fn to_item<T: serde::Serialize>(
    operation: &'static str,
    value: &T,
) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Rejected {
        operation,
        source: Box::new(e),
    })
}

/// Serializes one attribute value (see [`to_item`]).
pub fn to_value<T: serde::Serialize>(
    operation: &'static str,
    value: &T,
) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::Rejected {
        operation,
        source: Box::new(e),
    })
}
