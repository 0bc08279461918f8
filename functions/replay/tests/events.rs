//! Handler tests: the sample events in `events/replay_*.json` go through the translation and
//! the API on the memory backend, with the example manifest.

use std::path::PathBuf;
use std::sync::Arc;

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use sluice::adapters::backend::MemoryBackend;
use sluice::app::App;
use sluice::config::ReliabilityConfig;
use sluice::domain::execution::{CreateOutcome, ExecutionChange, ExecutionStatus, NewExecution};
use sluice::domain::ids::{ExecutionId, PipelineName, RunKey, SourceId, TenantId};
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::domain::time::Timestamp;
use sluice::domain::tool::{ToolOutcome, ToolRequest};
use sluice::manifest::{Manifest, Secrets};
use sluice::ports::{Backend, ConnectorStore, ExecutionStore, Ledger, StageQueue, ToolClient};
use sluice::startup::memory_app_with_tools;
use sluice::{Clock, FakeClock};
use sluice_replay::{claims, edge_request, handle_request};

const EXEC: &str = "exe_01jq3v7k9m2x4b6n8p0r5t7w9y";
const SUBJECT: &str = "0f6c2d8e-3b1a-4c5d-9e7f-8a9b0c1d2e3f";
/// The events' `requestContext.timeEpoch`.
const EVENT_TIME_MS: i64 = 1_767_225_600_000;

struct NoTools;

impl ToolClient for NoTools {
    async fn call(&self, _request: &ToolRequest) -> ToolOutcome {
        panic!("the API called a tool")
    }
}

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn event_json(name: &str) -> Value {
    let path = repo_file(&format!("events/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event")
}

fn load(name: &str) -> Request {
    request(&event_json(name))
}

/// The example manifest's app, on memory, with execution `EXEC` of tenant `demo` created an
/// hour before the events' time (outside the replay cooldown), queued, its payload recorded.
async fn app() -> App<MemoryBackend, NoTools> {
    let manifest_path = repo_file("infra/sluice.example.yaml");
    let manifest = Manifest::load(&manifest_path).expect("example manifest");
    let clock = FakeClock::at(Timestamp::from_millis(EVENT_TIME_MS - 3_600_000));
    let config = ReliabilityConfig::from_lookup(|_| None).expect("config");
    let app = memory_app_with_tools(
        manifest,
        Secrets::default(),
        config,
        Arc::new(clock.clone()),
        NoTools,
    );
    let now = clock.now();
    let new = NewExecution {
        id: ExecutionId::parse(EXEC).unwrap(),
        tenant: TenantId::parse("demo").unwrap(),
        source: SourceId::parse("github-demo").unwrap(),
        pipeline: PipelineName::parse("review").unwrap(),
        run_key: RunKey::parse("acme/app:abc123").unwrap(),
        replay_of: None,
        not_before: None,
    };
    let executions = app.backend.executions();
    let CreateOutcome::Created(record) = executions.create(new, now).await.unwrap() else {
        panic!("fresh store");
    };
    let queued = ExecutionChange {
        status: Some(ExecutionStatus::Queued),
        ..ExecutionChange::default()
    };
    executions
        .update(&record.id, record.version, queued, now)
        .await
        .unwrap();
    let received = LedgerEvent {
        execution_id: record.id.clone(),
        seq: 1,
        at: now,
        kind: EventKind::Received,
        stage: None,
        detail: json!({"payload": {"repository": {"full_name": "acme/app"}, "after": "abc123"}}),
    };
    app.backend.ledger().append(received).await.unwrap();
    // Its first stage succeeded: a replay from "notify" carries this output along.
    let created = LedgerEvent {
        execution_id: record.id.clone(),
        seq: 2,
        at: now,
        kind: EventKind::ToolSucceeded,
        stage: Some(0),
        detail: json!({"stage_name": "create_ticket", "status": 201, "output": {"id": 17}}),
    };
    app.backend.ledger().append(created).await.unwrap();
    clock.set(Timestamp::from_millis(EVENT_TIME_MS));
    app
}

/// Status, content type and JSON body of a Lambda response.
fn read(response: Response<Body>) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(response.body().as_ref()).expect("a JSON body");
    (status, content_type, body)
}

async fn call(app: &App<MemoryBackend, NoTools>, name: &str) -> (u16, Value) {
    let (status, content_type, body) = read(handle_request(app, load(name)).await);
    assert_eq!(content_type, "application/json", "{name}");
    (status, body)
}

