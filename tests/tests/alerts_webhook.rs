//! Alert webhooks end to end: a real axum receiver on 127.0.0.1 that records every request and
//! can be told to fail, hang or hold requests, and [`Alerter`]s on a `DynamoAlertStore` on
//! DynamoDB Local (several alerters on one store stand for several Lambda instances).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use sluice::adapters::dynamodb::DynamoAlertStore;
use sluice::alerts::{
    Alert, AlertConfig, AlertCounts, AlertType, Alerter, DeliveryReport, Severity, WebhookUrl,
};
use sluice::domain::ids::{ExecutionId, TenantId};
use sluice::{Clock, SystemClock};
use sluice_tests::engines::{self, Engine};
use tokio::sync::{Notify, Semaphore};

/// A connector token the alerts must never show.
const TOKEN: &str = "tok_live_9f8e7d6c5b4a";

/// The longest any single step of these tests may take before it counts as hung.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// 200 to everything.
    Accept,
    /// This status to the next `n` requests, then 200.
    FailTimes(u16, u32),
    /// This status to everything.
    AlwaysFail(u16),
    /// Never answers.
    Hang,
    /// Holds each request until the test adds a permit to the gate, then 200.
    Gate,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    /// Every request's body, in arrival order (one per attempt).
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    failed: Arc<AtomicU32>,
    arrived: Arc<Notify>,
    gate: Arc<Semaphore>,
}

