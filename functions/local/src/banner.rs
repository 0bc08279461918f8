//! What the local run prints on start: where it listens, the secrets it made up, a signed
//! webhook ready to paste (its signature computed here over an example body it writes to a
//! file), a shell snippet that signs any body with `openssl`, a dev token and the `curl` lines
//! that read executions and their ledgers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sluice::domain::ids::{ExecutionId, RunKey, SourceId, TenantId};
use sluice::domain::signature::{sign_github, SignatureScheme, GITHUB_SIGNATURE_HEADER};
use sluice::manifest::{Manifest, SourceSpec, ValueSource};

/// A source's signing secret as the local run resolved it.
#[derive(Debug, Clone)]
pub struct SourceSecret {
    pub source: SourceId,
    /// The variable the manifest names.
    pub variable: String,
    pub value: String,
    /// True when the variable was unset and the local run made the value up.
    pub generated: bool,
}

/// A ready-to-send example delivery for one source.
#[derive(Debug, Clone)]
pub struct Example {
    pub source: SourceId,
    /// The file holding the example body.
    pub body_path: PathBuf,
    pub body: Vec<u8>,
    /// Headers besides `Content-Type` (signature included when it can be computed ahead).
    pub headers: Vec<(String, String)>,
    /// The execution the delivery creates, when its run key can be resolved.
    pub execution_id: Option<ExecutionId>,
}

/// Everything the start-up text shows.
#[derive(Debug)]
pub struct Banner<'a> {
    pub base_url: &'a str,
    /// E.g. `in memory` or `DynamoDB table sluice and SQS queue ... at http://...`.
    pub state: &'a str,
    pub manifest_path: &'a Path,
    pub manifest: &'a Manifest,
    /// The demo connector's URL and the connectors pointed at it.
    pub demo: Option<(&'a str, Vec<String>)>,
    pub secrets: &'a [SourceSecret],
    pub examples: &'a [Example],
    pub dev_secret: &'a str,
    pub dev_secret_generated: bool,
    pub token: &'a str,
    pub token_tenant: &'a str,
    pub token_hours: u64,
}

/// The delivery id the example uses.
pub const EXAMPLE_DELIVERY_ID: &str = "local-demo-1";

/// Builds the example delivery of `source`, writing its body to `dir/<source>.json`. The
/// signature is included for GitHub sources (Stripe and HMAC signatures carry a timestamp that
/// goes stale in 5 minutes: those are signed by the shell snippet instead).
pub fn example(
    dir: &Path,
    source_id: &SourceId,
    source: &SourceSpec,
    secret: &[u8],
) -> std::io::Result<Example> {
    let mut payload = Value::Object(Map::new());
    let mut headers: Vec<(String, String)> = Vec::new();
    let parts = std::iter::once(&source.tenant)
        .chain(std::iter::once(&source.delivery_id))
        .chain(source.run_key.iter());
    for part in parts {
        match part {
            ValueSource::Pointer(pointer) => {
                let value = if *part == source.delivery_id {
                    EXAMPLE_DELIVERY_ID.to_owned()
                } else {
                    sample_value(pointer)
                };
                set_pointer(&mut payload, pointer, Value::String(value));
            }
            ValueSource::Header(name) if !headers.iter().any(|(h, _)| h == name) => {
                let value = if *part == source.delivery_id {
                    EXAMPLE_DELIVERY_ID.to_owned()
                } else {
                    format!("example-{}", name.to_ascii_lowercase())
                };
                headers.push((name.clone(), value));
            }
            ValueSource::Header(_) | ValueSource::Value(_) | ValueSource::BodySha256 => {}
        }
    }
    match &source.scheme {
        // GitHub always sends its delivery header; Sluice only records it (it is not signed).
        SignatureScheme::GitHub if !headers.iter().any(|(h, _)| h == "X-GitHub-Delivery") => {
            headers.push((
                "X-GitHub-Delivery".to_owned(),
                EXAMPLE_DELIVERY_ID.to_owned(),
            ));
        }
        // The generic scheme signs its delivery header: it is always sent.
        SignatureScheme::Hmac {
            delivery_header, ..
        } if !headers.iter().any(|(h, _)| h == delivery_header) => {
            headers.push((delivery_header.clone(), EXAMPLE_DELIVERY_ID.to_owned()));
        }
        _ => {}
    }
    if payload.as_object().is_some_and(Map::is_empty) {
        payload = json!({ "example": true });
    }
    let body = serde_json::to_vec_pretty(&payload).map_err(std::io::Error::other)?;
    let body_path = dir.join(format!("{source_id}.json"));
    std::fs::write(&body_path, &body)?;

    let header_map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let body_sha256 = hex::encode(Sha256::digest(&body));
    let run_key: Option<Vec<String>> = source
        .run_key
        .iter()
        .map(|part| part.resolve(&payload, &header_map, &body_sha256))
        .collect();
    let tenant = source
        .tenant
        .resolve(&payload, &header_map, &body_sha256)
        .and_then(|t| TenantId::parse(t).ok());
    let execution_id = run_key
        .and_then(|parts| RunKey::parse(parts.join(":")).ok())
        .zip(tenant)
        .map(|(key, tenant)| ExecutionId::for_run_key(&tenant, source_id, &key));
    if source.scheme == SignatureScheme::GitHub {
        headers.push((
            GITHUB_SIGNATURE_HEADER.to_owned(),
            sign_github(secret, &body),
        ));
    }
    Ok(Example {
        source: source_id.clone(),
        body_path,
        body,
        headers,
        execution_id,
    })
}

