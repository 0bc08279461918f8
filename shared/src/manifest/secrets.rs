//! The secrets a manifest names by environment variable, resolved once at cold start. Their
//! values never reach a `Debug` or `Display` output.

use std::collections::BTreeMap;
use std::fmt;

use super::error::ManifestError;
use super::locate::FieldPath;
use super::Manifest;
use crate::domain::ids::{ConnectorId, SourceId};

/// Source signing secrets and connector credentials, by id.
#[derive(Clone, Default)]
pub struct Secrets {
    sources: BTreeMap<SourceId, Vec<u8>>,
    connectors: BTreeMap<ConnectorId, (String, String)>,
}

impl Secrets {
    /// The signing secret of `source`.
    pub fn source_secret(&self, source: &SourceId) -> Option<&[u8]> {
        self.sources.get(source).map(Vec::as_slice)
    }

    /// The credential header of `connector`: `(header name, value)`.
    pub fn connector_auth(&self, connector: &ConnectorId) -> Option<(&str, &str)> {
        self.connectors
            .get(connector)
            .map(|(header, value)| (header.as_str(), value.as_str()))
    }

    /// Every secret value, for redaction: source signing secrets (as UTF-8, lossily) and
    /// connector credential values, each of those also without its scheme word (`Bearer abc`
    /// gives `Bearer abc` and `abc`), since a token may leak without it.
    pub fn values(&self) -> Vec<String> {
        let credentials = self.connectors.values().flat_map(|(_, value)| {
            let token = value
                .split_once(' ')
                .map(|(_, token)| token.trim().to_owned());
            std::iter::once(value.clone()).chain(token)
        });
        self.sources
            .values()
            .map(|secret| String::from_utf8_lossy(secret).into_owned())
            .chain(credentials)
            .collect()
    }

    /// Sets the signing secret of `source` (tests, or secrets from another store).
    pub fn insert_source_secret(&mut self, source: SourceId, secret: impl Into<Vec<u8>>) {
        self.sources.insert(source, secret.into());
    }

    /// Sets the credential header of `connector`.
    pub fn insert_connector_auth(
        &mut self,
        connector: ConnectorId,
        header: impl Into<String>,
        value: impl Into<String>,
    ) {
        self.connectors
            .insert(connector, (header.into(), value.into()));
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .connectors
            .iter()
            .map(|(id, (header, _))| (id.as_str(), header.as_str()))
            .collect();
        f.debug_struct("Secrets")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("connector_headers", &headers)
            .finish_non_exhaustive()
    }
}

impl Manifest {
    /// Reads every variable the manifest names (source `secret_env`, connector
    /// `auth.value_env`) through `lookup`; an unset or empty one is an error naming the variable
    /// and the field that needs it.
    pub fn secrets(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, ManifestError> {
        let require = |variable: &str, at: FieldPath| match lookup(variable) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ManifestError {
                file: String::new(),
                line: None,
                field: at.to_string(),
                message: format!("environment variable {variable} is unset or empty"),
            }),
        };
        let mut secrets = Secrets::default();
        for (id, source) in &self.sources {
            let at = FieldPath::root()
                .key("sources")
                .key(id.as_str())
                .key("secret_env");
            let secret = require(&source.secret_env, at)?;
            secrets.insert_source_secret(id.clone(), secret);
        }
        for (id, connector) in &self.connectors {
            let Some(auth) = &connector.auth else {
                continue;
            };
            let at = FieldPath::root()
                .key("connectors")
                .key(id.as_str())
                .key("auth")
                .key("value_env");
            let value = require(&auth.value_env, at)?;
            secrets.insert_connector_auth(id.clone(), auth.header.clone(), value);
        }
        Ok(secrets)
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

    #[test]
    fn secrets_resolve_from_the_environment() {
        let manifest = Manifest::parse(MANIFEST, "sluice.yaml").unwrap();
        let secrets = manifest
            .secrets(env(&[("GH_SECRET", "s3cr3t"), ("CRM_TOKEN", "Bearer tok")]))
            .unwrap();
        let gh = SourceId::parse("gh").unwrap();
        let crm = ConnectorId::parse("crm").unwrap();
        assert_eq!(secrets.source_secret(&gh), Some(&b"s3cr3t"[..]));
        assert_eq!(
            secrets.connector_auth(&crm),
            Some(("Authorization", "Bearer tok"))
        );
        assert_eq!(
            secrets.source_secret(&SourceId::parse("other").unwrap()),
            None
        );
    }

    #[test]
    fn values_list_every_secret_and_bare_tokens() {
        let manifest = Manifest::parse(MANIFEST, "sluice.yaml").unwrap();
        let secrets = manifest
            .secrets(env(&[
                ("GH_SECRET", "s3cr3t"),
                ("CRM_TOKEN", "Bearer tok_9"),
            ]))
            .unwrap();
        let mut values = secrets.values();
        values.sort();
        assert_eq!(values, ["Bearer tok_9", "s3cr3t", "tok_9"]);
    }

    #[test]
    fn a_missing_variable_is_named_with_its_field() {
        let manifest = Manifest::parse(MANIFEST, "sluice.yaml").unwrap();
        let err = manifest
            .secrets(env(&[("GH_SECRET", "s3cr3t"), ("CRM_TOKEN", "")]))
            .unwrap_err();
        assert_eq!(err.field, "connectors.crm.auth.value_env");
        assert_eq!(
            err.to_string(),
            "connectors.crm.auth.value_env: environment variable CRM_TOKEN is unset or empty"
        );
        let err = manifest.secrets(env(&[])).unwrap_err();
        assert_eq!(err.field, "sources.gh.secret_env");
        assert!(err.message.contains("GH_SECRET"));
    }

    #[test]
    fn debug_hides_values() {
        let manifest = Manifest::parse(MANIFEST, "sluice.yaml").unwrap();
        let secrets = manifest
            .secrets(env(&[("GH_SECRET", "s3cr3t"), ("CRM_TOKEN", "Bearer tok")]))
            .unwrap();
        let shown = format!("{secrets:?} {secrets:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("tok"), "{shown}");
        assert!(!shown.contains("115"), "secret bytes leaked: {shown}");
        assert!(
            shown.contains("gh") && shown.contains("Authorization"),
            "{shown}"
        );
    }
}
