//! The two [`Backend`]s: [`MemoryBackend`] for the local run and fast tests, [`AwsBackend`]
//! (DynamoDB + SQS) for Lambda and the engine-backed tests.

use std::sync::Arc;

use crate::adapters::dynamodb::{
    DynamoAlertStore, DynamoConnectorStore, DynamoDeliveryStore, DynamoExecutionStore,
    DynamoIntakeStore, DynamoLedger, DynamoRateLimiter, DynamoSemaphoreStore,
};
use crate::adapters::memory::{
    MemoryAlertStore, MemoryConnectorStore, MemoryDeliveryStore, MemoryExecutionStore,
    MemoryIntakeStore, MemoryLedger, MemoryRateLimiter, MemorySemaphoreStore, MemoryStageQueue,
};
use crate::adapters::sqs::SqsStageQueue;
use crate::clock::Clock;
use crate::ports::Backend;

/// Every port in process memory.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    pub deliveries: MemoryDeliveryStore,
    pub executions: MemoryExecutionStore,
    pub ledger: MemoryLedger,
    pub semaphores: MemorySemaphoreStore,
    pub connectors: MemoryConnectorStore,
    pub rate: MemoryRateLimiter,
    pub queue: MemoryStageQueue,
    pub alerts: MemoryAlertStore,
    pub intake: MemoryIntakeStore,
}

impl MemoryBackend {
    /// Empty stores; the queue's delays follow `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let (deliveries, executions) = (MemoryDeliveryStore::new(), MemoryExecutionStore::new());
        let (ledger, rate) = (MemoryLedger::new(), MemoryRateLimiter::new());
        Self {
            intake: MemoryIntakeStore::new(
                deliveries.clone(),
                executions.clone(),
                ledger.clone(),
                rate.clone(),
            ),
            deliveries,
            executions,
            ledger,
            semaphores: MemorySemaphoreStore::new(),
            connectors: MemoryConnectorStore::new(),
            rate,
            queue: MemoryStageQueue::new(clock),
            alerts: MemoryAlertStore::new(),
        }
    }
}

/// Every port on one DynamoDB table and one SQS queue.
#[derive(Debug, Clone)]
pub struct AwsBackend {
    pub deliveries: DynamoDeliveryStore,
    pub executions: DynamoExecutionStore,
    pub ledger: DynamoLedger,
    pub semaphores: DynamoSemaphoreStore,
    pub connectors: DynamoConnectorStore,
    pub rate: DynamoRateLimiter,
    pub queue: SqsStageQueue,
    pub alerts: DynamoAlertStore,
    pub intake: DynamoIntakeStore,
}

impl AwsBackend {
    /// The ports on `table` and the stage queue at `queue_url`.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        table: &str,
        queue_url: &str,
    ) -> Self {
        Self {
            deliveries: DynamoDeliveryStore::new(dynamodb.clone(), table),
            executions: DynamoExecutionStore::new(dynamodb.clone(), table),
            ledger: DynamoLedger::new(dynamodb.clone(), table),
            semaphores: DynamoSemaphoreStore::new(dynamodb.clone(), table),
            connectors: DynamoConnectorStore::new(dynamodb.clone(), table),
            rate: DynamoRateLimiter::new(dynamodb.clone(), table),
            alerts: DynamoAlertStore::new(dynamodb.clone(), table),
            intake: DynamoIntakeStore::new(dynamodb, table),
            queue: SqsStageQueue::new(sqs, queue_url),
        }
    }
}

macro_rules! backend_impl {
    ($name:ty, $d:ty, $e:ty, $l:ty, $s:ty, $c:ty, $r:ty, $q:ty, $a:ty, $i:ty) => {
        impl Backend for $name {
            type Deliveries = $d;
            type Executions = $e;
            type Ledger = $l;
            type Semaphores = $s;
            type Connectors = $c;
            type Rate = $r;
            type Queue = $q;
            type Alerts = $a;
            type Intake = $i;

            fn deliveries(&self) -> &$d {
                &self.deliveries
            }
            fn executions(&self) -> &$e {
                &self.executions
            }
            fn ledger(&self) -> &$l {
                &self.ledger
            }
            fn semaphores(&self) -> &$s {
                &self.semaphores
            }
            fn connectors(&self) -> &$c {
                &self.connectors
            }
            fn rate(&self) -> &$r {
                &self.rate
            }
            fn queue(&self) -> &$q {
                &self.queue
            }
            fn alerts(&self) -> &$a {
                &self.alerts
            }
            fn intake(&self) -> &$i {
                &self.intake
            }
        }
    };
}

backend_impl!(
    MemoryBackend,
    MemoryDeliveryStore,
    MemoryExecutionStore,
    MemoryLedger,
    MemorySemaphoreStore,
    MemoryConnectorStore,
    MemoryRateLimiter,
    MemoryStageQueue,
    MemoryAlertStore,
    MemoryIntakeStore
);
backend_impl!(
    AwsBackend,
    DynamoDeliveryStore,
    DynamoExecutionStore,
    DynamoLedger,
    DynamoSemaphoreStore,
    DynamoConnectorStore,
    DynamoRateLimiter,
    SqsStageQueue,
    DynamoAlertStore,
    DynamoIntakeStore
);
