//! AWS requests per unit of work, counted exactly: the real use cases (intake, execute, the
//! replay API, connector admission) on [`AwsBackend`] against ministack, every SDK request
//! counted by [`crate::counting`], a real HTTP connector on 127.0.0.1. Also the size of every
//! item the run left in the table (what DynamoDB bills a write by).
//!
//! Units, each measured [`SAMPLES`] times (the counts must agree; the JSON keeps them all):
//! - `accepted_webhook`: a new signed delivery within the rate (`intake::handle`, 202);
//! - `duplicate`: the same delivery again (200);
//! - `stage_first_of_two`, `stage_last_of_two`: the two stages of pipeline `review`;
//! - `stage_only`: the single stage of a one-stage pipeline (the cost model's unit);
//! - `tool_call`: one admission + settle on a connector (`ConnectorStore`), as `execute` does;
//! - `replay`: `POST /v1/executions/{id}/replay`.
//!
//! SQS `ReceiveMessage` and `DeleteMessage` of a stage record are what Lambda's event source
//! mapping does, not the handler: they are listed apart (`lambda_service`), as the Powertools
//! reference lists them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use serde_json::{json, Value};
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::clock::{Clock, SystemClock};
use sluice::domain::connector::{Admission, AdmissionRequest, BreakerSettings, BreakerSignal};
use sluice::domain::ids::{ConnectorId, HolderId, TenantId, ToolName};
use sluice::edge::{Claims, EdgeRequest};
use sluice::ports::{Backend, ConnectorStore, StageQueue};
use sluice::usecases::{api, execute, intake};

use crate::counting::{counted_sdk_config, RequestCounter};
use crate::e2e::system::{build_app, TENANT};
use crate::e2e::{ManifestSpec, RecordingConnector, Setup};
use crate::engines::{self, Engine};

/// How many times each unit is measured.
pub const SAMPLES: u64 = 3;

/// Operations Lambda's SQS event source mapping performs for the function.
const LAMBDA_SERVICE_OPS: &[&str] = &["sqs:ReceiveMessage", "sqs:DeleteMessage"];

type Counts = BTreeMap<String, u64>;

/// Counts requests, and the items of transactional writes.
#[derive(Debug, Clone, Default)]
struct Meter {
    counter: RequestCounter,
    transact_items: Arc<AtomicU64>,
}

/// What one unit of work sent.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
    counts: Counts,
    transact_items: u64,
}

impl Meter {
    /// Runs `work`, counting the requests it sends.
    async fn measure<T>(&self, work: impl std::future::Future<Output = T>) -> (T, Sample) {
        self.counter.reset();
        self.transact_items.store(0, Ordering::SeqCst);
        let out = work.await;
        let sample = Sample {
            counts: self.counter.snapshot(),
            transact_items: self.transact_items.load(Ordering::SeqCst),
        };
        (out, sample)
    }
}

/// One unit's samples, as JSON: the counts by operation of the last sample (steady state: the
/// first use of an item, e.g. a connector's state item, may cost more), totals by service,
/// the first sample's total, and whether every sample agreed.
fn unit_json(samples: &[Sample], extra: Value) -> Value {
    let last = samples.last().cloned().unwrap_or_default();
    let transact_items = last.transact_items;
    let first_total: u64 = samples
        .first()
        .map(|s| s.counts.values().sum())
        .unwrap_or(0);
    let first = last.counts;
    let by_service = |prefix: &str| -> u64 {
        first
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let mut unit = json!({
        "total": first.values().sum::<u64>(),
        "dynamodb": by_service("dynamodb:"),
        "sqs": by_service("sqs:"),
        "by_operation": first,
        "samples": samples.len(),
        "transaction_items": transact_items,
        "first_total": first_total,
        "constant": samples.windows(2).all(|w| w[0] == w[1]),
        "all_samples": samples.iter().map(|s| &s.counts).collect::<Vec<_>>(),
    });
    if let (Value::Object(unit), Value::Object(extra)) = (&mut unit, extra) {
        unit.extend(extra);
    }
    unit
}

/// A system on ministack whose SDK clients count into `counter`: a fresh table and queue, the
/// manifest `spec` calling `connector`.
async fn counted_app(
    meter: &Meter,
    spec: ManifestSpec,
    connector: &RecordingConnector,
    secret: &str,
) -> (App<AwsBackend, HttpToolClient>, String) {
    let (_, table) = engines::fresh_table(Engine::Ministack).await;
    let (_, queue_url, _dlq) = engines::fresh_queue().await;
    let sdk = with_transaction_items(
        counted_sdk_config(Engine::Ministack, &meter.counter).await,
        &meter.transact_items,
    );
    let backend = AwsBackend::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
        &table,
        &queue_url,
    );
    let setup = Setup::new(spec.yaml(&connector.base_url()))
        .setting("REPO_PIPELINE_CONCURRENCY_LIMIT", "100");
    let (app, _) = build_app(backend, &setup, &table, secret);
    (app, table)
}

