//! The whole system in-process on ministack: a fresh table and stage queue, the App on
//! [`AwsBackend`] with short test settings, the local run's HTTP router (intake + API with dev
//! tokens) on 127.0.0.1, and executor poll loops, plus helpers that send signed webhooks, call
//! the API, read records and ledgers, and wait for states with a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::alerts::AlertConfig;
use sluice::app::App;
use sluice::clock::{Clock, SystemClock};
use sluice::config::ReliabilityConfig;
use sluice::domain::execution::{ExecutionRecord, ExecutionStatus};
use sluice::domain::ids::ExecutionId;
use sluice::domain::ledger::{EventKind, LedgerEvent};
use sluice::domain::signature::sign_github;
use sluice::manifest::Manifest;
use sluice::ports::{Backend, ExecutionStore, Ledger};
use sluice::telemetry::EmfSink;
use sluice::usecases::sweep::{self, SweepReport};
use sluice_local::DevAuth;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engines::{self, Engine};

/// The environment variable the test manifests name for the source's secret.
pub const SECRET_ENV: &str = "E2E_GITHUB_SECRET";
/// The source every test manifest declares.
pub const SOURCE: &str = "gh";
/// The connector every test manifest declares.
pub const CONNECTOR: &str = "rec";
/// The tenant of the test source.
pub const TENANT: &str = "acme";
/// The source [`ManifestSpec::tenant_source`] adds: GitHub scheme, tenant from the signed
/// body's `/org`, run key `/repository/full_name`, same secret and pipeline as [`SOURCE`].
pub const TENANT_SOURCE: &str = "gh-orgs";

/// Short reliability settings for tests: seconds instead of minutes.
pub const TEST_SETTINGS: &[(&str, &str)] = &[
    ("MAX_PIPELINE_ATTEMPTS", "3"),
    ("BASE_BACKOFF_SECONDS", "1"),
    ("MAX_BACKOFF_SECONDS", "2"),
    ("COOLDOWN_SECONDS", "0"),
    ("BREAKER_FAILURE_THRESHOLD", "5"),
    ("BREAKER_COOLDOWN_SECONDS", "2"),
    ("BREAKER_PROBE_TIMEOUT_SECONDS", "2"),
    ("BREAKER_DEFER_SECONDS", "1"),
    ("EXECUTION_LEASE_SECONDS", "5"),
    ("REPO_PIPELINE_CONCURRENCY_LIMIT", "50"),
    ("REPO_PIPELINE_CONCURRENCY_TTL_SECONDS", "60"),
    ("REPO_WEBHOOK_RATE_LIMIT_PER_MINUTE", "1000"),
];

/// The test manifest: source `gh` (GitHub scheme, tenant `acme`, run key repository + head
/// SHA) triggering pipeline `review` (`create_ticket` -> `POST /tickets`, then `notify` ->
/// `POST /notify` with the ticket id) on connector `rec`.
#[derive(Debug, Clone)]
pub struct ManifestSpec {
    pub rate_limit_per_minute: u32,
    pub concurrency_limit: u32,
    pub failure_threshold: u32,
    pub timeout_ms: u64,
    /// `retry.max_attempts` of the first stage, if set.
    pub first_stage_attempts: Option<u32>,
    /// Only the first stage.
    pub single_stage: bool,
    /// Declare [`TENANT_SOURCE`] too.
    pub tenant_source: bool,
}

impl Default for ManifestSpec {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 1000,
            concurrency_limit: 10,
            failure_threshold: 50,
            timeout_ms: 2000,
            first_stage_attempts: None,
            single_stage: false,
            tenant_source: false,
        }
    }
}

