//! Concurrent replays of one execution on ministack (DynamoDB + SQS), through the API handler:
//! they all read the same ledger, yet their starts are spaced by the cooldown, because each
//! start is reserved by a conditional write on the original's ledger.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::clock::{Clock, SystemClock};
use sluice::config::ReliabilityConfig;
use sluice::domain::execution::{CreateOutcome, ExecutionStatus, NewExecution};
use sluice::domain::ids::{ExecutionId, RunKey, SourceId, TenantId};
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::edge::{Claims, EdgeRequest};
use sluice::manifest::Manifest;
use sluice::ports::{ExecutionStore, Ledger};
use sluice::usecases::api;
use sluice_tests::e2e::system::{push, SECRET_ENV, SOURCE, TENANT};
use sluice_tests::e2e::ManifestSpec;
use sluice_tests::engines::{self, Engine};

const REPLAYS: usize = 20;
const COOLDOWN_MS: i64 = 900_000;

async fn app() -> App<AwsBackend, HttpToolClient> {
    let (dynamodb, table) = engines::fresh_table(Engine::Ministack).await;
    let (sqs, queue_url, _dlq) = engines::fresh_queue().await;
    let spec = ManifestSpec {
        single_stage: true,
        ..ManifestSpec::default()
    };
    let manifest = Manifest::parse(&spec.yaml("http://127.0.0.1:9"), "replay.yaml").unwrap();
    let secrets = manifest
        .secrets(|name| (name == SECRET_ENV).then(|| "s".to_owned()))
        .unwrap();
    App::new(
        AwsBackend::new(dynamodb, sqs, &table, &queue_url),
        HttpToolClient::new(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
        manifest,
        secrets,
        ReliabilityConfig::from_lookup(|_| None).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_of_one_execution_are_spaced_by_the_cooldown() {
    let app = Arc::new(app().await);
    let now = app.clock.now();
    let source = SourceId::parse(SOURCE).unwrap();
    let new = NewExecution {
        id: ExecutionId::random(),
        tenant: TenantId::parse(TENANT).unwrap(),
        source: source.clone(),
        pipeline: app.manifest.sources[&source].pipeline.clone(),
        run_key: RunKey::parse("acme/app:sha").unwrap(),
        replay_of: None,
        not_before: None,
    };
    let CreateOutcome::Created(original) = app.backend.executions.create(new, now).await.unwrap()
    else {
        panic!("fresh id");
    };
    let received = LedgerEvent {
        execution_id: original.id.clone(),
        seq: 1,
        at: now,
        kind: EventKind::Received,
        stage: None,
        detail: json!({ "payload": push("acme/app", "sha") }),
    };
    app.backend.ledger.append(received).await.unwrap();

    let tasks: Vec<_> = (0..REPLAYS)
        .map(|n| {
            let app = app.clone();
            let id = original.id.clone();
            tokio::spawn(async move {
                let request = EdgeRequest {
                    method: "POST".into(),
                    path: format!("/v1/executions/{id}/replay"),
                    body: json!({ "replay_reason": format!("storm {n}") })
                        .to_string()
                        .into_bytes(),
                    claims: Some(Claims {
                        tenant: TenantId::parse(TENANT).unwrap(),
                        subject: format!("operator-{n}"),
                    }),
                    ..EdgeRequest::default()
                };
                api::handle(&*app, request).await
            })
        })
        .collect();
    let mut starts = Vec::new();
    for task in tasks {
        let response = task.await.expect("the replay task");
        assert_eq!(response.status, 202, "{}", response.body);
        assert_eq!(response.body["status"], "delayed", "{}", response.body);
        let start = response.body["not_before_ms"].as_i64().expect("a start");
        let id = ExecutionId::parse(response.body["execution_id"].as_str().unwrap()).unwrap();
        let record = app.backend.executions.get(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Queued);
        assert_eq!(record.not_before.map(|t| t.as_millis()), Some(start));
        starts.push(start);
    }
    starts.sort_unstable();
    println!("replay starts (ms after the original's creation): {:?}", {
        starts
            .iter()
            .map(|s| s - original.created_at.as_millis())
            .collect::<Vec<_>>()
    });
    // Exactly one at the earliest instant (the cooldown after the original's start), then one
    // cooldown after another.
    let earliest = original.created_at.as_millis() + COOLDOWN_MS;
    let expected: Vec<i64> = (0..REPLAYS as i64)
        .map(|n| earliest + n * COOLDOWN_MS)
        .collect();
    assert_eq!(starts, expected);

    // The original's ledger records every request once, each with its own start.
    let events = app.backend.ledger.events(&original.id).await.unwrap();
    let requested: BTreeMap<i64, u64> = events
        .iter()
        .filter(|e| e.kind == EventKind::ReplayRequested)
        .map(|e| (e.detail["not_before_ms"].as_i64().unwrap(), e.seq))
        .collect();
    assert_eq!(requested.len(), REPLAYS);
    assert_eq!(requested.keys().copied().collect::<Vec<_>>(), expected);
}
