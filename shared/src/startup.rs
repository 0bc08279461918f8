//! Start-up: what every function (and the local run) does once before serving: logging, the
//! reliability config, the manifest and its secrets, and the backend.
//!
//! Environment variables read here (besides [`ReliabilityConfig`]'s and the AWS SDK's own):
//!
//! | variable | meaning |
//! |---|---|
//! | `SLUICE_MANIFEST_INLINE` | the manifest's YAML text; wins over `SLUICE_MANIFEST` |
//! | `SLUICE_MANIFEST` | path of the manifest file; default `sluice.yaml` in the working directory, then beside the executable |
//! | `SLUICE_STAGE_QUEUE_URL` | URL of the SQS stage queue (required by the AWS backend) |
//! | `SLUICE_AWS_ENDPOINT` | endpoint override for DynamoDB and SQS (local engines); region defaults to `us-east-1` with it |
//! | `RUST_LOG` | log filter, default `info` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapters::backend::{AwsBackend, MemoryBackend};
use crate::adapters::cloudwatch::{Alarms, CloudWatchAlarms};
use crate::adapters::http_tool::HttpToolClient;
use crate::alerts::{AlertConfig, AlerterSetupError};
use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::config::{
    ConfigError, ExecutorLimits, ReliabilityConfig, EXECUTOR_BATCH_SIZE_VAR, EXECUTOR_TIMEOUT_VAR,
    STAGE_QUEUE_VISIBILITY_VAR,
};
use crate::manifest::{Manifest, ManifestError, Secrets};
use crate::ports::ToolClient;
use crate::telemetry::EmfSink;
use crate::usecases::execute::{Budget, BATCH_CONCURRENCY};

/// The manifest's YAML text.
pub const MANIFEST_INLINE_VAR: &str = "SLUICE_MANIFEST_INLINE";
/// The manifest file's path.
pub const MANIFEST_VAR: &str = "SLUICE_MANIFEST";
/// The stage queue's URL.
pub const STAGE_QUEUE_URL_VAR: &str = "SLUICE_STAGE_QUEUE_URL";
/// An endpoint override for DynamoDB and SQS.
pub const AWS_ENDPOINT_VAR: &str = "SLUICE_AWS_ENDPOINT";
/// The prefix of this deployment's alarm names (the summaries list those in ALARM).
pub const ALARM_PREFIX_VAR: &str = "SLUICE_ALARM_PREFIX";
/// The manifest file looked for when `SLUICE_MANIFEST` is unset.
pub const DEFAULT_MANIFEST_FILE: &str = "sluice.yaml";
/// The region used with `SLUICE_AWS_ENDPOINT` when none is configured.
pub const LOCAL_REGION: &str = "us-east-1";

/// Why start-up failed; every variant names the variable or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A reliability variable is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The manifest is unreadable or invalid, or a secret it names is unset.
    #[error("{0}")]
    Manifest(ManifestError),
    /// No manifest was given and none was found at the default places.
    #[error(
        "no manifest: set {MANIFEST_VAR} (a file) or {MANIFEST_INLINE_VAR} (the YAML text); \
         looked for {}", .tried.join(", ")
    )]
    ManifestNotFound { tried: Vec<String> },
    /// A variable is unset or unusable.
    #[error("{variable}: {reason}")]
    Variable {
        variable: &'static str,
        reason: String,
    },
    /// The alert webhook's HTTP client could not start.
    #[error("the alert webhook client could not start")]
    Alerts(#[source] AlerterSetupError),
    /// The configuration, the manifest and the template's executor limits do not fit together.
    #[error("executor limits: {0}")]
    Limits(String),
}

/// Which of the secrets a manifest names a function needs (a function is only given, and so
/// only requires, the ones it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretScope {
    /// Source signing secrets and connector credentials (intake; the local run).
    All,
    /// Connector credentials only (executor).
    Connectors,
    /// None (sweeper, replay API).
    None,
}

