//! [`MemoryStageQueue`]: the stage queue in memory, behaving like an SQS standard queue with a
//! redrive policy: delays, visibility timeouts, receive counts, fresh receipts per receive,
//! long polling and an optional dead-letter queue.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lock;
use crate::clock::Clock;
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{queue_delay_secs, ReceivedMessage, StageMessage, StageQueue, StoreResult};

/// SQS's cap on messages per receive.
const MAX_RECEIVE_BATCH: u32 = 10;

/// How often a long-polling receive looks again (real time).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Entry {
    message: StageMessage,
    visible_at: Timestamp,
    receive_count: u32,
    /// The receipt of the latest receive; older receipts no longer match.
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct Messages {
    /// By message number, so receives go oldest first.
    entries: BTreeMap<u64, Entry>,
    next_message: u64,
    next_receive: u64,
    dead: Vec<StageMessage>,
}

impl Messages {
    fn send(&mut self, message: StageMessage, visible_at: Timestamp) {
        self.next_message += 1;
        self.entries.insert(
            self.next_message,
            Entry {
                message,
                visible_at,
                receive_count: 0,
                receipt: None,
            },
        );
    }

    /// The message `receipt` was issued for, if that receipt is still its latest; an error
    /// for a receipt this queue never issued.
    fn by_receipt(&mut self, receipt: &str) -> Result<Option<(u64, &mut Entry)>, ReceiptError> {
        let number = receipt
            .split_once('.')
            .and_then(|(number, _)| number.parse().ok())
            .ok_or_else(|| ReceiptError::Malformed(receipt.to_owned()))?;
        Ok(self
            .entries
            .get_mut(&number)
            .filter(|entry| entry.receipt.as_deref() == Some(receipt))
            .map(|entry| (number, entry)))
    }

    /// Deletes the message `receipt` names. As with SQS, an outdated receipt (the message was
    /// received again, or is gone) succeeds without deleting anything.
    fn ack(&mut self, receipt: &str) -> Result<(), ReceiptError> {
        if let Some((number, _)) = self.by_receipt(receipt)? {
            self.entries.remove(&number);
        }
        Ok(())
    }

    fn receive(
        &mut self,
        max: u32,
        visibility_secs: u32,
        max_receives: Option<u32>,
        now: Timestamp,
    ) -> Vec<ReceivedMessage> {
        let max = max.clamp(1, MAX_RECEIVE_BATCH) as usize;
        let mut received = Vec::new();
        let mut dead = Vec::new();
        for (number, entry) in &mut self.entries {
            if received.len() == max {
                break;
            }
            if entry.visible_at > now {
                continue;
            }
            // Redrive: a message already received the maximum number of times moves to the
            // dead-letter queue instead of being delivered again.
            if max_receives.is_some_and(|m| entry.receive_count >= m) {
                dead.push(*number);
                continue;
            }
            self.next_receive += 1;
            let receipt = format!("{number}.{}", self.next_receive);
            entry.receive_count += 1;
            entry.receipt = Some(receipt.clone());
            entry.visible_at = now.plus_secs(visibility_secs.into());
            received.push(ReceivedMessage {
                message: entry.message.clone(),
                receipt,
                receive_count: entry.receive_count,
            });
        }
        for number in dead {
            if let Some(entry) = self.entries.remove(&number) {
                self.dead.push(entry.message);
            }
        }
        received
    }
}

/// A receipt that is not (or no longer) the latest receipt of a message on the queue.
/// Why a receipt was refused (the source of a [`StoreError::Rejected`]).
#[derive(Debug, thiserror::Error)]
enum ReceiptError {
    #[error("receipt {0} was not issued by this queue")]
    Malformed(String),
    #[error("receipt {0} does not name a message in flight")]
    NotInFlight(String),
}

impl ReceiptError {
    fn rejected(self, operation: &'static str) -> StoreError {
        StoreError::Rejected {
            operation,
            source: Box::new(self),
        }
    }
}

/// The stage queue in memory; clones share one queue. Delays and visibility follow `clock`;
/// long polling waits in real time.
#[derive(Clone)]
pub struct MemoryStageQueue {
    clock: Arc<dyn Clock>,
    max_receives: Option<u32>,
    messages: Arc<Mutex<Messages>>,
}