const AUTHORIZED: [&str; 13] = [
    "replay_list_executions.json",
    "replay_get_execution.json",
    "replay_replay_execution.json",
    "replay_get_connector.json",
    "replay_list_kill_switches.json",
    "replay_put_connector_switch.json",
    "replay_delete_connector_switch.json",
    "replay_put_tool_switch.json",
    "replay_put_tenant_switch.json",
    "replay_get_reliability.json",
    "replay_list_alert_dead_letters.json",
    "replay_get_health_details.json",
    "replay_no_authorizer.json",
];

#[test]
fn every_event_translates_with_claims_only_from_the_authorizer() {
    for name in AUTHORIZED.iter().chain(&["replay_health.json"]) {
        let event = event_json(name);
        let edge = edge_request(load(name));
        assert_eq!(
            edge.method, event["requestContext"]["http"]["method"],
            "{name}"
        );
        assert_eq!(edge.path, event["rawPath"], "{name}");
        assert_eq!(
            edge.body,
            event["body"].as_str().unwrap_or_default().as_bytes(),
            "{name}"
        );
        let has_authorizer = event["requestContext"].get("authorizer").is_some();
        match edge.claims {
            Some(c) => {
                assert!(has_authorizer, "{name}");
                assert_eq!(c.tenant.as_str(), "demo");
                assert_eq!(c.subject, SUBJECT);
            }
            None => assert!(!has_authorizer, "{name}"),
        }
    }
    let edge = edge_request(load("replay_list_executions.json"));
    assert_eq!(edge.query["status"], "queued");
    assert_eq!(edge.query["limit"], "10");
    assert!(edge.headers["authorization"].starts_with("Bearer "));
    assert!(edge.claims.is_some());
    assert!(edge_request(load("replay_no_authorizer.json"))
        .claims
        .is_none());
    assert!(edge_request(load("replay_health.json")).claims.is_none());
}

#[test]
fn claims_need_both_a_valid_tenant_and_a_subject() {
    let base = event_json("replay_get_execution.json");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut event = base.clone();
        edit(&mut event["requestContext"]["authorizer"]["jwt"]["claims"]);
        claims(&request(&event))
    };
    assert!(with(&|_| {}).is_some());
    let remove = |name: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(name);
        }
    };
    assert!(with(&remove("custom:tenant_id")).is_none());
    assert!(with(&remove("sub")).is_none());
    assert!(with(&|c| c["sub"] = json!("  ")).is_none());
    assert!(with(&|c| c["custom:tenant_id"] = json!("")).is_none());
    assert!(with(&|c| c["custom:tenant_id"] = json!("demo#other")).is_none());
    // A tenant named anywhere else (another claim, a header, the query) is never used.
    let mut event = base.clone();
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant_id"] = json!("other");
    event["headers"]["x-tenant-id"] = json!("other");
    event["rawQueryString"] = json!("tenant=other");
    let c = claims(&request(&event)).unwrap();
    assert_eq!(c.tenant.as_str(), "demo");
}

#[test]
fn a_named_stage_is_stripped_from_the_path() {
    let mut event = event_json("replay_list_executions.json");
    event["requestContext"]["stage"] = json!("prod");
    event["rawPath"] = json!("/prod/v1/executions");
    assert_eq!(edge_request(request(&event)).path, "/v1/executions");
    event["rawPath"] = json!("/v1/executions");
    assert_eq!(edge_request(request(&event)).path, "/v1/executions");
    event["rawPath"] = json!("/production/v1/executions");
    assert_eq!(
        edge_request(request(&event)).path,
        "/production/v1/executions"
    );
}