impl ManifestSpec {
    /// The YAML text, with the connector at `base_url`.
    pub fn yaml(&self, base_url: &str) -> String {
        let retry = self
            .first_stage_attempts
            .map(|n| format!("        retry:\n          max_attempts: {n}\n"))
            .unwrap_or_default();
        let second = if self.single_stage {
            String::new()
        } else {
            format!("      - name: notify\n        connector: {CONNECTOR}\n        tool: notify\n")
        };
        let tenant_source = if self.tenant_source {
            format!(
                "  {TENANT_SOURCE}:\n    scheme: github\n    secret_env: {SECRET_ENV}\n    \
                 tenant: {{ pointer: /org }}\n    run_key:\n      - pointer: \
                 /repository/full_name\n    pipeline: review\n"
            )
        } else {
            String::new()
        };
        format!(
            r#"sources:
  {SOURCE}:
    scheme: github
    secret_env: {SECRET_ENV}
    tenant: {{ value: {TENANT} }}
    run_key:
      - pointer: /repository/full_name
      - pointer: /after
    pipeline: review
    rate_limit_per_minute: {rate}
{tenant_source}connectors:
  {CONNECTOR}:
    base_url: {base_url}
    timeout_ms: {timeout}
    concurrency_limit: {limit}
    breaker:
      failure_threshold: {threshold}
    tools:
      create_ticket:
        method: POST
        path: /tickets
        body:
          repository: "{{{{payload/repository/full_name}}}}"
          head_sha: "{{{{payload/after}}}}"
          execution_id: "{{{{execution_id}}}}"
      notify:
        method: POST
        path: /notify
        body:
          ticket_id: "{{{{stages.create_ticket/id}}}}"
pipelines:
  review:
    stages:
      - name: create_ticket
        connector: {CONNECTOR}
        tool: create_ticket
{retry}{second}"#,
            rate = self.rate_limit_per_minute,
            timeout = self.timeout_ms,
            limit = self.concurrency_limit,
            threshold = self.failure_threshold,
        )
    }
}

/// How to start a [`System`].
#[derive(Clone)]
pub struct Setup {
    pub manifest_yaml: String,
    /// Overrides of [`TEST_SETTINGS`].
    pub settings: Vec<(String, String)>,
    /// Executor poll loops started with the system.
    pub workers: u32,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("settings", &self.settings)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// `manifest_yaml` with the test settings, two executor loops and the system clock.
    pub fn new(manifest_yaml: String) -> Self {
        Self {
            manifest_yaml,
            settings: Vec::new(),
            workers: 2,
            clock: Arc::new(SystemClock),
        }
    }

    /// One setting overridden.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Another number of executor loops.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// Another clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Every setting, test defaults first, as `NAME=value` pairs.
    pub fn all_settings(&self) -> Vec<(String, String)> {
        let mut map: HashMap<String, String> = TEST_SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in &self.settings {
            map.insert(k.clone(), v.clone());
        }
        map.into_iter().collect()
    }
}

/// The App of a [`System`] on `backend` (whose table is `table`): the setup's manifest and
/// settings, `secret` as the source's signing secret. Returns the settings applied too.
pub fn build_app(
    backend: AwsBackend,
    setup: &Setup,
    table: &str,
    secret: &str,
) -> (App<AwsBackend, HttpToolClient>, Vec<(String, String)>) {
    let mut settings = setup.all_settings();
    settings.push(("SLUICE_TABLE_NAME".into(), table.to_owned()));
    settings.push((SECRET_ENV.into(), secret.to_owned()));
    let lookup: HashMap<String, String> = settings.iter().cloned().collect();
    let config = ReliabilityConfig::from_lookup(|name| lookup.get(name).cloned())
        .expect("test settings are valid");
    let manifest =
        Manifest::parse(&setup.manifest_yaml, "e2e.yaml").expect("the test manifest is valid");
    let secrets = manifest
        .secrets(|name| lookup.get(name).cloned())
        .expect("the test manifest's secrets are set");
    let app = App::new(
        backend,
        HttpToolClient::new(),
        setup.clock.clone(),
        manifest,
        secrets,
        config,
    )
    .with_emf(EmfSink::Memory(Default::default()))
    // ALERT_* from the settings; loopback http allowed, as in the local run.
    .with_alerts(
        AlertConfig::from_lookup(|name| lookup.get(name).cloned(), true)
            .expect("the test's alert settings are valid"),
    )
    .expect("an alert HTTP client");
    (app, settings)
}

/// A running system. Dropping it stops the server and the executor loops.
pub struct System {
    pub app: App<AwsBackend, HttpToolClient>,
    pub base_url: String,
    pub http: reqwest::Client,
    pub auth: DevAuth,
    /// The source's signing secret.
    pub secret: String,
    pub table: String,
    pub queue_url: String,
    pub settings: Vec<(String, String)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("base_url", &self.base_url)
            .field("table", &self.table)
            .field("queue_url", &self.queue_url)
            .finish_non_exhaustive()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
    }
}

