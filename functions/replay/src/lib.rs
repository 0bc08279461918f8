//! The replay function's edge: turns an API Gateway HTTP API (payload 2.0) request into an
//! [`EdgeRequest`], runs [`sluice::usecases::api::handle`], and turns the answer into a
//! `lambda_http` response.
//!
//! Identity: the caller's [`Claims`] come only from the JWT authorizer's context
//! (`requestContext.authorizer.jwt.claims`): the tenant from `custom:tenant_id`, the actor from
//! `sub`. API Gateway verified the token before invoking the function; this crate verifies
//! nothing itself and has no other way in (no development token mode: that lives in the local
//! run only). A request without an authorizer context, or whose claims lack either value or
//! hold an invalid tenant id, has no claims, and the API answers 401 on every `/v1` route.

use std::collections::BTreeMap;

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use sluice::app::App;
use sluice::domain::ids::TenantId;
use sluice::edge::{Claims, EdgeRequest, EdgeResponse};
use sluice::ports::{Backend, ToolClient};

/// The claim that names the caller's tenant.
pub const TENANT_CLAIM: &str = "custom:tenant_id";
/// The claim that names the caller (the token's subject).
pub const SUBJECT_CLAIM: &str = "sub";

/// Answers one API Gateway request.
pub async fn handle_request<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    request: Request,
) -> Response<Body> {
    let edge = edge_request(request);
    lambda_response(sluice::usecases::api::handle(app, edge).await)
}

/// The request as the API sees it: method, path relative to the API root (still
/// percent-encoded), decoded query parameters (the first value of each), headers (lower-case
/// names, UTF-8 values only, the first of each), body bytes and the authorizer's claims.
pub fn edge_request(request: Request) -> EdgeRequest {
    let claims = claims(&request);
    let path = api_path(&request);
    let mut query = BTreeMap::new();
    if let Some(params) = request.query_string_parameters_ref() {
        for (name, value) in params.iter() {
            // The first value of a repeated name wins.
            query
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    let mut headers = BTreeMap::new();
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            headers
                .entry(name.as_str().to_ascii_lowercase())
                .or_insert_with(|| value.to_owned());
        }
    }
    let method = request.method().as_str().to_owned();
    let body = request.into_body().to_vec();
    EdgeRequest {
        method,
        path,
        query,
        headers,
        body,
        claims,
    }
}

/// The verified caller, from the HTTP API JWT authorizer's claims; `None` without an
/// authorizer context or when `custom:tenant_id` or `sub` is missing, empty or invalid.
pub fn claims(request: &Request) -> Option<Claims> {
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return None;
    };
    let jwt = context.authorizer.as_ref()?.jwt.as_ref()?;
    let tenant = TenantId::parse(jwt.claims.get(TENANT_CLAIM)?.trim()).ok()?;
    let subject = jwt.claims.get(SUBJECT_CLAIM)?.trim();
    if subject.is_empty() {
        return None;
    }
    Some(Claims {
        tenant,
        subject: subject.to_owned(),
    })
}

/// The request path without API Gateway's stage prefix (present in `rawPath` for a named
/// stage, absent for `$default`).
fn api_path(request: &Request) -> String {
    let raw = request.raw_http_path();
    let raw = if raw.is_empty() {
        request.uri().path()
    } else {
        raw
    };
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.as_deref(),
        _ => None,
    };
    match stage {
        Some(stage) if stage != "$default" && !stage.is_empty() => {
            let prefix = format!("/{stage}");
            match raw.strip_prefix(&prefix) {
                Some("") => "/".to_owned(),
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                _ => raw.to_owned(),
            }
        }
        _ => raw.to_owned(),
    }
}

/// The answer as API Gateway expects it: the status and a JSON body.
pub fn lambda_response(answer: EdgeResponse) -> Response<Body> {
    let mut response = Response::new(Body::Text(answer.body.to_string()));
    *response.status_mut() = lambda_http::http::StatusCode::from_u16(answer.status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    response
}
