//! [`Alerter`]: posts alerts to the operator's webhook without ever slowing or failing the run
//! that raised them.
//!
//! One delivery: severity filter (below the minimum: dropped, nothing stored) -> dedup claim in
//! the shared [`AlertStore`] (lost: counted as deduplicated) -> POST of the redacted JSON body,
//! up to `1 + retry_count` attempts with a short growing backoff -> counters, and a dead letter
//! when every attempt failed. Store failures are logged and counted in-process, never returned:
//! a failed dedup claim sends anyway (an operator rather hears twice than never).
//!
//! [`Alerter::raise`] spawns the delivery and returns at once; a Lambda handler calls
//! [`Alerter::flush`] before returning so the frozen sandbox does not hold half-sent alerts.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::config::AlertConfig;
use super::model::{Alert, AlertCounts, AlertType, DeadLetter};
use super::redact::Redactor;
use crate::clock::Clock;
use crate::domain::ids::TenantId;
use crate::ports::{AlertStore, StoreResult};
use crate::telemetry::{self, Metrics};

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryReport {
    /// No webhook is configured.
    Disabled,
    /// Below `ALERT_MIN_SEVERITY`: dropped.
    Filtered,
    /// The same alert was sent within the dedup window.
    Deduplicated,
    /// The webhook answered 2xx on attempt `attempts`.
    Sent { attempts: u32 },
    /// Every attempt failed; the alert is a dead letter. `error` is the last failure.
    DeadLettered { attempts: u32, error: String },
}

/// Why one attempt failed. Its text (`status 503`, `timeout`, `connect`, `transport`) is all a
/// dead letter or a log line says about it: never the URL, its query or its userinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// The webhook answered with this non-2xx status.
    Status(u16),
    /// No answer within `ALERT_WEBHOOK_TIMEOUT_SEC`.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// Any other transport failure (TLS, a reset connection, ...).
    Transport,
}

impl AttemptError {
    /// Whether another attempt may succeed: timeouts, transport failures, 408, 429 and 5xx.
    /// Any other 4xx means the webhook refuses this request as it is.
    pub fn is_retryable(self) -> bool {
        match self {
            AttemptError::Status(status) => status == 408 || status == 429 || status >= 500,
            _ => true,
        }
    }

    fn of(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            AttemptError::Timeout
        } else if err.is_connect() {
            AttemptError::Connect
        } else {
            AttemptError::Transport
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Status(status) => write!(f, "status {status}"),
            AttemptError::Timeout => f.write_str("timeout"),
            AttemptError::Connect => f.write_str("connect"),
            AttemptError::Transport => f.write_str("transport"),
        }
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the alert webhook's HTTP client")]
pub struct AlerterSetupError {
    #[source]
    source: reqwest::Error,
}

/// What this instance saw that the shared counters do not hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// Alerts dropped by the severity filter.
    pub filtered: u64,
    /// Store calls that failed (claim, counters, dead letter).
    pub store_errors: u64,
    /// Alerts raised outside a tokio runtime, so never delivered.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct LocalCounters {
    filtered: AtomicU64,
    store_errors: AtomicU64,
    dropped: AtomicU64,
}

/// Tracked deliveries above this many are pruned of finished ones when a new one starts.
const PRUNE_AT: usize = 64;

/// Extra time [`Alerter::flush`] allows beyond the attempts and backoffs, for store calls.
const FLUSH_SLACK: Duration = Duration::from_secs(10);

/// The longest single backoff, in steps of `retry_backoff`.
const MAX_BACKOFF_STEPS: u32 = 5;

struct Inner<S> {
    config: AlertConfig,
    /// Built only when alerting is enabled: building it loads the system's root certificates,
    /// a cold-start cost a function with alerting off should not pay.
    client: Option<reqwest::Client>,
    store: S,
    clock: Arc<dyn Clock>,
    redactor: Redactor,
    tasks: Mutex<Vec<JoinHandle<DeliveryReport>>>,
    local: LocalCounters,
    /// Where the `alerts_*_total` metrics go, once attached.
    metrics: std::sync::OnceLock<Metrics>,
}

/// Sends alerts; clones share one client, store and set of tracked deliveries.
pub struct Alerter<S: AlertStore> {
    inner: Arc<Inner<S>>,
}

impl<S: AlertStore> Clone for Alerter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: AlertStore> fmt::Debug for Alerter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerter")
            .field("config", &self.inner.config)
            .field("redactor", &self.inner.redactor)
            .finish_non_exhaustive()
    }
}

