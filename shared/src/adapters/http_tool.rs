//! [`ToolClient`] over HTTP with reqwest: sends a rendered [`ToolRequest`] with its
//! `Idempotency-Key`, bounds the whole exchange by the request's timeout and the answer by a
//! size cap, and turns whatever happens into a [`ToolOutcome`] (see [`classify_status`]).
//!
//! Redirects are not followed: a 3xx is a bad response, and following one could carry the
//! request's auth headers to another host. Request header values are secrets: they are marked
//! sensitive and never logged or copied into an outcome.

use std::error::Error as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};

use crate::clock::{Clock, SystemClock};
use crate::domain::tool::{classify_status, StatusClass, ToolFailure, ToolOutcome, ToolRequest};
use crate::ports::ToolClient;

/// The largest successful answer read by default: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How much of a failed answer (or of an error description) is kept in an outcome's excerpt.
pub const EXCERPT_BYTES: usize = 512;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Calls connectors' tools over HTTP(S). Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HttpToolClient {
    /// Built on first use: building it loads the system's root certificates (about 4.5 ms
    /// measured here), which a function that never calls a tool (intake, replay, sweeper)
    /// should not pay at cold start.
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    max_response_bytes: usize,
}

/// The connection pool: rustls, a 5 s connect timeout, no proxy, no redirects.
fn build_pool() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

