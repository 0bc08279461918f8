//! The typed manifest: sources, connectors with their tools, pipelines of stages. Every value
//! here was validated at load; defaults are already applied.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use super::template::{JsonTemplate, Template};
use crate::domain::connector::BreakerSettings;
use crate::domain::ids::{ConnectorId, PipelineName, ToolName};
use crate::domain::retry::RetryPolicy;
use crate::domain::signature::{Headers, SignatureScheme};

/// A source's default body cap (256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 262_144;
/// Stripe's and the generic HMAC scheme's default clock tolerance.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// The generic HMAC scheme's default signature header.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Sluice-Signature";
/// The generic HMAC scheme's default timestamp header.
pub const DEFAULT_TIMESTAMP_HEADER: &str = "X-Sluice-Timestamp";
/// The generic HMAC scheme's default delivery id header (`delivery_header`), which it signs.
pub const DEFAULT_DELIVERY_HEADER: &str = "X-Sluice-Delivery";
/// A connector's default call timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// A connector's default in-flight call limit.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 10;
/// The shortest default slot lease.
pub const MIN_DEFAULT_SLOT_TTL_SECS: i64 = 30;

/// Where a value (tenant, delivery id, run key part) comes from.
///
/// In YAML: `{ value: acme }`, `{ pointer: /installation/account/login }`,
/// `{ header: X-Tenant }`, `{ digest: sha256 }` (the SHA-256 of the raw body), or a bare
/// string for a static value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A fixed value.
    Value(String),
    /// A JSON pointer into the payload.
    Pointer(String),
    /// A request header, by name (case-insensitive).
    Header(String),
    /// `sha256:<64 lower-case hex digits>`, the SHA-256 of the raw body: signed content by
    /// every scheme, and the same for every resend of one request.
    BodySha256,
}

/// The text of `{ digest: ... }` for [`ValueSource::BodySha256`].
pub const BODY_DIGEST_SHA256: &str = "sha256";

impl ValueSource {
    /// The value for one delivery, whose raw body has hex SHA-256 `body_sha256`. A pointer to
    /// a string gives the string, to a number or a boolean its text; to nothing, null, an array
    /// or an object: `None`.
    pub fn resolve(
        &self,
        payload: &Json,
        headers: &dyn Headers,
        body_sha256: &str,
    ) -> Option<String> {
        match self {
            ValueSource::Value(value) => Some(value.clone()),
            ValueSource::BodySha256 => Some(format!("sha256:{body_sha256}")),
            ValueSource::Header(name) => headers.header(name).map(str::to_owned),
            ValueSource::Pointer(pointer) => match payload.pointer(pointer)? {
                Json::String(s) => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                Json::Bool(b) => Some(b.to_string()),
                Json::Null | Json::Array(_) | Json::Object(_) => None,
            },
        }
    }
}

impl<'de> Deserialize<'de> for ValueSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueSourceVisitor)
    }
}

struct ValueSourceVisitor;

impl<'de> Visitor<'de> for ValueSourceVisitor {
    type Value = ValueSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, or a map with one key: `value`, `pointer`, `header` or `digest`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ValueSource, E> {
        Ok(ValueSource::Value(value.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueSource, A::Error> {
        const KEYS: &[&str] = &["value", "pointer", "header", "digest"];
        let mut found = None;
        let mut count = 0;
        while let Some(key) = map.next_key::<String>()? {
            let text: String = map.next_value()?;
            count += 1;
            found = Some(match key.as_str() {
                "value" => ValueSource::Value(text),
                "pointer" => ValueSource::Pointer(text),
                "header" => ValueSource::Header(text),
                "digest" if text == BODY_DIGEST_SHA256 => ValueSource::BodySha256,
                "digest" => {
                    return Err(de::Error::invalid_value(
                        de::Unexpected::Str(&text),
                        &"`sha256`, the only digest",
                    ))
                }
                other => return Err(de::Error::unknown_field(other, KEYS)),
            });
        }
        match found {
            Some(source) if count == 1 => Ok(source),
            _ => Err(de::Error::invalid_length(
                count,
                &"exactly one of `value`, `pointer`, `header`, `digest`",
            )),
        }
    }
}

/// A webhook sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub scheme: SignatureScheme,
    /// Environment variable holding the signing secret.
    pub secret_env: String,
    pub tenant: ValueSource,
    /// Defaults by scheme: GitHub the body's SHA-256 (`{ digest: sha256 }`: GitHub signs no
    /// header), Stripe `/id`, HMAC its signed delivery header (`X-Sluice-Delivery`).
    pub delivery_id: ValueSource,
    /// Parts of the run key, joined with `:` by whoever resolves them. Defaults to the
    /// delivery id.
    pub run_key: Vec<ValueSource>,
    /// The identity fields (`delivery_id`, `tenant`, `run_key`) the manifest allows to come
    /// from a header the scheme does not sign (`allow_unsigned_headers`); each one was warned
    /// about at load.
    pub allow_unsigned_headers: Vec<IdentityField>,
    pub pipeline: PipelineName,
    /// Larger bodies are refused (default 262144).
    pub max_body_bytes: usize,
    /// Overrides the global per-source intake rate.
    pub rate_limit_per_minute: Option<u32>,
}

/// A field that says who a delivery is: which tenant, which delivery, which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdentityField {
    DeliveryId,
    Tenant,
    RunKey,
}

impl IdentityField {
    /// Every identity field.
    pub const ALL: [IdentityField; 3] = [
        IdentityField::DeliveryId,
        IdentityField::Tenant,
        IdentityField::RunKey,
    ];

