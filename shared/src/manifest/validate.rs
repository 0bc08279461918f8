//! From text to a checked [`Manifest`]: YAML syntax, then shape (serde, unknown keys refused),
//! then meaning (ids, references between sections, ranges, templates), each error naming the
//! file, line and field.
//!
//! # Identity from signed content
//!
//! A source's delivery id, tenant and run key decide which execution a delivery belongs to,
//! so they must come from what the signature covers: the body (`pointer`, `digest`), a fixed
//! `value`, or a header the scheme signs (only the generic scheme signs headers: its
//! `delivery_header`, whose exact value it signs). A `header:` source for one of them that the
//! scheme does not sign is an error, unless the source lists the field in
//! `allow_unsigned_headers`; then it is a warning naming the file and line, logged at load.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;

use super::error::{ManifestError, ManifestWarning};
use super::locate::{line_of, FieldPath};
use super::model::{
    is_stage_name, AuthSpec, BreakerOverrides, ConnectorSpec, IdentityField, PipelineSpec,
    RetryOverrides, SourceSpec, StageSpec, ToolSpec, ValueSource, DEFAULT_CONCURRENCY_LIMIT,
    DEFAULT_DELIVERY_HEADER, DEFAULT_MAX_BODY_BYTES, DEFAULT_SIGNATURE_HEADER, DEFAULT_TIMEOUT_MS,
    DEFAULT_TIMESTAMP_HEADER, DEFAULT_TOLERANCE_SECS, MIN_DEFAULT_SLOT_TTL_SECS,
};
use super::raw::{RawConnector, RawManifest, RawPipeline, RawScheme, RawSource, RawStage, RawTool};
use super::template::{JsonTemplate, Template};
use super::Manifest;
use crate::domain::ids::{ConnectorId, InvalidId, PipelineName, SourceId, TenantId, ToolName};
use crate::domain::signature::SignatureScheme;

/// The Lambda payload limit: no body above it can reach a function anyway.
const MAX_BODY_BYTES_LIMIT: i64 = 6 * 1024 * 1024;
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

type Result<T> = std::result::Result<T, ManifestError>;

/// Parses and checks manifest `text`, read from `file`.
pub(super) fn parse(text: &str, file: &str) -> Result<Manifest> {
    let checker = Checker {
        text,
        file,
        warnings: RefCell::default(),
    };
    // Syntax and duplicate keys first: typed deserialization keeps the last of two equal keys.
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ManifestError::from_yaml(file, text, &e))?;
    if document.is_null() {
        return Err(checker.error(&FieldPath::root().key("sources"), "the manifest is empty"));
    }
    let raw: RawManifest =
        serde_yaml::from_str(text).map_err(|e| ManifestError::from_yaml(file, text, &e))?;
    checker.manifest(raw)
}

struct Checker<'t> {
    text: &'t str,
    file: &'t str,
    warnings: RefCell<Vec<ManifestWarning>>,
}