/// What start-up reads besides the backend.
#[derive(Debug)]
pub struct Settings {
    pub config: ReliabilityConfig,
    pub manifest: Manifest,
    pub secrets: Secrets,
    /// Where the manifest came from (a path, or `SLUICE_MANIFEST_INLINE`).
    pub manifest_origin: String,
    /// `ALERT_*` (loopback http refused: this is the Lambda build's reading).
    pub alerts: AlertConfig,
    /// `SLUICE_ALARM_PREFIX`, if set and not blank.
    pub alarm_prefix: Option<String>,
}

/// Logs as JSON lines on stdout, filtered by `RUST_LOG` (default `info`). Calling it again is
/// harmless.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// The App on DynamoDB + SQS, from the process environment, with every secret.
pub async fn aws_app_from_env() -> Result<App<AwsBackend, HttpToolClient>, StartupError> {
    aws_app_from_env_with(SecretScope::All).await
}

/// The App on DynamoDB + SQS, from the process environment, requiring only the secrets in
/// `scope`.
pub async fn aws_app_from_env_with(
    scope: SecretScope,
) -> Result<App<AwsBackend, HttpToolClient>, StartupError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let settings = settings_from(lookup, scope, &default_manifest_dirs())?;
    let queue_url = required(&lookup, STAGE_QUEUE_URL_VAR)?;
    let endpoint = lookup(AWS_ENDPOINT_VAR).filter(|v| !v.trim().is_empty());

    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = &endpoint {
        loader = loader.endpoint_url(endpoint.trim());
    }
    let mut sdk = loader.load().await;
    if sdk.region().is_none() {
        if endpoint.is_none() {
            return Err(StartupError::Variable {
                variable: "AWS_REGION",
                reason: "no AWS region is configured".into(),
            });
        }
        sdk = sdk
            .into_builder()
            .region(aws_config::Region::new(LOCAL_REGION))
            .build();
    }
    let backend = AwsBackend::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
        &settings.config.table_name,
        &queue_url,
    );
    // The tool client's pool is built on the first tool call, not at cold start.
    let tools = HttpToolClient::new();
    tracing::info!(
        manifest = %settings.manifest_origin,
        table = %settings.config.table_name,
        endpoint = endpoint.as_deref().unwrap_or("aws"),
        "started"
    );
    let alarms = match &settings.alarm_prefix {
        Some(prefix) => Alarms::CloudWatch(CloudWatchAlarms::new(
            aws_sdk_cloudwatch::Client::new(&sdk),
            prefix.clone(),
        )),
        None => Alarms::Off,
    };
    App::new(
        backend,
        tools,
        Arc::new(SystemClock),
        settings.manifest,
        settings.secrets,
        settings.config,
    )
    .with_emf(EmfSink::Stdout)
    .with_alarms(alarms)
    .with_alerts(settings.alerts)
    .map_err(StartupError::Alerts)
}

// ---- executor limits (checked together at the executor's cold start) -----------------------

/// What [`validate_executor`] found acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorFit {
    pub limits: ExecutorLimits,
    /// The largest connector `timeout_ms` in the manifest.
    pub max_call_ms: u64,
    /// How long a full batch takes at worst: `ceil(batch_size / BATCH_CONCURRENCY)` rounds of
    /// the largest call and its reserves, plus the alert flush. Over the function timeout the
    /// time budget gives the records that do not fit back (batch item failures).
    pub worst_batch_ms: u64,
}

