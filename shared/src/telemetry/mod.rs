//! Metrics. Every measurement is written once, at the moment it happens, two ways:
//!
//! - as one CloudWatch Embedded Metric Format line on stdout (Lambda ships stdout to CloudWatch
//!   Logs, which extracts the metrics: no API call on the hot path), see [`emf`];
//! - into an in-process [`registry`] that the local run serves as Prometheus text at
//!   `/metrics` and can forward to a CloudWatch endpoint with PutMetricData.
//!
//! The names, units and dimension sets are the contract the template's alarms and dashboard
//! read (docs/architecture.md, "Observability"). Every metric is also written with the empty
//! dimension set, the all-connectors (all-sources) aggregate the alarms watch.

pub mod emf;
pub mod registry;

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::domain::time::Timestamp;

pub use registry::{Point, Registry};

/// The default CloudWatch namespace (`SLUICE_METRICS_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "Sluice";

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Milliseconds,
    Count,
}

impl Unit {
    /// The name CloudWatch knows the unit by.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Count => "Count",
        }
    }
}

/// One metric of the contract: its name, unit and the dimension sets it is written with (the
/// empty set is always added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: Unit,
    /// Each inner slice is one dimension set; every key must be given a value when recording.
    pub dimension_sets: &'static [&'static [&'static str]],
}

macro_rules! metric {
    ($const:ident, $name:literal, $unit:ident, [$([$($dim:literal),*]),*], $doc:literal) => {
        #[doc = $doc]
        pub const $const: MetricDef = MetricDef {
            name: $name,
            unit: Unit::$unit,
            dimension_sets: &[$(&[$($dim),*]),*],
        };
    };
}

metric!(
    TOOL_LATENCY_MS,
    "tool_latency_ms",
    Milliseconds,
    [["Connector"], ["Connector", "Tool"]],
    "Latency of every tool call that was made."
);
metric!(
    TOOL_ERROR,
    "tool_error",
    Count,
    [["Connector"], ["Connector", "Tool"]],
    "Every tool call: 1 when it failed (status, timeout, transport), else 0."
);
metric!(
    WEBHOOK_DEDUPED,
    "webhook_deduped_total",
    Count,
    [["Source"]],
    "A delivery answered as a duplicate."
);
metric!(
    PIPELINE_RUNS,
    "pipeline_runs_total",
    Count,
    [["Pipeline"]],
    "A new run (execution) was created, by a webhook or a replay."
);
metric!(
    RUN_OUTCOMES,
    "pipeline_run_outcome_total",
    Count,
    [["Outcome"]],
    "A run reached a terminal status: Outcome succeeded, failed or blocked."
);
metric!(
    RUNS_SKIPPED,
    "pipeline_runs_skipped_total",
    Count,
    [["Reason"]],
    "A delivery joined an existing run, or a stage message was skipped."
);
metric!(
    RETRIES,
    "pipeline_retry_total",
    Count,
    [["Pipeline"]],
    "A stage retry was scheduled with backoff."
);
metric!(
    THROTTLED,
    "pipeline_throttled_total",
    Count,
    [["Cause"]],
    "Work was delayed rather than dropped (rate limit or a deferral)."
);
metric!(
    LOOP_BLOCKED,
    "pipeline_loop_blocked_total",
    Count,
    [["Pipeline"]],
    "A run was blocked after MAX_PIPELINE_ATTEMPTS (loop protection)."
);
metric!(
    SIDE_EFFECT_SKIPPED,
    "side_effect_skipped_total",
    Count,
    [["Connector"]],
    "A tool call not repeated because its success was already recorded."
);
metric!(
    POLICY_VIOLATIONS,
    "policy_violations_total",
    Count,
    [["Connector"]],
    "A kill switch refused a tool call."
);
metric!(
    BREAKER_TRANSITIONS,
    "breaker_transitions_total",
    Count,
    [["Connector", "To"], ["To"]],
    "A connector's breaker changed state: To open, half_open or closed."
);
metric!(
    RECOVERIES,
    "recoveries_total",
    Count,
    [["Kind"]],
    "The sweeper recovered a stuck execution: Kind lease_expired or requeued."
);
metric!(
    ALERTS_SENT,
    "alerts_sent_total",
    Count,
    [["AlertType"]],
    "An alert reached the alert webhook."
);
metric!(
    ALERTS_DEDUPLICATED,
    "alerts_deduplicated_total",
    Count,
    [["AlertType"]],
    "An alert suppressed inside the dedup window."
);
metric!(
    ALERTS_RETRIED,
    "alerts_retried_total",
    Count,
    [["AlertType"]],
    "A retry of an alert webhook POST."
);
metric!(
    ALERTS_DEAD_LETTERED,
    "alerts_dead_lettered_total",
    Count,
    [["AlertType"]],
    "An alert that failed every attempt and was kept as a dead letter."
);