    /// The manifest key: `delivery_id`, `tenant` or `run_key`.
    pub fn key(self) -> &'static str {
        match self {
            IdentityField::DeliveryId => "delivery_id",
            IdentityField::Tenant => "tenant",
            IdentityField::RunKey => "run_key",
        }
    }

    /// The field named `key`.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// The header a connector's credential goes in, and the variable holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSpec {
    pub header: String,
    pub value_env: String,
}

/// A connector's own breaker settings; unset ones come from the global defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerOverrides {
    pub failure_threshold: Option<u32>,
    pub cooldown_seconds: Option<i64>,
    pub probe_timeout_seconds: Option<i64>,
}

/// An HTTP service that tools call.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSpec {
    /// `http://` or `https://`, without a trailing slash; a tool's path is appended.
    pub base_url: String,
    pub auth: Option<AuthSpec>,
    /// 1..=120000, default 10000.
    pub timeout_ms: u64,
    /// In-flight calls allowed across every worker, default 10.
    pub concurrency_limit: u32,
    /// Lease of an in-flight slot; default twice the timeout in whole seconds, at least 30.
    pub slot_ttl_seconds: i64,
    pub breaker: BreakerOverrides,
    pub tools: BTreeMap<ToolName, ToolSpec>,
}

impl ConnectorSpec {
    /// `defaults` with this connector's overrides applied.
    pub fn breaker_settings(&self, defaults: &BreakerSettings) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self
                .breaker
                .failure_threshold
                .unwrap_or(defaults.failure_threshold),
            cooldown_secs: self
                .breaker
                .cooldown_seconds
                .unwrap_or(defaults.cooldown_secs),
            probe_timeout_secs: self
                .breaker
                .probe_timeout_seconds
                .unwrap_or(defaults.probe_timeout_secs),
            ..*defaults
        }
    }
}

/// One HTTP call a stage can make.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Appended to the connector's base URL; substitutions are percent-encoded.
    pub path: Template,
    /// The JSON body, if any.
    pub body: Option<JsonTemplate>,
    /// Retry 4xx answers other than 408 and 429 too (default: they block at once).
    pub retry_on_4xx: bool,
    /// A call whose side effects are hard to undo (default false); what that changes is the
    /// executor's policy.
    pub risky: bool,
}

impl ToolSpec {
    /// The stages whose output the path or body reads.
    pub fn stage_references(&self) -> Vec<&str> {
        let body = self.body.iter().flat_map(JsonTemplate::placeholders);
        self.path
            .placeholders()
            .chain(body)
            .filter_map(|p| p.stage())
            .collect()
    }
}

/// A stage's own retry settings; unset ones come from the global policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOverrides {
    pub max_attempts: Option<u32>,
    pub base_backoff_seconds: Option<u64>,
    pub max_backoff_seconds: Option<u64>,
}

/// One step of a pipeline: a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    /// Unique in its pipeline; defaults to the tool's name. Templates read its output as
    /// `{{stages.<name>/...}}`.
    pub name: String,
    pub connector: ConnectorId,
    pub tool: ToolName,
    pub retry: RetryOverrides,
}

impl StageSpec {
    /// `defaults` with this stage's overrides applied (the cooldown is never per stage).
    pub fn retry_policy(&self, defaults: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry.max_attempts.unwrap_or(defaults.max_attempts),
            base_backoff_secs: self
                .retry
                .base_backoff_seconds
                .unwrap_or(defaults.base_backoff_secs),
            max_backoff_secs: self
                .retry
                .max_backoff_seconds
                .unwrap_or(defaults.max_backoff_secs),
            ..*defaults
        }
    }
}

/// Stages run in order for every delivery of the sources that name the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSpec {
    /// At least one.
    pub stages: Vec<StageSpec>,
}

