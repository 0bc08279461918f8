//! A recording connector: an HTTP server on 127.0.0.1 that answers any method and path, records
//! every request (path, body, `Idempotency-Key`, arrival and finish times) and the largest number
//! of requests it held at once, and answers as each test scripts it: a sequence of replies per
//! path (status, delay, `Retry-After`), then a default reply per path, then `200` with
//! `{"id": "T-<n>", "ok": true}`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How the connector answers one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// Held this long before answering.
    pub delay: Duration,
    /// Sent as `Retry-After: <secs>`.
    pub retry_after: Option<u64>,
    /// The JSON body; `None`: `{"id": "T-<n>", "ok": true}` on 2xx, `{"error": ...}` otherwise.
    pub body: Option<Value>,
}

impl Reply {
    /// 200 with the default body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// `status` with the default body, at once.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            retry_after: None,
            body: None,
        }
    }

    /// The same reply, held for `delay` first.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The same reply with `Retry-After: <secs>`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// One request as the connector saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub idempotency_key: Option<String>,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub arrived: Instant,
    /// When the answer was handed back (`None` while held, or if the caller went away).
    pub finished: Option<Instant>,
    /// The status answered (or being answered).
    pub status: u16,
}

#[derive(Debug, Default)]
struct Recorder {
    calls: Vec<Call>,
    scripts: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Shared {
    recorder: Mutex<Recorder>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorder> {
        self.recorder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running recording connector. Clones share the server.
#[derive(Debug, Clone)]
pub struct RecordingConnector {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RecordingConnector {
    /// Starts a server on 127.0.0.1 (a free port); it stops with the test's runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the recording connector on 127.0.0.1");
        let addr = listener.local_addr().expect("the connector's address");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replies to give, in order, to the next requests on `path` (after those already queued).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .lock()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// The reply for `path` once its script is used up.
    pub fn set_default(&self, path: &str, reply: Reply) {
        self.shared.lock().defaults.insert(path.to_owned(), reply);
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The requests on `path`, in arrival order.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// How many requests arrived on `path`.
    pub fn count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .count()
    }

    /// How many requests arrived in all.
    pub fn total(&self) -> usize {
        self.shared.lock().calls.len()
    }

    /// The largest number of requests held at the same time.
    pub fn max_in_flight(&self) -> u32 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many requests are held right now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request out of the in-flight gauge and stamps its finish, even when the caller
/// goes away and the handler is dropped mid-delay.
struct InFlight {
    shared: Arc<Shared>,
    index: usize,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.answered {
            if let Some(call) = self.shared.lock().calls.get_mut(self.index) {
                call.finished = Some(Instant::now());
            }
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared
        .max_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    let path = uri.path().to_owned();
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let (reply, index, id) = {
        let mut r = shared.lock();
        let reply = r
            .scripts
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| r.defaults.get(&path).cloned())
            .unwrap_or_else(Reply::ok);
        r.next_id += 1;
        let id = r.next_id;
        r.calls.push(Call {
            method: method.as_str().to_owned(),
            path: path.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            idempotency_key: header_map.get("idempotency-key").cloned(),
            headers: header_map,
            arrived,
            finished: None,
            status: reply.status,
        });
        (reply, r.calls.len() - 1, id)
    };
    let mut guard = InFlight {
        shared: Arc::clone(&shared),
        index,
        answered: false,
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    guard.answered = true;
    drop(guard);

    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = reply.body.unwrap_or_else(|| {
        if status.is_success() {
            json!({ "id": format!("T-{id}"), "ok": true })
        } else {
            json!({ "error": format!("scripted {}", reply.status) })
        }
    });
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = reply.retry_after {
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}
