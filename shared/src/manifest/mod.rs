//! The declarative configuration file, `sluice.yaml`: its typed model, its loading and
//! validation (every error names the file, line and field; so does every warning, such as an
//! identity field opted in to an unsigned header, logged at load), the secrets it names by environment
//! variable, and the templates used in tool paths and bodies.
//!
//! ```yaml
//! sources:      # webhook senders: signature scheme, secret, tenant, run key, pipeline
//! connectors:   # HTTP services: base URL, auth, limits, breaker, tools (method, path, body)
//! pipelines:    # ordered stages, each one tool call on a connector
//! ```
//!
//! `infra/sluice.example.yaml` is a complete example; docs/manifest.md is the reference of
//! every key (a test below fails when a raw field has no row there).

mod error;
mod locate;
mod model;
mod raw;
mod secrets;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use error::{ManifestError, ManifestWarning};
pub use model::{
    AuthSpec, BreakerOverrides, ConnectorSpec, IdentityField, PipelineSpec, RetryOverrides,
    SourceSpec, StageSpec, ToolSpec, ValueSource, BODY_DIGEST_SHA256, DEFAULT_CONCURRENCY_LIMIT,
    DEFAULT_DELIVERY_HEADER, DEFAULT_MAX_BODY_BYTES, DEFAULT_SIGNATURE_HEADER, DEFAULT_TIMEOUT_MS,
    DEFAULT_TIMESTAMP_HEADER, DEFAULT_TOLERANCE_SECS, MIN_DEFAULT_SLOT_TTL_SECS,
};
pub use secrets::Secrets;
pub use template::{
    JsonTemplate, JsonTemplateError, Placeholder, Template, TemplateContext, TemplateError,
};

use crate::domain::ids::{ConnectorId, PipelineName, SourceId};

/// A loaded, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub sources: BTreeMap<SourceId, SourceSpec>,
    pub connectors: BTreeMap<ConnectorId, ConnectorSpec>,
    pub pipelines: BTreeMap<PipelineName, PipelineSpec>,
    /// What validation allowed but flagged (an identity field from an unsigned header, ...),
    /// each naming the file and line; [`Manifest::log_warnings`] logs them at load.
    pub warnings: Vec<ManifestWarning>,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: file.clone(),
            line: None,
            field: String::new(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Validates manifest `text`; `file` is the name errors show.
    pub fn parse(text: &str, file: &str) -> Result<Self, ManifestError> {
        validate::parse(text, file)
    }

    /// Logs every warning (`tracing::warn!`, one line each with `file`, `line` and `field`).
    /// Startup calls it once after loading.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(
                file = %warning.file,
                line = warning.line,
                field = %warning.field,
                "manifest warning: {warning}"
            );
        }
    }

    /// The pipeline `source` triggers.
    pub fn pipeline_for(&self, source: &SourceId) -> Option<&PipelineSpec> {
        self.pipelines.get(&self.sources.get(source)?.pipeline)
    }

    /// The connector and tool `stage` calls.
    pub fn tool_for(&self, stage: &StageSpec) -> Option<(&ConnectorSpec, &ToolSpec)> {
        let connector = self.connectors.get(&stage.connector)?;
        Some((connector, connector.tools.get(&stage.tool)?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::signature::SignatureScheme;

    const EXAMPLE: &str = include_str!("../../../infra/sluice.example.yaml");

    #[test]
    fn the_example_manifest_loads() {
        let m = Manifest::parse(EXAMPLE, "infra/sluice.example.yaml").unwrap();
        let source_id = SourceId::parse("github-demo").unwrap();
        let source = &m.sources[&source_id];
        assert_eq!(source.scheme, SignatureScheme::GitHub);
        assert_eq!(source.secret_env, "DEMO_GITHUB_SECRET");
        assert_eq!(source.tenant, ValueSource::Value("demo".into()));
        assert_eq!(source.delivery_id, ValueSource::BodySha256);
        assert!(source.allow_unsigned_headers.is_empty());
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(
            source.run_key,
            [
                ValueSource::Pointer("/repository/full_name".into()),
                ValueSource::Pointer("/after".into())
            ]
        );
        assert_eq!(source.max_body_bytes, DEFAULT_MAX_BODY_BYTES);

        let pipeline = m.pipeline_for(&source_id).unwrap();
        let names: Vec<_> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["create_ticket", "notify"]);
        let (connector, notify) = m.tool_for(&pipeline.stages[1]).unwrap();
        assert_eq!(connector.base_url, "http://127.0.0.1:8088");
        assert_eq!(connector.slot_ttl_seconds, 30);
        assert_eq!(notify.method, "POST");
        assert_eq!(
            notify.stage_references(),
            ["create_ticket", "create_ticket"]
        );

        let payload = json!({"repository": {"full_name": "acme/app"}, "after": "abc"});
        let stages = BTreeMap::from([("create_ticket".to_owned(), json!({"id": 17}))]);
        let ctx = TemplateContext {
            payload: &payload,
            stages: &stages,
            execution_id: "exe_1",
            tenant: "demo",
            source: "github-demo",
        };
        let body = notify.body.as_ref().unwrap().render(&ctx).unwrap();
        assert_eq!(
            body,
            json!({"ticket_id": 17, "message": "Ticket 17 opened for acme/app"})
        );
        let (_, create) = m.tool_for(&pipeline.stages[0]).unwrap();
        assert_eq!(create.path.render(&ctx).unwrap(), "/tickets");
        let body = create.body.as_ref().unwrap().render(&ctx).unwrap();
        assert_eq!(body["title"], json!("Review acme/app at abc"));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("sluice-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.yaml");
        std::fs::write(&path, EXAMPLE).unwrap();
        assert!(Manifest::load(&path).is_ok());
        std::fs::write(&path, "sources: {}\n").unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert_eq!(err.file, path.display().to_string());
        let missing = Manifest::load(&dir.join("absent.yaml")).unwrap_err();
        assert!(missing.message.starts_with("cannot read the manifest"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod docs_tests {
    /// Every field name of the raw serde types (`pub name:` lines inside `struct Raw...`).
    fn raw_fields() -> Vec<String> {
        let mut fields = Vec::new();
        let mut in_struct = false;
        for line in include_str!("raw.rs").lines() {
            let line = line.trim();
            if line.starts_with("pub(super) struct Raw") {
                in_struct = true;
            } else if line == "}" {
                in_struct = false;
            } else if in_struct {
                if let Some(rest) = line.strip_prefix("pub ") {
                    if let Some((name, _)) = rest.split_once(':') {
                        fields.push(name.trim().to_owned());
                    }
                }
            }
        }
        fields
    }

    #[test]
    fn every_manifest_key_is_documented() {
        let fields = raw_fields();
        assert!(fields.len() >= 30, "parsed too few fields: {fields:?}");
        let doc = include_str!("../../../docs/manifest.md");
        let missing: Vec<_> = fields
            .iter()
            .filter(|f| !doc.contains(&format!("| `{f}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "manifest keys without a row in docs/manifest.md: {missing:?}"
        );
    }
}
