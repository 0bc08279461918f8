//! Reliability summaries: what `GET /v1/reliability` (one tenant's runs), `GET /v1/health`
//! (no tenant data) and `GET /health` (only `status`) answer, each from bounded reads cached
//! per instance.
//!
//! The run figures come from the tenant's newest `SLUICE_RELIABILITY_WINDOW_RUNS` executions
//! (newest first by creation) and the ledgers of at most [`MAX_SUMMARY_LEDGER_READS`] of them
//! (`ledgers_read`): the failed and blocked runs first, newest first, then the others:
//! - `failure_rate` = (failed + blocked) / finished runs in the window (`null` with none);
//! - `latency_p95_sec` = nearest-rank p95 of finished runs' time from creation to their last
//!   write (the terminal one);
//! - `recovery_events` = events of the ledgers read that record a recovery action:
//!   RETRY_SCHEDULED, RECOVERY_LEASE_EXPIRED, RECOVERY_REQUEUED, REPLAY_REQUESTED;
//! - a failed or blocked run "has a recovery trail" when its ledger holds the BLOCKED (or
//!   FAILED) event that names the reason and the attempt count, so an operator can decide on
//!   a replay; `recovery_trail_ratio` = such runs / failed and blocked runs whose ledger was
//!   read (all of them unless the window holds more than [`MAX_SUMMARY_LEDGER_READS`]).
//!
//! Beside them: every connector's breaker, the deployment's alarms in ALARM (CloudWatch
//! `DescribeAlarms` by `SLUICE_ALARM_PREFIX`, when deployed) and the alert webhook's shared
//! counters. Those three carry no tenant data and are what the health check shows too; a
//! failure to read alarms or counters is reported in the answer (`error`), never as a failed
//! summary.
//!
//! The SLO targets are configuration (`SLO_*`, docs/configuration.md); the summary says which
//! are met. A target with nothing to measure (no finished run) counts as met and says so.
//!
//! Bounded reads, per summary computed: the records by `ceil(window / 100)` pages of `gsi1`
//! (eventually consistent), at most [`MAX_SUMMARY_LEDGER_READS`] ledgers (one `Query` per
//! 1 MB each, [`LEDGER_READS_AT_ONCE`] at a time), one consistent `GetItem` per connector, one
//! for the alert counters, and one `DescribeAlarms`. A summary is then served from the
//! instance's cache for [`SUMMARY_CACHE_SECS`] (per tenant, `as_of_ms` says when it was
//! read), so repeated calls cost nothing; the health check is cached for
//! [`HEALTH_CACHE_SECS`], one read round at a time, so a flood of unauthenticated `/health`
//! calls makes no AWS request beyond one round per window. Both caches go by the
//! [`Clock`](crate::clock::Clock) port.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::alerts::AlertCounts;
use crate::app::App;
use crate::domain::connector::{BreakerState, ConnectorState};
use crate::domain::execution::{ExecutionRecord, ExecutionStatus};
use crate::domain::ids::TenantId;
use crate::domain::ledger::{EventKind, LedgerEvent};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{
    AlarmSource, AlarmState, Backend, ConnectorStore, ExecutionStore, Ledger, ToolClient, MAX_PAGE,
};

/// Ledger reads in flight at once while summarizing.
pub const LEDGER_READS_AT_ONCE: usize = 8;
/// The most ledgers one summary reads (failed and blocked runs first).
pub const MAX_SUMMARY_LEDGER_READS: usize = 50;
/// How long an instance answers a tenant's summary from its cache, in seconds.
pub const SUMMARY_CACHE_SECS: i64 = 30;
/// The most tenants whose summary an instance keeps; beyond it, expired ones are dropped, then
/// all.
pub const SUMMARY_CACHE_TENANTS: usize = 1000;
/// How long an instance answers the health check from its cache, in seconds.
pub const HEALTH_CACHE_SECS: i64 = 5;

/// The answer of `GET /v1/reliability`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilitySummary {
    pub tenant: TenantId,
    /// The configured window (runs).
    pub window_runs: u32,
    /// When the figures were read (a cached summary is up to [`SUMMARY_CACHE_SECS`] old).
    pub as_of_ms: i64,
    /// Ledgers read (at most [`MAX_SUMMARY_LEDGER_READS`]): what `recovery_events` and the
    /// trail count.
    pub ledgers_read: u32,
    #[serde(flatten)]
    pub runs: RunFigures,
    pub failure_rate: Option<f64>,
    pub latency_p95_sec: Option<f64>,
    pub recovery_events: u64,
    pub recovery_trail_ratio: Option<f64>,
    pub slo: SloReport,
    pub breakers: Vec<BreakerView>,
    pub alarms: AlarmsView,
    pub alerts: AlertsView,
}

