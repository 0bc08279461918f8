//! Handler tests: the real-shaped API Gateway HTTP API events in `events/intake_*.json`,
//! deserialized as `lambda_http` does in Lambda, translated, and answered by the intake use
//! case on the memory backend with the example manifest (`infra/sluice.example.yaml`).
//!
//! The signed events are signed with [`DEMO_SECRET`]: to replay them with
//! `cargo lambda invoke intake --data-file events/intake_github_push.json`, start the function
//! with `DEMO_GITHUB_SECRET=demo-secret`.

use std::sync::Arc;

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice::adapters::backend::MemoryBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::config::ReliabilityConfig;
use sluice::domain::delivery::DeliveryStatus;
use sluice::domain::execution::ExecutionStatus;
use sluice::domain::ids::{DeliveryId, ExecutionId, RunKey, SourceId, TenantId};
use sluice::domain::ledger::EventKind;
use sluice::domain::signature::sign_github;
use sluice::domain::time::Timestamp;
use sluice::manifest::Manifest;
use sluice::ports::{DeliveryStore, ExecutionStore, Ledger};
use sluice::usecases::intake;
use sluice::FakeClock;
use sluice_intake::{edge_request, http_response};

/// The `github-demo` signing secret the events are signed with (`DEMO_GITHUB_SECRET`).
const DEMO_SECRET: &str = "demo-secret";

const EXAMPLE_MANIFEST: &str = include_str!("../../../infra/sluice.example.yaml");
const PUSH: &str = include_str!("../../../events/intake_github_push.json");
const PUSH_UNSIGNED: &str = include_str!("../../../events/intake_github_push_unsigned.json");
const PUSH_PROD_STAGE: &str = include_str!("../../../events/intake_github_push_prod_stage.json");
const FORM_ENCODED: &str = include_str!("../../../events/intake_github_form_encoded.json");

fn app() -> App<MemoryBackend, HttpToolClient> {
    let manifest = Manifest::parse(EXAMPLE_MANIFEST, "infra/sluice.example.yaml").unwrap();
    let secrets = manifest
        .secrets(|name| (name == "DEMO_GITHUB_SECRET").then(|| DEMO_SECRET.to_owned()))
        .unwrap();
    let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
    // The events' requestContext.timeEpoch.
    let clock = FakeClock::at(Timestamp::from_secs(1_700_000_001));
    sluice::startup::memory_app(manifest, secrets, config, Arc::new(clock))
}

fn request(event: &str) -> Request {
    lambda_http::request::from_str(event).expect("an API Gateway HTTP API v2 event")
}

/// The event as API Gateway sends it, for assertions on its raw fields.
fn raw(event: &str) -> Value {
    serde_json::from_str(event).unwrap()
}

/// Translate, handle, translate back: what the Lambda does per invocation.
async fn invoke(app: &App<MemoryBackend, HttpToolClient>, event: &str) -> (u16, Value) {
    let response = http_response(intake::handle(app, edge_request(request(event))).await);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("a text body, got {other:?}"),
    };
    (response.status().as_u16(), body)
}

#[test]
fn the_signed_events_carry_the_github_signature_of_their_body_under_the_demo_secret() {
    for event in [PUSH, PUSH_PROD_STAGE, FORM_ENCODED] {
        let event = raw(event);
        let body = event["body"].as_str().unwrap();
        assert_eq!(
            event["headers"]["x-hub-signature-256"],
            json!(sign_github(DEMO_SECRET.as_bytes(), body.as_bytes())),
            "{}",
            event["headers"]["x-github-delivery"]
        );
        assert_eq!(
            event["headers"]["content-length"],
            json!(body.len().to_string())
        );
    }
    assert!(raw(PUSH_UNSIGNED)["headers"]
        .get("x-hub-signature-256")
        .is_none());
}

#[test]
fn the_translation_keeps_method_path_headers_and_body() {
    let edge = edge_request(request(PUSH));
    assert_eq!(edge.method, "POST");
    assert_eq!(edge.path, "/webhooks/github-demo");
    assert_eq!(edge.body, raw(PUSH)["body"].as_str().unwrap().as_bytes());
    assert_eq!(
        edge.headers.get("x-github-event").map(String::as_str),
        Some("push")
    );
    assert!(edge.headers.keys().all(|k| *k == k.to_ascii_lowercase()));
    assert!(edge.query.is_empty());
    assert_eq!(edge.claims, None);

    let staged = edge_request(request(PUSH_PROD_STAGE));
    assert_eq!(
        raw(PUSH_PROD_STAGE)["rawPath"],
        json!("/prod/webhooks/github-demo")
    );
    assert_eq!(
        staged.path, "/webhooks/github-demo",
        "the stage prefix is stripped"
    );
}

