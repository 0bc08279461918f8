//! The in-process view of the metrics: counters and latency histograms by dimension values,
//! rendered as Prometheus text, and (when asked) the raw points for a CloudWatch publisher.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{MetricDef, Unit};
use crate::domain::time::Timestamp;

/// Upper bounds (ms) of the latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// Points kept for a publisher at most; older ones are dropped (and counted).
pub const MAX_KEPT_POINTS: usize = 10_000;

/// One measurement, as a publisher forwards it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: &'static str,
    pub unit: Unit,
    /// The dimension values given when recording (every key of every dimension set).
    pub dimensions: Vec<(String, String)>,
    /// The dimension sets the metric is published with (the aggregate `[]` included).
    pub dimension_sets: Vec<Vec<&'static str>>,
    pub value: f64,
    pub at: Timestamp,
}

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`] (latencies only).
    buckets: Vec<u64>,
}

type Labels = Vec<(String, String)>;

/// Counters and histograms, keyed by metric name and dimension values.
#[derive(Debug, Default)]
pub struct Registry {
    series: BTreeMap<(&'static str, Labels), (Unit, Series)>,
    keep: bool,
    points: Vec<Point>,
    dropped_points: u64,
}

impl Registry {
    /// Adds one observation.
    pub fn observe(&mut self, def: &MetricDef, dims: &[(&str, &str)], value: f64, at: Timestamp) {
        let labels: Labels = dims
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if self.keep {
            if self.points.len() >= MAX_KEPT_POINTS {
                self.points.remove(0);
                self.dropped_points += 1;
            }
            let mut sets: Vec<Vec<&'static str>> =
                def.dimension_sets.iter().map(|s| s.to_vec()).collect();
            sets.push(Vec::new());
            self.points.push(Point {
                name: def.name,
                unit: def.unit,
                dimensions: labels.clone(),
                dimension_sets: sets,
                value,
                at,
            });
        }
        let (_, series) = self
            .series
            .entry((def.name, labels))
            .or_insert_with(|| (def.unit, Series::default()));
        series.count += 1;
        series.sum += value;
        if def.unit == Unit::Milliseconds {
            if series.buckets.is_empty() {
                series.buckets = vec![0; LATENCY_BUCKETS_MS.len()];
            }
            for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(series.buckets.iter_mut()) {
                if value <= *bound {
                    *n += 1;
                }
            }
        }
    }

    /// Sum of the observations of `name` with exactly `dims`.
    pub fn total(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|((n, labels), _)| {
                *n == name
                    && labels.len() == dims.len()
                    && labels
                        .iter()
                        .zip(dims)
                        .all(|((k, v), (dk, dv))| k == dk && v == dv)
            })
            .map(|(_, (_, s))| s.sum)
            .sum()
    }

    /// Starts or stops keeping points for [`Registry::drain_points`].
    pub fn keep_points(&mut self, keep: bool) {
        self.keep = keep;
        if !keep {
            self.points.clear();
        }
    }

    /// Takes up to `max` of the oldest kept points.
    pub fn drain_points(&mut self, max: usize) -> Vec<Point> {
        let n = max.min(self.points.len());
        self.points.drain(..n).collect()
    }

    /// Prometheus text exposition: counters as `sluice_<name>` (a `_total` suffix is kept or
    /// added), latencies as histograms `sluice_<name>` with `_bucket`, `_sum` and `_count`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut last: Option<&str> = None;
        for ((name, labels), (unit, series)) in &self.series {
            let base = match unit {
                Unit::Count if name.ends_with("_total") => format!("sluice_{name}"),
                Unit::Count => format!("sluice_{name}_total"),
                Unit::Milliseconds => format!("sluice_{name}"),
            };
            if last != Some(name) {
                let kind = match unit {
                    Unit::Count => "counter",
                    Unit::Milliseconds => "histogram",
                };
                let _ = writeln!(out, "# TYPE {base} {kind}");
                last = Some(name);
            }
            let label_text = |extra: Option<(&str, String)>| -> String {
                let mut parts: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{}=\"{}\"", k.to_lowercase(), escape(v)))
                    .collect();
                if let Some((k, v)) = extra {
                    parts.push(format!("{k}=\"{v}\""));
                }
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", parts.join(","))
                }
            };
            match unit {
                Unit::Count => {
                    let _ = writeln!(out, "{base}{} {}", label_text(None), number(series.sum));
                }
                Unit::Milliseconds => {
                    for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(&series.buckets) {
                        let le = Some(("le", number(*bound)));
                        let _ = writeln!(out, "{base}_bucket{} {n}", label_text(le));
                    }
                    let inf = Some(("le", "+Inf".to_owned()));
                    let _ = writeln!(out, "{base}_bucket{} {}", label_text(inf), series.count);
                    let _ = writeln!(out, "{base}_sum{} {}", label_text(None), number(series.sum));
                    let _ = writeln!(out, "{base}_count{} {}", label_text(None), series.count);
                }
            }
        }
        if self.dropped_points > 0 {
            let _ = writeln!(out, "# TYPE sluice_metric_points_dropped_total counter");
            let _ = writeln!(
                out,
                "sluice_metric_points_dropped_total {}",
                self.dropped_points
            );
        }
        out
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{TOOL_ERROR, TOOL_LATENCY_MS};

    #[test]
    fn latencies_become_a_cumulative_histogram() {
        let mut r = Registry::default();
        let dims = [("Connector", "crm"), ("Tool", "t")];
        for ms in [3.0, 40.0, 40.0, 20_000.0, 60_000.0] {
            r.observe(&TOOL_LATENCY_MS, &dims, ms, Timestamp::from_millis(0));
        }
        r.observe(&TOOL_ERROR, &dims, 1.0, Timestamp::from_millis(0));
        let text = r.prometheus();
        let labels = "connector=\"crm\",tool=\"t\"";
        assert!(text.contains(&format!(
            "sluice_tool_latency_ms_bucket{{{labels},le=\"5\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "sluice_tool_latency_ms_bucket{{{labels},le=\"50\"}} 3\n"
        )));
        assert!(text.contains(&format!(
            "sluice_tool_latency_ms_bucket{{{labels},le=\"30000\"}} 4\n"
        )));
        assert!(text.contains(&format!(
            "sluice_tool_latency_ms_bucket{{{labels},le=\"+Inf\"}} 5\n"
        )));
        assert!(text.contains(&format!("sluice_tool_latency_ms_count{{{labels}}} 5\n")));
        assert!(text.contains(&format!("sluice_tool_error_total{{{labels}}} 1\n")));
    }

    #[test]
    fn points_are_kept_only_when_asked_and_drained_oldest_first() {
        let mut r = Registry::default();
        r.observe(&TOOL_ERROR, &[], 1.0, Timestamp::from_millis(1));
        assert!(r.drain_points(10).is_empty());
        r.keep_points(true);
        for at in 2..5 {
            r.observe(
                &TOOL_ERROR,
                &[("Connector", "c")],
                0.0,
                Timestamp::from_millis(at),
            );
        }
        let first = r.drain_points(2);
        assert_eq!(
            first.iter().map(|p| p.at.as_millis()).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(first[0].dimension_sets.last(), Some(&Vec::new()));
        assert_eq!(r.drain_points(10).len(), 1);
    }

    /// The mapping docs/architecture.md "Observability" gives for copying alert rules.
    #[test]
    fn prometheus_names_follow_the_documented_mapping() {
        use crate::telemetry::RUN_OUTCOMES;
        let mut r = Registry::default();
        r.observe(
            &TOOL_ERROR,
            &[("Connector", "crm")],
            1.0,
            Timestamp::from_millis(0),
        );
        r.observe(
            &RUN_OUTCOMES,
            &[("Outcome", "failed")],
            1.0,
            Timestamp::from_millis(0),
        );
        let text = r.prometheus();
        assert!(
            text.contains("sluice_tool_error_total{connector=\"crm\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_pipeline_run_outcome_total{outcome=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::default();
        r.observe(
            &TOOL_ERROR,
            &[("Connector", "a\"b")],
            1.0,
            Timestamp::from_millis(0),
        );
        assert!(r.prometheus().contains("connector=\"a\\\"b\""));
    }
}