/// The deployment's alarms in state ALARM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmsView {
    /// `cloudwatch`, or `off` where no alarm source is configured.
    pub source: &'static str,
    pub in_alarm: Vec<AlarmState>,
    /// Why the alarms could not be read (then `in_alarm` is empty).
    pub error: Option<String>,
}

/// The alert webhook's state and shared counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertsView {
    /// Whether `ALERT_WEBHOOK_URL` is set.
    pub enabled: bool,
    /// Sent, deduplicated, retried and dead-lettered alerts, across every instance.
    pub counts: Option<AlertCounts>,
    /// Why the counters could not be read.
    pub error: Option<String>,
}

/// Counts of the window's runs by where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunFigures {
    /// Runs read (at most the window).
    pub total_runs: u32,
    pub succeeded_runs: u32,
    pub failed_runs: u32,
    pub blocked_runs: u32,
    /// Not finished yet (received, queued, running).
    pub in_progress_runs: u32,
    /// Failed or blocked runs whose ledger explains them.
    pub failed_runs_with_trail: u32,
}

impl RunFigures {
    fn finished(&self) -> u32 {
        self.succeeded_runs + self.failed_runs + self.blocked_runs
    }
}

/// One SLO target and how the window measures against it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloCheck {
    pub target: f64,
    /// `null` when there was nothing to measure.
    pub actual: Option<f64>,
    pub met: bool,
}

/// The seed's three SLOs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReport {
    /// Failure rate at most the target.
    pub failure_rate: SloCheck,
    /// p95 latency (seconds) at most the target.
    pub latency_p95_sec: SloCheck,
    /// Share of failed runs with a recovery trail at least the target.
    pub recovery_trail: SloCheck,
    pub all_met: bool,
}

/// A connector's breaker and slots, as `/health` and the summary show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    pub connector: String,
    /// CLOSED, OPEN or HALF_OPEN.
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub open_until_ms: Option<i64>,
    pub in_flight: u32,
    pub limit: u32,
}

/// Per-instance caches of the summaries and the health check (shared by every clone of an
/// [`App`]).
#[derive(Debug, Default)]
pub struct ReadCaches {
    summaries: Mutex<HashMap<TenantId, ReliabilitySummary>>,
    /// Held while a round is read, so concurrent callers wait for it instead of reading too.
    health: tokio::sync::Mutex<Option<HealthSnapshot>>,
}

/// Whether something read at `at_ms` is still served at `now`, for `secs` (a clock that went
/// back makes it stale).
fn fresh(at_ms: i64, now: Timestamp, secs: i64) -> bool {
    let age = now.as_millis() - at_ms;
    (0..secs * 1000).contains(&age)
}

/// The summary of `tenant`'s newest runs, from the instance's cache when it is younger than
/// [`SUMMARY_CACHE_SECS`], else read ([`summarize`]) and cached.
pub async fn summary<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    tenant: &TenantId,
) -> Result<ReliabilitySummary, StoreError> {
    let now = app.clock.now();
    // A panic elsewhere leaves a map of whole entries: keep using it.
    let summaries = || {
        app.caches
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    };
    let cached = summaries()
        .get(tenant)
        .filter(|s| fresh(s.as_of_ms, now, SUMMARY_CACHE_SECS))
        .cloned();
    if let Some(cached) = cached {
        return Ok(cached);
    }
    // Not held across the reads: tenants do not wait for each other.
    let computed = summarize(app, tenant).await?;
    let mut cache = summaries();
    if cache.len() >= SUMMARY_CACHE_TENANTS && !cache.contains_key(tenant) {
        cache.retain(|_, s| fresh(s.as_of_ms, now, SUMMARY_CACHE_SECS));
        if cache.len() >= SUMMARY_CACHE_TENANTS {
            cache.clear();
        }
    }
    cache.insert(tenant.clone(), computed.clone());
    Ok(computed)
}

