//! Configuration read once at cold start from environment variables, with the seed's names and
//! defaults, validated, failing fast with a message that names the variable. Every variable is
//! listed in docs/configuration.md.

use crate::domain::connector::BreakerSettings;
use crate::domain::retry::RetryPolicy;

/// A variable that is set but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// The reliability knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReliabilityConfig {
    /// `SLUICE_TABLE_NAME`: the DynamoDB table.
    pub table_name: String,
    /// `REPO_WEBHOOK_RATE_LIMIT_PER_MINUTE`: per-source intake cap; over it work is delayed.
    pub webhook_rate_limit_per_minute: u32,
    /// `REPO_PIPELINE_CONCURRENCY_LIMIT`: concurrent pipeline runs per source.
    pub pipeline_concurrency_limit: u32,
    /// `REPO_PIPELINE_CONCURRENCY_TTL_SECONDS`: lease of a pipeline slot.
    pub pipeline_concurrency_ttl_secs: i64,
    /// `DELIVERY_DEDUPE_TTL_SECONDS`: how long a delivery id is remembered.
    pub delivery_dedupe_ttl_secs: i64,
    /// `EXECUTION_LEASE_SECONDS`: how long a worker's lease on an execution lasts.
    pub execution_lease_secs: i64,
    /// `MAX_PIPELINE_ATTEMPTS`, `BASE_BACKOFF_SECONDS`, `MAX_BACKOFF_SECONDS`, `COOLDOWN_SECONDS`.
    pub retry: RetryPolicy,
    /// `BREAKER_*`: default breaker settings for connectors that do not set their own.
    pub breaker: BreakerSettings,
    /// Metrics namespace, the reliability summary's window and the SLO targets.
    pub observability: ObservabilityConfig,
}

/// What the metrics are called and what the reliability summary measures against.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservabilityConfig {
    /// `SLUICE_METRICS_NAMESPACE`: the CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// `SLUICE_RELIABILITY_WINDOW_RUNS`: how many of the newest runs the summary reads.
    pub window_runs: u32,
    /// `SLO_FAILURE_RATE_MAX`: failed or blocked runs / finished runs, at most.
    pub slo_failure_rate_max: f64,
    /// `SLO_LATENCY_P95_SECONDS`: p95 of run latency (created to finished), at most.
    pub slo_latency_p95_secs: f64,
    /// `SLO_RECOVERY_TRAIL_MIN`: share of failed runs whose ledger explains them, at least.
    pub slo_recovery_trail_min: f64,
}

impl ReliabilityConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let retry = RetryPolicy {
            max_attempts: vars.number("MAX_PIPELINE_ATTEMPTS", 3, 1, 100)?,
            base_backoff_secs: vars.number("BASE_BACKOFF_SECONDS", 30, 1, 86_400)?,
            max_backoff_secs: vars.number("MAX_BACKOFF_SECONDS", 600, 1, 86_400)?,
            cooldown_secs: vars.number("COOLDOWN_SECONDS", 900, 0, 7 * 86_400)?,
        };
        if retry.max_backoff_secs < retry.base_backoff_secs {
            return Err(ConfigError {
                variable: "MAX_BACKOFF_SECONDS",
                value: retry.max_backoff_secs.to_string(),
                reason: format!(
                    "must be at least BASE_BACKOFF_SECONDS ({})",
                    retry.base_backoff_secs
                ),
            });
        }
        let breaker = BreakerSettings {
            failure_threshold: vars.number("BREAKER_FAILURE_THRESHOLD", 5, 1, 1000)?,
            cooldown_secs: vars.number("BREAKER_COOLDOWN_SECONDS", 30, 1, 86_400)?,
            probe_timeout_secs: vars.number("BREAKER_PROBE_TIMEOUT_SECONDS", 30, 1, 3600)?,
            defer_secs: vars.number("BREAKER_DEFER_SECONDS", 5, 1, 900)?,
            state_ttl_days: vars.number("BREAKER_STATE_TTL_DAYS", 14, 1, 365)?,
        };
        Ok(Self {
            table_name: vars.text("SLUICE_TABLE_NAME", "sluice")?,
            webhook_rate_limit_per_minute: vars.number(
                "REPO_WEBHOOK_RATE_LIMIT_PER_MINUTE",
                30,
                1,
                1_000_000,
            )?,
            pipeline_concurrency_limit: vars.number(
                "REPO_PIPELINE_CONCURRENCY_LIMIT",
                2,
                1,
                10_000,
            )?,
            pipeline_concurrency_ttl_secs: vars.number(
                "REPO_PIPELINE_CONCURRENCY_TTL_SECONDS",
                1200,
                1,
                86_400,
            )?,
            delivery_dedupe_ttl_secs: vars.number(
                "DELIVERY_DEDUPE_TTL_SECONDS",
                7 * 86_400,
                60,
                365 * 86_400,
            )?,
            execution_lease_secs: vars.number("EXECUTION_LEASE_SECONDS", 900, 1, 86_400)?,
            retry,
            breaker,
            observability: ObservabilityConfig {
                metrics_namespace: vars.namespace("SLUICE_METRICS_NAMESPACE")?,
                window_runs: vars.number("SLUICE_RELIABILITY_WINDOW_RUNS", 300, 1, 1000)?,
                slo_failure_rate_max: vars.fraction("SLO_FAILURE_RATE_MAX", 0.20)?,
                slo_latency_p95_secs: vars.seconds("SLO_LATENCY_P95_SECONDS", 45.0)?,
                slo_recovery_trail_min: vars.fraction("SLO_RECOVERY_TRAIL_MIN", 1.0)?,
            },
        })
    }
}