/// Every metric of the contract, for docs and tests.
pub const ALL: &[MetricDef] = &[
    TOOL_LATENCY_MS,
    TOOL_ERROR,
    WEBHOOK_DEDUPED,
    PIPELINE_RUNS,
    RUN_OUTCOMES,
    RUNS_SKIPPED,
    RETRIES,
    THROTTLED,
    LOOP_BLOCKED,
    SIDE_EFFECT_SKIPPED,
    POLICY_VIOLATIONS,
    BREAKER_TRANSITIONS,
    RECOVERIES,
    ALERTS_SENT,
    ALERTS_DEDUPLICATED,
    ALERTS_RETRIED,
    ALERTS_DEAD_LETTERED,
];

/// Where EMF lines go.
#[derive(Debug)]
pub enum EmfSink {
    /// Standard output (Lambda).
    Stdout,
    /// Kept in memory (tests read them back with [`Metrics::emf_lines`]).
    Memory(Mutex<Vec<String>>),
    /// Not written (the local run, which serves `/metrics` instead).
    Off,
}

/// The recorder every use case writes to. Cheap to clone; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    clock: Arc<dyn Clock>,
    sink: Mutex<EmfSink>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("namespace", &self.inner.namespace)
            .field("sink", &*lock(&self.inner.sink))
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A recorder writing EMF lines for `namespace` to `sink`.
    pub fn new(namespace: impl Into<String>, clock: Arc<dyn Clock>, sink: EmfSink) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.into(),
                clock,
                sink: Mutex::new(sink),
                registry: Mutex::new(Registry::default()),
            }),
        }
    }

    /// A recorder that keeps its EMF lines in memory (tests).
    pub fn in_memory(namespace: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self::new(namespace, clock, EmfSink::Memory(Mutex::new(Vec::new())))
    }

    /// Writes EMF lines to `sink` from now on, for this recorder and every clone of it.
    pub fn set_sink(&self, sink: EmfSink) {
        *lock(&self.inner.sink) = sink;
    }

    /// The namespace the EMF lines name.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Records `values` (metric, value) that share the dimension values `dims` (key, value):
    /// one EMF line, and the registry.
    pub fn record(&self, values: &[(MetricDef, f64)], dims: &[(&str, &str)]) {
        if values.is_empty() {
            return;
        }
        let at = self.inner.clock.now();
        let sink = lock(&self.inner.sink);
        if !matches!(*sink, EmfSink::Off) {
            let line = emf::line(&self.inner.namespace, at, values, dims);
            match &*sink {
                EmfSink::Stdout => {
                    // One write of the whole line, so that log lines never split it.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(format!("{line}\n").as_bytes());
                }
                EmfSink::Memory(lines) => lock(lines).push(line),
                EmfSink::Off => {}
            }
        }
        drop(sink);
        let mut registry = lock(&self.inner.registry);
        for (def, value) in values {
            registry.observe(def, dims, *value, at);
        }
    }

    /// Adds one to a counter.
    pub fn count(&self, def: MetricDef, dims: &[(&str, &str)]) {
        self.record(&[(def, 1.0)], dims);
    }

    /// One tool call: its latency and whether it failed, by connector and tool.
    pub fn tool_call(&self, connector: &str, tool: &str, latency_ms: u64, failed: bool) {
        self.record(
            &[
                (TOOL_LATENCY_MS, latency_ms as f64),
                (TOOL_ERROR, if failed { 1.0 } else { 0.0 }),
            ],
            &[("Connector", connector), ("Tool", tool)],
        );
    }

    /// The EMF lines written so far, when the sink is [`EmfSink::Memory`] (else empty).
    pub fn emf_lines(&self) -> Vec<String> {
        match &*lock(&self.inner.sink) {
            EmfSink::Memory(lines) => lock(lines).clone(),
            _ => Vec::new(),
        }
    }

    /// The registry in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        lock(&self.inner.registry).prometheus()
    }

    /// The value of a counter (or the sum of a latency) for exactly these dimension values;
    /// 0 when never recorded. For summaries and tests.
    pub fn total(&self, def: MetricDef, dims: &[(&str, &str)]) -> f64 {
        lock(&self.inner.registry).total(def.name, dims)
    }

    /// Takes the points recorded since the last call (at most `max`; the rest stay), for a
    /// publisher that forwards them to CloudWatch.
    pub fn drain_points(&self, max: usize) -> Vec<Point> {
        lock(&self.inner.registry).drain_points(max)
    }

    /// Keeps recorded points for [`Metrics::drain_points`] from now on (off by default, so that
    /// a process nobody drains does not grow).
    pub fn keep_points(&self, keep: bool) {
        lock(&self.inner.registry).keep_points(keep);
    }

    /// The time the recorder's clock says it is (for callers stamping what they publish).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
}