/// The summary of `tenant`'s newest runs, read now (uncached; see [`summary`]).
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub async fn summarize<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    tenant: &TenantId,
) -> Result<ReliabilitySummary, StoreError> {
    let config = &app.config.observability;
    let as_of = app.clock.now();
    let runs = newest_runs(app, tenant, config.window_runs).await?;
    // Failed and blocked runs first (the trail needs their ledgers), then the others; newest
    // first within each. Owned ids: a closure over borrowed records is not `Send` enough for
    // axum's handlers.
    let failed = |r: &&ExecutionRecord| {
        matches!(r.status, ExecutionStatus::Failed | ExecutionStatus::Blocked)
    };
    let wanted: Vec<_> = runs
        .iter()
        .filter(failed)
        .chain(runs.iter().filter(|r| !failed(r)))
        .take(MAX_SUMMARY_LEDGER_READS)
        .map(|r| (r.id.clone(), r.status))
        .collect();
    let ledgers: Vec<(ExecutionStatus, Vec<LedgerEvent>)> = futures::stream::iter(wanted)
        .map(|(id, status)| async move {
            let events = app.backend.ledger().events(&id).await?;
            Ok::<_, StoreError>((status, events))
        })
        .buffered(LEDGER_READS_AT_ONCE)
        .try_collect()
        .await?;

    let mut figures = RunFigures::default();
    let mut latencies_ms = Vec::new();
    for run in &runs {
        figures.total_runs += 1;
        match run.status {
            ExecutionStatus::Succeeded => figures.succeeded_runs += 1,
            ExecutionStatus::Failed => figures.failed_runs += 1,
            ExecutionStatus::Blocked => figures.blocked_runs += 1,
            ExecutionStatus::Received | ExecutionStatus::Queued | ExecutionStatus::Running => {
                figures.in_progress_runs += 1
            }
        }
        if run.status.is_terminal() {
            latencies_ms.push(run.updated_at.as_millis() - run.created_at.as_millis());
        }
    }
    let mut recovery_events = 0;
    let mut failures_read = 0;
    for (status, events) in &ledgers {
        recovery_events += events.iter().filter(|e| is_recovery(e.kind)).count() as u64;
        if matches!(status, ExecutionStatus::Failed | ExecutionStatus::Blocked) {
            failures_read += 1;
            if events.iter().any(explains_failure) {
                figures.failed_runs_with_trail += 1;
            }
        }
    }

    let finished = figures.finished();
    let failures = figures.failed_runs + figures.blocked_runs;
    let failure_rate = (finished > 0).then(|| ratio(failures, finished));
    let latency_p95_sec = p95(&mut latencies_ms).map(|ms| ms as f64 / 1000.0);
    let recovery_trail_ratio =
        (failures_read > 0).then(|| ratio(figures.failed_runs_with_trail, failures_read));

    let at_most = |target: f64, actual: Option<f64>| SloCheck {
        target,
        actual,
        met: actual.is_none_or(|a| a <= target),
    };
    let failure_rate_check = at_most(config.slo_failure_rate_max, failure_rate);
    let latency_check = at_most(config.slo_latency_p95_secs, latency_p95_sec);
    let trail_check = SloCheck {
        target: config.slo_recovery_trail_min,
        actual: recovery_trail_ratio,
        met: recovery_trail_ratio.is_none_or(|a| a >= config.slo_recovery_trail_min),
    };
    let all_met = failure_rate_check.met && latency_check.met && trail_check.met;

    Ok(ReliabilitySummary {
        tenant: tenant.clone(),
        window_runs: config.window_runs,
        as_of_ms: as_of.as_millis(),
        ledgers_read: ledgers.len() as u32,
        runs: figures,
        failure_rate,
        latency_p95_sec,
        recovery_events,
        recovery_trail_ratio,
        slo: SloReport {
            failure_rate: failure_rate_check,
            latency_p95_sec: latency_check,
            recovery_trail: trail_check,
            all_met,
        },
        breakers: breakers(app).await?,
        alarms: alarms(app).await,
        alerts: alerts(app).await,
    })
}

/// One read round of what the health check shows: no tenant data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSnapshot {
    /// `ok`, or `degraded` when a breaker is not closed, an alarm is firing or the connector
    /// states cannot be read.
    pub status: &'static str,
    /// When the round was read.
    pub checked_at_ms: i64,
    /// `None` when the connector states cannot be read (then `error` says so).
    pub breakers: Option<Vec<BreakerView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    pub alarms: AlarmsView,
    pub alerts: AlertsView,
}