/// Runs every unit and writes `requests.json` to `out`.
pub async fn run(out: &Path) -> Result<Value, String> {
    let meter = Meter::default();
    let connector = RecordingConnector::start().await;
    let secret = format!("bench-{}", ulid::Ulid::new());
    let spec = ManifestSpec {
        rate_limit_per_minute: 100_000,
        ..ManifestSpec::default()
    };
    let (app, table) = counted_app(&meter, spec.clone(), &connector, &secret).await;
    let worker = HolderId::random();
    let mut lambda_service = Counts::new();

    // Accepted webhooks, then a duplicate of each.
    let mut accepted = Vec::new();
    let mut execution_ids = Vec::new();
    for n in 0..SAMPLES {
        let delivery = format!("bench-{n}-{}", ulid::Ulid::new());
        let request = super::webhook_request(&secret, &delivery, &super::push_payload(n));
        let (answer, counts) = meter.measure(intake::handle(&app, request)).await;
        expect_status("accepted webhook", answer.status, 202, &answer.body)?;
        execution_ids.push(
            answer.body["execution_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        accepted.push((delivery, n, counts));
    }
    let mut duplicates = Vec::new();
    for (delivery, n, _) in &accepted {
        let request = super::webhook_request(&secret, delivery, &super::push_payload(*n));
        let (answer, counts) = meter.measure(intake::handle(&app, request)).await;
        expect_status("duplicate", answer.status, 200, &answer.body)?;
        duplicates.push(counts);
    }

    // The stages of the two-stage pipeline, as Lambda would hand them over one at a time.
    let mut first_of_two = Vec::new();
    let mut last_of_two = Vec::new();
    for (stage, samples) in [(0, &mut first_of_two), (1, &mut last_of_two)] {
        for _ in 0..SAMPLES {
            let (kind, counts) = run_one_stage(&app, &meter, &worker, &mut lambda_service).await?;
            let expected = if stage == 0 { "advanced" } else { "completed" };
            if kind != expected {
                return Err(format!("stage {stage} ended {kind}, not {expected}"));
            }
            samples.push(counts);
        }
    }
    let per_record_lambda: Counts = lambda_service
        .iter()
        .map(|(k, v)| (k.clone(), v / (2 * SAMPLES)))
        .collect();

    // The one-stage pipeline.
    let single = ManifestSpec {
        single_stage: true,
        ..spec
    };
    let (app1, table1) = counted_app(&meter, single, &connector, &secret).await;
    for n in 0..SAMPLES {
        let request = super::webhook_request(
            &secret,
            &format!("bench-one-{n}-{}", ulid::Ulid::new()),
            &super::push_payload(100 + n),
        );
        let answer = intake::handle(&app1, request).await;
        expect_status(
            "accepted webhook (one stage)",
            answer.status,
            202,
            &answer.body,
        )?;
    }
    let mut only = Vec::new();
    let mut ignored = Counts::new();
    for _ in 0..SAMPLES {
        let (kind, counts) = run_one_stage(&app1, &meter, &worker, &mut ignored).await?;
        if kind != "completed" {
            return Err(format!("the only stage ended {kind}, not completed"));
        }
        only.push(counts);
    }

    // One tool call's admission + settle, on a connector item that exists (as in steady state).
    let connector_id = ConnectorId::parse(format!("bench-{}", ulid::Ulid::new()))
        .map_err(|e| format!("connector id: {e}"))?;
    let mut tool_calls = Vec::new();
    for n in 0..=SAMPLES {
        let (result, counts) = meter.measure(admit_and_settle(&app, &connector_id)).await;
        result?;
        if n > 0 {
            tool_calls.push(counts);
        }
    }

    // Replays of finished executions.
    let mut replays = Vec::new();
    for id in &execution_ids {
        let request = EdgeRequest {
            method: "POST".into(),
            path: format!("/v1/executions/{id}/replay"),
            body: serde_json::to_vec(&json!({ "replay_reason": "benchmark" })).unwrap_or_default(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            claims: Some(Claims {
                tenant: TenantId::parse(TENANT).map_err(|e| format!("tenant: {e}"))?,
                subject: "bench".into(),
            }),
            ..EdgeRequest::default()
        };
        let (answer, counts) = meter.measure(api::handle(&app, request)).await;
        expect_status("replay", answer.status, 202, &answer.body)?;
        replays.push(counts);
    }

    let client = engines::dynamodb(Engine::Ministack).await;
    let mut sizes = item_sizes(&client, &table).await?;
    for (kind, size) in item_sizes(&client, &table1).await? {
        let entry = sizes.entry(kind).or_insert(size);
        *entry = (*entry).max(size);
    }
    let max_item = sizes.values().copied().max().unwrap_or(0);

    let stage_extra = json!({ "lambda_service": per_record_lambda });
    let result = json!({
        "engine": "ministack",
        "samples": SAMPLES,
        "units": {
            "accepted_webhook": unit_json(
                &accepted.iter().map(|a| a.2.clone()).collect::<Vec<_>>(),
                json!({}),
            ),
            "duplicate": unit_json(&duplicates, json!({})),
            "stage_first_of_two": unit_json(&first_of_two, stage_extra.clone()),
            "stage_last_of_two": unit_json(&last_of_two, stage_extra.clone()),
            "stage_only": unit_json(&only, stage_extra),
            "tool_call": unit_json(&tool_calls, json!({})),
            "replay": unit_json(&replays, json!({})),
        },
        "item_bytes_max_by_kind": sizes,
        "item_bytes_max": max_item,
        "payload_bytes": serde_json::to_vec(&super::push_payload(0)).map(|b| b.len()).unwrap_or(0),
    });
    super::write_json(out, "requests.json", &result).map_err(|e| format!("requests.json: {e}"))?;
    Ok(result)
}

fn expect_status(what: &str, got: u16, want: u16, body: &Value) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}: {body}"))
    }
}

