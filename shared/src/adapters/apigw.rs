//! API Gateway HTTP API (payload format 2.0) requests, as `lambda_http` delivers them, to the
//! framework-free [`EdgeRequest`], and [`EdgeResponse`] back to a `lambda_http` response. Used by
//! every HTTP function (intake, replay), so the translation exists once.
//!
//! Identity comes only from the JWT authorizer's context
//! (`requestContext.authorizer.jwt.claims`): API Gateway verified the token before invoking the
//! function, and nothing here verifies tokens (the local run's development tokens live in
//! `sluice-local` only).

use std::collections::BTreeMap;

use lambda_http::http::header::{HeaderValue, CONTENT_TYPE};
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::domain::ids::TenantId;
use crate::edge::{Claims, EdgeRequest, EdgeResponse};

/// The claim that names the caller's tenant.
pub const TENANT_CLAIM: &str = "custom:tenant_id";
/// The claim that names the caller (the token's subject).
pub const SUBJECT_CLAIM: &str = "sub";

/// The request as the use cases see it: the method, the path without the stage prefix (still
/// percent-encoded), the query (first value per name), the headers (lower-case names; UTF-8
/// values only; repeated headers joined with `,`, as API Gateway itself joins them), the raw
/// body bytes (base64 bodies decoded), and `claims`.
pub fn edge_request(request: Request, claims: Option<Claims>) -> EdgeRequest {
    let path = path_without_stage(&request);
    let mut query = BTreeMap::new();
    if let Some(parameters) = request.query_string_parameters_ref() {
        for (name, value) in parameters.iter() {
            query
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let Ok(value) = value.to_str() else {
            continue;
        };
        // `HeaderName`s are lower case already.
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
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
pub fn jwt_claims(request: &Request) -> Option<Claims> {
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

/// The API Gateway answer: the status, `content-type: application/json` and the JSON body.
pub fn lambda_response(answer: EdgeResponse) -> Response<Body> {
    let mut response = Response::new(Body::Text(answer.body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `rawPath` carries the stage as its first segment for a named stage (`/prod/webhooks/x`),
/// not for `$default`; the use cases route on the path without it.
fn path_without_stage(request: &Request) -> String {
    let raw = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.as_deref(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && *s != "$default") else {
        return raw.to_owned();
    };
    match raw.strip_prefix('/').and_then(|r| r.strip_prefix(stage)) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => raw.to_owned(),
    }
}