impl HttpToolClient {
    /// A client with a 1 MiB cap on answers whose connection pool is built on the first call.
    /// Should the TLS backend not start then (no usable root certificates), that call and the
    /// next fail as connection failures (retried, and logged), never the process.
    pub fn new() -> Self {
        Self {
            client: Arc::new(OnceLock::new()),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// [`HttpToolClient::new`] with the pool built now, reporting a TLS backend that cannot
    /// start as an error (for a caller that would rather fail at start-up).
    pub fn try_new() -> Result<Self, reqwest::Error> {
        let pool = build_pool()?;
        Ok(Self {
            client: Arc::new(OnceLock::from(Ok(pool))),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// The pool, built on first use.
    fn pool(&self) -> Result<&reqwest::Client, &str> {
        self.client
            .get_or_init(|| {
                build_pool().map_err(|error| {
                    let text = describe(error);
                    tracing::error!(error = %text, "the HTTP tool client's TLS backend failed");
                    text
                })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The same client with another cap on successful answers.
    pub fn with_max_response_bytes(mut self, max_response_bytes: usize) -> Self {
        self.max_response_bytes = max_response_bytes;
        self
    }

    /// Turns `request` into a reqwest request, or says why it cannot be sent (never echoing
    /// the URL or a header value, which may hold secrets).
    fn prepare(
        &self,
        pool: &reqwest::Client,
        request: &ToolRequest,
    ) -> Result<RequestBuilder, String> {
        let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method `{}`", request.method))?;
        let url = Url::parse(&request.url).map_err(|err| format!("invalid url: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url scheme must be http or https".to_owned());
        }

        let mut headers = HeaderMap::with_capacity(request.headers.len() + 2);
        for (name, value) in &request.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header `{header}`"))?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        let key = HeaderValue::from_str(&request.idempotency_key)
            .map_err(|_| "the idempotency key is not a valid header value".to_owned())?;
        headers.insert(IDEMPOTENCY_KEY, key);

        let mut builder = pool.request(method, url);
        if let Some(body) = &request.body {
            let bytes = serde_json::to_vec(body)
                .map_err(|err| format!("the body does not serialize: {err}"))?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            builder = builder.body(bytes);
        }
        Ok(builder.headers(headers))
    }

    /// Sends the request and reads the answer: all of it (up to the cap) on success, only an
    /// excerpt's worth otherwise.
    async fn exchange(&self, builder: RequestBuilder) -> Exchange {
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(err) => return Exchange::Unanswered(err),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = if !status.is_success() {
            read_body(&mut response, EXCERPT_BYTES).await
        } else if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            Body::TooLarge(Vec::new())
        } else {
            read_body(&mut response, self.max_response_bytes).await
        };
        Exchange::Answered {
            status: status.as_u16(),
            retry_after,
            body,
        }
    }

    /// The outcome of a finished exchange.
    fn outcome(&self, exchange: Exchange, latency_ms: u64) -> ToolOutcome {
        let (status, retry_after, body) = match exchange {
            Exchange::Unanswered(err) => {
                let failure = if err.is_connect() {
                    ToolFailure::Connection
                } else if err.is_timeout() {
                    ToolFailure::Timeout
                } else {
                    ToolFailure::Connection
                };
                return failed(None, failure, None, latency_ms, describe(err));
            }
            Exchange::Answered {
                status,
                retry_after,
                body,
            } => (status, retry_after, body),
        };
        // Whether a 4xx is retried is the connector's choice, made by the executor: the
        // client reports what the server said.
        match classify_status(status, retry_after.as_deref(), SystemClock.now(), false) {
            StatusClass::Success => match body {
                Body::Complete(bytes) => ToolOutcome::Succeeded {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    latency_ms,
                },
                Body::TooLarge(_) => {
                    let excerpt = format!(
                        "response body exceeds the {}-byte cap",
                        self.max_response_bytes
                    );
                    failed(
                        Some(status),
                        ToolFailure::BadResponse,
                        None,
                        latency_ms,
                        excerpt,
                    )
                }
                Body::Broken(err) => failed(
                    Some(status),
                    ToolFailure::BadResponse,
                    None,
                    latency_ms,
                    describe(err),
                ),
            },
            StatusClass::Failure {
                failure,
                retry_after_secs,
            } => {
                let excerpt = match body {
                    Body::Complete(bytes) | Body::TooLarge(bytes) => excerpt_of(&bytes),
                    Body::Broken(err) => describe(err),
                };
                failed(Some(status), failure, retry_after_secs, latency_ms, excerpt)
            }
        }
    }
}

impl Default for HttpToolClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolClient for HttpToolClient {
    async fn call(&self, request: &ToolRequest) -> ToolOutcome {
        let started = Instant::now();
        let pool = match self.pool() {
            Ok(pool) => pool,
            Err(problem) => {
                let excerpt = truncated(format!("no HTTP client: {problem}"));
                let latency_ms = elapsed_ms(started);
                return failed(None, ToolFailure::Connection, None, latency_ms, excerpt);
            }
        };
        let builder = match self.prepare(pool, request) {
            Ok(builder) => builder,
            // A request that cannot be sent will not become sendable by retrying it, and the
            // connector is not at fault: rejected, without a status.
            Err(problem) => {
                let excerpt = truncated(format!("invalid request: {problem}"));
                let latency_ms = elapsed_ms(started);
                return failed(None, ToolFailure::RejectedStatus, None, latency_ms, excerpt);
            }
        };
        let limit = Duration::from_millis(request.timeout_ms);
        match tokio::time::timeout(limit, self.exchange(builder)).await {
            Ok(exchange) => self.outcome(exchange, elapsed_ms(started)),
            Err(_elapsed) => failed(
                None,
                ToolFailure::Timeout,
                None,
                elapsed_ms(started),
                format!("no complete answer within {} ms", request.timeout_ms),
            ),
        }
    }
}

/// What came back from sending a request.
enum Exchange {
    /// The request failed before a status arrived.
    Unanswered(reqwest::Error),
    Answered {
        status: u16,
        retry_after: Option<String>,
        body: Body,
    },
}

/// An answer's body, read up to a limit.
enum Body {
    /// All of it.
    Complete(Vec<u8>),
    /// Longer than the limit; the bytes up to it.
    TooLarge(Vec<u8>),
    /// The connection broke while reading.
    Broken(reqwest::Error),
}

/// Reads `response`'s body, stopping once it exceeds `limit` bytes.
async fn read_body(response: &mut Response, limit: usize) -> Body {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                // Invariant: bytes.len() <= limit, so `room` fits inside this chunk.
                let room = limit.saturating_sub(bytes.len());
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    return Body::TooLarge(bytes);
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Body::Complete(bytes),
            Err(err) => return Body::Broken(err),
        }
    }
}

fn failed(
    status: Option<u16>,
    failure: ToolFailure,
    retry_after_secs: Option<u64>,
    latency_ms: u64,
    excerpt: String,
) -> ToolOutcome {
    ToolOutcome::Failed {
        status,
        failure,
        retry_after_secs,
        latency_ms,
        excerpt,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The first [`EXCERPT_BYTES`] of a body, as text.
fn excerpt_of(bytes: &[u8]) -> String {
    let end = bytes.len().min(EXCERPT_BYTES);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// An error and its causes on one line, without the URL (it may carry a token).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    truncated(text)
}

/// `text` cut to at most [`EXCERPT_BYTES`], on a character boundary.
fn truncated(mut text: String) -> String {
    if text.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;
    use crate::domain::ids::{ConnectorId, ToolName};

    fn request(url: String, body: Option<serde_json::Value>, timeout_ms: u64) -> ToolRequest {
        ToolRequest {
            connector: ConnectorId::parse("crm").expect("valid id"),
            tool: ToolName::parse("create_ticket").expect("valid id"),
            method: "POST".to_owned(),
            url,
            headers: vec![("Authorization".to_owned(), "Bearer hunter2".to_owned())],
            body,
            idempotency_key: "exe_01J0ABC:2".to_owned(),
            timeout_ms,
        }
    }

    /// An HTTP/1.1 answer with a Content-Length.
    fn answer(status_line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
        let mut text = format!("HTTP/1.1 {status_line}\r\nConnection: close\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// Reads one request (head and Content-Length body) from `stream`, as text.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let content_length = text[..head_end]
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + content_length {
                    return text;
                }
            }
            let n = stream.read(&mut chunk).await.expect("read request");
            if n == 0 {
                return String::from_utf8_lossy(&buf).into_owned();
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A server that answers one request with `response` and hands back the request it got.
    async fn serve_once(response: Vec<u8>) -> (String, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/tools/create",
            listener.local_addr().expect("addr")
        );
        let (seen, received) = oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let request = read_request(&mut stream).await;
            let _ = seen.send(request);
            stream.write_all(&response).await.expect("write answer");
            let _ = stream.shutdown().await;
        });
        (url, received)
    }

    /// The value of header `name` in a raw request.
    fn header_value<'r>(raw: &'r str, name: &str) -> Option<&'r str> {
        raw.split("\r\n\r\n")
            .next()?
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }

    #[tokio::test]
    async fn json_success_carries_the_idempotency_key_and_parses_the_body() {
        let (url, received) = serve_once(answer(
            "200 OK",
            &["Content-Type: application/json"],
            br#"{"id":42}"#,
        ))
        .await;
        let body = serde_json::json!({"title": "printer on fire"});
        let outcome = HttpToolClient::new()
            .call(&request(url, Some(body.clone()), 2_000))
            .await;

        match outcome {
            ToolOutcome::Succeeded { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, serde_json::json!({"id": 42}));
            }
            other => panic!("expected success, got {other:?}"),
        }
        let raw = received.await.expect("server saw a request");
        assert!(raw.starts_with("POST /tools/create HTTP/1.1\r\n"), "{raw}");
        assert_eq!(header_value(&raw, "idempotency-key"), Some("exe_01J0ABC:2"));
        assert_eq!(header_value(&raw, "content-type"), Some("application/json"));
        assert_eq!(header_value(&raw, "authorization"), Some("Bearer hunter2"));
        assert_eq!(header_value(&raw, "user-agent"), Some(USER_AGENT));
        let sent: serde_json::Value =
            serde_json::from_str(raw.split("\r\n\r\n").nth(1).expect("a body")).expect("json");
        assert_eq!(sent, body);
    }

    #[tokio::test]
    async fn non_json_or_empty_success_is_null_and_no_body_means_no_content_type() {
        let (url, received) = serve_once(answer("200 OK", &[], b"thanks!")).await;
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        assert!(
            matches!(
                outcome,
                ToolOutcome::Succeeded {
                    status: 200,
                    body: serde_json::Value::Null,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let raw = received.await.expect("server saw a request");
        assert_eq!(header_value(&raw, "content-type"), None);

        let (url, _received) = serve_once(answer("204 No Content", &[], b"")).await;
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        assert!(
            matches!(
                outcome,
                ToolOutcome::Succeeded {
                    status: 204,
                    body: serde_json::Value::Null,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn service_unavailable_is_retryable_with_its_retry_after() {
        let (url, _received) = serve_once(answer(
            "503 Service Unavailable",
            &["Retry-After: 7"],
            b"down for maintenance",
        ))
        .await;
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        match &outcome {
            ToolOutcome::Failed {
                status,
                failure,
                retry_after_secs,
                excerpt,
                ..
            } => {
                assert_eq!(*status, Some(503));
                assert_eq!(*failure, ToolFailure::RetryableStatus);
                assert_eq!(*retry_after_secs, Some(7));
                assert_eq!(excerpt, "down for maintenance");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(outcome.is_retryable());
    }

    #[tokio::test]
    async fn not_found_is_rejected_with_a_bounded_excerpt() {
        let long = "x".repeat(5_000);
        let (url, _received) = serve_once(answer("404 Not Found", &[], long.as_bytes())).await;
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        match &outcome {
            ToolOutcome::Failed {
                status,
                failure,
                retry_after_secs,
                excerpt,
                ..
            } => {
                assert_eq!(*status, Some(404));
                assert_eq!(*failure, ToolFailure::RejectedStatus);
                assert_eq!(*retry_after_secs, None);
                assert_eq!(excerpt.len(), EXCERPT_BYTES);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(!outcome.is_retryable());
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (url, _received) = serve_once(answer(
            "302 Found",
            &["Location: http://127.0.0.1:9/elsewhere"],
            b"",
        ))
        .await;
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        assert!(
            matches!(
                outcome,
                ToolOutcome::Failed {
                    status: Some(302),
                    failure: ToolFailure::BadResponse,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/slow", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let _request = read_request(&mut stream).await;
            // Hold the connection open without answering.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
        });
        let outcome = HttpToolClient::new().call(&request(url, None, 300)).await;
        match outcome {
            ToolOutcome::Failed {
                status: None,
                failure: ToolFailure::Timeout,
                latency_ms,
                ..
            } => assert!(latency_ms >= 300, "{latency_ms}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connection_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/gone", listener.local_addr().expect("addr"));
        drop(listener);
        let outcome = HttpToolClient::new().call(&request(url, None, 2_000)).await;
        match outcome {
            ToolOutcome::Failed {
                status: None,
                failure: ToolFailure::Connection,
                excerpt,
                ..
            } => {
                assert!(!excerpt.is_empty());
                assert!(!excerpt.contains("/gone"), "the url leaked: {excerpt}");
            }
            other => panic!("expected a connection failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_oversize_body_is_a_bad_response() {
        let client = HttpToolClient::new().with_max_response_bytes(1_024);
        let big = vec![b'7'; 2_048];

        // Declared too large up front.
        let (url, _received) = serve_once(answer("200 OK", &[], &big)).await;
        let outcome = client.call(&request(url, None, 2_000)).await;
        assert!(
            matches!(
                outcome,
                ToolOutcome::Failed {
                    status: Some(200),
                    failure: ToolFailure::BadResponse,
                    ..
                }
            ),
            "{outcome:?}"
        );

        // No length declared: the body runs until the server closes the connection.
        let mut unbounded = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        unbounded.extend_from_slice(&big);
        let (url, _received) = serve_once(unbounded).await;
        let outcome = client.call(&request(url, None, 2_000)).await;
        assert!(
            matches!(
                outcome,
                ToolOutcome::Failed {
                    status: Some(200),
                    failure: ToolFailure::BadResponse,
                    ..
                }
            ),
            "{outcome:?}"
        );

        // Exactly at the cap is fine.
        let (url, _received) = serve_once(answer("200 OK", &[], &big[..1_024])).await;
        let outcome = client.call(&request(url, None, 2_000)).await;
        assert!(
            matches!(outcome, ToolOutcome::Succeeded { .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn unsendable_requests_are_rejected_without_echoing_secrets() {
        let client = HttpToolClient::new();
        let mut bad_header = request("http://127.0.0.1:9/x".to_owned(), None, 2_000);
        bad_header.headers = vec![("X-Api-Key".to_owned(), "s3cr3t\nvalue".to_owned())];
        let mut bad_url = request("not a url ?token=s3cr3t".to_owned(), None, 2_000);
        bad_url.headers.clear();
        let mut bad_scheme = request("ftp://127.0.0.1/x".to_owned(), None, 2_000);
        bad_scheme.method = "post".to_owned();
        let mut bad_method = request("http://127.0.0.1:9/x".to_owned(), None, 2_000);
        bad_method.method = "PO ST".to_owned();

        for request in [bad_header, bad_url, bad_scheme, bad_method] {
            match client.call(&request).await {
                ToolOutcome::Failed {
                    status: None,
                    failure: ToolFailure::RejectedStatus,
                    excerpt,
                    ..
                } => {
                    assert!(excerpt.starts_with("invalid request"), "{excerpt}");
                    assert!(!excerpt.contains("s3cr3t"), "{excerpt}");
                }
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    }

    #[test]
    fn request_header_values_are_not_in_debug_output() {
        let client = HttpToolClient::new();
        let pool = client.pool().expect("a pool");
        let builder = client
            .prepare(
                pool,
                &request("http://127.0.0.1:9/x".to_owned(), None, 2_000),
            )
            .expect("a valid request");
        let built = builder.build().expect("builds");
        assert!(!format!("{built:?}").contains("hunter2"));
        assert_eq!(
            built
                .headers()
                .get("idempotency-key")
                .map(HeaderValue::as_bytes),
            Some(&b"exe_01J0ABC:2"[..])
        );
    }
}
