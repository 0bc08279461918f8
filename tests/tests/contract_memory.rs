//! The port contracts and race suites on the memory adapters (the local run's backend).

use std::sync::Arc;

use sluice::adapters::backend::MemoryBackend;
use sluice::adapters::memory::{
    MemoryAlertStore, MemoryConnectorStore, MemoryDeliveryStore, MemoryExecutionStore,
    MemoryLedger, MemoryRateLimiter, MemorySemaphoreStore, MemoryStageQueue,
};
use sluice::SystemClock;
use sluice_tests::{contract, race};

#[tokio::test]
async fn delivery_store() {
    contract::delivery::run(&MemoryDeliveryStore::new()).await;
}

#[tokio::test]
async fn execution_store() {
    contract::execution::run(&MemoryExecutionStore::new()).await;
}

#[tokio::test]
async fn execution_listing() {
    contract::execution::run_listing(&MemoryExecutionStore::new()).await;
}

#[tokio::test]
async fn execution_listing_is_bounded() {
    contract::execution::run_bounded_listing(&MemoryExecutionStore::new()).await;
}

#[tokio::test]
async fn execution_sweep_position() {
    contract::execution::run_sweep_position(&MemoryExecutionStore::new()).await;
}

#[tokio::test]
async fn intake_store() {
    let memory = MemoryBackend::new(Arc::new(SystemClock));
    contract::intake::run(&contract::intake::Stores {
        intake: &memory.intake,
        deliveries: &memory.deliveries,
        executions: &memory.executions,
        ledger: &memory.ledger,
        rate: &memory.rate,
    })
    .await;
}

#[tokio::test]
async fn ledger() {
    contract::ledger::run(&MemoryLedger::new()).await;
}

#[tokio::test]
async fn semaphore_store() {
    contract::semaphore::run(&MemorySemaphoreStore::new()).await;
}

#[tokio::test]
async fn connector_store() {
    contract::connector::run(&MemoryConnectorStore::new()).await;
}

#[tokio::test]
async fn rate_limiter() {
    contract::rate::run(&MemoryRateLimiter::new()).await;
}

#[tokio::test]
async fn alert_store() {
    contract::alerts::run(&MemoryAlertStore::new()).await;
}

#[tokio::test]
async fn stage_queue() {
    contract::queue::run(&MemoryStageQueue::new(Arc::new(SystemClock))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_hold_in_memory() {
    race::delivery_claims(MemoryDeliveryStore::new(), 200)
        .await
        .finish("memory");
    race::breaker_probe(MemoryConnectorStore::new(), 100)
        .await
        .finish("memory");
    race::semaphore_holders(MemorySemaphoreStore::new(), 5, 200)
        .await
        .finish("memory");
    race::execution_leases(MemoryExecutionStore::new(), 50)
        .await
        .finish("memory");
    race::alert_dedup(MemoryAlertStore::new(), 100)
        .await
        .finish("memory");
    let memory = MemoryBackend::new(Arc::new(SystemClock));
    race::intake_accepts(
        memory.intake.clone(),
        memory.executions.clone(),
        memory.ledger.clone(),
        200,
    )
    .await
    .finish("memory");
    race::intake_rate(memory.intake.clone(), 10, 50)
        .await
        .finish("memory");
}