impl System {
    /// Starts the system: fresh table and queue on ministack, the router on 127.0.0.1:0, and
    /// `setup.workers` executor loops.
    pub async fn start(setup: Setup) -> Self {
        let (dynamodb, table) = engines::fresh_table(Engine::Ministack).await;
        let (sqs, queue_url, _dlq) = engines::fresh_queue().await;
        let secret = format!("e2e-{}", ulid::Ulid::new());
        let backend = AwsBackend::new(dynamodb, sqs, &table, &queue_url);
        let (app, settings) = build_app(backend, &setup, &table, &secret);
        let auth = DevAuth::generate();
        let router = sluice_local::router(app.clone(), auth.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the system on 127.0.0.1");
        let base_url = format!("http://{}", listener.local_addr().expect("bound address"));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut server_stop = stop_rx.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let mut system = Self {
            app,
            base_url,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            auth,
            secret,
            table,
            queue_url,
            settings,
            stop,
            tasks,
        };
        system.start_workers(setup.workers);
        system
    }

    /// Starts `n` more executor poll loops (as that many Lambda instances would run).
    pub fn start_workers(&mut self, n: u32) {
        for _ in 0..n {
            let stop = self.stop.subscribe();
            self.tasks
                .spawn(sluice_local::run::executor_loop(self.app.clone(), stop));
        }
    }

    /// Runs the sweeper once.
    pub async fn sweep(&self) -> SweepReport {
        sweep::sweep(&self.app).await.expect("the sweeper runs")
    }

    /// A dev token for `tenant`, subject `e2e-tester`.
    pub fn token(&self, tenant: &str) -> String {
        self.auth
            .mint(tenant, "e2e-tester", 3600)
            .expect("minting a token")
    }

    /// Sends `payload` to `/webhooks/gh`, signed, with `X-GitHub-Delivery: delivery_id` (not
    /// signed: GitHub signs only the body): the status and the JSON answer.
    pub async fn deliver(&self, delivery_id: &str, payload: &Value) -> (u16, Value) {
        self.deliver_to(SOURCE, delivery_id, payload).await
    }

    /// [`System::deliver`] to `source`.
    pub async fn deliver_to(
        &self,
        source: &str,
        delivery_id: &str,
        payload: &Value,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(payload).expect("payload serializes");
        let response = self
            .http
            .post(format!("{}/webhooks/{source}", self.base_url))
            .header("content-type", "application/json")
            .header("x-github-delivery", delivery_id)
            .header(
                "x-hub-signature-256",
                sign_github(self.secret.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .expect("the intake answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Calls the API: `method` `path` with an optional bearer token and JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The stored record of `id`.
    pub async fn execution(&self, id: &ExecutionId) -> ExecutionRecord {
        self.app
            .backend
            .executions()
            .get(id)
            .await
            .expect("reading an execution")
            .unwrap_or_else(|| panic!("no execution {id}"))
    }

    /// The ledger of `id`.
    pub async fn ledger(&self, id: &ExecutionId) -> Vec<LedgerEvent> {
        self.app
            .backend
            .ledger()
            .events(id)
            .await
            .expect("reading a ledger")
    }

    /// Waits until every execution in `ids` is terminal; panics after `deadline` naming those
    /// still running. Returns the records.
    pub async fn wait_terminal(
        &self,
        ids: &[ExecutionId],
        deadline: Duration,
    ) -> Vec<ExecutionRecord> {
        wait_until("executions to finish", deadline, || async {
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                let record = self.execution(id).await;
                if !record.status.is_terminal() {
                    return Err(format!("{id} is {}", record.status.as_str()));
                }
                records.push(record);
            }
            Ok(records)
        })
        .await
    }
}

impl System {
    /// Waits until execution `id` is terminal (see [`System::wait_terminal`]).
    pub async fn wait_one(&self, id: &ExecutionId, deadline: Duration) -> ExecutionRecord {
        self.wait_terminal(std::slice::from_ref(id), deadline)
            .await
            .remove(0)
    }
}

/// Polls `check` every 100 ms until it answers `Ok`, or panics after `deadline` with `what` and
/// the last `Err`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A GitHub-like push payload for `repository` at head `sha`.
pub fn push(repository: &str, sha: &str) -> Value {
    json!({ "repository": { "full_name": repository }, "after": sha })
}

/// The execution id in an intake answer.
pub fn execution_id(answer: &Value) -> ExecutionId {
    ExecutionId::parse(
        answer["execution_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no execution_id in {answer}")),
    )
    .expect("a valid execution id")
}

/// The kinds of a ledger, in order.
pub fn kinds(events: &[LedgerEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// How many events of `kind` a ledger holds.
pub fn count_kind(events: &[LedgerEvent], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// Whether a record is in `status`.
pub fn is(record: &ExecutionRecord, status: ExecutionStatus) -> bool {
    record.status == status
}