/// Checks the executor's limits (from `lookup`: `SLUICE_EXECUTOR_TIMEOUT_SECONDS`,
/// `SLUICE_STAGE_QUEUE_VISIBILITY_TIMEOUT_SECONDS`, `SLUICE_EXECUTOR_BATCH_SIZE`) against the
/// reliability config and the manifest; `flush` is the alert flush's bound. Unset limits (the
/// local run): `Ok(None)`. Every error names the values that do not fit:
/// - every connector's `timeout_ms`, with [`Budget`]'s reserves around the call and the flush,
///   must fit the function timeout (else no call of it could ever be started);
/// - the visibility timeout must be at least the function timeout (a record must not come back
///   while its invocation still runs);
/// - `EXECUTION_LEASE_SECONDS` must be at least the function timeout (a lease must not lapse
///   while its holder may still be calling the tool).
///
/// A full batch that does not fit the function timeout is logged, not refused: the budget
/// gives the records it cannot start back.
pub fn validate_executor(
    lookup: impl Fn(&str) -> Option<String>,
    config: &ReliabilityConfig,
    manifest: &Manifest,
    flush: std::time::Duration,
) -> Result<Option<ExecutorFit>, StartupError> {
    let Some(limits) = ExecutorLimits::from_lookup(lookup)? else {
        return Ok(None);
    };
    let function_ms = limits.function_timeout_secs * 1000;
    let reserve = Budget::unlimited().need_for(std::time::Duration::ZERO);
    let reserve_ms = (reserve + flush).as_millis() as u64;
    let mut max_call_ms = 0;
    for (id, connector) in &manifest.connectors {
        max_call_ms = max_call_ms.max(connector.timeout_ms);
        if connector.timeout_ms + reserve_ms > function_ms {
            return Err(StartupError::Limits(format!(
                "connector {id}: timeout_ms {} ms plus {reserve_ms} ms kept around a call \
                 (stage writes and the alert flush) exceeds the executor's timeout \
                 {EXECUTOR_TIMEOUT_VAR}={} s ({function_ms} ms)",
                connector.timeout_ms, limits.function_timeout_secs
            )));
        }
    }
    if limits.visibility_timeout_secs < limits.function_timeout_secs {
        return Err(StartupError::Limits(format!(
            "{STAGE_QUEUE_VISIBILITY_VAR}={} s is below the executor's timeout \
             {EXECUTOR_TIMEOUT_VAR}={} s: a record would come back while its invocation runs",
            limits.visibility_timeout_secs, limits.function_timeout_secs
        )));
    }
    let lease = u64::try_from(config.execution_lease_secs).unwrap_or(0);
    if lease < limits.function_timeout_secs {
        return Err(StartupError::Limits(format!(
            "EXECUTION_LEASE_SECONDS={lease} s is below the executor's timeout \
             {EXECUTOR_TIMEOUT_VAR}={} s: a lease could lapse during a tool call",
            limits.function_timeout_secs
        )));
    }
    let rounds = u64::from(limits.batch_size).div_ceil(BATCH_CONCURRENCY as u64);
    let per_record_ms = Budget::unlimited()
        .need_for(std::time::Duration::from_millis(max_call_ms))
        .as_millis() as u64;
    let worst_batch_ms = rounds * per_record_ms + flush.as_millis() as u64;
    if worst_batch_ms > function_ms {
        tracing::warn!(
            batch_size = limits.batch_size,
            concurrency = BATCH_CONCURRENCY,
            max_call_ms,
            worst_batch_ms,
            function_timeout_ms = function_ms,
            "a full batch of the slowest calls does not fit the executor's timeout; the records \
             that do not fit are given back unstarted ({EXECUTOR_BATCH_SIZE_VAR})"
        );
    }
    Ok(Some(ExecutorFit {
        limits,
        max_call_ms,
        worst_batch_ms,
    }))
}

/// The App in memory with the HTTP tool client (the local run).
pub fn memory_app(
    manifest: Manifest,
    secrets: Secrets,
    config: ReliabilityConfig,
    clock: Arc<dyn Clock>,
) -> App<MemoryBackend, HttpToolClient> {
    memory_app_with_tools(manifest, secrets, config, clock, HttpToolClient::new())
}

/// The App in memory with any tool client (tests).
pub fn memory_app_with_tools<T: ToolClient>(
    manifest: Manifest,
    secrets: Secrets,
    config: ReliabilityConfig,
    clock: Arc<dyn Clock>,
    tools: T,
) -> App<MemoryBackend, T> {
    App::new(
        MemoryBackend::new(clock.clone()),
        tools,
        clock,
        manifest,
        secrets,
        config,
    )
}

