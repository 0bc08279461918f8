//! Proves the harness: both engines answer, fresh tables can be created on each, and a fresh
//! queue on ministack carries a message and is wired to its dead-letter queue.

use aws_sdk_sqs::types::QueueAttributeName;
use sluice_tests::engines::{self, Engine};

const ENGINES: [Engine; 2] = [Engine::DynamoDbLocal, Engine::Ministack];

#[tokio::test]
async fn both_engines_answer_list_tables() {
    for engine in ENGINES {
        let endpoint = engine.endpoint();
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "{} should listen on loopback, endpoint is {endpoint}",
            engine.name()
        );
        engines::dynamodb(engine)
            .await
            .list_tables()
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ListTables on {}: {}",
                    engine.name(),
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            });
    }
}

#[tokio::test]
async fn fresh_tables_exist_and_are_distinct() {
    for engine in ENGINES {
        let (client, first) = engines::fresh_table(engine).await;
        let (_, second) = engines::fresh_table(engine).await;
        assert_ne!(
            first,
            second,
            "fresh tables on {} share a name",
            engine.name()
        );
        for name in [&first, &second] {
            let table = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "DescribeTable {name} on {}: {}",
                        engine.name(),
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                    )
                })
                .table
                .unwrap_or_else(|| panic!("{} described {name} as nothing", engine.name()));
            assert_eq!(table.table_name(), Some(name.as_str()));
            assert_eq!(
                table.item_count(),
                Some(0),
                "{name} on {} is not empty",
                engine.name()
            );
        }
    }
}

#[tokio::test]
async fn fresh_queue_carries_a_message_and_redrives_to_its_dlq() {
    let (client, queue_url, dlq_url) = engines::fresh_queue().await;
    assert_ne!(queue_url, dlq_url);

    let attributes = client
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes on the fresh queue")
        .attributes
        .expect("the fresh queue has attributes");
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes on the DLQ")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("the DLQ has an ARN");
    let redrive: serde_json::Value = serde_json::from_str(
        attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .expect("the fresh queue has a RedrivePolicy"),
    )
    .expect("RedrivePolicy is JSON");
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    let max_receive_count = match &redrive["maxReceiveCount"] {
        serde_json::Value::String(s) => s.parse::<u64>().expect("maxReceiveCount is a number"),
        other => other.as_u64().expect("maxReceiveCount is a number"),
    };
    assert_eq!(max_receive_count, u64::from(engines::MAX_RECEIVE_COUNT));
    assert_eq!(
        attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .map(String::as_str),
        Some(engines::VISIBILITY_TIMEOUT_SECONDS.to_string().as_str())
    );

    let body = format!("engines-up {}", ulid::Ulid::new());
    client
        .send_message()
        .queue_url(&queue_url)
        .message_body(&body)
        .send()
        .await
        .expect("SendMessage on the fresh queue");
    let received = client
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("ReceiveMessage on the fresh queue")
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1, "expected exactly the one message sent");
    let message = &received[0];
    assert_eq!(message.body(), Some(body.as_str()));
    client
        .delete_message()
        .queue_url(&queue_url)
        .receipt_handle(message.receipt_handle().expect("a receipt handle"))
        .send()
        .await
        .expect("DeleteMessage on the fresh queue");
}