#[tokio::test]
async fn health_answers_only_its_status_without_a_token_and_details_with_one() {
    let app = app().await;
    let (status, body) = call(&app, "replay_health.json").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = call(&app, "replay_get_health_details.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["time_ms"], EVENT_TIME_MS);
    assert_eq!(body["checked_at_ms"], EVENT_TIME_MS, "one round, cached");
    assert_eq!(body["connectors"], 1);
    assert_eq!(body["pipelines"], 1);
    assert_eq!(body["breakers"][0]["state"], "CLOSED");
    assert_eq!(body["alarms"]["source"], "off");
    assert_eq!(body["alerts"]["enabled"], false);
}

#[tokio::test]
async fn every_v1_event_without_its_authorizer_is_401() {
    let app = app().await;
    for name in AUTHORIZED {
        let mut event = event_json(name);
        event["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        let (status, _, body) = read(handle_request(&app, request(&event)).await);
        assert_eq!(status, 401, "{name}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    assert!(app
        .backend
        .connectors()
        .switches()
        .await
        .unwrap()
        .is_empty());
    assert_eq!(app.backend.queue.len(), 0);
}

#[tokio::test]
async fn execution_events_list_get_and_replay() {
    let app = app().await;
    let (status, body) = call(&app, "replay_list_executions.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["id"], EXEC);
    assert_eq!(body["items"][0]["status"], "QUEUED");
    assert!(body["next_cursor"].is_null());

    let (status, body) = call(&app, "replay_get_execution.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution"]["id"], EXEC);
    assert_eq!(body["ledger"][0]["kind"], "RECEIVED");

    let (status, body) = call(&app, "replay_replay_execution.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["replay_of"], EXEC);
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["stage"], 1); // from_stage "notify"
    let new_id = ExecutionId::parse(body["execution_id"].as_str().unwrap()).unwrap();
    let new = app
        .backend
        .executions()
        .get(&new_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.replay_of.as_ref().map(ExecutionId::as_str), Some(EXEC));
    assert_eq!(new.stage, 1);
    let events = app.backend.ledger().events(&new_id).await.unwrap();
    assert_eq!(events[1].kind, EventKind::ReplayCreated);
    assert_eq!(events[1].detail["requested_by"], SUBJECT);
    assert_eq!(
        events[0].detail["payload"]["repository"]["full_name"],
        "acme/app"
    );
    assert_eq!(
        events[0].detail["stages"],
        json!({"create_ticket": {"id": 17}})
    );
    let original = app
        .backend
        .ledger()
        .events(&ExecutionId::parse(EXEC).unwrap())
        .await
        .unwrap();
    assert_eq!(original.last().unwrap().kind, EventKind::ReplayRequested);
    assert_eq!(original.last().unwrap().detail["requested_by"], SUBJECT);
    let messages = app.backend.queue().receive(10, 30, 0).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message.execution_id, new_id);
    assert_eq!(messages[0].message.stage, 1);

    let (status, body) = call(&app, "replay_no_authorizer.json").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
}

#[tokio::test]
async fn connector_and_kill_switch_events() {
    let app = app().await;
    let (status, body) = call(&app, "replay_get_connector.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connector"], "demo");
    assert_eq!(body["breaker"]["state"], "CLOSED");
    assert_eq!(body["limit"], 4);
    assert_eq!(body["in_flight"], 0);

    let (status, body) = call(&app, "replay_put_connector_switch.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["switch"]["key"], "connector#demo");
    assert_eq!(body["switch"]["set_by"], SUBJECT);
    assert_eq!(body["switch"]["set_at_ms"], EVENT_TIME_MS);
    assert_eq!(
        body["switch"]["reason"],
        "demo connector returns 500s; paging vendor"
    );
    let (status, body) = call(&app, "replay_put_tool_switch.json").await;
    assert_eq!(
        (status, &body["switch"]["key"]),
        (200, &json!("tool#demo#notify"))
    );
    let (status, body) = call(&app, "replay_put_tenant_switch.json").await;
    assert_eq!(
        (status, &body["switch"]["key"]),
        (200, &json!("tenant#demo"))
    );

    let (_, body) = call(&app, "replay_list_kill_switches.json").await;
    let keys: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["connector#demo", "tenant#demo", "tool#demo#notify"]);
    let (_, body) = call(&app, "replay_get_connector.json").await;
    assert_eq!(body["switches"].as_array().unwrap().len(), 3);

    let (status, body) = call(&app, "replay_delete_connector_switch.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"cleared": true, "key": "connector#demo"}));
    let (status, body) = call(&app, "replay_delete_connector_switch.json").await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn reliability_and_dead_letter_events() {
    let app = app().await;
    let (status, body) = call(&app, "replay_get_reliability.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "demo");
    assert_eq!(
        (&body["total_runs"], &body["in_progress_runs"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(body["failure_rate"], Value::Null, "no run has finished");
    assert_eq!(body["slo"]["all_met"], true);
    assert_eq!(body["alarms"]["source"], "off");
    assert_eq!(body["alerts"]["enabled"], false);
    assert_eq!(body["breakers"][0]["state"], "CLOSED");
    assert_eq!(
        (&body["ledgers_read"], &body["as_of_ms"]),
        (&json!(1), &json!(EVENT_TIME_MS))
    );

    let (status, body) = call(&app, "replay_list_alert_dead_letters.json").await;
    assert_eq!((status, &body), (200, &json!({"items": []})));
}
