//! The demo connector the local run serves itself, so the example manifest's pipeline has
//! something to call: `POST /tickets` answers `{"id": "T-<n>"}` and `POST /notify` answers
//! `{"ok": true}`. Like a well-behaved API it honours `Idempotency-Key`: a repeated key gets the
//! first answer again instead of a second ticket. Every call is recorded and logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The address the example manifest's connectors use as a placeholder for the demo.
pub const PLACEHOLDER_AUTHORITY: &str = "127.0.0.1:8088";

/// One call the demo answered.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoCall {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
    pub response: Value,
}

#[derive(Debug, Default)]
struct DemoState {
    next_ticket: u64,
    calls: Vec<DemoCall>,
    /// First answer per (path, Idempotency-Key).
    answered: HashMap<(String, String), Value>,
}

/// A running demo connector.
#[derive(Debug, Clone)]
pub struct DemoConnector {
    addr: SocketAddr,
    state: Arc<Mutex<DemoState>>,
}

impl DemoConnector {
    /// Serves the demo on `listener` until the runtime stops.
    pub fn serve(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(DemoState::default()));
        let app = Router::new()
            .route("/tickets", post(tickets))
            .route("/notify", post(notify))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "demo connector stopped");
            }
        });
        Ok(Self { addr, state })
    }

    /// Binds 127.0.0.1:`port` (0: any free port) and serves the demo there.
    pub async fn start(port: u16) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind(("127.0.0.1", port)).await?)
    }

    /// Where the demo listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<DemoCall> {
        lock(&self.state).calls.clone()
    }
}

fn lock(state: &Mutex<DemoState>) -> std::sync::MutexGuard<'_, DemoState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn tickets(
    State(state): State<Arc<Mutex<DemoState>>>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    answer(&state, "/tickets", &headers, body, |s| {
        s.next_ticket += 1;
        json!({ "id": format!("T-{}", s.next_ticket) })
    })
}

async fn notify(
    State(state): State<Arc<Mutex<DemoState>>>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    answer(&state, "/notify", &headers, body, |_| json!({ "ok": true }))
}

fn answer(
    state: &Mutex<DemoState>,
    path: &str,
    headers: &HeaderMap,
    body: Option<Json<Value>>,
    fresh: impl FnOnce(&mut DemoState) -> Value,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let mut s = lock(state);
    let remembered = key
        .as_ref()
        .and_then(|k| s.answered.get(&(path.to_owned(), k.clone())).cloned());
    let replayed = remembered.is_some();
    let response = match remembered {
        Some(previous) => previous,
        None => {
            let value = fresh(&mut s);
            if let Some(k) = &key {
                s.answered
                    .insert((path.to_owned(), k.clone()), value.clone());
            }
            value
        }
    };
    s.calls.push(DemoCall {
        path: path.to_owned(),
        idempotency_key: key.clone(),
        body: body.clone(),
        response: response.clone(),
    });
    drop(s);
    tracing::info!(
        connector = "demo",
        path,
        idempotency_key = key.as_deref().unwrap_or("-"),
        replayed,
        request = %body,
        response = %response,
        "demo connector call"
    );
    (StatusCode::OK, Json(response)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_are_numbered_and_idempotent() {
        let demo = DemoConnector::start(0).await.unwrap();
        let client = reqwest_free_post;
        let a = client(&demo, "/tickets", "k1").await;
        let b = client(&demo, "/tickets", "k2").await;
        let again = client(&demo, "/tickets", "k1").await;
        assert_eq!(a, json!({"id": "T-1"}));
        assert_eq!(b, json!({"id": "T-2"}));
        assert_eq!(again, json!({"id": "T-1"}));
        assert_eq!(client(&demo, "/notify", "k1").await, json!({"ok": true}));
        let calls = demo.calls();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[2].idempotency_key.as_deref(), Some("k1"));
    }

    /// A minimal HTTP/1.1 POST over a raw socket, so this crate needs no HTTP client.
    async fn reqwest_free_post(demo: &DemoConnector, path: &str, key: &str) -> Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(demo.addr()).await.unwrap();
        let body = r#"{"x":1}"#;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n\
             Idempotency-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let json = raw.split("\r\n\r\n").nth(1).unwrap();
        serde_json::from_str(json).unwrap()
    }
}
