//! The intake function's log: one JSON line per request, never the secret, the signature or
//! the payload. Its own test binary, so no test running in parallel without a subscriber races
//! the callsites' interest cache.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sluice::config::ReliabilityConfig;
use sluice::domain::time::Timestamp;
use sluice::manifest::Manifest;
use sluice::usecases::intake;
use sluice::FakeClock;
use sluice_intake::edge_request;

/// The `github-demo` signing secret the events are signed with (`DEMO_GITHUB_SECRET`).
const DEMO_SECRET: &str = "demo-secret";

const EXAMPLE_MANIFEST: &str = include_str!("../../../infra/sluice.example.yaml");
const PUSH: &str = include_str!("../../../events/intake_github_push.json");
const PUSH_UNSIGNED: &str = include_str!("../../../events/intake_github_push_unsigned.json");

/// Captures log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_log_line_per_request_without_the_secret_or_the_signature() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let manifest = Manifest::parse(EXAMPLE_MANIFEST, "sluice.example.yaml").unwrap();
    let secrets = manifest
        .secrets(|name| (name == "DEMO_GITHUB_SECRET").then(|| DEMO_SECRET.to_owned()))
        .unwrap();
    let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
    let clock = Arc::new(FakeClock::at(Timestamp::from_secs(1_700_000_001)));
    let app = sluice::startup::memory_app(manifest, secrets, config, clock);
    let request = |event: &str| edge_request(lambda_http::request::from_str(event).unwrap());
    let accepted = intake::handle(&app, request(PUSH)).await;
    assert_eq!(accepted.status, 202);
    let body = accepted.body;
    let refused = intake::handle(&app, request(PUSH_UNSIGNED)).await;
    assert_eq!(refused.status, 401);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["source"], json!("github-demo"));
    // GitHub's delivery id is the digest of the signed body (X-GitHub-Delivery is unsigned).
    let delivery = lines[0]["delivery_id"].as_str().unwrap();
    assert!(
        delivery.starts_with("sha256:") && delivery.len() == 7 + 64,
        "{delivery}"
    );
    assert_eq!(lines[0]["execution_id"], body["execution_id"]);
    assert_eq!(lines[0]["outcome"], json!("accepted"));
    assert_eq!(lines[1]["outcome"], json!("missing_signature"));
    assert_eq!(lines[1]["status"], json!(401));

    let event: Value = serde_json::from_str(PUSH).unwrap();
    let signature = event["headers"]["x-hub-signature-256"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = signature.trim_start_matches("sha256=");
    assert!(!text.contains(DEMO_SECRET), "{text}");
    assert!(!text.contains(hex), "{text}");
    assert!(!text.contains("Fix the retry budget"), "no payload in logs");
}
