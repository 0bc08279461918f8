//! The HTTP edge, independent of any web framework: a plain request in, a status and JSON body
//! out. The Lambda functions (lambda_http) and the local run (axum) both translate to and from
//! these types, so routing, validation and error shapes are written once.
//!
//! Every error answers `{"error": {"code": "...", "message": "..."}}`.
//!
//! A request whose headers (names plus values, summed) exceed [`MAX_HEADER_BYTES`] is refused
//! with 431 `headers_too_large` before anything reads it: intake checks it for the webhook
//! route, the local server for every route.

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

/// The most header bytes (every name and value, summed) a request may carry: 16 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The size [`MAX_HEADER_BYTES`] limits: the sum of every header name's and value's length.
pub fn header_bytes<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> usize {
    headers
        .into_iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// The 431 `headers_too_large` refusal when `total` header bytes exceed [`MAX_HEADER_BYTES`].
pub fn refuse_large_headers(total: usize) -> Option<EdgeResponse> {
    (total > MAX_HEADER_BYTES).then(|| {
        EdgeResponse::error(
            431,
            "headers_too_large",
            format!(
                "the request headers are {total} bytes, more than the {MAX_HEADER_BYTES} allowed"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_over_the_limit_are_a_431() {
        let at_limit = header_bytes([("x-a", vec![b'v'; MAX_HEADER_BYTES - 3].as_slice())]);
        assert_eq!(at_limit, MAX_HEADER_BYTES);
        assert_eq!(refuse_large_headers(at_limit), None);
        let refusal = refuse_large_headers(200 * 1024).expect("refused");
        assert_eq!(refusal.status, 431);
        assert_eq!(refusal.body["error"]["code"], "headers_too_large");
    }
}
