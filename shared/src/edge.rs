//! The HTTP edge, independent of any web framework: a plain request in, a status and JSON body
//! out. The Lambda functions (lambda_http) and the local run (axum) both translate to and from
//! these types, so routing, validation and error shapes are written once.
//!
//! Every error answers `{"error": {"code": "...", "message": "..."}}`.

use std::collections::BTreeMap;

use serde_json::json;

use crate::domain::ids::TenantId;

/// Verified caller identity, from the JWT authorizer's claims (never from body or query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The `custom:tenant_id` claim.
    pub tenant: TenantId,
    /// The token's subject (`sub`): who asks, for the audit trail.
    pub subject: String,
}

/// An HTTP request, as the edge sees it.
#[derive(Debug, Clone, Default)]
pub struct EdgeRequest {
    pub method: String,
    /// The path without the stage prefix, e.g. `/webhooks/github` or `/v1/executions/exe_..`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Present only when an authorizer verified a token.
    pub claims: Option<Claims>,
}

/// An HTTP answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl EdgeResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self { status, body }
    }

    /// An error answer in the house shape.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self {
            status,
            body: json!({ "error": { "code": code, "message": message } }),
        }
    }
}