impl<S: AlertStore> Alerter<S> {
    /// An alerter posting per `config`, keeping state in `store`, replacing every value of
    /// `secrets` (webhook secrets, connector tokens; see `Secrets::values`) in what it sends
    /// and stores.
    pub fn new(
        config: AlertConfig,
        store: S,
        clock: Arc<dyn Clock>,
        secrets: Vec<String>,
    ) -> Result<Self, AlerterSetupError> {
        let client = if config.enabled() {
            let client = reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                // A redirect could lead an https-only webhook to plain http.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("sluice-alerts/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|source| AlerterSetupError { source })?;
            Some(client)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                store,
                clock,
                redactor: Redactor::new(secrets),
                tasks: Mutex::new(Vec::new()),
                local: LocalCounters::default(),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Records the `alerts_*_total` metrics (by AlertType) in `metrics` from now on; the first
    /// recorder attached stays.
    pub fn attach_metrics(&self, metrics: Metrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// The configuration.
    pub fn config(&self) -> &AlertConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The shared counters (all zero while alerting is disabled).
    pub async fn counts(&self) -> StoreResult<AlertCounts> {
        self.inner.store.counts().await
    }

    /// Up to `limit` dead letters, newest first, only `tenant`'s when given.
    pub async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        self.inner.store.dead_letters(tenant, limit).await
    }

    /// What this instance counted outside the store.
    pub fn local_stats(&self) -> LocalStats {
        let l = &self.inner.local;
        LocalStats {
            filtered: l.filtered.load(Ordering::Relaxed),
            store_errors: l.store_errors.load(Ordering::Relaxed),
            dropped: l.dropped.load(Ordering::Relaxed),
        }
    }

    /// Starts delivering `alert` in the background and returns at once. Outside a tokio
    /// runtime the alert is dropped (logged and counted in [`LocalStats::dropped`]).
    pub fn raise(&self, alert: Alert) {
        if !self.inner.config.enabled() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.local.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alert_type = %alert.alert_type, "alert raised outside a runtime: dropped");
            return;
        };
        let this = self.clone();
        let task = runtime.spawn(async move { this.deliver(alert).await });
        let mut tasks = self.tasks();
        if tasks.len() >= PRUNE_AT {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(task);
    }

    /// Waits for every delivery started by [`Alerter::raise`] (on any clone) to end, at most
    /// the time all attempts and backoffs of one delivery can take plus a margin for the
    /// store; what is still running then is left running and logged.
    pub async fn flush(&self) {
        let tasks = std::mem::take(&mut *self.tasks());
        if tasks.is_empty() {
            return;
        }
        let bound = self.delivery_bound();
        let waited = tokio::time::timeout(bound, futures::future::join_all(tasks)).await;
        if waited.is_err() {
            tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "alert deliveries still running after flush's bound"
            );
        }
    }

    /// Delivers one alert now (what [`Alerter::raise`] runs in the background).
    pub async fn deliver(&self, alert: Alert) -> DeliveryReport {
        let inner = &*self.inner;
        let config = &inner.config;
        let Some(url) = &config.webhook_url else {
            return DeliveryReport::Disabled;
        };
        if alert.severity < config.min_severity {
            inner.local.filtered.fetch_add(1, Ordering::Relaxed);
            return DeliveryReport::Filtered;
        }
        let alert_type = alert.alert_type;
        let claimed = self
            .store_call(
                "claim_dedup",
                inner.store.claim_dedup(
                    &alert.dedup_key(),
                    config.dedup_window_secs,
                    inner.clock.now(),
                ),
            )
            .await
            // The claim could not be made: send anyway.
            .unwrap_or(true);
        if !claimed {
            self.count(
                alert_type,
                AlertCounts {
                    deduplicated: 1,
                    ..AlertCounts::default()
                },
            )
            .await;
            tracing::debug!(%alert_type, "alert deduplicated");
            return DeliveryReport::Deduplicated;
        }

        let mut payload = alert.payload();
        inner.redactor.json(&mut payload);
        let mut attempts = 0;
        let failure = loop {
            attempts += 1;
            let error = match self.attempt(url.as_url(), &payload).await {
                Ok(()) => break None,
                Err(error) => error,
            };
            tracing::debug!(%alert_type, attempts, %error, "alert attempt failed");
            if attempts >= config.attempts() || !error.is_retryable() {
                break Some(error);
            }
            tokio::time::sleep(config.retry_backoff * attempts.min(MAX_BACKOFF_STEPS)).await;
        };
        let retried = u64::from(attempts - 1);
        let Some(error) = failure else {
            self.count(
                alert_type,
                AlertCounts {
                    sent: 1,
                    retried,
                    ..AlertCounts::default()
                },
            )
            .await;
            tracing::info!(%alert_type, severity = %alert.severity, attempts, "alert sent");
            return DeliveryReport::Sent { attempts };
        };

        let letter = DeadLetter {
            id: ulid::Ulid::new().to_string(),
            at: inner.clock.now(),
            alert_type,
            tenant: alert.tenant,
            payload,
            error: error.to_string(),
            attempts,
        };
        self.store_call(
            "push_dead_letter",
            inner.store.push_dead_letter(letter, config.dead_letter_max),
        )
        .await;
        self.count(
            alert_type,
            AlertCounts {
                retried,
                dead_lettered: 1,
                ..AlertCounts::default()
            },
        )
        .await;
        tracing::warn!(%alert_type, attempts, %error, "alert dead-lettered");
        DeliveryReport::DeadLettered {
            attempts,
            error: error.to_string(),
        }
    }