/// The health check, from the instance's cache when it is younger than [`HEALTH_CACHE_SECS`],
/// else read now (every connector's state, the alarms, the alert counters) and cached. One
/// round at a time: concurrent callers of a stale cache wait for the round in progress and
/// share it. A failed read is cached as well (as `degraded`), so a backend outage is not
/// hammered either.
pub async fn health<B: Backend, T: ToolClient>(app: &App<B, T>) -> HealthSnapshot {
    let mut cached = app.caches.health.lock().await;
    let now = app.clock.now();
    if let Some(snapshot) = cached
        .as_ref()
        .filter(|s| fresh(s.checked_at_ms, now, HEALTH_CACHE_SECS))
    {
        return snapshot.clone();
    }
    let mut snapshot = HealthSnapshot {
        status: "ok",
        checked_at_ms: now.as_millis(),
        breakers: None,
        error: None,
        alarms: alarms(app).await,
        alerts: alerts(app).await,
    };
    match breakers(app).await {
        Ok(views) => {
            if any_breaker_open(&views) {
                snapshot.status = "degraded";
            }
            snapshot.breakers = Some(views);
        }
        Err(error) => {
            tracing::warn!(error = %error, "health: connector states unreadable");
            snapshot.status = "degraded";
            snapshot.error = Some("backend unavailable");
        }
    }
    if !snapshot.alarms.in_alarm.is_empty() {
        snapshot.status = "degraded";
    }
    *cached = Some(snapshot.clone());
    snapshot
}

/// The alarms in ALARM; a read failure is part of the answer.
pub async fn alarms<B: Backend, T: ToolClient>(app: &App<B, T>) -> AlarmsView {
    let source = app.alarms.source();
    match app.alarms.in_alarm().await {
        Ok(in_alarm) => AlarmsView {
            source,
            in_alarm,
            error: None,
        },
        Err(error) => {
            tracing::warn!(error = %error, "alarms unreadable");
            AlarmsView {
                source,
                in_alarm: Vec::new(),
                error: Some(error.to_string()),
            }
        }
    }
}

/// The alert counters; a read failure is part of the answer.
pub async fn alerts<B: Backend, T: ToolClient>(app: &App<B, T>) -> AlertsView {
    let enabled = app.alerts.config().enabled();
    match app.alerts.counts().await {
        Ok(counts) => AlertsView {
            enabled,
            counts: Some(counts),
            error: None,
        },
        Err(error) => {
            tracing::warn!(error = %error, "alert counters unreadable");
            AlertsView {
                enabled,
                counts: None,
                error: Some(error.to_string()),
            }
        }
    }
}

/// Every manifest connector's breaker and slots (no tenant data).
pub async fn breakers<B: Backend, T: ToolClient>(
    app: &App<B, T>,
) -> Result<Vec<BreakerView>, StoreError> {
    let mut views = Vec::with_capacity(app.manifest.connectors.len());
    for (id, spec) in &app.manifest.connectors {
        let state: ConnectorState = app.backend.connectors().state(id).await?;
        views.push(BreakerView {
            connector: id.to_string(),
            state: state.breaker.as_str(),
            consecutive_failures: state.consecutive_failures,
            open_until_ms: state.open_until.map(|t| t.as_millis()),
            in_flight: state.slots.in_flight,
            limit: state.effective_limit(spec.concurrency_limit),
        });
    }
    Ok(views)
}

/// Whether any breaker is not closed.
pub fn any_breaker_open(views: &[BreakerView]) -> bool {
    views
        .iter()
        .any(|v| v.state != BreakerState::Closed.as_str())
}

/// The tenant's newest `window` runs, newest first.
async fn newest_runs<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    tenant: &TenantId,
    window: u32,
) -> Result<Vec<ExecutionRecord>, StoreError> {
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    while (runs.len() as u32) < window {
        let want = (window - runs.len() as u32).min(MAX_PAGE);
        let page = app
            .backend
            .executions()
            .list(tenant, None, want, cursor.as_deref())
            .await?;
        runs.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    runs.truncate(window as usize);
    Ok(runs)
}

fn is_recovery(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::RetryScheduled
            | EventKind::RecoveryLeaseExpired
            | EventKind::RecoveryRequeued
            | EventKind::ReplayRequested
    )
}

/// The terminal event that names why the run stopped and after how many attempts.
fn explains_failure(event: &LedgerEvent) -> bool {
    matches!(event.kind, EventKind::Blocked | EventKind::Failed)
        && event.detail.get("reason").is_some_and(|r| r.is_string())
        && event.detail.get("attempt_count").is_some()
}

