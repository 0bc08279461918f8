//! A manifest warning is logged once at load, naming the file, line and field: an identity
//! field opted in to an unsigned header (`allow_unsigned_headers`). Its own test binary, so no
//! test running in parallel without a subscriber races the callsites' interest cache.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sluice::startup::{manifest_from, MANIFEST_INLINE_VAR};

const EXAMPLE_MANIFEST: &str = include_str!("../../../infra/sluice.example.yaml");

/// Captures log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_opted_in_unsigned_tenant_header_is_a_warning_logged_at_load_with_file_and_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let from = "    tenant: { value: demo }";
    let line = EXAMPLE_MANIFEST
        .lines()
        .position(|l| l.starts_with(from))
        .expect("the example's tenant line")
        + 1;
    let text = EXAMPLE_MANIFEST.replacen(
        from,
        "    allow_unsigned_headers: [tenant]\n    tenant: { header: X-Tenant }",
        1,
    );
    let lookup = |name: &str| (name == MANIFEST_INLINE_VAR).then(|| text.clone());
    let (manifest, origin) = manifest_from(lookup, &[]).expect("loads, with a warning");
    assert_eq!(origin, MANIFEST_INLINE_VAR);
    assert_eq!(manifest.warnings.len(), 1, "{:?}", manifest.warnings);

    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    let warning = &lines[0];
    assert_eq!(warning["level"], json!("WARN"), "{logged}");
    assert_eq!(warning["file"], json!(MANIFEST_INLINE_VAR));
    // The tenant moved one line down, below the opt-in.
    assert_eq!(warning["line"], json!(line + 1), "{logged}");
    assert_eq!(warning["field"], json!("sources.github-demo.tenant"));
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{MANIFEST_INLINE_VAR}:{}: sources.github-demo.tenant: tenant comes from header \
             X-Tenant",
            line + 1
        )),
        "{message}"
    );
}