    /// One POST; `Ok` on 2xx.
    async fn attempt(
        &self,
        url: &reqwest::Url,
        payload: &serde_json::Value,
    ) -> Result<(), AttemptError> {
        // Never None here: a disabled alerter stops before sending.
        let client = self.inner.client.as_ref().ok_or(AttemptError::Connect)?;
        let response = client
            .post(url.clone())
            .json(payload)
            .send()
            .await
            .map_err(|e| AttemptError::of(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(status.as_u16()))
        }
    }

    async fn count(&self, alert_type: AlertType, delta: AlertCounts) {
        if let Some(metrics) = self.inner.metrics.get() {
            let dims = [("AlertType", alert_type.as_str())];
            for (def, n) in [
                (telemetry::ALERTS_SENT, delta.sent),
                (telemetry::ALERTS_DEDUPLICATED, delta.deduplicated),
                (telemetry::ALERTS_RETRIED, delta.retried),
                (telemetry::ALERTS_DEAD_LETTERED, delta.dead_lettered),
            ] {
                if n > 0 {
                    metrics.record(&[(def, n as f64)], &dims);
                }
            }
        }
        self.store_call("add_counts", self.inner.store.add_counts(delta))
            .await;
    }

    /// Runs a store call; a failure is logged (its error chain holds no secret: store errors
    /// carry keys and SDK errors, never payloads) and counted, and becomes `None`.
    async fn store_call<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> Option<T> {
        match call.await {
            Ok(value) => Some(value),
            Err(error) => {
                self.inner
                    .local
                    .store_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(operation = what, error = %error, "alert store call failed");
                None
            }
        }
    }