impl PipelineSpec {
    /// The index of the stage named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

/// Stage names: 1 to 64 of `A-Z a-z 0-9 _ - .`, so that templates and idempotency keys
/// (`{execution_id}:{stage}`) read them unambiguously.
pub(super) fn is_stage_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct FakeHeaders(Vec<(&'static str, &'static str)>);

    impl Headers for FakeHeaders {
        fn header(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn value_sources_resolve() {
        let payload = json!({
            "repo": {"name": "app", "id": 12, "fork": true, "owner": {"login": "o"}},
            "none": null,
            "list": [1],
        });
        let headers = FakeHeaders(vec![("X-GitHub-Delivery", "d-1")]);
        let resolve = |s: ValueSource| s.resolve(&payload, &headers, "ab12");
        let pointer = |p: &str| ValueSource::Pointer(p.to_owned());
        assert_eq!(
            resolve(ValueSource::Value("acme".into())),
            Some("acme".into())
        );
        assert_eq!(
            resolve(ValueSource::Header("x-github-delivery".into())),
            Some("d-1".into())
        );
        assert_eq!(resolve(ValueSource::Header("X-Other".into())), None);
        assert_eq!(resolve(pointer("/repo/name")), Some("app".into()));
        assert_eq!(resolve(pointer("/repo/id")), Some("12".into()));
        assert_eq!(resolve(pointer("/repo/fork")), Some("true".into()));
        assert_eq!(resolve(pointer("/repo/owner")), None);
        assert_eq!(resolve(pointer("/none")), None);
        assert_eq!(resolve(pointer("/list")), None);
        assert_eq!(resolve(pointer("/missing")), None);
        assert_eq!(resolve(ValueSource::BodySha256), Some("sha256:ab12".into()));
    }

    #[test]
    fn value_sources_deserialize_from_maps_and_strings() {
        let parse = |y: &str| serde_yaml::from_str::<ValueSource>(y);
        assert_eq!(parse("acme").unwrap(), ValueSource::Value("acme".into()));
        assert_eq!(
            parse("{ value: acme }").unwrap(),
            ValueSource::Value("acme".into())
        );
        assert_eq!(
            parse("pointer: /a/b").unwrap(),
            ValueSource::Pointer("/a/b".into())
        );
        assert_eq!(
            parse("header: X-T").unwrap(),
            ValueSource::Header("X-T".into())
        );
        assert!(parse("{ value: a, header: b }").is_err());
        assert!(parse("{}").is_err());
        assert!(parse("{ path: /a }")
            .unwrap_err()
            .to_string()
            .contains("unknown field `path`"));
        assert!(parse("42").is_err());
        assert_eq!(parse("digest: sha256").unwrap(), ValueSource::BodySha256);
        assert!(parse("digest: md5")
            .unwrap_err()
            .to_string()
            .contains("the only digest"));
    }

    #[test]
    fn overrides_apply_over_defaults() {
        let stage = StageSpec {
            name: "s".into(),
            connector: ConnectorId::parse("c").unwrap(),
            tool: ToolName::parse("t").unwrap(),
            retry: RetryOverrides {
                max_attempts: Some(7),
                base_backoff_seconds: None,
                max_backoff_seconds: Some(60),
            },
        };
        let defaults = RetryPolicy::default();
        let policy = stage.retry_policy(&defaults);
        assert_eq!(policy.max_attempts, 7);
        assert_eq!(policy.base_backoff_secs, defaults.base_backoff_secs);
        assert_eq!(policy.max_backoff_secs, 60);
        assert_eq!(policy.cooldown_secs, defaults.cooldown_secs);

        let connector = ConnectorSpec {
            base_url: "http://x".into(),
            auth: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            concurrency_limit: DEFAULT_CONCURRENCY_LIMIT,
            slot_ttl_seconds: 30,
            breaker: BreakerOverrides {
                failure_threshold: Some(2),
                cooldown_seconds: None,
                probe_timeout_seconds: Some(9),
            },
            tools: BTreeMap::new(),
        };
        let defaults = BreakerSettings::default();
        let settings = connector.breaker_settings(&defaults);
        assert_eq!(settings.failure_threshold, 2);
        assert_eq!(settings.cooldown_secs, defaults.cooldown_secs);
        assert_eq!(settings.probe_timeout_secs, 9);
        assert_eq!(settings.defer_secs, defaults.defer_secs);
    }

    #[test]
    fn stage_names_are_restricted() {
        assert!(is_stage_name("create_ticket-2.v1"));
        assert!(!is_stage_name(""));
        assert!(!is_stage_name("a/b"));
        assert!(!is_stage_name("a b"));
        assert!(!is_stage_name(&"a".repeat(65)));
    }
}