impl Checker<'_> {
    fn warn(&self, at: &FieldPath, message: impl Into<String>) {
        self.warnings.borrow_mut().push(ManifestWarning {
            file: self.file.to_owned(),
            line: line_of(self.text, at),
            field: at.to_string(),
            message: message.into(),
        });
    }

    fn error(&self, at: &FieldPath, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line: line_of(self.text, at),
            field: at.to_string(),
            message: message.into(),
        }
    }

    fn id<T>(
        &self,
        at: &FieldPath,
        parse: fn(String) -> std::result::Result<T, InvalidId>,
        text: &str,
    ) -> Result<T> {
        parse(text.to_owned()).map_err(|e| self.error(at, e.to_string()))
    }

    fn manifest(&self, raw: RawManifest) -> Result<Manifest> {
        let root = FieldPath::root();
        if raw.sources.is_empty() {
            return Err(self.error(&root.key("sources"), "declare at least one source"));
        }
        let mut connectors = BTreeMap::new();
        for (name, spec) in &raw.connectors {
            let at = root.key("connectors").key(name);
            let id = self.id(&at, ConnectorId::parse, name)?;
            connectors.insert(id, self.connector(&at, spec)?);
        }
        let mut pipelines = BTreeMap::new();
        for (name, spec) in &raw.pipelines {
            let at = root.key("pipelines").key(name);
            let id = self.id(&at, PipelineName::parse, name)?;
            pipelines.insert(id, self.pipeline(&at, name, spec, &connectors)?);
        }
        let mut sources = BTreeMap::new();
        for (name, spec) in &raw.sources {
            let at = root.key("sources").key(name);
            let id = self.id(&at, SourceId::parse, name)?;
            sources.insert(id, self.source(&at, spec, &pipelines)?);
        }
        Ok(Manifest {
            sources,
            connectors,
            pipelines,
            warnings: self.warnings.take(),
        })
    }

    fn source(
        &self,
        at: &FieldPath,
        raw: &RawSource,
        pipelines: &BTreeMap<PipelineName, PipelineSpec>,
    ) -> Result<SourceSpec> {
        self.env_name(&at.key("secret_env"), &raw.secret_env)?;
        let scheme = self.scheme(at, raw)?;
        self.value_source(&at.key("tenant"), &raw.tenant)?;
        if let ValueSource::Value(tenant) = &raw.tenant {
            self.id(&at.key("tenant"), TenantId::parse, tenant)?;
        }
        let delivery_id = match &raw.delivery_id {
            Some(source) => {
                self.value_source(&at.key("delivery_id"), source)?;
                source.clone()
            }
            // GitHub signs no header: its X-GitHub-Delivery can be changed by anyone who
            // captured a request, so the default is the digest of the signed body.
            None => match &scheme {
                SignatureScheme::GitHub => ValueSource::BodySha256,
                SignatureScheme::Stripe { .. } => ValueSource::Pointer("/id".into()),
                SignatureScheme::Hmac {
                    delivery_header, ..
                } => ValueSource::Header(delivery_header.clone()),
            },
        };
        let run_key = match &raw.run_key {
            None => vec![delivery_id.clone()],
            Some(parts) if parts.is_empty() => {
                return Err(self.error(&at.key("run_key"), "needs at least one part"));
            }
            Some(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    self.value_source(&at.key("run_key").index(i), part)?;
                }
                parts.clone()
            }
        };

        let allow_unsigned_headers =
            self.identity_from_signed_content(at, raw, &scheme, &delivery_id, &run_key)?;

        let pipeline_at = at.key("pipeline");
        let pipeline = self.id(&pipeline_at, PipelineName::parse, &raw.pipeline)?;
        if !pipelines.contains_key(&pipeline) {
            let known = list(pipelines.keys());
            return Err(self.error(
                &pipeline_at,
                format!("no pipeline named {pipeline} (declared: {known})"),
            ));
        }
        let max_body_bytes = self
            .number(
                &at.key("max_body_bytes"),
                raw.max_body_bytes,
                1,
                MAX_BODY_BYTES_LIMIT,
            )?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let rate_limit_per_minute = self.number(
            &at.key("rate_limit_per_minute"),
            raw.rate_limit_per_minute,
            1,
            1_000_000,
        )?;
        Ok(SourceSpec {
            scheme,
            secret_env: raw.secret_env.clone(),
            tenant: raw.tenant.clone(),
            delivery_id,
            run_key,
            allow_unsigned_headers,
            pipeline,
            max_body_bytes,
            rate_limit_per_minute,
        })
    }

    /// Checks that the delivery id, tenant and run key come from signed content (see the
    /// module docs); returns the fields `allow_unsigned_headers` lets through, warned about.
    fn identity_from_signed_content(
        &self,
        at: &FieldPath,
        raw: &RawSource,
        scheme: &SignatureScheme,
        delivery_id: &ValueSource,
        run_key: &[ValueSource],
    ) -> Result<Vec<IdentityField>> {
        let allow_at = at.key("allow_unsigned_headers");
        let mut allowed = Vec::new();
        for (i, key) in raw.allow_unsigned_headers.iter().enumerate() {
            let Some(field) = IdentityField::from_key(key) else {
                return Err(self.error(
                    &allow_at.index(i),
                    format!("{key:?} is not one of delivery_id, tenant, run_key"),
                ));
            };
            if !allowed.contains(&field) {
                allowed.push(field);
            }
        }
        let scheme_name = match raw.scheme {
            RawScheme::Github => "github",
            RawScheme::Stripe => "stripe",
            RawScheme::Hmac => "hmac",
        };
        let signed = match scheme.signed_headers().as_slice() {
            [] if raw.scheme == RawScheme::Github => "it signs only the body".to_owned(),
            [] => "it signs only the body and its timestamp".to_owned(),
            names => format!(
                "it signs only the body and the headers {}",
                names.join(", ")
            ),
        };
        // (field, where it is written, its header when unsigned)
        let mut unsigned: Vec<(IdentityField, FieldPath, String)> = Vec::new();
        let mut check = |field: IdentityField, written_at: FieldPath, source: &ValueSource| {
            if let ValueSource::Header(name) = source {
                if !scheme.signs_header(name) {
                    unsigned.push((field, written_at, name.clone()));
                }
            }
        };
        check(
            IdentityField::DeliveryId,
            at.key("delivery_id"),
            delivery_id,
        );
        check(IdentityField::Tenant, at.key("tenant"), &raw.tenant);
        match &raw.run_key {
            Some(_) => {
                for (i, part) in run_key.iter().enumerate() {
                    check(IdentityField::RunKey, at.key("run_key").index(i), part);
                }
            }
            // The default run key is the delivery id: unsigned if it is.
            None => check(IdentityField::RunKey, at.key("delivery_id"), delivery_id),
        }
        for (field, written_at, header) in &unsigned {
            let key = field.key();
            if allowed.contains(field) {
                self.warn(
                    written_at,
                    format!(
                        "{key} comes from header {header}, which scheme {scheme_name} does not                          sign ({signed}); allowed by allow_unsigned_headers, but anyone holding                          one captured request can resend it with another {key}"
                    ),
                );
            } else {
                let defaulted = if *field == IdentityField::RunKey && raw.run_key.is_none() {
                    " (run_key defaults to delivery_id)"
                } else {
                    ""
                };
                let instead = match raw.scheme {
                    RawScheme::Hmac => {
                        ", from the header the scheme signs (delivery_header)".to_owned()
                    }
                    _ => String::new(),
                };
                return Err(self.error(
                    written_at,
                    format!(
                        "{key} comes from header {header}{defaulted}, which scheme                          {scheme_name} does not sign ({signed}), so anyone holding one                          captured request could resend it with another {key}; take {key}                          from the body ({{ pointer: /... }} or {{ digest: sha256 }}), a fixed                          {{ value: ... }}{instead}, or accept the risk with                          `allow_unsigned_headers: [{key}]` on this source"
                    ),
                ));
            }
        }
        for (i, field) in allowed.iter().enumerate() {
            if !unsigned.iter().any(|(f, _, _)| f == field) {
                let index = raw
                    .allow_unsigned_headers
                    .iter()
                    .position(|k| k == field.key())
                    .unwrap_or(i);
                return Err(self.error(
                    &allow_at.index(index),
                    format!(
                        "{} does not come from an unsigned header; remove it from the list",
                        field.key()
                    ),
                ));
            }
        }
        Ok(allowed)
    }

    /// The signature scheme and its settings; settings of other schemes are refused.
    fn scheme(&self, at: &FieldPath, raw: &RawSource) -> Result<SignatureScheme> {
        let tolerance = |s: &Self| {
            s.number(
                &at.key("tolerance_seconds"),
                raw.tolerance_seconds,
                1,
                86_400,
            )
            .map(|t| t.unwrap_or(DEFAULT_TOLERANCE_SECS))
        };
        let header = |key: &str, value: &Option<String>, default: &str| {
            let value = value.clone().unwrap_or_else(|| default.to_owned());
            self.header_name(&at.key(key), &value).map(|()| value)
        };
        let only_for = |key: &str, set: bool, schemes: &str| {
            if set {
                Err(self.error(&at.key(key), format!("only applies to scheme {schemes}")))
            } else {
                Ok(())
            }
        };
        let scheme = match raw.scheme {
            RawScheme::Github => {
                only_for(
                    "tolerance_seconds",
                    raw.tolerance_seconds.is_some(),
                    "stripe or hmac",
                )?;
                SignatureScheme::GitHub
            }
            RawScheme::Stripe => SignatureScheme::Stripe {
                tolerance_secs: tolerance(self)?,
            },
            RawScheme::Hmac => SignatureScheme::Hmac {
                signature_header: header(
                    "signature_header",
                    &raw.signature_header,
                    DEFAULT_SIGNATURE_HEADER,
                )?,
                timestamp_header: header(
                    "timestamp_header",
                    &raw.timestamp_header,
                    DEFAULT_TIMESTAMP_HEADER,
                )?,
                delivery_header: header(
                    "delivery_header",
                    &raw.delivery_header,
                    DEFAULT_DELIVERY_HEADER,
                )?,
                tolerance_secs: tolerance(self)?,
            },
        };
        if raw.scheme != RawScheme::Hmac {
            only_for("signature_header", raw.signature_header.is_some(), "hmac")?;
            only_for("timestamp_header", raw.timestamp_header.is_some(), "hmac")?;
            only_for("delivery_header", raw.delivery_header.is_some(), "hmac")?;
        }
        Ok(scheme)
    }

    fn connector(&self, at: &FieldPath, raw: &RawConnector) -> Result<ConnectorSpec> {
        let base_url = self.base_url(&at.key("base_url"), &raw.base_url)?;
        let auth = match &raw.auth {
            None => None,
            Some(auth) => {
                self.header_name(&at.key("auth").key("header"), &auth.header)?;
                self.env_name(&at.key("auth").key("value_env"), &auth.value_env)?;
                Some(AuthSpec {
                    header: auth.header.clone(),
                    value_env: auth.value_env.clone(),
                })
            }
        };
        let timeout_ms = self
            .number(&at.key("timeout_ms"), raw.timeout_ms, 1, 120_000)?
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let concurrency_limit = self
            .number(
                &at.key("concurrency_limit"),
                raw.concurrency_limit,
                1,
                10_000,
            )?
            .unwrap_or(DEFAULT_CONCURRENCY_LIMIT);
        // Whole seconds a call may take: a slot or a probe lease shorter than that would be
        // handed to another caller while the call still runs.
        let timeout_secs = timeout_ms.div_ceil(1000) as i64;
        let slot_at = at.key("slot_ttl_seconds");
        let slot_ttl_seconds = match self.number(&slot_at, raw.slot_ttl_seconds, 1, 86_400)? {
            Some(ttl) if ttl < timeout_secs => {
                return Err(self.error(
                    &slot_at,
                    format!("must be at least the timeout ({timeout_secs} s)"),
                ));
            }
            Some(ttl) => ttl,
            None => (2 * timeout_ms)
                .div_ceil(1000)
                .max(MIN_DEFAULT_SLOT_TTL_SECS as u64) as i64,
        };
        let breaker = raw
            .breaker
            .as_ref()
            .map_or(Ok(BreakerOverrides::default()), |b| {
                let at = at.key("breaker");
                let probe_at = at.key("probe_timeout_seconds");
                let probe_timeout_seconds =
                    self.number(&probe_at, b.probe_timeout_seconds, 1, 86_400)?;
                if probe_timeout_seconds.is_some_and(|p: i64| p < timeout_secs) {
                    return Err(self.error(
                        &probe_at,
                        format!("must be at least the timeout ({timeout_secs} s)"),
                    ));
                }
                Ok(BreakerOverrides {
                    failure_threshold: self.number(
                        &at.key("failure_threshold"),
                        b.failure_threshold,
                        1,
                        1_000,
                    )?,
                    cooldown_seconds: self.number(
                        &at.key("cooldown_seconds"),
                        b.cooldown_seconds,
                        1,
                        86_400,
                    )?,
                    probe_timeout_seconds,
                })
            })?;
        let mut tools = BTreeMap::new();
        for (name, tool) in &raw.tools {
            let tool_at = at.key("tools").key(name);
            let id = self.id(&tool_at, ToolName::parse, name)?;
            tools.insert(id, self.tool(&tool_at, tool)?);
        }
        Ok(ConnectorSpec {
            base_url,
            auth,
            timeout_ms,
            concurrency_limit,
            slot_ttl_seconds,
            breaker,
            tools,
        })
    }

    fn base_url(&self, at: &FieldPath, url: &str) -> Result<String> {
        let url = url.trim_end_matches('/');
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(self.error(at, "must start with http:// or https://"));
        };
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#';
        if rest.is_empty() || rest.starts_with('/') || rest.contains(bad) {
            return Err(self.error(at, "needs a host, and no spaces, query or fragment"));
        }
        Ok(url.to_owned())
    }

    fn tool(&self, at: &FieldPath, raw: &RawTool) -> Result<ToolSpec> {
        let method = raw.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(self.error(
                &at.key("method"),
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
        let path_at = at.key("path");
        let path =
            Template::parse_path(&raw.path).map_err(|e| self.error(&path_at, e.to_string()))?;
        if !raw.path.starts_with('/') || path.literals().any(|t| t.contains(char::is_whitespace)) {
            return Err(self.error(&path_at, "must start with '/' and hold no whitespace"));
        }
        let body = match &raw.body {
            None => None,
            Some(_) if method == "GET" => {
                return Err(self.error(&at.key("body"), "a GET request carries no body"));
            }
            Some(value) => Some(JsonTemplate::parse(value).map_err(|e| {
                let body_at = pointer_path(at.key("body"), value, &e.pointer);
                self.error(&body_at, e.error.to_string())
            })?),
        };
        Ok(ToolSpec {
            method,
            path,
            body,
            retry_on_4xx: raw.retry_on_4xx,
            risky: raw.risky,
        })
    }

    fn pipeline(
        &self,
        at: &FieldPath,
        name: &str,
        raw: &RawPipeline,
        connectors: &BTreeMap<ConnectorId, ConnectorSpec>,
    ) -> Result<PipelineSpec> {
        if raw.stages.is_empty() {
            return Err(self.error(&at.key("stages"), "a pipeline needs at least one stage"));
        }
        let mut stages: Vec<StageSpec> = Vec::with_capacity(raw.stages.len());
        for (i, stage) in raw.stages.iter().enumerate() {
            let spec = self.stage(&at.key("stages").index(i), name, stage, &stages, connectors)?;
            stages.push(spec);
        }
        Ok(PipelineSpec { stages })
    }

    fn stage(
        &self,
        at: &FieldPath,
        pipeline: &str,
        raw: &RawStage,
        earlier: &[StageSpec],
        connectors: &BTreeMap<ConnectorId, ConnectorSpec>,
    ) -> Result<StageSpec> {
        let connector_at = at.key("connector");
        let tool_at = at.key("tool");
        let connector = self.id(&connector_at, ConnectorId::parse, &raw.connector)?;
        let tool = self.id(&tool_at, ToolName::parse, &raw.tool)?;
        let name = raw.name.clone().unwrap_or_else(|| tool.to_string());
        let name_at = at.key("name");
        if !is_stage_name(&name) {
            return Err(self.error(&name_at, "must be 1 to 64 letters, digits, '_', '-' or '.'"));
        }
        if let Some(j) = earlier.iter().position(|s| s.name == name) {
            return Err(self.error(
                &name_at,
                format!("stage name {name} is already used by stages[{j}]"),
            ));
        }
        let Some(connector_spec) = connectors.get(&connector) else {
            let known = list(connectors.keys());
            return Err(self.error(
                &connector_at,
                format!("no connector named {connector} (declared: {known})"),
            ));
        };
        let Some(tool_spec) = connector_spec.tools.get(&tool) else {
            let known = list(connector_spec.tools.keys());
            return Err(self.error(
                &tool_at,
                format!("connector {connector} has no tool named {tool} (it has: {known})"),
            ));
        };
        for reference in tool_spec.stage_references() {
            if !earlier.iter().any(|s| s.name == reference) {
                return Err(self.error(
                    &tool_at,
                    format!(
                        "tool {connector}.{tool} reads stages.{reference}, which is not an \
                         earlier stage of pipeline {pipeline}"
                    ),
                ));
            }
        }
        let retry = match &raw.retry {
            None => RetryOverrides::default(),
            Some(r) => {
                let at = at.key("retry");
                let base = self.number(
                    &at.key("base_backoff_seconds"),
                    r.base_backoff_seconds,
                    1,
                    86_400,
                )?;
                let max_at = at.key("max_backoff_seconds");
                let max = self.number(&max_at, r.max_backoff_seconds, 1, 86_400)?;
                if let (Some(base), Some(max)) = (base, max) {
                    if max < base {
                        return Err(self.error(
                            &max_at,
                            format!("must be at least base_backoff_seconds ({base})"),
                        ));
                    }
                }
                RetryOverrides {
                    max_attempts: self.number(&at.key("max_attempts"), r.max_attempts, 1, 100)?,
                    base_backoff_seconds: base,
                    max_backoff_seconds: max,
                }
            }
        };
        Ok(StageSpec {
            name,
            connector,
            tool,
            retry,
        })
    }

    fn value_source(&self, at: &FieldPath, source: &ValueSource) -> Result<()> {
        match source {
            ValueSource::Value(value) if value.is_empty() => {
                Err(self.error(&at.key("value"), "is empty"))
            }
            ValueSource::Pointer(pointer) if !pointer.is_empty() && !pointer.starts_with('/') => {
                Err(self.error(&at.key("pointer"), "a JSON pointer starts with '/'"))
            }
            ValueSource::Header(name) => self.header_name(&at.key("header"), name),
            _ => Ok(()),
        }
    }

    /// `value` checked against `min..=max` and converted; `None` stays `None`.
    fn number<T: TryFrom<i64>>(
        &self,
        at: &FieldPath,
        value: Option<i64>,
        min: i64,
        max: i64,
    ) -> Result<Option<T>> {
        let Some(value) = value else { return Ok(None) };
        let out_of_range =
            || self.error(at, format!("must be between {min} and {max}, got {value}"));
        if !(min..=max).contains(&value) {
            return Err(out_of_range());
        }
        T::try_from(value).map(Some).map_err(|_| out_of_range())
    }

    fn env_name(&self, at: &FieldPath, name: &str) -> Result<()> {
        let mut bytes = name.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_');
        if first_ok && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            Ok(())
        } else {
            Err(self.error(
                at,
                format!("{name:?} is not an environment variable name ([A-Z_][A-Z0-9_]*)"),
            ))
        }
    }

    fn header_name(&self, at: &FieldPath, name: &str) -> Result<()> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if !name.is_empty() && name.bytes().all(token) {
            Ok(())
        } else {
            Err(self.error(at, format!("{name:?} is not an HTTP header name")))
        }
    }
}

