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

use lambda_http::{Body, Request, Response};
use sluice::adapters::apigw;
use sluice::app::App;
use sluice::edge::{Claims, EdgeRequest, EdgeResponse};
use sluice::ports::{Backend, ToolClient};

pub use sluice::adapters::apigw::{SUBJECT_CLAIM, TENANT_CLAIM};

/// Answers one API Gateway request.
pub async fn handle_request<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    request: Request,
) -> Response<Body> {
    let edge = edge_request(request);
    lambda_response(sluice::usecases::api::handle(app, edge).await)
}

/// The request as the API sees it (see [`apigw::edge_request`]), with the authorizer's claims.
pub fn edge_request(request: Request) -> EdgeRequest {
    let claims = claims(&request);
    apigw::edge_request(request, claims)
}

/// The verified caller, from the HTTP API JWT authorizer's claims; `None` without an
/// authorizer context or when `custom:tenant_id` or `sub` is missing, empty or invalid.
pub fn claims(request: &Request) -> Option<Claims> {
    apigw::jwt_claims(request)
}

/// The answer as API Gateway expects it: the status and a JSON body.
pub fn lambda_response(answer: EdgeResponse) -> Response<Body> {
    apigw::lambda_response(answer)
}
