//! Contract of [`StageQueue`]: delays, deferral that resets the receive count, retries that
//! count, and the 900 s delay cap. Uses the real clock: queue delays are real seconds.

use std::time::Duration;

use sluice::domain::ids::ExecutionId;
use sluice::ports::{ReceivedMessage, StageMessage, StageQueue};
use sluice::{Clock, SystemClock};

async fn receive_one<Q: StageQueue>(queue: &Q, wait_secs: u32) -> Option<ReceivedMessage> {
    let mut got = queue.receive(1, 30, wait_secs).await.expect("receive");
    assert!(got.len() <= 1);
    got.pop()
}

async fn receive_within<Q: StageQueue>(queue: &Q, limit: Duration) -> ReceivedMessage {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(m) = receive_one(queue, 1).await {
            return m;
        }
    }
    panic!("no message within {limit:?}");
}

/// Runs the whole contract on an empty queue.
pub async fn run<Q: StageQueue>(queue: &Q) {
    let clock = SystemClock;
    let msg = StageMessage {
        execution_id: ExecutionId::random(),
        stage: 2,
        not_before: None,
        wait: 0,
    };

    queue.send(&msg, clock.now()).await.expect("send");
    let got = receive_within(queue, Duration::from_secs(5)).await;
    assert_eq!((got.message.clone(), got.receive_count), (msg.clone(), 1));
    assert!(
        receive_one(queue, 0).await.is_none(),
        "received messages are hidden"
    );
    queue.ack(&got.receipt).await.expect("ack");

    // A failed attempt comes back and counts.
    queue.send(&msg, clock.now()).await.expect("send");
    let first = receive_within(queue, Duration::from_secs(5)).await;
    queue
        .retry_later(&first.receipt, 1)
        .await
        .expect("retry_later");
    let second = receive_within(queue, Duration::from_secs(6)).await;
    assert_eq!(
        (second.message.clone(), second.receive_count),
        (msg.clone(), 2)
    );

    // Deferral: the original goes, a fresh copy arrives after the delay with a fresh count.
    let now = clock.now();
    queue
        .defer(&second, now.plus_secs(2), now)
        .await
        .expect("defer");
    assert!(
        receive_one(queue, 0).await.is_none(),
        "deferred copy must wait"
    );
    let deferred = receive_within(queue, Duration::from_secs(8)).await;
    assert_eq!(
        deferred.receive_count, 1,
        "a deferral never counts as a receive"
    );
    assert_eq!(deferred.message.execution_id, msg.execution_id);
    assert_eq!(deferred.message.not_before, Some(now.plus_secs(2)));
    queue.ack(&deferred.receipt).await.expect("ack");

    // A delay longer than SQS allows is capped at 900 s (the rest is chained on receipt).
    let far = StageMessage {
        not_before: Some(clock.now().plus_secs(3600)),
        ..msg.clone()
    };
    queue
        .send(&far, clock.now())
        .await
        .expect("send within the cap");
    assert!(
        receive_one(queue, 1).await.is_none(),
        "delayed message is not visible yet"
    );
}