/// A poisoned lock still holds usable metrics: a panic elsewhere must not stop recording.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::clock::FakeClock;

    fn metrics() -> Metrics {
        let clock = FakeClock::at(Timestamp::from_millis(1_700_000_000_123));
        Metrics::in_memory("Sluice", Arc::new(clock))
    }

    #[test]
    fn a_tool_call_is_one_emf_line_with_both_metrics_and_every_dimension_set() {
        let m = metrics();
        m.tool_call("crm", "create_ticket", 42, true);
        let lines = m.emf_lines();
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        let meta = &v["_aws"];
        assert_eq!(meta["Timestamp"], 1_700_000_000_123_i64);
        let directive = &meta["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Sluice");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Connector"], ["Connector", "Tool"], []])
        );
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([
                {"Name": "tool_latency_ms", "Unit": "Milliseconds"},
                {"Name": "tool_error", "Unit": "Count"}
            ])
        );
        assert_eq!(v["Connector"], "crm");
        assert_eq!(v["Tool"], "create_ticket");
        assert_eq!(v["tool_latency_ms"], 42.0);
        assert_eq!(v["tool_error"], 1.0);
    }

    #[test]
    fn counters_add_up_per_dimension_value_in_the_registry() {
        let m = metrics();
        m.count(WEBHOOK_DEDUPED, &[("Source", "gh")]);
        m.count(WEBHOOK_DEDUPED, &[("Source", "gh")]);
        m.count(WEBHOOK_DEDUPED, &[("Source", "stripe")]);
        assert_eq!(m.total(WEBHOOK_DEDUPED, &[("Source", "gh")]), 2.0);
        assert_eq!(m.total(WEBHOOK_DEDUPED, &[("Source", "stripe")]), 1.0);
        assert_eq!(m.total(WEBHOOK_DEDUPED, &[("Source", "none")]), 0.0);
        let text = m.prometheus();
        assert!(
            text.contains("sluice_webhook_deduped_total{source=\"gh\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn the_off_sink_writes_no_line_but_still_counts() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::at(Timestamp::from_millis(0)));
        let m = Metrics::new("Sluice", clock, EmfSink::Off);
        m.count(RETRIES, &[("Pipeline", "p")]);
        assert!(m.emf_lines().is_empty());
        assert_eq!(m.total(RETRIES, &[("Pipeline", "p")]), 1.0);
    }

    #[test]
    fn every_metric_of_the_contract_has_a_unique_name() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
