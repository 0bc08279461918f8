//! The API's summaries do a bounded amount of DynamoDB work, counted on the wire
//! (`sluice_tests::counting`) on DynamoDB Local with a fake clock: `GET /v1/reliability` reads
//! at most `ceil(window / 100)` record pages, `MAX_SUMMARY_LEDGER_READS` ledgers, one state per
//! connector and the alert counters, then answers from the instance's cache for
//! `SUMMARY_CACHE_SECS`; `GET /health` and `GET /v1/health` read one round (connector states,
//! alert counters) per `HEALTH_CACHE_SECS`, however many callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::json;
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::config::ReliabilityConfig;
use sluice::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionStatus, NewExecution, UpdateOutcome,
};
use sluice::domain::ids::{ExecutionId, PipelineName, RunKey, SourceId, TenantId};
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::edge::{Claims, EdgeRequest, EdgeResponse};
use sluice::manifest::Manifest;
use sluice::ports::{Backend, ExecutionStore, Ledger};
use sluice::usecases::api;
use sluice::usecases::reliability::{
    HEALTH_CACHE_SECS, MAX_SUMMARY_LEDGER_READS, SUMMARY_CACHE_SECS,
};
use sluice::{Clock, FakeClock};
use sluice_tests::contract::t0;
use sluice_tests::counting::{counted_sdk_config, service_total, RequestCounter};
use sluice_tests::e2e::system::{SECRET_ENV, TENANT};
use sluice_tests::e2e::ManifestSpec;
use sluice_tests::engines::{self, Engine};

/// Runs in the tenant's window: more than the ledger bound.
const RUNS: u32 = 60;
/// Of which blocked (the oldest).
const BLOCKED: u32 = 5;
/// Unauthenticated health calls at once.
const FLOOD: usize = 20;

struct Setup {
    app: App<AwsBackend, HttpToolClient>,
    clock: FakeClock,
    counter: RequestCounter,
}