/// A plausible value for the field a pointer names.
fn sample_value(pointer: &str) -> String {
    let last = pointer.rsplit('/').next().unwrap_or_default();
    match last {
        "full_name" => "acme/app".to_owned(),
        "after" | "head_sha" | "sha" => "0b9c1f4e2a7d3c5b8e6f0a1d2c3b4a5968778695".to_owned(),
        "login" | "account" | "tenant" => "acme".to_owned(),
        other => format!("example-{other}"),
    }
}

/// Sets `value` at JSON pointer `pointer`, creating objects on the way (a pointer that walks
/// through a non-object is left alone).
fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = tokens.split_last() else {
        return;
    };
    let mut node = root;
    for token in path {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        node = map
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

/// Quotes `s` for a POSIX shell with single quotes.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Escapes `s` for use inside shell double quotes.
fn sh_dquote_inner(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A shell snippet that sends a new delivery (fresh delivery id and run key) to `source`,
/// signing it with `openssl dgst -sha256 -hmac`.
fn shell_snippet(base_url: &str, example: &Example, source: &SourceSpec, secret: &str) -> String {
    const UNIQUE: &str = "__SLUICE_UNIQUE__";
    // The body with the last run-key value (and a pointer delivery id) made unique per send; a
    // digest of the body is made unique by a nonce in the body.
    let mut payload: Value = serde_json::from_slice(&example.body).unwrap_or(Value::Null);
    let mut unique_headers: Vec<String> = Vec::new();
    for part in source
        .run_key
        .iter()
        .rev()
        .take(1)
        .chain([&source.delivery_id])
    {
        match part {
            ValueSource::Pointer(p) => set_pointer(&mut payload, p, Value::String(UNIQUE.into())),
            ValueSource::Header(h) => unique_headers.push(h.to_ascii_lowercase()),
            ValueSource::BodySha256 => {
                set_pointer(&mut payload, "/nonce", Value::String(UNIQUE.into()))
            }
            ValueSource::Value(_) => {}
        }
    }
    let compact = serde_json::to_string(&payload).unwrap_or_default();
    let body = sh_dquote_inner(&compact).replace(UNIQUE, "$N");
    let url = format!("{base_url}/webhooks/{}", example.source);
    let mut out = String::new();
    let _ = writeln!(out, "  SECRET={}", sh_quote(secret));
    let _ = writeln!(out, "  N=$(date +%s%N)");
    let _ = writeln!(out, "  BODY=\"{body}\"");
    let hmac = "openssl dgst -sha256 -hmac \"$SECRET\" | awk '{print $NF}'";
    let mut headers: Vec<String> = example
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(GITHUB_SIGNATURE_HEADER))
        .map(|(name, value)| {
            if unique_headers.contains(&name.to_ascii_lowercase()) {
                format!("-H \"{name}: $N\"")
            } else {
                format!("-H {}", sh_quote(&format!("{name}: {value}")))
            }
        })
        .collect();
    match &source.scheme {
        SignatureScheme::GitHub => {
            let _ = writeln!(out, "  SIG=$(printf '%s' \"$BODY\" | {hmac})");
            headers.push(format!("-H \"{GITHUB_SIGNATURE_HEADER}: sha256=$SIG\""));
        }
        SignatureScheme::Stripe { .. } => {
            let _ = writeln!(out, "  T=$(date +%s)");
            let _ = writeln!(out, "  SIG=$(printf '%s.%s' \"$T\" \"$BODY\" | {hmac})");
            headers.push("-H \"Stripe-Signature: t=$T,v1=$SIG\"".to_owned());
        }
        SignatureScheme::Hmac {
            signature_header,
            timestamp_header,
            delivery_header,
            ..
        } => {
            // Signed: "<timestamp>.<delivery id>.<body>".
            let delivery = if unique_headers.contains(&delivery_header.to_ascii_lowercase()) {
                "$N".to_owned()
            } else {
                let sent = example
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(delivery_header))
                    .map_or(EXAMPLE_DELIVERY_ID, |(_, value)| value.as_str());
                sh_dquote_inner(sent)
            };
            let _ = writeln!(out, "  T=$(date +%s)");
            let _ = writeln!(out, "  D=\"{delivery}\"");
            let _ = writeln!(
                out,
                "  SIG=$(printf '%s.%s.%s' \"$T\" \"$D\" \"$BODY\" | {hmac})"
            );
            headers.push(format!("-H \"{signature_header}: sha256=$SIG\""));
            headers.push(format!("-H \"{timestamp_header}: $T\""));
        }
    }
    let _ = writeln!(out, "  curl -sS -X POST {url} \\");
    let _ = writeln!(out, "    -H 'Content-Type: application/json' \\");
    for header in headers {
        let _ = writeln!(out, "    {header} \\");
    }
    let _ = writeln!(out, "    --data-binary \"$BODY\"; echo");
    out
}

