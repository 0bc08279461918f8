//! Cross-crate suites for Sluice: the engine harness, one contract suite per port (run on the
//! memory adapters and on real engines), the race suites, and the benchmark harness
//! (`sluice-bench`, with exact AWS request counting).

pub mod bench;
pub mod contract;
pub mod counting;
pub mod e2e;
pub mod engines;
pub mod race;

/// Declares the contract tests of the DynamoDB adapters on one engine: one test per port, each
/// on a fresh table.
#[macro_export]
macro_rules! dynamodb_contract_tests {
    ($engine:expr) => {
        use sluice::adapters::dynamodb::{
            DynamoAlertStore, DynamoConnectorStore, DynamoDeliveryStore, DynamoExecutionStore,
            DynamoIntakeStore, DynamoLedger, DynamoRateLimiter, DynamoSemaphoreStore,
        };
        use sluice_tests::{contract, engines};

        #[tokio::test]
        async fn intake_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::intake::run(&contract::intake::Stores {
                intake: &DynamoIntakeStore::new(client.clone(), &table),
                deliveries: &DynamoDeliveryStore::new(client.clone(), &table),
                executions: &DynamoExecutionStore::new(client.clone(), &table),
                ledger: &DynamoLedger::new(client.clone(), &table),
                rate: &DynamoRateLimiter::new(client, &table),
            })
            .await;
        }

        #[tokio::test]
        async fn delivery_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::delivery::run(&DynamoDeliveryStore::new(client, table)).await;
        }

        #[tokio::test]
        async fn execution_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::execution::run(&DynamoExecutionStore::new(client, table)).await;
        }

        #[tokio::test]
        async fn execution_listing() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::execution::run_listing(&DynamoExecutionStore::new(client, table)).await;
        }

        #[tokio::test]
        async fn execution_sweep_position() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::execution::run_sweep_position(&DynamoExecutionStore::new(client, table))
                .await;
        }

        #[tokio::test]
        async fn execution_listing_one_item_per_request() {
            // Every filtered page crosses Query requests, some of which match nothing.
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoExecutionStore::new(client, table).with_filtered_batch(1);
            contract::execution::run_listing(&store).await;
        }

        #[tokio::test]
        async fn ledger() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::ledger::run(&DynamoLedger::new(client, table)).await;
        }

        #[tokio::test]
        async fn semaphore_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::semaphore::run(&DynamoSemaphoreStore::new(client, table)).await;
        }

        #[tokio::test]
        async fn connector_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::connector::run(&DynamoConnectorStore::new(client, table)).await;
        }

        #[tokio::test]
        async fn rate_limiter() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::rate::run(&DynamoRateLimiter::new(client, table)).await;
        }

        #[tokio::test]
        async fn alert_store() {
            let (client, table) = engines::fresh_table($engine).await;
            contract::alerts::run(&DynamoAlertStore::new(client, table)).await;
        }
    };
}

/// Declares the race tests of the DynamoDB adapters on one engine.
#[macro_export]
macro_rules! dynamodb_race_tests {
    ($engine:expr) => {
        use sluice::adapters::dynamodb::{
            DynamoAlertStore, DynamoConnectorStore, DynamoDeliveryStore, DynamoExecutionStore,
            DynamoIntakeStore, DynamoLedger, DynamoSemaphoreStore,
        };
        use sluice_tests::{engines, race};

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn intake_accepts_200() {
            let (client, table) = engines::fresh_table($engine).await;
            race::intake_accepts(
                DynamoIntakeStore::new(client.clone(), &table),
                DynamoExecutionStore::new(client.clone(), &table),
                DynamoLedger::new(client, &table),
                200,
            )
            .await
            .finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn intake_rate_10_of_50() {
            let (client, table) = engines::fresh_table($engine).await;
            race::intake_rate(DynamoIntakeStore::new(client, &table), 10, 50)
                .await
                .finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn delivery_claims_200() {
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoDeliveryStore::new(client, table);
            race::delivery_claims(store, 200)
                .await
                .finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn breaker_probe_100() {
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoConnectorStore::new(client, table);
            race::breaker_probe(store, 100).await.finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn semaphore_limit_5_of_200() {
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoSemaphoreStore::new(client, table);
            race::semaphore_holders(store, 5, 200)
                .await
                .finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn execution_lease_50() {
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoExecutionStore::new(client, table);
            race::execution_leases(store, 50)
                .await
                .finish($engine.name());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn alert_dedup_100() {
            let (client, table) = engines::fresh_table($engine).await;
            let store = DynamoAlertStore::new(client, table);
            race::alert_dedup(store, 100).await.finish($engine.name());
        }
    };
}
