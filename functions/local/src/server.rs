//! The local HTTP front: an axum router that does what API Gateway and the Lambda runtime do in
//! the cloud. It turns each request into an [`EdgeRequest`] (lower-case header names, raw body
//! bytes, query map, path) and hands it to the same use cases the functions call:
//! `POST /webhooks/{source}` to intake, `GET /health` and `/v1/...` to the API. For `/v1/...`
//! it plays the JWT authorizer with [`DevAuth`]: a bad token is refused here with 401, a good
//! one becomes [`EdgeRequest::claims`], and a request without one reaches the API unauthenticated
//! (which answers 401 itself). `GET /metrics` serves the metrics registry as Prometheus text
//! (the same measurements the functions write as CloudWatch EMF lines).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use sluice::app::App;
use sluice::edge::{EdgeRequest, EdgeResponse};
use sluice::ports::{Backend, ToolClient};
use sluice::usecases::{api, intake};

use crate::dev_auth::DevAuth;

/// The smallest request body the router reads in full (API bodies are small JSON).
const MIN_BODY_LIMIT: usize = 64 * 1024;

struct Front<B: Backend, T: ToolClient> {
    app: App<B, T>,
    auth: DevAuth,
    body_limit: usize,
}

/// The router for `app`: intake, the API (with `auth` standing in for the JWT authorizer) and
/// JSON 404/405 answers for everything else.
pub fn router<B, T>(app: App<B, T>, auth: DevAuth) -> Router
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    // One byte over the largest source limit, so intake sees an oversize body and answers 413
    // in its own words.
    let body_limit = app
        .manifest
        .sources
        .values()
        .map(|s| s.max_body_bytes.saturating_add(1))
        .max()
        .unwrap_or(0)
        .max(MIN_BODY_LIMIT);
    let front = Arc::new(Front {
        app,
        auth,
        body_limit,
    });
    Router::new()
        .route("/webhooks/{source}", post(webhook::<B, T>))
        .route("/health", get(api_route::<B, T>))
        .route("/metrics", get(metrics::<B, T>))
        .route("/v1/{*rest}", any(api_route::<B, T>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(front)
}

async fn webhook<B, T>(State(front): State<Arc<Front<B, T>>>, request: Request) -> Response
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let started = Instant::now();
    let edge = match edge_request(request, front.body_limit).await {
        Ok(edge) => edge,
        Err(refusal) => return refusal,
    };
    let (method, path) = (edge.method.clone(), edge.path.clone());
    let answer = intake::handle(&front.app, edge).await;
    log_request(&method, &path, &answer, started);
    respond(answer)
}

async fn api_route<B, T>(State(front): State<Arc<Front<B, T>>>, request: Request) -> Response
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let started = Instant::now();
    let mut edge = match edge_request(request, front.body_limit).await {
        Ok(edge) => edge,
        Err(refusal) => return refusal,
    };
    if edge.path != "/health" {
        if let Some(value) = edge.headers.get("authorization") {
            match front.auth.verify_header(value) {
                Ok(claims) => edge.claims = Some(claims),
                Err(error) => {
                    tracing::info!(path = %edge.path, %error, "token refused");
                    let answer = EdgeResponse::error(401, "unauthorized", "invalid bearer token");
                    log_request(&edge.method, &edge.path, &answer, started);
                    return respond(answer);
                }
            }
        }
    }
    let (method, path) = (edge.method.clone(), edge.path.clone());
    let answer = api::handle(&front.app, edge).await;
    log_request(&method, &path, &answer, started);
    respond(answer)
}

async fn metrics<B, T>(State(front): State<Arc<Front<B, T>>>) -> Response
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        front.app.metrics.prometheus(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    respond(EdgeResponse::error(
        404,
        "not_found",
        format!("no route for {}", uri.path()),
    ))
}

async fn method_not_allowed() -> Response {
    respond(EdgeResponse::error(
        405,
        "method_not_allowed",
        "method not allowed on this path",
    ))
}

/// The framework-free request: lower-case header names (the first value of a repeated header;
/// values that are not text are dropped), the query as a map, the body read up to `limit`.
async fn edge_request(request: Request, limit: usize) -> Result<EdgeRequest, Response> {
    let (parts, body) = request.into_parts();
    let header_bytes = sluice::edge::header_bytes(
        parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    if let Some(refused) = sluice::edge::refuse_large_headers(header_bytes) {
        return Err(respond(refused));
    }
    let query = match Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri) {
        Ok(Query(query)) => query,
        Err(_) => {
            return Err(respond(EdgeResponse::error(
                400,
                "invalid_query",
                "the query string cannot be read",
            )))
        }
    };
    let body = read_body(body, limit).await?;
    Ok(EdgeRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query,
        headers: header_map(&parts.headers),
        body,
        claims: None,
    })
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|_| {
            respond(EdgeResponse::error(
                413,
                "payload_too_large",
                format!("the body is larger than {} bytes", limit.saturating_sub(1)),
            ))
        })
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            // `HeaderName`s are lower case already.
            map.entry(name.as_str().to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    map
}

fn respond(answer: EdgeResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer.body)).into_response()
}

fn log_request(method: &str, path: &str, answer: &EdgeResponse, started: Instant) {
    tracing::info!(
        method,
        path,
        status = answer.status,
        latency_ms = started.elapsed().as_millis() as u64,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn header_names_are_lower_case_and_first_value_wins() {
        let mut headers = HeaderMap::new();
        headers.insert("X-GitHub-Delivery", HeaderValue::from_static("d1"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert("x-binary", HeaderValue::from_bytes(&[0xff]).unwrap());
        let map = header_map(&headers);
        assert_eq!(map.get("x-github-delivery").map(String::as_str), Some("d1"));
        assert_eq!(map.get("x-multi").map(String::as_str), Some("a"));
        assert!(!map.contains_key("x-binary"));
    }

    #[tokio::test]
    async fn requests_translate_to_edge_requests() {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/executions?status=QUEUED&limit=5")
            .header("Content-Type", "application/json")
            .body(Body::from("{\"a\":1}"))
            .unwrap();
        let edge = edge_request(request, 1024).await.unwrap();
        assert_eq!(edge.method, "POST");
        assert_eq!(edge.path, "/v1/executions");
        assert_eq!(edge.query.get("status").map(String::as_str), Some("QUEUED"));
        assert_eq!(edge.query.get("limit").map(String::as_str), Some("5"));
        assert_eq!(
            edge.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(edge.body, b"{\"a\":1}");
        assert!(edge.claims.is_none());
    }

    #[tokio::test]
    async fn a_200_kb_header_is_a_json_431() {
        let request = Request::builder()
            .method("POST")
            .uri("/webhooks/x")
            .header("x-big", "a".repeat(200 * 1024))
            .body(Body::empty())
            .unwrap();
        let refusal = edge_request(request, 10).await.unwrap_err();
        assert_eq!(
            refusal.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn an_oversize_body_is_a_json_413() {
        let request = Request::builder()
            .method("POST")
            .uri("/webhooks/x")
            .body(Body::from(vec![b'a'; 11]))
            .unwrap();
        let refusal = edge_request(request, 10).await.unwrap_err();
        assert_eq!(refusal.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