impl Banner<'_> {
    /// The text, ready to print.
    pub fn render(&self) -> String {
        let m = self.manifest;
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "Sluice is running locally.");
        let _ = writeln!(out);
        let _ = writeln!(out, "  URL:        {}", self.base_url);
        let _ = writeln!(out, "  state:      {}", self.state);
        let _ = writeln!(
            out,
            "  manifest:   {} ({} source(s), {} connector(s), {} pipeline(s))",
            self.manifest_path.display(),
            m.sources.len(),
            m.connectors.len(),
            m.pipelines.len()
        );
        if let Some((url, connectors)) = &self.demo {
            let _ = writeln!(
                out,
                "  demo connector: {url} (serving connector(s): {})",
                connectors.join(", ")
            );
        }
        for s in self.secrets {
            let how = if s.generated {
                "generated; export it to choose your own"
            } else {
                "from the environment"
            };
            let _ = writeln!(
                out,
                "  source {}: {}={} ({how})",
                s.source, s.variable, s.value
            );
        }
        let how = if self.dev_secret_generated {
            "generated; set SLUICE_DEV_JWT_SECRET to choose your own"
        } else {
            "from SLUICE_DEV_JWT_SECRET"
        };
        let _ = writeln!(
            out,
            "  dev API auth: HS256 bearer tokens, secret {} ({how})",
            self.dev_secret
        );

        for example in self.examples {
            let Some(source) = m.sources.get(&example.source) else {
                continue;
            };
            let secret = self
                .secrets
                .iter()
                .find(|s| s.source == example.source)
                .map(|s| s.value.as_str())
                .unwrap_or_default();
            let _ = writeln!(out);
            if source.scheme == SignatureScheme::GitHub {
                let _ = writeln!(
                    out,
                    "Send a signed webhook to source `{}` (body in {}):",
                    example.source,
                    example.body_path.display()
                );
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "  curl -sS -X POST {}/webhooks/{} \\",
                    self.base_url, example.source
                );
                let _ = writeln!(out, "    -H 'Content-Type: application/json' \\");
                for (name, value) in &example.headers {
                    let _ = writeln!(out, "    -H {} \\", sh_quote(&format!("{name}: {value}")));
                }
                let _ = writeln!(
                    out,
                    "    --data-binary @{}; echo",
                    sh_quote(&example.body_path.display().to_string())
                );
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "  -> 202 {{\"execution_id\": \"{}\", \"status\": \"accepted\"}}; the same \
                     command again is a duplicate (200).",
                    example
                        .execution_id
                        .as_ref()
                        .map_or("exe_...", |id| id.as_str())
                );
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "A new delivery each time (any body, signed with openssl):"
                );
            } else {
                let _ = writeln!(
                    out,
                    "Send a signed webhook to source `{}` (signed with openssl):",
                    example.source
                );
            }
            let _ = writeln!(out);
            out.push_str(&shell_snippet(self.base_url, example, source, secret));
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Read executions and their ledgers (token for tenant `{}`, valid {} h):",
            self.token_tenant, self.token_hours
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "  TOKEN={}", self.token);
        let _ = writeln!(
            out,
            "  curl -sS -H \"Authorization: Bearer $TOKEN\" {}/v1/executions; echo",
            self.base_url
        );
        let id = self
            .examples
            .iter()
            .find_map(|e| e.execution_id.as_ref())
            .map_or("<execution_id>", |id| id.as_str());
        let _ = writeln!(
            out,
            "  curl -sS -H \"Authorization: Bearer $TOKEN\" {}/v1/executions/{id}; echo",
            self.base_url
        );
        let _ = writeln!(out, "  curl -sS {}/health; echo", self.base_url);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Logs go to stderr (RUST_LOG=debug for more). Ctrl-C stops."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use sluice::domain::signature::{verify, Headers};
    use sluice::domain::time::Timestamp;

    use super::*;

    const EXAMPLE: &str = include_str!("../../../infra/sluice.example.yaml");

    fn example_source() -> (Manifest, SourceId) {
        let manifest = Manifest::parse(EXAMPLE, "sluice.example.yaml").unwrap();
        (manifest, SourceId::parse("github-demo").unwrap())
    }

    #[test]
    fn the_example_body_is_signed_and_names_its_execution() {
        let (manifest, id) = example_source();
        let dir = std::env::temp_dir().join(format!("sluice-banner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = example(&dir, &id, &manifest.sources[&id], b"s3cret").unwrap();
        let written = std::fs::read(&ex.body_path).unwrap();
        assert_eq!(written, ex.body);
        let payload: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(payload["repository"]["full_name"], "acme/app");
        let headers: BTreeMap<String, String> = ex
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        assert_eq!(
            headers.header("X-GitHub-Delivery"),
            Some(EXAMPLE_DELIVERY_ID)
        );
        verify(
            &SignatureScheme::GitHub,
            b"s3cret",
            &headers,
            &written,
            Timestamp::from_secs(0),
        )
        .unwrap();
        let key =
            RunKey::parse(format!("acme/app:{}", payload["after"].as_str().unwrap())).unwrap();
        let tenant = TenantId::parse("demo").unwrap();
        assert_eq!(
            ex.execution_id,
            Some(ExecutionId::for_run_key(&tenant, &id, &key))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_banner_shows_url_secrets_curl_and_token() {
        let (manifest, id) = example_source();
        let dir = std::env::temp_dir().join(format!("sluice-banner2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = example(&dir, &id, &manifest.sources[&id], b"topsecret").unwrap();
        let secrets = [SourceSecret {
            source: id.clone(),
            variable: "DEMO_GITHUB_SECRET".into(),
            value: "topsecret".into(),
            generated: true,
        }];
        let banner = Banner {
            base_url: "http://127.0.0.1:8787",
            state: "in memory",
            manifest_path: Path::new("infra/sluice.example.yaml"),
            manifest: &manifest,
            demo: Some(("http://127.0.0.1:9999", vec!["demo".into()])),
            secrets: &secrets,
            examples: std::slice::from_ref(&ex),
            dev_secret: "devsecret",
            dev_secret_generated: true,
            token: "tok.en.x",
            token_tenant: "demo",
            token_hours: 12,
        };
        let text = banner.render();
        assert!(text.contains("URL:        http://127.0.0.1:8787"), "{text}");
        assert!(text.contains("DEMO_GITHUB_SECRET=topsecret"), "{text}");
        assert!(text.contains("X-Hub-Signature-256: sha256="), "{text}");
        assert!(text.contains(&format!("--data-binary @'{}'", ex.body_path.display())));
        assert!(text.contains("TOKEN=tok.en.x"), "{text}");
        assert!(text.contains("/v1/executions; echo"), "{text}");
        assert!(text.contains(ex.execution_id.as_ref().unwrap().as_str()));
        assert!(text.contains("openssl dgst -sha256 -hmac"), "{text}");
        assert!(text.contains("devsecret"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hmac_snippet_signs_timestamp_delivery_id_and_body() {
        let yaml = EXAMPLE.replacen(
            "    scheme: github                # github | stripe | hmac",
            "    scheme: hmac",
            1,
        );
        let manifest = Manifest::parse(&yaml, "hmac.yaml").unwrap();
        let id = SourceId::parse("github-demo").unwrap();
        let source = &manifest.sources[&id];
        let dir = std::env::temp_dir().join(format!("sluice-banner3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = example(&dir, &id, source, b"k").unwrap();
        assert!(
            ex.headers.iter().any(|(h, _)| h == "X-Sluice-Delivery"),
            "{:?}",
            ex.headers
        );
        let snippet = shell_snippet("http://127.0.0.1:1", &ex, source, "k");
        assert!(snippet.contains("  D=\"$N\"\n"), "{snippet}");
        assert!(
            snippet.contains("SIG=$(printf '%s.%s.%s' \"$T\" \"$D\" \"$BODY\" | openssl"),
            "{snippet}"
        );
        assert!(
            snippet.contains("-H \"X-Sluice-Delivery: $N\""),
            "{snippet}"
        );
        assert!(
            snippet.contains("-H \"X-Sluice-Timestamp: $T\""),
            "{snippet}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pointers_build_nested_objects() {
        let mut v = Value::Object(Map::new());
        set_pointer(&mut v, "/a/b~1c", json!("x"));
        set_pointer(&mut v, "/a/d", json!("y"));
        assert_eq!(v, json!({"a": {"b/c": "x", "d": "y"}}));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_dquote_inner("a\"$b`\\"), "a\\\"\\$b\\`\\\\");
    }
}