impl fmt::Debug for MemoryStageQueue {
    // The clock is not `Debug`, and formatting must not take the lock (a caller may hold it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStageQueue")
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl MemoryStageQueue {
    /// An empty queue without a dead-letter queue.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            max_receives: None,
            messages: Arc::default(),
        }
    }

    /// An empty queue whose messages move to its dead-letter queue once received more than
    /// `max_receive_count` times (SQS's redrive policy).
    pub fn with_max_receives(clock: Arc<dyn Clock>, max_receive_count: u32) -> Self {
        Self {
            max_receives: Some(max_receive_count),
            ..Self::new(clock)
        }
    }

    /// Messages on the queue (visible or not), not counting dead letters.
    pub fn len(&self) -> usize {
        lock(&self.messages).entries.len()
    }

    /// Whether no message is on the queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages moved to the dead-letter queue, oldest first.
    pub fn dead_letters(&self) -> Vec<StageMessage> {
        lock(&self.messages).dead.clone()
    }

    fn send_now(&self, message: StageMessage, now: Timestamp) {
        let delay = queue_delay_secs(message.not_before, now);
        // Like SQS, the delay runs from the queue's own clock.
        let visible_at = self.clock.now().plus_secs(delay.into());
        lock(&self.messages).send(message, visible_at);
    }
}

