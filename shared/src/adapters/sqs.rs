//! [`SqsStageQueue`]: the stage queue on SQS. Messages are JSON [`StageMessage`]s; a message
//! due later than SQS's 900 s delay allows is chained by [`StageQueue::defer`] on receipt.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use super::sdk_failure::{self, ErrorCodes};

use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{queue_delay_secs, ReceivedMessage, StageMessage, StageQueue, StoreResult};

/// SQS's cap on messages per receive.
const MAX_RECEIVE_BATCH: u32 = 10;
/// SQS's cap on a long poll.
const MAX_WAIT_SECS: u32 = 20;
/// SQS's cap on a visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u32 = 43_200;

/// SQS's error codes that say "slow down" (SQS or the AWS front end) and "try again".
const SQS_CODES: ErrorCodes = ErrorCodes {
    throttling: THROTTLING_CODES,
    transient: TRANSIENT_CODES,
};

/// Error codes with which SQS (or the AWS front end) sheds load.
const THROTTLING_CODES: &[&str] = &[
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KmsThrottled",
    "OverLimit",
];

/// Error codes of failures on SQS's side that a later retry may not meet.
const TRANSIENT_CODES: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable"];

/// The stage queue on one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsStageQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsStageQueue {
    /// The queue at `queue_url`, reached through `client`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn send_message(
        &self,
        operation: &'static str,
        message: &StageMessage,
        now: Timestamp,
    ) -> StoreResult<()> {
        let body = serde_json::to_string(message).map_err(|e| StoreError::InvalidInput {
            operation,
            detail: format!("stage message does not serialize: {e}"),
        })?;
        // queue_delay_secs is at most 900, well inside i32.
        let delay = queue_delay_secs(message.not_before, now) as i32;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|e| store_error(operation, e))?;
        Ok(())
    }

    async fn delete_message(&self, operation: &'static str, receipt: &str) -> StoreResult<()> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| store_error(operation, e))?;
        Ok(())
    }
}

impl StageQueue for SqsStageQueue {
    async fn send(&self, message: &StageMessage, now: Timestamp) -> StoreResult<()> {
        self.send_message("queue.send", message, now).await
    }

    async fn receive(
        &self,
        max: u32,
        visibility_secs: u32,
        wait_secs: u32,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        // Every cap below is far inside i32.
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE_BATCH) as i32)
            .visibility_timeout(visibility_secs.min(MAX_VISIBILITY_SECS) as i32)
            .wait_time_seconds(wait_secs.min(MAX_WAIT_SECS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| store_error("queue.receive", e))?;
        Ok(out.messages().iter().filter_map(received).collect())
    }

    async fn ack(&self, receipt: &str) -> StoreResult<()> {
        self.delete_message("queue.ack", receipt).await
    }

    async fn defer(
        &self,
        received: &ReceivedMessage,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let copy = StageMessage {
            not_before: Some(until),
            ..received.message.clone()
        };
        // The copy goes first: if the delete then fails, the original comes back after its
        // visibility timeout and runs as a duplicate (which the execution lease absorbs); the
        // other order could lose the work.
        self.send_message("queue.defer", &copy, now).await?;
        self.delete_message("queue.defer", &received.receipt).await
    }

    async fn retry_later(&self, receipt: &str, delay_secs: u32) -> StoreResult<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(delay_secs.min(MAX_VISIBILITY_SECS) as i32)
            .send()
            .await
            .map_err(|e| store_error("queue.retry_later", e))?;
        Ok(())
    }
}

/// A received SQS message as a [`ReceivedMessage`]; `None` (logged) for one whose body is not
/// a stage message or that lacks a receipt. Such a message stays on the queue and reaches the
/// dead-letter queue through redrive.
fn received(message: &Message) -> Option<ReceivedMessage> {
    let id = message.message_id().unwrap_or("<no id>");
    let parsed = serde_json::from_str::<StageMessage>(message.body().unwrap_or_default());
    let body = match parsed {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(message_id = id, %error, "skipping a queue message that is not a stage message");
            return None;
        }
    };
    let Some(receipt) = message.receipt_handle() else {
        tracing::warn!(
            message_id = id,
            "skipping a queue message without a receipt handle"
        );
        return None;
    };
    let receive_count = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        // The attribute was asked for; a message received at all was received at least once.
        .unwrap_or(1);
    Some(ReceivedMessage {
        message: body,
        receipt: receipt.to_owned(),
        receive_count,
    })
}

/// Maps an SDK error to a [`StoreError`], keeping it as the source.
fn store_error<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    sdk_failure::store_error(&SQS_CODES, operation, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sdk_failure::Failure;
    use crate::domain::ids::ExecutionId;

    fn classify(code: Option<&str>, status: Option<u16>) -> Failure {
        Failure::classify(&SQS_CODES, code, status)
    }

    fn sqs_message(body: &str) -> Message {
        Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body(body)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .build()
    }

    #[test]
    fn a_stage_message_body_is_received_with_its_count() {
        let stage = StageMessage {
            execution_id: ExecutionId::random(),
            stage: 2,
            not_before: Some(Timestamp::from_secs(5)),
            wait: 0,
        };
        let body = serde_json::to_string(&stage).unwrap();
        assert_eq!(
            received(&sqs_message(&body)),
            Some(ReceivedMessage {
                message: stage,
                receipt: "r-1".into(),
                receive_count: 3,
            })
        );
    }

    #[test]
    fn a_foreign_body_is_skipped() {
        assert_eq!(received(&sqs_message("not json")), None);
        assert_eq!(received(&sqs_message(r#"{"stage": 1}"#)), None);
        assert_eq!(received(&Message::builder().message_id("m").build()), None);
    }

    #[test]
    fn failures_are_classified_by_code_then_status() {
        assert_eq!(
            classify(Some("RequestThrottled"), Some(403)),
            Failure::Throttled
        );
        assert_eq!(
            classify(Some("ThrottlingException"), Some(400)),
            Failure::Throttled
        );
        assert_eq!(classify(None, Some(429)), Failure::Throttled);
        assert_eq!(classify(Some("InternalError"), None), Failure::Transient);
        assert_eq!(classify(Some("Whatever"), Some(503)), Failure::Transient);
        assert_eq!(
            classify(Some("AWS.SimpleQueueService.NonExistentQueue"), Some(400)),
            Failure::Rejected
        );
        assert_eq!(
            classify(Some("ReceiptHandleIsInvalid"), Some(404)),
            Failure::Rejected
        );
        assert_eq!(classify(None, None), Failure::Rejected);
    }
}