/// Reads the config, the manifest and the secrets in `scope` through `lookup`; a manifest file
/// is looked for in `manifest_dirs` when `SLUICE_MANIFEST` is unset.
pub fn settings_from(
    lookup: impl Fn(&str) -> Option<String>,
    scope: SecretScope,
    manifest_dirs: &[PathBuf],
) -> Result<Settings, StartupError> {
    let config = ReliabilityConfig::from_lookup(&lookup)?;
    let alerts = AlertConfig::from_lookup(&lookup, false)?;
    let alarm_prefix = lookup(ALARM_PREFIX_VAR).filter(|p| !p.trim().is_empty());
    let (manifest, manifest_origin) = manifest_from(&lookup, manifest_dirs)?;
    let secrets = match scope {
        SecretScope::All => manifest.secrets(&lookup),
        SecretScope::Connectors => Manifest {
            sources: Default::default(),
            ..manifest.clone()
        }
        .secrets(&lookup),
        SecretScope::None => Ok(Secrets::default()),
    }
    .map_err(|mut error| {
        if error.file.is_empty() {
            error.file.clone_from(&manifest_origin);
        }
        StartupError::Manifest(error)
    })?;
    Ok(Settings {
        config,
        manifest,
        secrets,
        manifest_origin,
        alerts,
        alarm_prefix,
    })
}

/// The manifest and where it came from: `SLUICE_MANIFEST_INLINE`, else the file
/// `SLUICE_MANIFEST`, else the first `sluice.yaml` in `dirs`.
pub fn manifest_from(
    lookup: impl Fn(&str) -> Option<String>,
    dirs: &[PathBuf],
) -> Result<(Manifest, String), StartupError> {
    if let Some(text) = lookup(MANIFEST_INLINE_VAR).filter(|t| !t.trim().is_empty()) {
        let manifest =
            Manifest::parse(&text, MANIFEST_INLINE_VAR).map_err(StartupError::Manifest)?;
        manifest.log_warnings();
        return Ok((manifest, MANIFEST_INLINE_VAR.to_owned()));
    }
    let path = match lookup(MANIFEST_VAR) {
        Some(path) if path.trim().is_empty() => {
            return Err(StartupError::Variable {
                variable: MANIFEST_VAR,
                reason: "set but empty".into(),
            })
        }
        Some(path) => PathBuf::from(path),
        None => {
            let candidates: Vec<PathBuf> =
                dirs.iter().map(|d| d.join(DEFAULT_MANIFEST_FILE)).collect();
            match candidates.iter().find(|p| p.is_file()) {
                Some(found) => found.clone(),
                None => {
                    return Err(StartupError::ManifestNotFound {
                        tried: candidates.iter().map(|p| p.display().to_string()).collect(),
                    })
                }
            }
        }
    };
    let manifest = Manifest::load(&path).map_err(StartupError::Manifest)?;
    manifest.log_warnings();
    Ok((manifest, path.display().to_string()))
}

