//! The manifest file's shape exactly as serde reads it: unknown keys are refused everywhere,
//! ids are still text and numbers are not yet range-checked (see `validate`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::ValueSource;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with sources, connectors and pipelines"
)]
pub(super) struct RawManifest {
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub connectors: BTreeMap<String, RawConnector>,
    #[serde(default)]
    pub pipelines: BTreeMap<String, RawPipeline>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawScheme {
    Github,
    Stripe,
    Hmac,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a source: a map with scheme, secret_env, tenant, pipeline, ..."
)]
pub(super) struct RawSource {
    pub scheme: RawScheme,
    pub secret_env: String,
    pub tenant: ValueSource,
    pub delivery_id: Option<ValueSource>,
    pub run_key: Option<Vec<ValueSource>>,
    pub pipeline: String,
    pub max_body_bytes: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
    pub tolerance_seconds: Option<i64>,
    pub signature_header: Option<String>,
    pub timestamp_header: Option<String>,
    pub delivery_header: Option<String>,
    /// Identity fields (`delivery_id`, `tenant`, `run_key`) allowed to come from a header
    /// the scheme does not sign.
    #[serde(default)]
    pub allow_unsigned_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a connector: a map with base_url, tools, ..."
)]
pub(super) struct RawConnector {
    pub base_url: String,
    pub auth: Option<RawAuth>,
    pub timeout_ms: Option<i64>,
    pub concurrency_limit: Option<i64>,
    pub slot_ttl_seconds: Option<i64>,
    pub breaker: Option<RawBreaker>,
    #[serde(default)]
    pub tools: BTreeMap<String, RawTool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with header and value_env")]
pub(super) struct RawAuth {
    pub header: String,
    pub value_env: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with failure_threshold, cooldown_seconds, probe_timeout_seconds"
)]
pub(super) struct RawBreaker {
    pub failure_threshold: Option<i64>,
    pub cooldown_seconds: Option<i64>,
    pub probe_timeout_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a tool: a map with method, path, body, ..."
)]
pub(super) struct RawTool {
    pub method: String,
    pub path: String,
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub retry_on_4xx: bool,
    #[serde(default)]
    pub risky: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a pipeline: a map with stages")]
pub(super) struct RawPipeline {
    pub stages: Vec<RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a stage: a map with name, connector, tool, retry"
)]
pub(super) struct RawStage {
    pub name: Option<String>,
    pub connector: String,
    pub tool: String,
    pub retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with max_attempts, base_backoff_seconds, max_backoff_seconds"
)]
pub(super) struct RawRetry {
    pub max_attempts: Option<i64>,
    pub base_backoff_seconds: Option<i64>,
    pub max_backoff_seconds: Option<i64>,
}