/// Receives one stage message (counted into `lambda_service`), runs it (counted), deletes it
/// (counted into `lambda_service`). Returns the disposition's kind and the stage's counts.
async fn run_one_stage(
    app: &App<AwsBackend, HttpToolClient>,
    meter: &Meter,
    worker: &HolderId,
    lambda_service: &mut Counts,
) -> Result<(&'static str, Sample), String> {
    let queue = app.backend.queue();
    let mut message = None;
    for _ in 0..20 {
        let (received, counts) = meter.measure(queue.receive(1, 60, 1)).await;
        merge(lambda_service, counts.counts);
        let mut received = received.map_err(|e| format!("receiving a stage message: {e}"))?;
        if let Some(m) = received.pop() {
            message = Some(m);
            break;
        }
    }
    let message = message.ok_or("no stage message arrived within 20 receives")?;
    let (result, counts) = meter
        .measure(execute::run_message(app, &message, worker))
        .await;
    let disposition = result.map_err(|e| format!("running a stage: {e}"))?;
    let ((), deleted) = meter
        .measure(async {
            let _ = queue.ack(&message.receipt).await;
        })
        .await;
    merge(lambda_service, deleted.counts);
    Ok((disposition.kind(), counts))
}

fn merge(into: &mut Counts, counts: Counts) {
    for (k, v) in counts {
        if LAMBDA_SERVICE_OPS.contains(&k.as_str()) {
            *into.entry(k).or_default() += v;
        }
    }
}