impl Receiver {
    /// Serves the receiver on 127.0.0.1; returns it and its URL (with a query token that must
    /// not leak either).
    async fn start(mode: Mode) -> (Self, WebhookUrl) {
        let receiver = Receiver {
            mode: Arc::new(Mutex::new(mode)),
            bodies: Arc::default(),
            failed: Arc::default(),
            arrived: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/hook?key=qs_secret_abcdef");
        (
            receiver,
            WebhookUrl::parse(&url, true).expect("loopback URL"),
        )
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("bodies").clone()
    }
}

async fn hook(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = serde_json::from_slice(&body).expect("JSON body");
    r.bodies.lock().expect("bodies").push(body);
    r.arrived.notify_one();
    let mode = *r.mode.lock().expect("mode");
    match mode {
        Mode::Accept => StatusCode::OK,
        Mode::FailTimes(status, n) => {
            if r.failed.fetch_add(1, Ordering::SeqCst) < n {
                StatusCode::from_u16(status).expect("status")
            } else {
                StatusCode::OK
            }
        }
        Mode::AlwaysFail(status) => StatusCode::from_u16(status).expect("status"),
        Mode::Hang => std::future::pending().await,
        Mode::Gate => {
            r.gate.acquire().await.expect("gate").forget();
            StatusCode::OK
        }
    }
}

async fn store() -> DynamoAlertStore {
    let (client, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    DynamoAlertStore::new(client, table)
}

fn config(url: WebhookUrl) -> AlertConfig {
    AlertConfig {
        webhook_url: Some(url),
        timeout: Duration::from_millis(500),
        retry_backoff: Duration::from_millis(10),
        ..AlertConfig::disabled()
    }
}

fn alerter(config: AlertConfig, store: DynamoAlertStore) -> Alerter<DynamoAlertStore> {
    let secrets = vec![TOKEN.to_owned(), "short".to_owned()];
    Alerter::new(config, store, Arc::new(SystemClock), secrets).expect("alerter")
}

fn run_failed(code: &str) -> Alert {
    Alert::new(AlertType::RunFailed, code, SystemClock.now())
        .for_run(ExecutionId::random(), TenantId::parse("acme").expect("id"))
        .with_pipeline("deploy")
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP_LIMIT:?}"))
}

#[tokio::test]
async fn below_the_minimum_is_dropped_and_high_is_sent() {
    let (receiver, url) = Receiver::start(Mode::Accept).await;
    let alerter = alerter(config(url), store().await);
    assert_eq!(alerter.config().min_severity, Severity::Medium);

    let low = Alert::new(AlertType::ToolStepFailed, "HTTP_503", SystemClock.now());
    assert_eq!(alerter.deliver(low).await, DeliveryReport::Filtered);
    assert!(receiver.bodies().is_empty());
    assert_eq!(
        alerter.counts().await.expect("counts"),
        AlertCounts::default()
    );

    let high = run_failed("ERR_TOOL").with_connector("crm");
    let want = high.payload();
    assert_eq!(
        alerter.deliver(high).await,
        DeliveryReport::Sent { attempts: 1 }
    );
    assert_eq!(want["connector"], "crm");
    assert_eq!(want["severity"], "high");
    assert_eq!(receiver.bodies(), [want]);
    assert_eq!(
        alerter.counts().await.expect("counts"),
        AlertCounts {
            sent: 1,
            ..AlertCounts::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_across_20_instances_sends_one_alert() {
    let (receiver, url) = Receiver::start(Mode::Accept).await;
    let store = store().await;
    // Twenty instances (own clients, one table), each seeing its own run fail the same way.
    let alerters: Vec<_> = (0..20)
        .map(|_| alerter(config(url.clone()), store.clone()))
        .collect();
    for a in &alerters {
        a.raise(run_failed("HTTP_503"));
    }
    bounded(
        "flush",
        futures::future::join_all(alerters.iter().map(Alerter::flush)),
    )
    .await;
    assert_eq!(receiver.bodies().len(), 1, "{:?}", receiver.bodies());
    assert_eq!(
        alerters[0].counts().await.expect("counts"),
        AlertCounts {
            sent: 1,
            deduplicated: 19,
            ..AlertCounts::default()
        }
    );
    // Another error is another alert.
    assert_eq!(
        alerters[7].deliver(run_failed("HTTP_504")).await,
        DeliveryReport::Sent { attempts: 1 }
    );
    assert_eq!(receiver.bodies().len(), 2);
}

#[tokio::test]
async fn two_failures_then_success_is_one_alert_with_two_retries() {
    let (receiver, url) = Receiver::start(Mode::FailTimes(503, 2)).await;
    let alerter = alerter(config(url), store().await);
    let alert = run_failed("HTTP_503");
    let want = alert.payload();
    assert_eq!(
        alerter.deliver(alert).await,
        DeliveryReport::Sent { attempts: 3 }
    );
    assert_eq!(receiver.bodies(), [want.clone(), want.clone(), want]);
    assert_eq!(
        alerter.counts().await.expect("counts"),
        AlertCounts {
            sent: 1,
            retried: 2,
            ..AlertCounts::default()
        }
    );
    assert!(alerter
        .dead_letters(None, 10)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn always_500_is_three_attempts_and_one_dead_letter() {
    let (receiver, url) = Receiver::start(Mode::AlwaysFail(500)).await;
    let alerter = alerter(config(url), store().await);
    let alert = run_failed("HTTP_500");
    let want = alert.payload();
    assert_eq!(
        alerter.deliver(alert).await,
        DeliveryReport::DeadLettered {
            attempts: 3,
            error: "status 500".into()
        }
    );
    assert_eq!(receiver.bodies().len(), 3);
    let letters = alerter.dead_letters(None, 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.error.as_str(), letter.attempts, letter.alert_type),
        ("status 500", 3, AlertType::RunFailed)
    );
    assert_eq!(letter.payload, want);
    assert_eq!(letter.tenant, TenantId::parse("acme").ok());
    // Listed for its tenant, not for another.
    let acme = TenantId::parse("acme").expect("id");
    let globex = TenantId::parse("globex").expect("id");
    assert_eq!(
        alerter
            .dead_letters(Some(&acme), 10)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(alerter
        .dead_letters(Some(&globex), 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        alerter.counts().await.expect("counts"),
        AlertCounts {
            retried: 2,
            dead_lettered: 1,
            ..AlertCounts::default()
        }
    );
}

#[tokio::test]
async fn a_refusing_4xx_is_not_retried() {
    let (receiver, url) = Receiver::start(Mode::AlwaysFail(400)).await;
    let alerter = alerter(config(url), store().await);
    assert_eq!(
        alerter.deliver(run_failed("E")).await,
        DeliveryReport::DeadLettered {
            attempts: 1,
            error: "status 400".into()
        }
    );
    assert_eq!(receiver.bodies().len(), 1);
    let counts = alerter.counts().await.expect("counts");
    assert_eq!((counts.retried, counts.dead_lettered), (0, 1));
}

#[tokio::test]
async fn a_hanging_receiver_times_out_into_a_dead_letter() {
    let (receiver, url) = Receiver::start(Mode::Hang).await;
    let alerter = alerter(config(url), store().await);
    let report = bounded("deliver", alerter.deliver(run_failed("E"))).await;
    assert_eq!(
        report,
        DeliveryReport::DeadLettered {
            attempts: 3,
            error: "timeout".into()
        }
    );
    assert_eq!(
        receiver.bodies().len(),
        3,
        "every attempt reached the receiver"
    );
    let letters = alerter.dead_letters(None, 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "timeout");
}

#[tokio::test]
async fn secrets_are_redacted_in_what_is_sent_and_kept() {
    let with_token = |code: &str| {
        Alert::new(
            AlertType::BreakerOpened,
            &format!("{code}_{TOKEN}"),
            SystemClock.now(),
        )
        .with_pipeline(format!("p-{TOKEN}"))
        .with_connector("crm")
    };
    let (receiver, url) = Receiver::start(Mode::Accept).await;
    let sent_by = alerter(config(url), store().await);
    assert_eq!(
        sent_by.deliver(with_token("E1")).await,
        DeliveryReport::Sent { attempts: 1 }
    );
    let sent = serde_json::to_string(&receiver.bodies()).expect("json");
    assert!(!sent.contains(TOKEN), "{sent}");
    assert_eq!(receiver.bodies()[0]["error_code"], "E1_[redacted]");
    assert_eq!(receiver.bodies()[0]["pipeline"], "p-[redacted]");
    // Short values are not treated as secrets (they would mangle words).
    assert_eq!(receiver.bodies()[0]["alert_type"], "breaker.opened");

    let (_failing, url) = Receiver::start(Mode::AlwaysFail(502)).await;
    let failing = alerter(config(url), sent_by.store().clone());
    assert!(matches!(
        failing.deliver(with_token("E2")).await,
        DeliveryReport::DeadLettered { .. }
    ));
    let letters = failing.dead_letters(None, 10).await.expect("list");
    let kept = serde_json::to_string(&letters).expect("json") + &format!("{letters:?}");
    assert!(kept.contains("[redacted]"), "{kept}");
    for secret in [TOKEN, "qs_secret_abcdef"] {
        assert!(!kept.contains(secret), "{secret} in {kept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_returns_while_the_receiver_holds_the_request() {
    let (receiver, url) = Receiver::start(Mode::Gate).await;
    let alerter = alerter(config(url), store().await);
    let raising = alerter.clone();
    // raise is synchronous; on a blocking thread, a raise that waited for the webhook would
    // never return (the gate opens only below), and `bounded` would fail the test.
    bounded(
        "raise",
        tokio::task::spawn_blocking(move || raising.raise(run_failed("E"))),
    )
    .await
    .expect("raise");
    // The request is at the receiver, held: the delivery is still under way.
    bounded("arrival", receiver.arrived.notified()).await;
    assert_eq!(alerter.counts().await.expect("counts").sent, 0);
    receiver.gate.add_permits(1);
    bounded("flush", alerter.flush()).await;
    assert_eq!(alerter.counts().await.expect("counts").sent, 1);
    assert_eq!(receiver.bodies().len(), 1);
}

#[test]
fn the_webhook_must_be_https_except_loopback_in_a_local_run() {
    let read = |url: &str, local: bool| {
        AlertConfig::from_lookup(
            |name| (name == "ALERT_WEBHOOK_URL").then(|| url.to_owned()),
            local,
        )
    };
    for local in [false, true] {
        let err = read("http://example.com/hook", local).expect_err("plain http");
        assert_eq!(err.variable, "ALERT_WEBHOOK_URL");
        assert!(read("https://example.com/hook", local).is_ok());
    }
    assert!(read("http://127.0.0.1:8080/hook", true).is_ok());
    let err = read("http://127.0.0.1:8080/hook", false).expect_err("not a local run");
    assert_eq!(err.variable, "ALERT_WEBHOOK_URL");
}