// ---- executor limits (the deployment's executor function and its trigger) ----------------

/// The executor function's timeout, as template.yaml sets it.
pub const EXECUTOR_TIMEOUT_VAR: &str = "SLUICE_EXECUTOR_TIMEOUT_SECONDS";
/// The stage queue's visibility timeout, as template.yaml sets it.
pub const STAGE_QUEUE_VISIBILITY_VAR: &str = "SLUICE_STAGE_QUEUE_VISIBILITY_TIMEOUT_SECONDS";
/// The batch size of the executor's SQS trigger, as template.yaml sets it.
pub const EXECUTOR_BATCH_SIZE_VAR: &str = "SLUICE_EXECUTOR_BATCH_SIZE";

/// What the template says about the executor, passed to it so that it can check the
/// configuration and the manifest against it at cold start (`startup::validate_executor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLimits {
    /// `SLUICE_EXECUTOR_TIMEOUT_SECONDS`: the function's timeout (1-900).
    pub function_timeout_secs: u64,
    /// `SLUICE_STAGE_QUEUE_VISIBILITY_TIMEOUT_SECONDS`: the stage queue's (0-43,200).
    pub visibility_timeout_secs: u64,
    /// `SLUICE_EXECUTOR_BATCH_SIZE`: records per invocation (1-10,000).
    pub batch_size: u32,
}

impl ExecutorLimits {
    /// Reads the three variables: `None` when none is set (the local run has no function), an
    /// error when only some are, or one is unusable.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let vars = Vars(&lookup);
        let names = [
            EXECUTOR_TIMEOUT_VAR,
            STAGE_QUEUE_VISIBILITY_VAR,
            EXECUTOR_BATCH_SIZE_VAR,
        ];
        let set: Vec<&str> = names.into_iter().filter(|n| lookup(n).is_some()).collect();
        if set.is_empty() {
            return Ok(None);
        }
        if let Some(missing) = names.into_iter().find(|n| !set.contains(n)) {
            return Err(ConfigError {
                variable: missing,
                value: String::new(),
                reason: format!(
                    "must be set with {} (template.yaml sets all three)",
                    set.join(", ")
                ),
            });
        }
        Ok(Some(Self {
            function_timeout_secs: vars.number(EXECUTOR_TIMEOUT_VAR, 0, 1, 900)?,
            visibility_timeout_secs: vars.number(STAGE_QUEUE_VISIBILITY_VAR, 0, 0, 43_200)?,
            batch_size: vars.number(EXECUTOR_BATCH_SIZE_VAR, 0, 1, 10_000)?,
        }))
    }
}