/// One admission and its settle, as the executor does around a tool call.
async fn admit_and_settle(
    app: &App<AwsBackend, HttpToolClient>,
    connector: &ConnectorId,
) -> Result<(), String> {
    let now = SystemClock.now();
    let settings = BreakerSettings::default();
    let request = AdmissionRequest {
        connector: connector.clone(),
        tool: ToolName::parse("call").map_err(|e| format!("tool: {e}"))?,
        tenant: TenantId::parse(TENANT).map_err(|e| format!("tenant: {e}"))?,
        holder: HolderId::random(),
        limit: 10,
        slot_ttl_secs: 60,
        settings,
        now,
    };
    let connectors = app.backend.connectors();
    match connectors
        .admit(&request)
        .await
        .map_err(|e| format!("admit: {e}"))?
    {
        Admission::Admitted(ticket) => {
            connectors
                .settle(&ticket, BreakerSignal::Healthy, &settings, now)
                .await
                .map_err(|e| format!("settle: {e}"))?;
            Ok(())
        }
        other => Err(format!("admission was not granted: {other:?}")),
    }
}

/// The largest item size (bytes, by DynamoDB's sizing rules) per item kind (`pk prefix/sk
/// prefix`) in `table`.
async fn item_sizes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let mut sizes = BTreeMap::new();
    let mut start = None;
    for _ in 0..100 {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "scanning {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })?;
        for item in page.items() {
            let prefix = |name: &str| -> String {
                match item.get(name) {
                    Some(AttributeValue::S(s)) => {
                        s.split('#').next().unwrap_or_default().to_owned()
                    }
                    _ => "?".into(),
                }
            };
            let kind = format!("{}/{}", prefix("pk"), prefix("sk"));
            let size: u64 = item
                .iter()
                .map(|(k, v)| k.len() as u64 + value_size(v))
                .sum();
            let entry = sizes.entry(kind).or_insert(0);
            *entry = (*entry).max(size);
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    Ok(sizes)
}

/// An attribute value's size by DynamoDB's documented rules: strings and binaries by length,
/// numbers about 1 byte per 2 digits + 1, booleans and nulls 1, lists and maps 3 + their
/// elements (+1 each; map keys by length).
fn value_size(v: &AttributeValue) -> u64 {
    match v {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => 3 + list.iter().map(|e| 1 + value_size(e)).sum::<u64>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, e)| 1 + k.len() as u64 + value_size(e))
                .sum::<u64>()
        }
        AttributeValue::Ss(set) => set.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| (n.len() as u64).div_ceil(2) + 1).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len() as u64).sum(),
        _ => 0,
    }
}

/// `sdk` with a transport that adds the number of items of every `TransactWriteItems` request
/// to `items` (DynamoDB bills each transactional item twice).
fn with_transaction_items(
    sdk: aws_config::SdkConfig,
    items: &Arc<AtomicU64>,
) -> aws_config::SdkConfig {
    // The counting config's own client when it has one (requests then pass both wrappers).
    let inner = sdk
        .http_client()
        .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
    sdk.into_builder()
        .http_client(TransactionItems {
            inner,
            items: Arc::clone(items),
        })
        .build()
}

#[derive(Debug)]
struct TransactionItems {
    inner: SharedHttpClient,
    items: Arc<AtomicU64>,
}

impl HttpClient for TransactionItems {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(TransactionItemsConnector {
            inner: self.inner.http_connector(settings, components),
            items: Arc::clone(&self.items),
        })
    }
}

#[derive(Debug)]
struct TransactionItemsConnector {
    inner: SharedHttpConnector,
    items: Arc<AtomicU64>,
}

impl HttpConnector for TransactionItemsConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let is_transaction = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".TransactWriteItems"));
        if is_transaction {
            let n = request
                .body()
                .bytes()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
                .unwrap_or(0);
            self.items.fetch_add(n as u64, Ordering::SeqCst);
        }
        self.inner.call(request)
    }
}
