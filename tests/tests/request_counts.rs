//! How many AWS requests intake makes per webhook, counted on the wire
//! (`sluice_tests::counting`) against ministack (DynamoDB + SQS): accepted, duplicate, joined
//! and delayed deliveries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::clock::SystemClock;
use sluice::config::ReliabilityConfig;
use sluice::domain::signature::sign_github;
use sluice::edge::EdgeRequest;
use sluice::manifest::Manifest;
use sluice::usecases::intake;
use sluice_tests::counting::{counted_sdk_config, service_total as total, RequestCounter};
use sluice_tests::e2e::system::{push, SECRET_ENV, SOURCE};
use sluice_tests::e2e::ManifestSpec;
use sluice_tests::engines::{self, Engine};

const SECRET: &str = "count-secret";

/// Intake on a fresh ministack table and queue whose clients count into `counter`.
async fn counted_app(counter: &RequestCounter, rate: u32) -> App<AwsBackend, HttpToolClient> {
    let (_, table) = engines::fresh_table(Engine::Ministack).await;
    let (_, queue_url, _dlq) = engines::fresh_queue().await;
    let config = counted_sdk_config(Engine::Ministack, counter).await;
    let lookup: HashMap<String, String> = [(SECRET_ENV.to_owned(), SECRET.to_owned())].into();
    let spec = ManifestSpec {
        rate_limit_per_minute: rate,
        ..ManifestSpec::default()
    };
    let manifest = Manifest::parse(&spec.yaml("http://127.0.0.1:9"), "counts.yaml").unwrap();
    let secrets = manifest.secrets(|n| lookup.get(n).cloned()).unwrap();
    App::new(
        AwsBackend::new(
            aws_sdk_dynamodb::Client::new(&config),
            aws_sdk_sqs::Client::new(&config),
            &table,
            &queue_url,
        ),
        HttpToolClient::new(),
        Arc::new(SystemClock),
        manifest,
        secrets,
        ReliabilityConfig::from_lookup(|_| None).unwrap(),
    )
}

/// Delivers `payload` as `delivery_id`; the status, the answer's `status` field and the
/// requests it cost.
async fn deliver(
    app: &App<AwsBackend, HttpToolClient>,
    counter: &RequestCounter,
    delivery_id: &str,
    payload: &Value,
) -> (u16, String, BTreeMap<String, u64>) {
    let body = serde_json::to_vec(payload).unwrap();
    let request = EdgeRequest {
        method: "POST".into(),
        path: format!("/webhooks/{SOURCE}"),
        headers: BTreeMap::from([
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-github-delivery".to_owned(), delivery_id.to_owned()),
            (
                "x-hub-signature-256".to_owned(),
                sign_github(SECRET.as_bytes(), &body),
            ),
        ]),
        body,
        ..EdgeRequest::default()
    };
    counter.reset();
    let response = intake::handle(app, request).await;
    let outcome = response.body["status"].as_str().unwrap_or("").to_owned();
    let counts = counter.snapshot();
    println!("{delivery_id}: {} {outcome}: {counts:?}", response.status);
    (response.status, outcome, counts)
}

#[tokio::test]
async fn requests_per_intake_outcome() {
    let counter = RequestCounter::default();
    let app = counted_app(&counter, 1).await;

    let (status, outcome, accepted) = deliver(&app, &counter, "d-1", &push("acme/app", "a1")).await;
    assert_eq!((status, outcome.as_str()), (202, "accepted"));
    // One transaction and one message (before the composite write: 6 DynamoDB + 1 SQS).
    assert_eq!(
        accepted,
        BTreeMap::from([
            ("dynamodb:TransactWriteItems".to_owned(), 1),
            ("sqs:SendMessage".to_owned(), 1)
        ])
    );

    let (status, _, duplicate) = deliver(&app, &counter, "d-1", &push("acme/app", "a1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        duplicate,
        BTreeMap::from([("dynamodb:TransactWriteItems".to_owned(), 1)])
    );

    // Another delivery of the same run key joins the execution: the refused transaction, then
    // its claim (before: 5, with the rate counted).
    // (Another body: a GitHub delivery id is the digest of the signed body.)
    let mut other_event = push("acme/app", "a1");
    other_event["action"] = json!("synchronize");
    let (status, outcome, joined) = deliver(&app, &counter, "d-2", &other_event).await;
    assert_eq!((status, outcome.as_str()), (202, "joined"));
    assert_eq!(
        joined,
        BTreeMap::from([
            ("dynamodb:PutItem".to_owned(), 1),
            ("dynamodb:TransactWriteItems".to_owned(), 1)
        ])
    );

    // The rate limit is 1 a minute: a new run key now waits for a later window. (Unless the
    // minute turned since the first delivery: then the limiter says "within" and this is a
    // plain accept; both are counted, only the delayed one is asserted.)
    let (status, outcome, delayed) = deliver(&app, &counter, "d-3", &push("acme/app", "a2")).await;
    assert_eq!(status, 202);
    // Delayed: the refused transaction, then the step-by-step path (claim, rate windows,
    // RECEIVED, create, DELAYED, send, two QUEUED marks).
    if outcome == "delayed" {
        assert_eq!(total(&delayed, "sqs"), 1, "{delayed:?}");
        assert_eq!(delayed["dynamodb:TransactWriteItems"], 1, "{delayed:?}");
        assert!(total(&delayed, "dynamodb") >= 8, "{delayed:?}");
    }
}