impl StageQueue for MemoryStageQueue {
    async fn send(&self, message: &StageMessage, now: Timestamp) -> StoreResult<()> {
        self.send_now(message.clone(), now);
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        visibility_secs: u32,
        wait_secs: u32,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs.into());
        loop {
            let now = self.clock.now();
            let received =
                lock(&self.messages).receive(max, visibility_secs, self.max_receives, now);
            if !received.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn ack(&self, receipt: &str) -> StoreResult<()> {
        lock(&self.messages)
            .ack(receipt)
            .map_err(|e| e.rejected("queue.ack"))
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
        // Sent before the original is deleted, in the SQS adapter's order.
        self.send_now(copy, now);
        lock(&self.messages)
            .ack(&received.receipt)
            .map_err(|e| e.rejected("queue.defer"))
    }

    async fn retry_later(&self, receipt: &str, delay_secs: u32) -> StoreResult<()> {
        let now = self.clock.now();
        let mut messages = lock(&self.messages);
        match messages.by_receipt(receipt) {
            Ok(Some((_, entry))) => {
                entry.visible_at = now.plus_secs(delay_secs.into());
                Ok(())
            }
            // SQS refuses a visibility change for a message that is gone.
            Ok(None) => {
                Err(ReceiptError::NotInFlight(receipt.to_owned()).rejected("queue.retry_later"))
            }
            Err(e) => Err(e.rejected("queue.retry_later")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::domain::ids::ExecutionId;

    fn setup(max_receives: Option<u32>) -> (FakeClock, MemoryStageQueue) {
        let clock = FakeClock::at(Timestamp::from_secs(1_000));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let queue = match max_receives {
            Some(m) => MemoryStageQueue::with_max_receives(shared, m),
            None => MemoryStageQueue::new(shared),
        };
        (clock, queue)
    }

    fn message(not_before: Option<Timestamp>) -> StageMessage {
        StageMessage {
            execution_id: ExecutionId::random(),
            stage: 1,
            not_before,
            wait: 0,
        }
    }

    async fn receive_one(queue: &MemoryStageQueue) -> Option<ReceivedMessage> {
        let mut got = queue.receive(1, 30, 0).await.unwrap();
        assert!(got.len() <= 1);
        got.pop()
    }

    #[tokio::test]
    async fn a_delay_follows_not_before_capped_at_900_seconds() {
        let (clock, queue) = setup(None);
        let now = clock.now();
        queue
            .send(&message(Some(now.plus_secs(30))), now)
            .await
            .unwrap();
        queue
            .send(&message(Some(now.plus_secs(5_000))), now)
            .await
            .unwrap();
        clock.advance_secs(29);
        assert!(receive_one(&queue).await.is_none());
        clock.advance_secs(1);
        let first = receive_one(&queue).await.unwrap();
        assert_eq!(first.message.not_before, Some(now.plus_secs(30)));
        queue.ack(&first.receipt).await.unwrap();
        clock.set(now.plus_secs(899));
        assert!(receive_one(&queue).await.is_none());
        clock.set(now.plus_secs(900));
        let second = receive_one(&queue).await.unwrap();
        assert_eq!(second.message.not_before, Some(now.plus_secs(5_000)));
    }

    #[tokio::test]
    async fn visibility_hides_a_message_and_a_new_receive_replaces_the_receipt() {
        let (clock, queue) = setup(None);
        queue.send(&message(None), clock.now()).await.unwrap();
        let first = receive_one(&queue).await.unwrap();
        assert_eq!(first.receive_count, 1);
        clock.advance_secs(29);
        assert!(receive_one(&queue).await.is_none());
        clock.advance_secs(1);
        let second = receive_one(&queue).await.unwrap();
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt, first.receipt);
        // The outdated receipt neither deletes nor moves the message.
        queue.ack(&first.receipt).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert!(queue.retry_later(&first.receipt, 0).await.is_err());
        queue.ack(&second.receipt).await.unwrap();
        assert!(queue.is_empty());
        let gone = queue.retry_later(&second.receipt, 0).await.unwrap_err();
        assert!(matches!(gone, StoreError::Rejected { .. }));
        queue.ack(&second.receipt).await.unwrap();
        let garbage = queue.ack("garbage").await.unwrap_err();
        assert!(matches!(garbage, StoreError::Rejected { .. }));
    }

    #[tokio::test]
    async fn retry_later_counts_and_defer_does_not() {
        let (clock, queue) = setup(None);
        queue.send(&message(None), clock.now()).await.unwrap();
        let first = receive_one(&queue).await.unwrap();
        queue.retry_later(&first.receipt, 5).await.unwrap();
        clock.advance_secs(4);
        assert!(receive_one(&queue).await.is_none());
        clock.advance_secs(1);
        let second = receive_one(&queue).await.unwrap();
        assert_eq!(second.receive_count, 2);

        let until = clock.now().plus_secs(60);
        queue.defer(&second, until, clock.now()).await.unwrap();
        assert_eq!(queue.len(), 1, "the copy replaces the original");
        clock.advance_secs(59);
        assert!(receive_one(&queue).await.is_none());
        clock.advance_secs(1);
        let deferred = receive_one(&queue).await.unwrap();
        assert_eq!(deferred.receive_count, 1);
        assert_eq!(deferred.message.not_before, Some(until));
        assert_eq!(deferred.message.execution_id, first.message.execution_id);
    }

    #[tokio::test]
    async fn a_message_received_too_often_moves_to_the_dead_letters() {
        let (clock, queue) = setup(Some(2));
        let sent = message(None);
        queue.send(&sent, clock.now()).await.unwrap();
        for count in 1..=2 {
            let got = receive_one(&queue).await.unwrap();
            assert_eq!(got.receive_count, count);
            queue.retry_later(&got.receipt, 0).await.unwrap();
        }
        assert!(receive_one(&queue).await.is_none());
        assert!(queue.is_empty());
        assert_eq!(queue.dead_letters(), vec![sent]);
    }

    #[tokio::test]
    async fn a_receive_takes_at_most_ten() {
        let (clock, queue) = setup(None);
        for _ in 0..15 {
            queue.send(&message(None), clock.now()).await.unwrap();
        }
        assert_eq!(queue.receive(50, 30, 0).await.unwrap().len(), 10);
        assert_eq!(queue.receive(50, 30, 0).await.unwrap().len(), 5);
        assert!(queue.receive(50, 30, 0).await.unwrap().is_empty());
        assert_eq!(queue.len(), 15);
    }

    #[tokio::test]
    async fn a_long_poll_returns_a_message_sent_while_it_waits() {
        let (clock, queue) = setup(None);
        let sender = queue.clone();
        let sent = message(None);
        let to_send = sent.clone();
        let now = clock.now();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.send(&to_send, now).await.unwrap();
        });
        let got = queue.receive(10, 30, 5).await.unwrap();
        task.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, sent);
    }

    #[tokio::test]
    async fn a_long_poll_sees_a_delay_end_on_the_clock() {
        let (clock, queue) = setup(None);
        let now = clock.now();
        queue
            .send(&message(Some(now.plus_secs(10))), now)
            .await
            .unwrap();
        let mover = clock.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mover.advance_secs(10);
        });
        assert_eq!(queue.receive(10, 30, 5).await.unwrap().len(), 1);
        task.await.unwrap();
        // Nothing visible: an empty answer after the wait.
        assert!(queue.receive(10, 30, 1).await.unwrap().is_empty());
    }
}