/// Where `sluice.yaml` is looked for: the working directory, then the executable's directory.
pub fn default_manifest_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<String, StartupError> {
    match lookup(variable) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Some(_) => Err(StartupError::Variable {
            variable,
            reason: "set but empty".into(),
        }),
        None => Err(StartupError::Variable {
            variable,
            reason: "required but unset".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MANIFEST: &str = "\
sources:
  gh:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    pipeline: p
connectors:
  crm:
    base_url: https://crm.example
    auth:
      header: Authorization
      value_env: CRM_TOKEN
    tools:
      ping:
        method: get
        path: /ping
pipelines:
  p:
    stages:
      - connector: crm
        tool: ping
";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-startup-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The test manifest with the crm connector's `timeout_ms` set.
    fn manifest_with_timeout(timeout_ms: u64) -> Manifest {
        let text = MANIFEST.replace(
            "    base_url: https://crm.example\n",
            &format!("    base_url: https://crm.example\n    timeout_ms: {timeout_ms}\n"),
        );
        Manifest::parse(&text, "limits.yaml").expect("manifest")
    }

    fn limits(timeout: &str, visibility: &str, batch: &str) -> Vec<(&'static str, String)> {
        vec![
            (EXECUTOR_TIMEOUT_VAR, timeout.to_owned()),
            (STAGE_QUEUE_VISIBILITY_VAR, visibility.to_owned()),
            (EXECUTOR_BATCH_SIZE_VAR, batch.to_owned()),
        ]
    }

    fn check(
        pairs: &[(&'static str, String)],
        config: &ReliabilityConfig,
        manifest: &Manifest,
    ) -> Result<Option<ExecutorFit>, StartupError> {
        let map: HashMap<&str, String> = pairs.iter().cloned().collect();
        let flush = std::time::Duration::from_secs(10);
        validate_executor(|n| map.get(n).cloned(), config, manifest, flush)
    }

    #[test]
    fn a_connector_timeout_over_the_function_timeout_fails_naming_both() {
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let manifest = manifest_with_timeout(120_000);
        let err = check(&limits("90", "540", "10"), &config, &manifest).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("timeout_ms 120000 ms"), "{shown}");
        assert!(
            shown.contains("SLUICE_EXECUTOR_TIMEOUT_SECONDS=90 s"),
            "{shown}"
        );
        assert!(shown.contains("connector crm"), "{shown}");
        // 2 s + 5 s reserved around the call, 10 s of flush: 73 s of call fits 90 s, 74 does not.
        assert!(check(
            &limits("90", "540", "1"),
            &config,
            &manifest_with_timeout(73_000)
        )
        .is_ok());
        assert!(check(
            &limits("90", "540", "1"),
            &config,
            &manifest_with_timeout(73_001)
        )
        .is_err());
    }

    #[test]
    fn visibility_and_lease_must_cover_the_function_timeout() {
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let manifest = manifest_with_timeout(5_000);
        let err = check(&limits("90", "60", "10"), &config, &manifest).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("SLUICE_STAGE_QUEUE_VISIBILITY_TIMEOUT_SECONDS=60 s")
                && shown.contains("SLUICE_EXECUTOR_TIMEOUT_SECONDS=90 s"),
            "{shown}"
        );
        let short_lease = ReliabilityConfig::from_lookup(|n| {
            (n == "EXECUTION_LEASE_SECONDS").then(|| "60".into())
        })
        .unwrap();
        let err = check(&limits("90", "540", "10"), &short_lease, &manifest).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("EXECUTION_LEASE_SECONDS=60 s") && shown.contains("=90 s"),
            "{shown}"
        );
    }

    #[test]
    fn the_template_values_fit_and_the_worst_batch_is_computed() {
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let manifest = manifest_with_timeout(10_000);
        let fit = check(&limits("90", "540", "10"), &config, &manifest)
            .unwrap()
            .expect("limits set");
        assert_eq!(fit.max_call_ms, 10_000);
        // 3 rounds of (2 + 10 + 5) s, then a 10 s flush.
        assert_eq!(fit.worst_batch_ms, 3 * 17_000 + 10_000);
        assert!(
            check(&[], &config, &manifest).unwrap().is_none(),
            "local run"
        );
        let err = check(&limits("90", "540", "10")[..2], &config, &manifest).unwrap_err();
        assert!(err.to_string().contains(EXECUTOR_BATCH_SIZE_VAR), "{err}");
    }

    #[test]
    fn inline_manifest_wins_and_is_named_in_errors() {
        let lookup = env(&[
            (MANIFEST_INLINE_VAR, MANIFEST),
            (MANIFEST_VAR, "/nope.yaml"),
        ]);
        let (manifest, origin) = manifest_from(&lookup, &[]).unwrap();
        assert_eq!(origin, MANIFEST_INLINE_VAR);
        assert_eq!(manifest.connectors.len(), 1);

        let lookup = env(&[(MANIFEST_INLINE_VAR, "sources: {}\n")]);
        let err = manifest_from(&lookup, &[]).unwrap_err();
        assert!(err.to_string().starts_with(MANIFEST_INLINE_VAR), "{err}");
    }

    #[test]
    fn manifest_file_from_the_variable_or_the_default_places() {
        let (first, second) = (temp_dir("a"), temp_dir("b"));
        std::fs::write(second.join(DEFAULT_MANIFEST_FILE), MANIFEST).unwrap();
        let dirs = [first.clone(), second.clone()];

        let (_, origin) = manifest_from(env(&[]), &dirs).unwrap();
        assert_eq!(
            origin,
            second.join(DEFAULT_MANIFEST_FILE).display().to_string()
        );

        let explicit = first.join("custom.yaml");
        std::fs::write(&explicit, MANIFEST).unwrap();
        let lookup = env(&[(MANIFEST_VAR, explicit.to_str().unwrap())]);
        let (_, origin) = manifest_from(&lookup, &dirs).unwrap();
        assert_eq!(origin, explicit.display().to_string());

        let missing = first.join("missing.yaml");
        let lookup = env(&[(MANIFEST_VAR, missing.to_str().unwrap())]);
        let err = manifest_from(&lookup, &dirs).unwrap_err();
        assert!(err.to_string().contains("missing.yaml"), "{err}");

        let err = manifest_from(env(&[(MANIFEST_VAR, " ")]), &dirs).unwrap_err();
        assert!(err.to_string().starts_with(MANIFEST_VAR), "{err}");

        let err = manifest_from(env(&[]), std::slice::from_ref(&first)).unwrap_err();
        assert!(matches!(err, StartupError::ManifestNotFound { .. }));
        assert!(err.to_string().contains(MANIFEST_VAR), "{err}");
        assert!(err.to_string().contains(DEFAULT_MANIFEST_FILE), "{err}");

        std::fs::remove_dir_all(first).unwrap();
        std::fs::remove_dir_all(second).unwrap();
    }

    #[test]
    fn secrets_are_required_by_scope() {
        let base = [(MANIFEST_INLINE_VAR, MANIFEST)];
        let err = settings_from(env(&base), SecretScope::All, &[]).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("GH_SECRET") && shown.contains(MANIFEST_INLINE_VAR),
            "{shown}"
        );

        let err = settings_from(env(&base), SecretScope::Connectors, &[]).unwrap_err();
        assert!(err.to_string().contains("CRM_TOKEN"), "{err}");

        let with_token = [(MANIFEST_INLINE_VAR, MANIFEST), ("CRM_TOKEN", "Bearer t")];
        let settings = settings_from(env(&with_token), SecretScope::Connectors, &[]).unwrap();
        let crm = crate::domain::ids::ConnectorId::parse("crm").unwrap();
        assert_eq!(
            settings.secrets.connector_auth(&crm),
            Some(("Authorization", "Bearer t"))
        );
        let gh = crate::domain::ids::SourceId::parse("gh").unwrap();
        assert_eq!(settings.secrets.source_secret(&gh), None);

        let settings = settings_from(env(&base), SecretScope::None, &[]).unwrap();
        assert_eq!(settings.secrets.connector_auth(&crm), None);
    }

    #[test]
    fn config_errors_and_required_variables_are_named() {
        let lookup = env(&[
            (MANIFEST_INLINE_VAR, MANIFEST),
            ("MAX_PIPELINE_ATTEMPTS", "x"),
        ]);
        let err = settings_from(&lookup, SecretScope::None, &[]).unwrap_err();
        assert!(err.to_string().contains("MAX_PIPELINE_ATTEMPTS"), "{err}");

        let err = required(&env(&[]), STAGE_QUEUE_URL_VAR).unwrap_err();
        assert!(err.to_string().starts_with(STAGE_QUEUE_URL_VAR), "{err}");
        let err = required(&env(&[(STAGE_QUEUE_URL_VAR, "")]), STAGE_QUEUE_URL_VAR).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(
            required(
                &env(&[(STAGE_QUEUE_URL_VAR, " http://q ")]),
                STAGE_QUEUE_URL_VAR
            )
            .unwrap(),
            "http://q"
        );
    }
}