/// The API on a fresh DynamoDB Local table whose client counts into the setup's counter; the
/// SQS client is never used by these routes.
async fn setup() -> Setup {
    let (_, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    let counter = RequestCounter::default();
    let config = counted_sdk_config(Engine::DynamoDbLocal, &counter).await;
    let lookup: HashMap<String, String> = [(SECRET_ENV.to_owned(), "s".to_owned())].into();
    let yaml = ManifestSpec::default().yaml("http://127.0.0.1:9");
    let manifest = Manifest::parse(&yaml, "bounded.yaml").unwrap();
    let secrets = manifest.secrets(|n| lookup.get(n).cloned()).unwrap();
    let clock = FakeClock::at(t0());
    let app = App::new(
        AwsBackend::new(
            aws_sdk_dynamodb::Client::new(&config),
            aws_sdk_sqs::Client::new(&config),
            &table,
            "http://127.0.0.1:9/000000000000/unused",
        ),
        HttpToolClient::new(),
        Arc::new(clock.clone()),
        manifest,
        secrets,
        ReliabilityConfig::from_lookup(|_| None).unwrap(),
    );
    Setup {
        app,
        clock,
        counter,
    }
}

impl Setup {
    /// `RUNS` executions of the tenant a second apart, each with its RECEIVED event; the
    /// oldest `BLOCKED` blocked with the event that says why.
    async fn seed(&self) {
        let (executions, ledger) = (self.app.backend.executions(), self.app.backend.ledger());
        for n in 0..RUNS {
            let now = self.clock.now();
            let new = NewExecution {
                id: ExecutionId::random(),
                tenant: TenantId::parse(TENANT).unwrap(),
                source: SourceId::parse("gh").unwrap(),
                pipeline: PipelineName::parse("review").unwrap(),
                run_key: RunKey::parse(format!("acme/app@{n}")).unwrap(),
                replay_of: None,
                not_before: None,
            };
            let CreateOutcome::Created(record) = executions.create(new, now).await.unwrap() else {
                panic!("fresh id");
            };
            let event = |seq, kind, detail| LedgerEvent {
                execution_id: record.id.clone(),
                seq,
                at: now,
                kind,
                stage: None,
                detail,
            };
            ledger
                .append(event(1, EventKind::Received, json!({"payload": {}})))
                .await
                .unwrap();
            if n < BLOCKED {
                let why = json!({"reason": "http_404", "attempt_count": 1});
                ledger
                    .append(event(2, EventKind::Blocked, why))
                    .await
                    .unwrap();
                let change = ExecutionChange {
                    status: Some(ExecutionStatus::Blocked),
                    ..ExecutionChange::default()
                };
                let out = executions.update(&record.id, 1, change, now).await.unwrap();
                assert!(matches!(out, UpdateOutcome::Updated(_)), "{out:?}");
            }
            self.clock.advance_secs(1);
        }
    }

    /// One GET, and the DynamoDB requests it made.
    async fn get(&self, path: &str, token: bool) -> (EdgeResponse, BTreeMap<String, u64>) {
        self.counter.reset();
        let response = api::handle(&self.app, request(path, token)).await;
        (response, self.counter.snapshot())
    }
}

fn request(path: &str, token: bool) -> EdgeRequest {
    EdgeRequest {
        method: "GET".into(),
        path: path.into(),
        claims: token.then(|| Claims {
            tenant: TenantId::parse(TENANT).unwrap(),
            subject: "operator".into(),
        }),
        ..EdgeRequest::default()
    }
}

/// What one summary may cost: `ceil(window / 100)` record pages, the ledger bound, one state
/// per connector, the alert counters.
fn summary_bound(app: &App<AwsBackend, HttpToolClient>) -> u64 {
    let window = u64::from(app.config.observability.window_runs);
    window.div_ceil(100)
        + MAX_SUMMARY_LEDGER_READS as u64
        + app.manifest.connectors.len() as u64
        + 1
}

#[tokio::test]
async fn reliability_reads_are_bounded_and_cached_for_the_window() {
    let s = setup().await;
    s.seed().await;
    let connectors = s.app.manifest.connectors.len() as u64;
    let bound = summary_bound(&s.app);

    let (r, counts) = s.get("/v1/reliability", true).await;
    println!("first /v1/reliability: {counts:?} (bound {bound})");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total_runs"], RUNS);
    assert_eq!(r.body["ledgers_read"], MAX_SUMMARY_LEDGER_READS);
    assert_eq!(
        r.body["failed_runs_with_trail"], BLOCKED,
        "failed runs read first"
    );
    let first = r.body.clone();
    assert!(service_total(&counts, "dynamodb") <= bound, "{counts:?}");
    // Exactly: one page of records and one Query per ledger; a state per connector and the
    // alert counters.
    let queries = 1 + MAX_SUMMARY_LEDGER_READS as u64;
    let expected = BTreeMap::from([
        ("dynamodb:GetItem".to_owned(), connectors + 1),
        ("dynamodb:Query".to_owned(), queries),
    ]);
    assert_eq!(counts, expected);

    // Inside the window: the cached summary, no request at all.
    for advance in [0, SUMMARY_CACHE_SECS - 1] {
        s.clock.advance_secs(advance);
        let (r, counts) = s.get("/v1/reliability", true).await;
        assert_eq!(counts, BTreeMap::new(), "{advance} s in");
        assert_eq!(r.body, first);
    }
    // After it: read again, within the same bound.
    s.clock.advance_secs(1);
    let (r, counts) = s.get("/v1/reliability", true).await;
    assert_eq!(counts, expected);
    assert_eq!(r.body["as_of_ms"], s.clock.now().as_millis());
}

#[tokio::test]
async fn unauthenticated_health_floods_cost_one_read_round_per_window() {
    let s = setup().await;
    let connectors = s.app.manifest.connectors.len() as u64;
    // One round: a state per connector and the alert counters (alarms are off here).
    let round = BTreeMap::from([("dynamodb:GetItem".to_owned(), connectors + 1)]);

    s.counter.reset();
    let calls = (0..FLOOD).map(|_| api::handle(&s.app, request("/health", false)));
    let answers = futures::future::join_all(calls).await;
    assert_eq!(
        s.counter.snapshot(),
        round,
        "{FLOOD} concurrent calls, one round"
    );
    for r in &answers {
        assert_eq!((r.status, &r.body), (200, &json!({"status": "ok"})));
    }

    // More calls inside the window, with or without a token: nothing read.
    s.clock.advance_millis(HEALTH_CACHE_SECS * 1000 - 1);
    for token in [false, true] {
        let (r, counts) = s
            .get(if token { "/v1/health" } else { "/health" }, token)
            .await;
        assert_eq!(counts, BTreeMap::new());
        if token {
            assert_eq!(r.body["breakers"][0]["state"], "CLOSED");
            assert_eq!(r.body["checked_at_ms"], t0().as_millis());
        } else {
            let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["status"]);
        }
    }
    let (r, _) = s.get("/v1/health", false).await;
    assert_eq!(r.status, 401, "details need a token");

    // The next window: one round again, whoever calls first.
    s.clock.advance_millis(1);
    s.counter.reset();
    for _ in 0..FLOOD {
        let r = api::handle(&s.app, request("/health", false)).await;
        assert_eq!(r.body, json!({"status": "ok"}));
    }
    assert_eq!(s.counter.snapshot(), round);
    let (r, counts) = s.get("/v1/health", true).await;
    assert_eq!(counts, BTreeMap::new());
    assert_eq!(r.body["checked_at_ms"], s.clock.now().as_millis());
}
