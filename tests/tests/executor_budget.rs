//! The executor's time budget with a slow real HTTP connector (127.0.0.1) and a fake deadline:
//! a batch whose work exceeds the remaining time starts only what fits, gives the rest back
//! unstarted (retryable: batch item failures), leaves no TOOL_CALLED without its outcome and
//! holds no lease afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::adapters::backend::MemoryBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::clock::{Clock, SystemClock};
use sluice::config::ReliabilityConfig;
use sluice::domain::execution::{ExecutionChange, ExecutionStatus, NewExecution};
use sluice::domain::ids::{ExecutionId, HolderId, RunKey, SourceId, TenantId};
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::manifest::Manifest;
use sluice::ports::{ExecutionStore, Ledger, ReceivedMessage, StageMessage};
use sluice::usecases::execute::{run_batch_within, Budget, ExecuteError, BATCH_CONCURRENCY};
use sluice_tests::e2e::connector::{RecordingConnector, Reply};
use sluice_tests::e2e::system::{push, SECRET_ENV, SOURCE, TENANT};
use sluice_tests::e2e::ManifestSpec;

/// How long the connector holds every call, and the connector's timeout.
const CALL: Duration = Duration::from_secs(2);
const TIMEOUT_MS: u64 = 3000;
/// The reserves the test budget keeps around a call.
const RESERVE: Duration = Duration::from_millis(500);
const RECORDS: usize = 8;

fn app(base_url: &str) -> App<MemoryBackend, HttpToolClient> {
    let spec = ManifestSpec {
        timeout_ms: TIMEOUT_MS,
        single_stage: true,
        ..ManifestSpec::default()
    };
    let manifest = Manifest::parse(&spec.yaml(base_url), "budget.yaml").expect("manifest");
    let secrets = manifest
        .secrets(|name| (name == SECRET_ENV).then(|| "s".to_owned()))
        .expect("secrets");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    sluice::startup::memory_app(
        manifest,
        secrets,
        // Pipeline slots for every record of the batch.
        ReliabilityConfig::from_lookup(|name| {
            (name == "REPO_PIPELINE_CONCURRENCY_LIMIT").then(|| "100".to_owned())
        })
        .expect("config"),
        clock,
    )
}

/// Records and queues one execution as intake does, and its stage 0 message as received.
async fn seed(app: &App<MemoryBackend, HttpToolClient>, n: usize) -> ReceivedMessage {
    let source = SourceId::parse(SOURCE).unwrap();
    let run_key = RunKey::parse(format!("acme/app:{n}")).unwrap();
    let tenant = TenantId::parse(TENANT).unwrap();
    let id = ExecutionId::for_run_key(&tenant, &source, &run_key);
    let pipeline = app.manifest.sources[&source].pipeline.clone();
    let now = app.clock.now();
    let executions = &app.backend.executions;
    let new = NewExecution {
        id: id.clone(),
        tenant,
        source,
        pipeline,
        run_key,
        replay_of: None,
        not_before: None,
    };
    executions.create(new, now).await.unwrap();
    let received = LedgerEvent {
        execution_id: id.clone(),
        seq: 1,
        at: now,
        kind: EventKind::Received,
        stage: None,
        detail: json!({ "payload": push("acme/app", &format!("sha{n}")) }),
    };
    app.backend.ledger.append(received).await.unwrap();
    let queued = ExecutionChange {
        status: Some(ExecutionStatus::Queued),
        ..ExecutionChange::default()
    };
    executions.update(&id, 1, queued, now).await.unwrap();
    ReceivedMessage {
        message: StageMessage {
            execution_id: id,
            stage: 0,
            not_before: None,
            wait: 0,
        },
        receipt: format!("receipt-{n}"),
        receive_count: 1,
    }
}

#[tokio::test]
async fn a_batch_past_its_deadline_starts_only_what_fits() {
    let connector = RecordingConnector::start().await;
    connector.set_default("/tickets", Reply::ok().delayed(CALL));
    let app = app(&connector.base_url());
    let mut messages = Vec::new();
    for n in 0..RECORDS {
        messages.push(seed(&app, n).await);
    }
    let ids: Vec<ExecutionId> = messages
        .iter()
        .map(|m| m.message.execution_id.clone())
        .collect();

    // A record needs 0.5 + 3 + 0.5 = 4 s. The first round (4 records at a time) starts with
    // 5.5 s left; the second could only start after a 2 s call, with at most 3.5 s left.
    let budget =
        Budget::until(Instant::now() + Duration::from_millis(5500)).with_reserves(RESERVE, RESERVE);
    let worker = HolderId::random();
    let results = run_batch_within(&app, &worker, messages, &budget).await;
    assert_eq!(results.len(), RECORDS);

    let mut started = 0;
    let mut given_back = Vec::new();
    for ((receipt, result), id) in results.iter().zip(&ids) {
        let kinds: Vec<EventKind> = app
            .backend
            .ledger
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        match result {
            Ok(_) => {
                started += 1;
                // No TOOL_CALLED without its outcome.
                assert_eq!(
                    kinds,
                    [
                        EventKind::Received,
                        EventKind::StageStarted,
                        EventKind::ToolCalled,
                        EventKind::ToolSucceeded,
                        EventKind::Succeeded,
                    ],
                    "{receipt}"
                );
            }
            Err(error) => {
                assert!(
                    matches!(error, ExecuteError::OutOfTime { .. }),
                    "{receipt}: {error}"
                );
                // A batch item failure: SQS delivers it again.
                assert!(error.is_retryable());
                // Not started: nothing but the payload in its ledger.
                assert_eq!(kinds, [EventKind::Received], "{receipt}");
                given_back.push(receipt.clone());
            }
        }
        // Nobody waits on a lease: every record's lease was given back.
        let record = app.backend.executions.get(id).await.unwrap().unwrap();
        assert_eq!(record.lease, None, "{receipt}: {record:?}");
    }
    assert_eq!(started, BATCH_CONCURRENCY, "one round fits");
    assert_eq!(given_back.len(), RECORDS - BATCH_CONCURRENCY);
    assert_eq!(connector.count("/tickets"), BATCH_CONCURRENCY);
}