    /// The longest one delivery's attempts and backoffs can take, plus [`FLUSH_SLACK`]: what
    /// [`Alerter::flush`] may wait (the executor keeps it out of its time budget).
    pub fn delivery_bound(&self) -> Duration {
        let config = &self.inner.config;
        let attempts = config.attempts();
        let backoff_steps: u32 = (1..attempts).map(|n| n.min(MAX_BACKOFF_STEPS)).sum();
        config.timeout * attempts + config.retry_backoff * backoff_steps + FLUSH_SLACK
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<DeliveryReport>>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryAlertStore;
    use crate::alerts::config::WebhookUrl;
    use crate::alerts::model::{AlertType, Severity};
    use crate::clock::FakeClock;
    use crate::domain::ids::ExecutionId;
    use crate::domain::time::Timestamp;

    const SECRET: &str = "whsec_0123456789";

    /// A loopback URL nothing listens on: every attempt fails to connect.
    fn refused_url() -> WebhookUrl {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        WebhookUrl::parse(&format!("http://127.0.0.1:{port}/hook?token=t0k3n"), true)
            .expect("loopback url")
    }

    fn alerter(webhook_url: Option<WebhookUrl>) -> (Alerter<MemoryAlertStore>, FakeClock) {
        let clock = FakeClock::at(Timestamp::from_secs(1_772_020_800));
        let config = AlertConfig {
            webhook_url,
            retry_backoff: Duration::from_millis(1),
            ..AlertConfig::disabled()
        };
        let alerter = Alerter::new(
            config,
            MemoryAlertStore::new(),
            Arc::new(clock.clone()),
            vec![SECRET.to_owned()],
        )
        .expect("client");
        (alerter, clock)
    }

    fn failed_run(clock: &FakeClock) -> Alert {
        Alert::new(AlertType::RunFailed, "HTTP_503", clock.now())
            .for_run(
                ExecutionId::parse("exe_1").unwrap(),
                TenantId::parse("acme").unwrap(),
            )
            .with_pipeline(format!("deploy-{SECRET}"))
    }

    #[tokio::test]
    async fn disabled_sends_and_stores_nothing() {
        let (alerter, clock) = alerter(None);
        assert_eq!(
            alerter.deliver(failed_run(&clock)).await,
            DeliveryReport::Disabled
        );
        alerter.raise(failed_run(&clock));
        alerter.flush().await;
        assert_eq!(alerter.counts().await.unwrap(), AlertCounts::default());
        assert!(alerter.dead_letters(None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn below_the_minimum_is_filtered_before_the_store() {
        let (alerter, clock) = alerter(Some(refused_url()));
        let low = Alert::new(AlertType::ToolStepFailed, "E", clock.now());
        assert_eq!(low.severity, Severity::Low);
        assert_eq!(alerter.deliver(low.clone()).await, DeliveryReport::Filtered);
        // Not even the dedup window is taken: a raised severity goes through at once.
        let raised = low.with_severity(Severity::Critical);
        assert!(matches!(
            alerter.deliver(raised).await,
            DeliveryReport::DeadLettered { .. }
        ));
        assert_eq!(alerter.local_stats().filtered, 1);
    }

    #[tokio::test]
    async fn dead_letters_then_dedups_until_the_window_ends() {
        let (alerter, clock) = alerter(Some(refused_url()));
        let report = alerter.deliver(failed_run(&clock)).await;
        assert_eq!(
            report,
            DeliveryReport::DeadLettered {
                attempts: 3,
                error: "connect".into()
            }
        );
        clock.advance_secs(89);
        assert_eq!(
            alerter.deliver(failed_run(&clock)).await,
            DeliveryReport::Deduplicated
        );
        clock.advance_secs(1);
        assert!(matches!(
            alerter.deliver(failed_run(&clock)).await,
            DeliveryReport::DeadLettered { attempts: 3, .. }
        ));
        assert_eq!(
            alerter.counts().await.unwrap(),
            AlertCounts {
                sent: 0,
                deduplicated: 1,
                retried: 4,
                dead_lettered: 2
            }
        );
        let letters = alerter.dead_letters(None, 10).await.unwrap();
        assert_eq!(letters.len(), 2);
        let first = &letters[1];
        assert_eq!(first.error, "connect");
        assert_eq!(first.attempts, 3);
        assert_eq!(first.tenant, TenantId::parse("acme").ok());
        assert_eq!(first.at, Timestamp::from_secs(1_772_020_800));
        let stored = serde_json::to_string(&letters).unwrap_or_default() + &format!("{letters:?}");
        assert!(!stored.contains(SECRET), "{stored}");
        assert!(!stored.contains("t0k3n"), "{stored}");
        assert_eq!(first.payload["pipeline"], "deploy-[redacted]");
        assert_eq!(first.payload["ts"], "2026-02-25T12:00:00Z");
        assert_eq!(alerter.local_stats(), LocalStats::default());
    }

    #[tokio::test]
    async fn flush_waits_for_every_raised_delivery() {
        let (alerter, clock) = alerter(Some(refused_url()));
        let clone = alerter.clone();
        for code in ["E1", "E2", "E3"] {
            clone.raise(Alert::new(AlertType::RunBlocked, code, clock.now()));
        }
        alerter.flush().await;
        assert_eq!(alerter.counts().await.unwrap().dead_lettered, 3);
        assert_eq!(alerter.dead_letters(None, 10).await.unwrap().len(), 3);
        // Nothing is left to wait for.
        alerter.flush().await;
    }

    #[test]
    fn raising_outside_a_runtime_drops_and_counts() {
        let (alerter, clock) = alerter(Some(refused_url()));
        alerter.raise(failed_run(&clock));
        assert_eq!(alerter.local_stats().dropped, 1);
    }

    #[test]
    fn retryable_failures() {
        for status in [408, 429, 500, 503] {
            assert!(AttemptError::Status(status).is_retryable(), "{status}");
        }
        for status in [400, 401, 404, 410] {
            assert!(!AttemptError::Status(status).is_retryable(), "{status}");
        }
        assert!(AttemptError::Timeout.is_retryable());
        assert_eq!(AttemptError::Status(503).to_string(), "status 503");
        assert_eq!(AttemptError::Timeout.to_string(), "timeout");
    }

    #[test]
    fn debug_shows_no_secret() {
        let (alerter, _) = alerter(Some(refused_url()));
        let shown = format!("{alerter:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains("t0k3n"),
            "{shown}"
        );
    }
}