/// Typed reads of variables through a lookup function, each failure naming its variable.
pub(crate) struct Vars<'a, F: Fn(&str) -> Option<String>>(pub(crate) &'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// The number in `variable`, or `default` when unset; it must lie in `min..=max`.
    pub(crate) fn number<T>(
        &self,
        variable: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = (self.0)(variable) else {
            return Ok(default);
        };
        let bad = |reason: String| ConfigError {
            variable,
            value: raw.clone(),
            reason,
        };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| bad(format!("not a number ({})", std::any::type_name::<T>())))?;
        if value < min || value > max {
            return Err(bad(format!("must be between {min} and {max}")));
        }
        Ok(value)
    }

    /// A number in 0..=1 (a ratio).
    fn fraction(&self, variable: &'static str, default: f64) -> Result<f64, ConfigError> {
        self.number(variable, default, 0.0, 1.0)
    }

    /// A positive number of seconds, fractions allowed.
    fn seconds(&self, variable: &'static str, default: f64) -> Result<f64, ConfigError> {
        self.number(variable, default, 0.001, 86_400.0)
    }

    /// A CloudWatch namespace: 1-255 of letters, digits and `.-_/#:` (no leading colon).
    fn namespace(&self, variable: &'static str) -> Result<String, ConfigError> {
        let value = self.text(variable, crate::telemetry::DEFAULT_NAMESPACE)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
        if value.len() > 255 || value.starts_with(':') || !value.chars().all(allowed) {
            return Err(ConfigError {
                variable,
                value,
                reason: "a CloudWatch namespace: up to 255 letters, digits, spaces and .-_/#:"
                    .into(),
            });
        }
        Ok(value)
    }

    fn text(&self, variable: &'static str, default: &str) -> Result<String, ConfigError> {
        match (self.0)(variable) {
            None => Ok(default.to_string()),
            Some(v) if v.trim().is_empty() => Err(ConfigError {
                variable,
                value: v,
                reason: "must not be empty".into(),
            }),
            Some(v) => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<ReliabilityConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReliabilityConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = with(&[]).expect("defaults");
        assert_eq!(c.webhook_rate_limit_per_minute, 30);
        assert_eq!(c.pipeline_concurrency_limit, 2);
        assert_eq!(c.pipeline_concurrency_ttl_secs, 1200);
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.breaker.state_ttl_days, 14);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = with(&[("MAX_PIPELINE_ATTEMPTS", "three")]).expect_err("bad");
        assert_eq!(e.variable, "MAX_PIPELINE_ATTEMPTS");
        assert!(e.to_string().contains("three"));
        let e = with(&[("REPO_PIPELINE_CONCURRENCY_LIMIT", "0")]).expect_err("bad");
        assert_eq!(e.variable, "REPO_PIPELINE_CONCURRENCY_LIMIT");
        let e = with(&[
            ("BASE_BACKOFF_SECONDS", "60"),
            ("MAX_BACKOFF_SECONDS", "30"),
        ])
        .expect_err("bad");
        assert_eq!(e.variable, "MAX_BACKOFF_SECONDS");
        let e = with(&[("SLUICE_TABLE_NAME", " ")]).expect_err("bad");
        assert_eq!(e.variable, "SLUICE_TABLE_NAME");
        let e = with(&[("SLO_FAILURE_RATE_MAX", "1.5")]).expect_err("bad");
        assert_eq!(e.variable, "SLO_FAILURE_RATE_MAX");
        let e = with(&[("SLUICE_METRICS_NAMESPACE", "bad|name")]).expect_err("bad");
        assert_eq!(e.variable, "SLUICE_METRICS_NAMESPACE");
    }

    #[test]
    fn executor_limits_come_all_three_or_none() {
        let read = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ExecutorLimits::from_lookup(|k| map.get(k).cloned())
        };
        assert_eq!(read(&[]), Ok(None));
        let all = [
            (EXECUTOR_TIMEOUT_VAR, "90"),
            (STAGE_QUEUE_VISIBILITY_VAR, "540"),
            (EXECUTOR_BATCH_SIZE_VAR, "10"),
        ];
        assert_eq!(
            read(&all),
            Ok(Some(ExecutorLimits {
                function_timeout_secs: 90,
                visibility_timeout_secs: 540,
                batch_size: 10,
            }))
        );
        let e = read(&all[..2]).expect_err("batch size missing");
        assert_eq!(e.variable, EXECUTOR_BATCH_SIZE_VAR);
        let e = read(&[all[0], all[1], (EXECUTOR_BATCH_SIZE_VAR, "0")]).expect_err("bad");
        assert_eq!(e.variable, EXECUTOR_BATCH_SIZE_VAR);
        let e = read(&[(EXECUTOR_TIMEOUT_VAR, "901"), all[1], all[2]]).expect_err("bad");
        assert_eq!(e.variable, EXECUTOR_TIMEOUT_VAR);
    }

    #[test]
    fn observability_defaults_are_the_seed_slos() {
        let c = with(&[]).expect("defaults").observability;
        assert_eq!(c.metrics_namespace, "Sluice");
        assert_eq!(c.window_runs, 300);
        assert_eq!(c.slo_failure_rate_max, 0.20);
        assert_eq!(c.slo_latency_p95_secs, 45.0);
        assert_eq!(c.slo_recovery_trail_min, 1.0);
        let c = with(&[("SLO_LATENCY_P95_SECONDS", "2.5")]).expect("fractional seconds");
        assert_eq!(c.observability.slo_latency_p95_secs, 2.5);
    }
}