fn ratio(part: u32, whole: u32) -> f64 {
    f64::from(part) / f64::from(whole)
}

/// Nearest-rank 95th percentile.
fn p95(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * 95).div_ceil(100);
    Some(values[rank.saturating_sub(1)])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::execution::ExecutionChange;
    use crate::usecases::execute::testkit::{failed, ok, Harness};
    use crate::usecases::execute::Disposition;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    /// r1 succeeds (4 s), r2 is blocked by a 404 (2 s), r3 retries once then succeeds (46 s),
    /// r4 is still queued.
    async fn known_scenario() -> Harness {
        let h = Harness::new(vec![
            ok(json!({"id": 1})),
            ok(json!({"sent": true})),
            failed(404, None),
            failed(500, None),
            ok(json!({"id": 3})),
            ok(json!({"sent": true})),
        ]);
        h.seed("r1", json!({"name": "Ada"})).await;
        for expected in [Disposition::Advanced, Disposition::Completed] {
            h.clock.advance_secs(2);
            assert_eq!(h.step().await, expected);
        }
        h.seed("r2", json!({"name": "Bob"})).await;
        h.clock.advance_secs(2);
        assert!(matches!(h.step().await, Disposition::Blocked { .. }));
        h.seed("r3", json!({"name": "Cy"})).await;
        h.clock.advance_secs(2);
        assert!(matches!(h.step().await, Disposition::RetryScheduled { .. }));
        h.clock.advance_secs(40);
        for expected in [Disposition::Advanced, Disposition::Completed] {
            h.clock.advance_secs(2);
            assert_eq!(h.step().await, expected);
        }
        h.seed("r4", json!({"name": "Di"})).await;
        h
    }

    #[tokio::test]
    async fn the_summary_of_a_known_scenario_says_which_slos_are_met() {
        let h = known_scenario().await;
        let s = summarize(&h.app, &acme()).await.unwrap();
        assert_eq!(
            s.runs,
            RunFigures {
                total_runs: 4,
                succeeded_runs: 2,
                failed_runs: 0,
                blocked_runs: 1,
                in_progress_runs: 1,
                failed_runs_with_trail: 1,
            }
        );
        assert_eq!(s.failure_rate, Some(1.0 / 3.0));
        assert_eq!(s.latency_p95_sec, Some(46.0));
        assert_eq!(s.recovery_events, 1, "r3's retry");
        assert_eq!(s.recovery_trail_ratio, Some(1.0));
        assert!(!s.slo.failure_rate.met, "1/3 is above 0.20");
        assert!(!s.slo.latency_p95_sec.met, "46 s is above 45 s");
        assert!(s.slo.recovery_trail.met);
        assert!(!s.slo.all_met);
        assert_eq!(s.window_runs, 300);
        assert_eq!(s.breakers.len(), 1);
        assert_eq!(s.breakers[0].state, "CLOSED");
        assert_eq!(s.breakers[0].in_flight, 0);

        let other = summarize(&h.app, &TenantId::parse("globex").unwrap())
            .await
            .unwrap();
        assert_eq!(
            other.runs.total_runs, 0,
            "another tenant sees none of acme's runs"
        );
        assert_eq!(other.failure_rate, None);
        assert!(other.slo.all_met, "nothing measured, nothing missed");
    }

    #[tokio::test]
    async fn the_window_keeps_the_newest_runs_and_targets_come_from_config() {
        let mut h = known_scenario().await;
        let mut config = (*h.app.config).clone();
        config.observability.window_runs = 2;
        config.observability.slo_failure_rate_max = 0.5;
        config.observability.slo_latency_p95_secs = 60.0;
        h.app.config = std::sync::Arc::new(config);
        let s = summarize(&h.app, &acme()).await.unwrap();
        // r4 (queued) and r3 (succeeded, 46 s) are the newest two.
        assert_eq!(
            (
                s.runs.total_runs,
                s.runs.in_progress_runs,
                s.runs.succeeded_runs
            ),
            (2, 1, 1)
        );
        assert_eq!(s.failure_rate, Some(0.0));
        assert!(s.slo.all_met);
    }

    #[tokio::test]
    async fn a_blocked_run_whose_ledger_does_not_say_why_breaks_the_trail_slo() {
        let h = Harness::new(vec![]);
        let id = h.record_only("gh", "r1", json!({}), None).await;
        let blocked = ExecutionChange {
            status: Some(ExecutionStatus::Blocked),
            blocked_reason: Some("manual".into()),
            ..ExecutionChange::default()
        };
        let executions = h.app.backend.executions();
        executions.update(&id, 1, blocked, h.now()).await.unwrap();
        let s = summarize(&h.app, &acme()).await.unwrap();
        assert_eq!(s.runs.blocked_runs, 1);
        assert_eq!(s.recovery_trail_ratio, Some(0.0));
        assert!(!s.slo.recovery_trail.met);
    }

    #[tokio::test]
    async fn a_summary_is_served_from_the_cache_for_its_window_per_tenant() {
        let h = known_scenario().await;
        let first = summary(&h.app, &acme()).await.unwrap();
        assert_eq!(first.runs.total_runs, 4);
        assert_eq!(first.as_of_ms, h.now().as_millis());
        assert_eq!(first.ledgers_read, 4);
        h.seed("r5", json!({"name": "Ed"})).await;
        h.clock.advance_secs(SUMMARY_CACHE_SECS - 1);
        let cached = summary(&h.app, &acme()).await.unwrap();
        assert_eq!(cached, first, "inside the window: the cached summary");
        // Another tenant has its own entry.
        let globex = TenantId::parse("globex").unwrap();
        assert_eq!(summary(&h.app, &globex).await.unwrap().runs.total_runs, 0);
        h.clock.advance_secs(1);
        let fresh = summary(&h.app, &acme()).await.unwrap();
        assert_eq!(fresh.runs.total_runs, 5, "after the window: read again");
        assert_eq!(fresh.as_of_ms, h.now().as_millis());
        // The uncached read is always current.
        h.seed("r6", json!({"name": "Flo"})).await;
        assert_eq!(summarize(&h.app, &acme()).await.unwrap().runs.total_runs, 6);
    }

    #[tokio::test]
    async fn the_health_check_is_cached_for_its_window() {
        let h = known_scenario().await;
        let first = health(&h.app).await;
        assert_eq!(first.status, "ok");
        assert_eq!(first.checked_at_ms, h.now().as_millis());
        // Open the breaker: the cached check does not see it until the window ends.
        let crm = h.app.manifest.connectors.keys().next().unwrap().clone();
        let store = h.app.backend.connectors();
        let settings = h.app.manifest.connectors[&crm].breaker_settings(&h.app.config.breaker);
        for _ in 0..settings.failure_threshold {
            let request = crate::domain::connector::AdmissionRequest {
                connector: crm.clone(),
                tool: crate::domain::ids::ToolName::parse("create_lead").unwrap(),
                tenant: acme(),
                holder: crate::domain::ids::HolderId::random(),
                limit: 100,
                slot_ttl_secs: 30,
                settings,
                now: h.now(),
            };
            let crate::domain::connector::Admission::Admitted(ticket) =
                store.admit(&request).await.unwrap()
            else {
                panic!("admitted");
            };
            let signal = crate::domain::connector::BreakerSignal::Unhealthy;
            store
                .settle(&ticket, signal, &settings, h.now())
                .await
                .unwrap();
        }
        h.clock.advance_millis(HEALTH_CACHE_SECS * 1000 - 1);
        assert_eq!(health(&h.app).await, first);
        h.clock.advance_millis(1);
        let later = health(&h.app).await;
        assert_eq!(later.status, "degraded");
        assert_eq!(later.breakers.unwrap()[0].state, "OPEN");
        assert_eq!(later.checked_at_ms, h.now().as_millis());
    }

    #[test]
    fn freshness_is_a_half_open_window_and_a_clock_going_back_is_stale() {
        let at = Timestamp::from_secs(1_000);
        assert!(fresh(at.as_millis(), at, 5));
        assert!(fresh(at.as_millis(), at.plus_millis(4_999), 5));
        assert!(!fresh(at.as_millis(), at.plus_secs(5), 5));
        assert!(!fresh(at.as_millis(), at.plus_millis(-1), 5));
    }

    #[test]
    fn p95_is_nearest_rank() {
        assert_eq!(p95(&mut []), None);
        assert_eq!(p95(&mut [5]), Some(5));
        let mut hundred: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(p95(&mut hundred), Some(95));
        let mut twenty: Vec<i64> = (1..=20).collect();
        assert_eq!(p95(&mut twenty), Some(19));
    }
}
