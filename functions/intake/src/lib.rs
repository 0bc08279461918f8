//! The intake function's HTTP edge: an API Gateway HTTP API (payload format 2.0) request, as
//! `lambda_http` delivers it, to an [`EdgeRequest`], and an [`EdgeResponse`] back to a
//! `lambda_http` response.
//!
//! The webhook route has no authorizer, so the request carries no claims.

use lambda_http::{Body, Request, Response};
use sluice::adapters::apigw;
use sluice::edge::{EdgeRequest, EdgeResponse};

/// The request as intake sees it (see [`apigw::edge_request`]); the webhook route has no
/// authorizer, so it carries no claims.
pub fn edge_request(request: Request) -> EdgeRequest {
    apigw::edge_request(request, None)
}

/// The API Gateway answer: the status, `content-type: application/json` and the JSON body.
pub fn http_response(answer: EdgeResponse) -> Response<Body> {
    apigw::lambda_response(answer)
}