#[test]
fn the_response_is_json_with_the_status() {
    let answer = sluice::edge::EdgeResponse::error(415, "unsupported_media_type", "no");
    let response = http_response(answer);
    assert_eq!(response.status().as_u16(), 415);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let body: Value = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body["error"]["code"], json!("unsupported_media_type"));
}

#[tokio::test]
async fn the_signed_push_is_accepted_and_queued() {
    let app = app();
    let (status, body) = invoke(&app, PUSH).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], json!("accepted"));
    let source = SourceId::parse("github-demo").unwrap();
    let run_key = RunKey::parse("acme/app:4a9c2f1e7b3d5a8c0e6f2b4d9a1c3e5f7b9d0a2c").unwrap();
    let execution_id =
        ExecutionId::for_run_key(&TenantId::parse("demo").unwrap(), &source, &run_key);
    assert_eq!(body["execution_id"], json!(execution_id));

    let execution = app
        .backend
        .executions
        .get(&execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Queued);
    assert_eq!(execution.tenant.as_str(), "demo");
    assert_eq!(execution.pipeline.as_str(), "review");
    assert_eq!(app.backend.queue.len(), 1);
    let events = app.backend.ledger.events(&execution_id).await.unwrap();
    assert_eq!(events[0].kind, EventKind::Received);
    let payload: Value = serde_json::from_str(raw(PUSH)["body"].as_str().unwrap()).unwrap();
    assert_eq!(events[0].detail["payload"], payload);
    // GitHub signs only the body: the delivery id is its digest, not X-GitHub-Delivery.
    let body = raw(PUSH)["body"].as_str().unwrap().to_owned();
    let delivery = DeliveryId::parse(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    ))
    .unwrap();
    let tenant = TenantId::parse("demo").unwrap();
    let record = app
        .backend
        .deliveries
        .get(&tenant, &source, &delivery)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, DeliveryStatus::Queued);

    // GitHub's "Redeliver" sends the same event again.
    let (status, again) = invoke(&app, PUSH).await;
    assert_eq!(status, 200);
    assert_eq!(
        again,
        json!({"execution_id": execution_id, "status": "duplicate"})
    );
    // The same signed body with another X-GitHub-Delivery (through the named stage): the
    // same delivery, whatever the unsigned header says.
    let (status, resent) = invoke(&app, PUSH_PROD_STAGE).await;
    assert_eq!(status, 200);
    assert_eq!(
        resent,
        json!({"execution_id": execution_id, "status": "duplicate"})
    );
    assert_eq!(app.backend.queue.len(), 1);
}

#[tokio::test]
async fn a_push_through_a_named_stage_is_routed() {
    let app = app();
    let (status, body) = invoke(&app, PUSH_PROD_STAGE).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn the_unsigned_push_is_401_and_stores_nothing() {
    let app = app();
    let (status, body) = invoke(&app, PUSH_UNSIGNED).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], json!("missing_signature"));
    assert!(app.backend.queue.is_empty());
    let source = SourceId::parse("github-demo").unwrap();
    let body = raw(PUSH_UNSIGNED)["body"].as_str().unwrap().to_owned();
    let delivery = DeliveryId::parse(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    ))
    .unwrap();
    assert!(app
        .backend
        .deliveries
        .get(&TenantId::parse("demo").unwrap(), &source, &delivery)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_form_encoded_delivery_is_415() {
    // A GitHub webhook configured with content type application/x-www-form-urlencoded: signed
    // correctly, but not JSON.
    let app = app();
    let (status, body) = invoke(&app, FORM_ENCODED).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], json!("unsupported_media_type"));
    assert!(app.backend.queue.is_empty());
}

#[tokio::test]
async fn wrong_routes_and_methods() {
    let app = app();
    let mut event = raw(PUSH);
    event["requestContext"]["http"]["method"] = json!("GET");
    let (status, body) = invoke(&app, &event.to_string()).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], json!("method_not_allowed"));

    let mut event = raw(PUSH);
    event["rawPath"] = json!("/webhooks/nope");
    let (status, body) = invoke(&app, &event.to_string()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], json!("unknown_source"));

    let mut event = raw(PUSH);
    event["rawPath"] = json!("/v1/executions");
    let (status, body) = invoke(&app, &event.to_string()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], json!("not_found"));
}