/// The field path of the string at JSON `pointer` in `value`, below `at`.
fn pointer_path(mut at: FieldPath, mut value: &serde_json::Value, pointer: &str) -> FieldPath {
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        match value {
            serde_json::Value::Array(items) => {
                let Ok(index) = token.parse::<usize>() else {
                    break;
                };
                at = at.index(index);
                let Some(item) = items.get(index) else { break };
                value = item;
            }
            serde_json::Value::Object(map) => {
                at = at.key(&token);
                let Some(item) = map.get(&token) else { break };
                value = item;
            }
            _ => break,
        }
    }
    at
}

fn list<T: Display>(items: impl Iterator<Item = T>) -> String {
    let names: Vec<String> = items.map(|i| i.to_string()).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line numbers matter: the cases below point into this text.
    const BASE: &str = "\
sources:
  gh:
    scheme: github
    secret_env: GH_SECRET
    tenant: { pointer: /installation/account/login }
    run_key:
      - pointer: /repository/full_name
      - pointer: /run
    pipeline: review
connectors:
  crm:
    base_url: https://crm.example/
    timeout_ms: 5000
    tools:
      create:
        method: post
        path: /leads/{{payload/repository/full_name}}
        body:
          title: \"PR {{payload/number}}\"
          repo: \"{{payload/repository}}\"
      note:
        method: PUT
        path: /leads/{{stages.create/id}}/notes
        body:
          text: \"{{stages.create/id}}\"
pipelines:
  review:
    stages:
      - connector: crm
        tool: create
        retry: { max_attempts: 5 }
      - name: note
        connector: crm
        tool: note
";

    /// The error for `BASE` with the first `from` replaced by `to`.
    fn error_for(from: &str, to: &str) -> ManifestError {
        assert!(BASE.contains(from), "BASE lacks {from:?}");
        let text = BASE.replacen(from, to, 1);
        match Manifest::parse(&text, "sluice.yaml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn check(err: ManifestError, field: &str, line: Option<usize>, words: &str) {
        assert_eq!((err.field.as_str(), err.line), (field, line), "{err}");
        assert!(err.message.contains(words), "{err}");
        assert_eq!(err.file, "sluice.yaml");
    }

    #[test]
    fn the_base_manifest_is_valid_and_gets_defaults() {
        let m = Manifest::parse(BASE, "sluice.yaml").unwrap();
        let crm = &m.connectors[&ConnectorId::parse("crm").unwrap()];
        assert_eq!(crm.base_url, "https://crm.example");
        assert_eq!(crm.timeout_ms, 5000);
        assert_eq!(crm.concurrency_limit, DEFAULT_CONCURRENCY_LIMIT);
        assert_eq!(crm.slot_ttl_seconds, 30);
        assert_eq!(crm.breaker, BreakerOverrides::default());
        let create = &crm.tools[&ToolName::parse("create").unwrap()];
        assert_eq!(create.method, "POST");
        assert!(!create.retry_on_4xx && !create.risky);
        let review = &m.pipelines[&PipelineName::parse("review").unwrap()];
        assert_eq!(review.stages[0].name, "create");
        assert_eq!(review.stages[0].retry.max_attempts, Some(5));
        assert_eq!(review.position("note"), Some(1));
    }

    #[test]
    fn defaults_follow_the_scheme() {
        let stripe = BASE.replacen(
            "scheme: github",
            "scheme: stripe\n    tolerance_seconds: 60",
            1,
        );
        let m = Manifest::parse(&stripe, "f").unwrap();
        let gh = &m.sources[&SourceId::parse("gh").unwrap()];
        assert_eq!(gh.scheme, SignatureScheme::Stripe { tolerance_secs: 60 });
        assert_eq!(gh.delivery_id, ValueSource::Pointer("/id".into()));
        let hmac = BASE.replacen("scheme: github", "scheme: hmac", 1).replacen(
            "    run_key:\n      - pointer: /repository/full_name\n      - pointer: /run\n",
            "",
            1,
        );
        let m = Manifest::parse(&hmac, "f").unwrap();
        let gh = &m.sources[&SourceId::parse("gh").unwrap()];
        assert_eq!(
            gh.scheme,
            SignatureScheme::Hmac {
                signature_header: DEFAULT_SIGNATURE_HEADER.into(),
                timestamp_header: DEFAULT_TIMESTAMP_HEADER.into(),
                delivery_header: DEFAULT_DELIVERY_HEADER.into(),
                tolerance_secs: DEFAULT_TOLERANCE_SECS,
            }
        );
        assert_eq!(
            gh.delivery_id,
            ValueSource::Header(DEFAULT_DELIVERY_HEADER.into())
        );
        assert_eq!(gh.run_key, std::slice::from_ref(&gh.delivery_id));
    }

    #[test]
    fn identity_from_an_unsigned_header_is_an_error_naming_the_field() {
        let err = error_for(
            "tenant: { pointer: /installation/account/login }",
            "tenant: { header: X-Tenant }",
        );
        assert!(
            err.message.contains("allow_unsigned_headers: [tenant]")
                && err
                    .message
                    .contains("github does not sign (it signs only the body)"),
            "{err}"
        );
        check(
            err,
            "sources.gh.tenant",
            Some(5),
            "tenant comes from header X-Tenant",
        );
        check(
            error_for(
                "    run_key:\n",
                "    delivery_id: { header: X-GitHub-Delivery }\n    run_key:\n",
            ),
            "sources.gh.delivery_id",
            Some(6),
            "delivery_id comes from header X-GitHub-Delivery",
        );
        check(
            error_for("      - pointer: /run", "      - header: X-Run"),
            "sources.gh.run_key[1]",
            Some(8),
            "run_key comes from header X-Run",
        );
        // Stripe signs no header either.
        let stripe = BASE
            .replacen("scheme: github", "scheme: stripe", 1)
            .replacen("      - pointer: /run", "      - header: X-Run", 1);
        let err = Manifest::parse(&stripe, "sluice.yaml").unwrap_err();
        check(
            err,
            "sources.gh.run_key[1]",
            Some(8),
            "signs only the body and its timestamp",
        );
        // The generic scheme signs its delivery header, not any other.
        let hmac = BASE.replacen("scheme: github", "scheme: hmac", 1).replacen(
            "    run_key:\n",
            "    delivery_id: { header: X-Event-Id }\n    run_key:\n",
            1,
        );
        let err = Manifest::parse(&hmac, "sluice.yaml").unwrap_err();
        assert!(err.message.contains("delivery_header"), "{err}");
        check(
            err,
            "sources.gh.delivery_id",
            Some(6),
            "delivery_id comes from header X-Event-Id",
        );
        let signed = hmac.replacen(
            "    delivery_id:",
            "    delivery_header: X-Event-Id\n    delivery_id:",
            1,
        );
        let m = Manifest::parse(&signed, "sluice.yaml").unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let gh = &m.sources[&SourceId::parse("gh").unwrap()];
        assert!(gh.scheme.signs_header("x-event-id"));
    }

    #[test]
    fn the_opt_in_lets_an_unsigned_header_through_with_a_warning_naming_file_and_line() {
        let text = BASE.replacen(
            "    tenant: { pointer: /installation/account/login }\n",
            "    tenant: { header: X-Tenant }\n    allow_unsigned_headers: [tenant]\n",
            1,
        );
        let m = Manifest::parse(&text, "sluice.yaml").unwrap();
        let gh = &m.sources[&SourceId::parse("gh").unwrap()];
        assert_eq!(gh.allow_unsigned_headers, [IdentityField::Tenant]);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let warning = &m.warnings[0];
        assert_eq!(
            (warning.file.as_str(), warning.line, warning.field.as_str()),
            ("sluice.yaml", Some(5), "sources.gh.tenant")
        );
        let shown = warning.to_string();
        assert!(
            shown
                .starts_with("sluice.yaml:5: sources.gh.tenant: tenant comes from header X-Tenant")
                && shown.contains("allowed by allow_unsigned_headers"),
            "{shown}"
        );

        // A defaulted run key follows the delivery id: both need the opt-in.
        let delivery = BASE.replacen(
            "    run_key:\n      - pointer: /repository/full_name\n      - pointer: /run\n",
            "    delivery_id: { header: X-GitHub-Delivery }\n    allow_unsigned_headers: [delivery_id]\n",
            1,
        );
        check(
            Manifest::parse(&delivery, "sluice.yaml").unwrap_err(),
            "sources.gh.delivery_id",
            Some(6),
            "run_key comes from header X-GitHub-Delivery (run_key defaults to delivery_id)",
        );
        let both = delivery.replacen("[delivery_id]", "[delivery_id, run_key]", 1);
        let m = Manifest::parse(&both, "sluice.yaml").unwrap();
        let fields: Vec<_> = m
            .warnings
            .iter()
            .map(|w| (w.field.as_str(), w.line))
            .collect();
        assert_eq!(
            fields,
            [
                ("sources.gh.delivery_id", Some(6)),
                ("sources.gh.delivery_id", Some(6))
            ]
        );
        assert!(m.warnings[1].message.starts_with("run_key comes from"));

        // The list names identity fields, and only ones that need it.
        check(
            error_for(
                "    run_key:\n",
                "    allow_unsigned_headers: [tenant]\n    run_key:\n",
            ),
            "sources.gh.allow_unsigned_headers[0]",
            Some(6),
            "tenant does not come from an unsigned header",
        );
        check(
            error_for(
                "    run_key:\n",
                "    allow_unsigned_headers: [pipeline]\n    run_key:\n",
            ),
            "sources.gh.allow_unsigned_headers[0]",
            Some(6),
            "\"pipeline\" is not one of delivery_id, tenant, run_key",
        );
    }

    #[test]
    fn github_identity_defaults_to_the_body_digest() {
        let text = BASE.replacen(
            "    run_key:\n      - pointer: /repository/full_name\n      - pointer: /run\n",
            "",
            1,
        );
        let m = Manifest::parse(&text, "sluice.yaml").unwrap();
        let gh = &m.sources[&SourceId::parse("gh").unwrap()];
        assert_eq!(gh.delivery_id, ValueSource::BodySha256);
        assert_eq!(gh.run_key, [ValueSource::BodySha256]);
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn yaml_syntax_and_duplicate_keys() {
        let err = error_for("    pipeline: review\n", "    pipeline: [review\n");
        assert_eq!(err.line, Some(10), "{err}");
        let err = error_for(
            "    timeout_ms: 5000\n",
            "    timeout_ms: 5000\n    timeout_ms: 6000\n",
        );
        check(
            err,
            "connectors.crm.timeout_ms",
            Some(14),
            "duplicate entry",
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        check(
            error_for(
                "        method: post\n",
                "        method: post\n        retries: 3\n",
            ),
            "connectors.crm.tools.create.retries",
            Some(17),
            "unknown field `retries`",
        );
        check(
            error_for("      - pointer: /run", "      - pointr: /run"),
            "sources.gh.run_key[1].pointr",
            Some(8),
            "unknown field `pointr`",
        );
        check(
            error_for("pipelines:", "pipeline:"),
            "pipeline",
            Some(26),
            "unknown field `pipeline`",
        );
    }

    #[test]
    fn type_errors_and_missing_fields_are_named() {
        check(
            error_for("timeout_ms: 5000", "timeout_ms: fast"),
            "connectors.crm.timeout_ms",
            Some(13),
            "invalid type",
        );
        check(
            error_for("scheme: github", "scheme: gitlab"),
            "sources.gh.scheme",
            Some(3),
            "unknown variant `gitlab`",
        );
        check(
            error_for("    pipeline: review\n", ""),
            "sources.gh.pipeline",
            Some(3),
            "missing field `pipeline`",
        );
        check(
            error_for(
                "tenant: { pointer: /installation/account/login }",
                "tenant: { pointer: /a, value: b }",
            ),
            "sources.gh.tenant",
            Some(5),
            "exactly one of",
        );
    }

    #[test]
    fn ids_and_env_names_are_checked() {
        check(
            error_for("  gh:", "  'g#h':"),
            "sources.g#h",
            Some(2),
            "'#'",
        );
        check(
            error_for("secret_env: GH_SECRET", "secret_env: gh-secret"),
            "sources.gh.secret_env",
            Some(4),
            "environment variable name",
        );
        check(
            error_for(
                "tenant: { pointer: /installation/account/login }",
                "tenant: \"\"",
            ),
            "sources.gh.tenant.value",
            Some(5),
            "empty",
        );
        check(
            error_for("pointer: /repository/full_name", "pointer: repository"),
            "sources.gh.run_key[0].pointer",
            Some(7),
            "starts with '/'",
        );
    }

    #[test]
    fn references_between_sections_are_checked() {
        check(
            error_for("    pipeline: review", "    pipeline: deploy"),
            "sources.gh.pipeline",
            Some(9),
            "no pipeline named deploy (declared: review)",
        );
        check(
            error_for(
                "        connector: crm\n        tool: note",
                "        connector: erp\n        tool: note",
            ),
            "pipelines.review.stages[1].connector",
            Some(33),
            "no connector named erp",
        );
        check(
            error_for("tool: create", "tool: delete"),
            "pipelines.review.stages[0].tool",
            Some(30),
            "connector crm has no tool named delete (it has: create, note)",
        );
    }

    #[test]
    fn stage_names_and_order_are_checked() {
        check(
            error_for("name: note", "name: create"),
            "pipelines.review.stages[1].name",
            Some(32),
            "already used by stages[0]",
        );
        check(
            error_for("name: note", "name: \"\""),
            "pipelines.review.stages[1].name",
            Some(32),
            "1 to 64",
        );
        // `note` reads stages.create, so it cannot run first.
        let swapped = BASE.replacen(
            "      - connector: crm\n        tool: create\n        retry: { max_attempts: 5 }\n      - name: note\n        connector: crm\n        tool: note\n",
            "      - name: note\n        connector: crm\n        tool: note\n      - connector: crm\n        tool: create\n",
            1,
        );
        let err = Manifest::parse(&swapped, "sluice.yaml").unwrap_err();
        check(
            err,
            "pipelines.review.stages[0].tool",
            Some(31),
            "reads stages.create, which is not an earlier stage of pipeline review",
        );
        check(
            error_for("    stages:\n      - connector: crm\n        tool: create\n        retry: { max_attempts: 5 }\n      - name: note\n        connector: crm\n        tool: note\n", "    stages: []\n"),
            "pipelines.review.stages",
            Some(28),
            "at least one stage",
        );
    }

    #[test]
    fn templates_are_checked_at_load() {
        check(
            error_for("\"PR {{payload/number}}\"", "\"PR {{number}}\""),
            "connectors.crm.tools.create.body.title",
            Some(19),
            "unknown placeholder `{{number}}`",
        );
        check(
            error_for(
                "/leads/{{stages.create/id}}/notes",
                "/leads/{{stages.create/id}/notes",
            ),
            "connectors.crm.tools.note.path",
            Some(23),
            "never closed",
        );
        check(
            error_for("path: /leads/{{payload", "path: leads/{{payload"),
            "connectors.crm.tools.create.path",
            Some(17),
            "must start with '/'",
        );
        check(
            error_for("path: /leads/{{payload", "path: /leads /{{payload"),
            "connectors.crm.tools.create.path",
            Some(17),
            "no whitespace",
        );
        let spaced = BASE.replacen(
            "{{payload/repository/full_name}}",
            "{{ payload/repository/full_name }}",
            1,
        );
        assert!(Manifest::parse(&spaced, "f").is_ok());
    }

    #[test]
    fn urls_methods_and_ranges_are_checked() {
        check(
            error_for("https://crm.example/", "ftp://crm.example"),
            "connectors.crm.base_url",
            Some(12),
            "http:// or https://",
        );
        check(
            error_for("method: PUT", "method: FETCH"),
            "connectors.crm.tools.note.method",
            Some(22),
            "GET, POST, PUT, PATCH, DELETE",
        );
        check(
            error_for("timeout_ms: 5000", "timeout_ms: 0"),
            "connectors.crm.timeout_ms",
            Some(13),
            "between 1 and 120000, got 0",
        );
        check(
            error_for(
                "timeout_ms: 5000",
                "timeout_ms: 5000\n    slot_ttl_seconds: 2",
            ),
            "connectors.crm.slot_ttl_seconds",
            Some(14),
            "at least the timeout (5 s)",
        );
        check(
            error_for("{ max_attempts: 5 }", "{ max_attempts: 0 }"),
            "pipelines.review.stages[0].retry.max_attempts",
            Some(31),
            "between 1 and 100",
        );
        check(
            error_for(
                "retry: { max_attempts: 5 }",
                "retry:\n          base_backoff_seconds: 60\n          max_backoff_seconds: 10",
            ),
            "pipelines.review.stages[0].retry.max_backoff_seconds",
            Some(33),
            "at least base_backoff_seconds (60)",
        );
        check(
            error_for(
                "scheme: github",
                "scheme: github\n    signature_header: X-Sig",
            ),
            "sources.gh.signature_header",
            Some(4),
            "only applies to scheme hmac",
        );
    }

    #[test]
    fn an_empty_manifest_needs_a_source() {
        let err = Manifest::parse("# nothing yet\n", "sluice.yaml").unwrap_err();
        assert_eq!(err.field, "sources");
        let err = Manifest::parse("sources: {}\nconnectors: {}\n", "sluice.yaml").unwrap_err();
        check(err, "sources", Some(1), "at least one source");
        let err = Manifest::parse("- 1\n", "sluice.yaml").unwrap_err();
        check(
            err,
            "",
            Some(1),
            "expected a map with sources, connectors and pipelines",
        );
    }
}
