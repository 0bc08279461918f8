//! The executor Lambda's handler: an SQS batch of stage messages in, a partial batch response
//! out.
//!
//! Each record's body is a JSON [`StageMessage`]; the records run through
//! [`sluice::usecases::execute::run_batch`]. A record is reported as a batch item failure (SQS
//! makes it visible again, and it counts toward the DLQ redrive) when its processing failed,
//! retryable or not, or when its body is not a stage message: a failure that keeps happening
//! ends in the DLQ, where its depth alarm wakes someone, instead of leaving the run stuck
//! without a trace. Every other record is reported as a success, and the Lambda
//! SQS trigger deletes it: the use case never deletes a record itself. A deferral or a retry
//! sends its own copy of the message before the record is reported, which is the same as
//! `StageQueue::defer` with the delete left to the trigger.
//!
//! # Time budget
//!
//! The batch runs within [`budget_for`]: the invocation's deadline (the Lambda context's)
//! minus what the alert flush may take after the records. A record whose stage cannot finish
//! before it (its connector's full timeout plus the reserves around the call) is not started
//! and is reported as a batch item failure: SQS delivers it again once its visibility timeout
//! lapses, and that receive counts toward the DLQ redrive. A failure rather than a deferral
//! (a re-sent copy, which would not count) because near the deadline there may be no time for
//! one more request per record, and because validation at cold start
//! (`sluice::startup::validate_executor`) makes sure a record always fits an invocation of its
//! own, so only a record that keeps landing behind slow ones in full batches can run out of
//! receives.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use sluice::app::App;
use sluice::domain::ids::HolderId;
use sluice::ports::{Backend, ReceivedMessage, StageMessage, ToolClient};
use sluice::usecases::execute::{run_batch_within, Budget};

/// The SQS attribute with the number of receives.
const RECEIVE_COUNT: &str = "ApproximateReceiveCount";

/// A record that is not a stage message.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the record has no receipt handle")]
    NoReceipt,
    #[error("the record has no body")]
    NoBody,
    #[error("the record's body is not a stage message")]
    Body(#[source] serde_json::Error),
}

/// Reads an SQS record as a received stage message.
pub fn received_message(record: &SqsMessage) -> Result<ReceivedMessage, RecordError> {
    let receipt = record
        .receipt_handle
        .clone()
        .ok_or(RecordError::NoReceipt)?;
    let body = record.body.as_deref().ok_or(RecordError::NoBody)?;
    let message: StageMessage = serde_json::from_str(body).map_err(RecordError::Body)?;
    let receive_count = record
        .attributes
        .get(RECEIVE_COUNT)
        .and_then(|count| count.parse().ok())
        // A record handed to a function was received at least once.
        .unwrap_or(1);
    Ok(ReceivedMessage {
        message,
        receipt,
        receive_count,
    })
}

/// The budget of an invocation whose deadline is `deadline` (wall clock), keeping `flush` (the
/// alert flush's bound) for after the records.
pub fn budget_for(deadline: SystemTime, flush: Duration) -> Budget {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(flush);
    Budget::until(Instant::now() + left)
}

