//! Contention on one item, on DynamoDB Local (AWS's own engine): `concurrency` tasks of this
//! process each loop admit + settle on ONE connector item for `duration` (the DynamoDB
//! connector store, as the executor calls it around a tool call), then acquire + release on ONE
//! semaphore (a source's pipeline slots). Limits are set above the concurrency, so every
//! refusal is a lost conditional write that the adapter could not settle, not a full item.
//! Every SDK request is counted (retries included), giving write requests per second.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::adapters::dynamodb::{DynamoConnectorStore, DynamoSemaphoreStore};
use sluice::clock::{Clock, SystemClock};
use sluice::domain::connector::{Admission, AdmissionRequest, BreakerSettings, BreakerSignal};
use sluice::domain::ids::{ConnectorId, HolderId, SourceId, TenantId, ToolName};
use sluice::domain::semaphore::{AcquireOutcome, SemaphoreKey};
use sluice::ports::{ConnectorStore, SemaphoreStore};

use super::stats::round3;
use crate::counting::{counted_sdk_config, RequestCounter};
use crate::engines::{self, Engine};

/// Slots of the item: above any concurrency used here.
const LIMIT: u32 = 10_000;

#[derive(Debug, Default)]
struct Tally {
    pairs: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// How one take + give back went (`Err`: a call failed after the SDK's retries).
enum Pair {
    Done,
    Refused,
}

/// Runs `pair` in a loop on `concurrency` tasks for `duration`; the part's JSON.
async fn hammer<F, Fut>(
    counter: &RequestCounter,
    concurrency: usize,
    duration: Duration,
    pair: F,
) -> Value
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Pair, ()>> + Send,
{
    let tally = Arc::new(Tally::default());
    counter.reset();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (tally, pair) = (Arc::clone(&tally), pair.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let slot = match pair().await {
                    Ok(Pair::Done) => &tally.pairs,
                    Ok(Pair::Refused) => &tally.refused,
                    Err(()) => &tally.errors,
                };
                slot.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    part_json(&tally, counter, concurrency, start.elapsed().as_secs_f64())
}

fn part_json(tally: &Tally, counter: &RequestCounter, concurrency: usize, secs: f64) -> Value {
    let requests: u64 = counter.snapshot().values().sum();
    let pairs = tally.pairs.load(Ordering::SeqCst);
    json!({
        "concurrency": concurrency,
        "seconds": round3(secs),
        "pairs": pairs,
        "pairs_per_sec": round3(pairs as f64 / secs),
        "refused": tally.refused.load(Ordering::SeqCst),
        "errors": tally.errors.load(Ordering::SeqCst),
        "requests": counter.snapshot(),
        "requests_per_sec": round3(requests as f64 / secs),
    })
}

/// Measures both items and writes `contention.json`.
pub async fn run(out: &Path, concurrency: usize, duration: Duration) -> Result<Value, String> {
    let counter = RequestCounter::default();
    let (_, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    let client =
        aws_sdk_dynamodb::Client::new(&counted_sdk_config(Engine::DynamoDbLocal, &counter).await);

    // One connector item.
    let store = Arc::new(DynamoConnectorStore::new(client.clone(), &table));
    let connector =
        ConnectorId::parse(format!("hot-{}", ulid::Ulid::new())).map_err(|e| e.to_string())?;
    let tool = ToolName::parse("call").map_err(|e| e.to_string())?;
    let tenant = TenantId::parse("acme").map_err(|e| e.to_string())?;
    let connector_json = hammer(&counter, concurrency, duration, move || {
        let (store, connector, tool, tenant) = (
            Arc::clone(&store),
            connector.clone(),
            tool.clone(),
            tenant.clone(),
        );
        async move {
            let now = SystemClock.now();
            let settings = BreakerSettings::default();
            let request = AdmissionRequest {
                connector,
                tool,
                tenant,
                holder: HolderId::random(),
                limit: LIMIT,
                slot_ttl_secs: 60,
                settings,
                now,
            };
            match store.admit(&request).await {
                Ok(Admission::Admitted(ticket)) => store
                    .settle(&ticket, BreakerSignal::Healthy, &settings, now)
                    .await
                    .map(|_| Pair::Done)
                    .map_err(|_| ()),
                Ok(_) => Ok(Pair::Refused),
                Err(_) => Err(()),
            }
        }
    })
    .await;

    // One semaphore.
    let store = Arc::new(DynamoSemaphoreStore::new(client, &table));
    let key = SemaphoreKey::SourcePipelines(
        SourceId::parse(format!("hot-{}", ulid::Ulid::new())).map_err(|e| e.to_string())?,
    );
    let semaphore_json = hammer(&counter, concurrency, duration, move || {
        let (store, key) = (Arc::clone(&store), key.clone());
        async move {
            let holder = HolderId::random();
            match store
                .acquire(&key, &holder, LIMIT, 60, SystemClock.now())
                .await
            {
                Ok(AcquireOutcome::Acquired { .. }) => store
                    .release(&key, &holder)
                    .await
                    .map(|_| Pair::Done)
                    .map_err(|_| ()),
                Ok(AcquireOutcome::Full { .. }) => Ok(Pair::Refused),
                Err(_) => Err(()),
            }
        }
    })
    .await;

    let result = json!({
        "engine": "dynamodb-local",
        "what": format!("{concurrency} concurrent tasks of one process, each looping admit + settle on ONE connector item (limit {LIMIT}) for {}s, then acquire + release on ONE semaphore (limit {LIMIT}) for {}s, through the DynamoDB adapters on DynamoDB Local; every SDK request counted (retries included). errors = calls that failed after the SDK's retries (e.g. conditional-write contention the adapter gave up on).", duration.as_secs(), duration.as_secs()),
        "connector": connector_json,
        "semaphore": semaphore_json,
    });
    super::write_json(out, "contention.json", &result)
        .map_err(|e| format!("contention.json: {e}"))?;
    Ok(result)
}
