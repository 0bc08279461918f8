//! The port contracts on ministack (DynamoDB and SQS on one endpoint), the end-to-end engine.

sluice_tests::dynamodb_contract_tests!(engines::Engine::Ministack);

#[tokio::test]
async fn stage_queue_on_sqs() {
    let (client, queue_url, _dlq) = engines::fresh_queue().await;
    contract::queue::run(&sluice::adapters::sqs::SqsStageQueue::new(
        client, queue_url,
    ))
    .await;
}