/// Runs every record of `event` as `worker` within `budget` and says which ones SQS should
/// deliver again.
pub async fn handle<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    worker: &HolderId,
    event: SqsEvent,
    budget: &Budget,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut message_ids: HashMap<String, String> = HashMap::new();
    let mut messages = Vec::with_capacity(event.records.len());
    for record in &event.records {
        // Lambda fails the whole batch for an empty identifier: what a record without an id
        // deserves.
        let message_id = record.message_id.clone().unwrap_or_default();
        match received_message(record) {
            Ok(message) => {
                message_ids.insert(message.receipt.clone(), message_id);
                messages.push(message);
            }
            Err(error) => {
                tracing::error!(
                    message_id = %message_id,
                    error = %error,
                    source = ?std::error::Error::source(&error),
                    "not a stage message; left to the dead-letter queue"
                );
                response.add_failure(message_id);
            }
        }
    }
    for (receipt, result) in run_batch_within(app, worker, messages, budget).await {
        let message_id = message_ids.get(&receipt).cloned().unwrap_or_default();
        match result {
            Ok(_) => {}
            Err(error) => {
                tracing::error!(
                    message_id = %message_id,
                    error = %error,
                    retryable = error.is_retryable(),
                    source = ?std::error::Error::source(&error),
                    "stage failed; SQS delivers the record again, then dead-letters it"
                );
                response.add_failure(message_id);
            }
        }
    }
    // Every stage's outcome is written: wait for the alerts it raised before Lambda freezes
    // the process (bounded by the alert timeout and retries; a failed alert is a dead letter,
    // never a failed record).
    app.alerts.flush().await;
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice::clock::{Clock, FakeClock};
    use sluice::config::ReliabilityConfig;
    use sluice::domain::ids::ExecutionId;
    use sluice::domain::time::Timestamp;
    use sluice::manifest::{Manifest, Secrets};

    use super::*;

    const EVENT: &str = include_str!("../../../events/executor_sqs.json");
    const MALFORMED: &str = include_str!("../../../events/executor_sqs_malformed.json");
    const MANIFEST: &str = include_str!("../../../infra/sluice.example.yaml");

    fn event(text: &str) -> SqsEvent {
        serde_json::from_str(text).expect("an SQS event")
    }

    #[test]
    fn records_become_received_messages() {
        let event = event(EVENT);
        assert_eq!(event.records.len(), 2);
        let first = received_message(&event.records[0]).unwrap();
        assert_eq!(
            first.message,
            StageMessage {
                execution_id: ExecutionId::parse("exe_3f1c2b9a7d6e5f4a3b2c1d0e9f").unwrap(),
                stage: 0,
                not_before: None,
                wait: 0,
            }
        );
        assert_eq!(first.receive_count, 1);
        assert!(first.receipt.starts_with("AQEB"));
        let second = received_message(&event.records[1]).unwrap();
        assert_eq!(second.message.stage, 1);
        assert_eq!(
            second.message.not_before,
            Some(Timestamp::from_millis(1_767_225_600_000))
        );
        assert_eq!(second.receive_count, 3);
    }

    #[test]
    fn foreign_records_are_refused() {
        let event = event(MALFORMED);
        assert!(matches!(
            received_message(&event.records[0]),
            Err(RecordError::Body(_))
        ));
        let mut bare = event.records[0].clone();
        bare.body = None;
        assert!(matches!(received_message(&bare), Err(RecordError::NoBody)));
        bare.receipt_handle = None;
        assert!(matches!(
            received_message(&bare),
            Err(RecordError::NoReceipt)
        ));
        let mut uncounted = event.records[0].clone();
        uncounted.body = Some(r#"{"execution_id":"exe_1","stage":0,"not_before":null}"#.into());
        uncounted.attributes.clear();
        assert_eq!(received_message(&uncounted).unwrap().receive_count, 1);
    }

    #[tokio::test]
    async fn a_batch_reports_only_unreadable_records_as_failures() {
        let clock = FakeClock::at(Timestamp::from_secs(1_767_225_000));
        let manifest = Manifest::parse(MANIFEST, "sluice.example.yaml").unwrap();
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let app = sluice::startup::memory_app(
            manifest,
            Secrets::default(),
            config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        );
        let worker = HolderId::random();

        // Unknown executions are acknowledged; the future one is deferred (a copy is sent).
        let budget = Budget::unlimited();
        let response = handle(&app, &worker, event(EVENT), &budget).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(app.backend.queue.len(), 1, "the deferred copy");

        let response = handle(&app, &worker, event(MALFORMED), &budget).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["9d1c0b7e-0000-4000-8000-00000000bad1"]);
    }

    #[tokio::test]
    async fn records_past_the_deadline_are_batch_item_failures() {
        let clock = FakeClock::at(Timestamp::from_secs(1_767_225_000));
        let manifest = Manifest::parse(MANIFEST, "sluice.example.yaml").unwrap();
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let app = sluice::startup::memory_app(
            manifest,
            Secrets::default(),
            config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        );
        // The deadline is 5 s away, and the flush keeps 10 s of it: nothing may start.
        let deadline = SystemTime::now() + Duration::from_secs(5);
        let budget = budget_for(deadline, Duration::from_secs(10));
        assert_eq!(budget.remaining(), Some(Duration::ZERO));
        let response = handle(&app, &HolderId::random(), event(EVENT), &budget).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let sent = event(EVENT);
        let all: Vec<&str> = sent
            .records
            .iter()
            .map(|r| r.message_id.as_deref().unwrap())
            .collect();
        assert_eq!(failed, all);
        assert_eq!(app.backend.queue.len(), 0, "nothing was sent");
    }
}
