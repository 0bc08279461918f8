//! The operator API over HTTP: one request, its status and JSON body.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

/// The API at a base URL, with an optional bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// An answer from the API: its status and JSON body (`null` for an empty body).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Why a request got no answer to show.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("no answer from {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status} with a body that is not JSON")]
    NotJson { url: String, status: u16 },
}

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Api {
    /// An API at `base` (e.g. `http://127.0.0.1:3000`, or a stage URL with a path).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CallError> {
        let base = Url::parse(base.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| CallError::BadUrl(base.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(CallError::Client)?;
        let token = token.filter(|t| !t.trim().is_empty());
        Ok(Self { base, token, http })
    }

    /// The URL of `segments` (each percent-encoded) under the base, with `query`.
    pub fn url(&self, segments: &[String], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// Sends one request and reads its JSON answer.
    pub async fn call(
        &self,
        method: &str,
        segments: &[String],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Answer, CallError> {
        let url = self.url(segments, query);
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.trim());
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let unreachable = |source| CallError::Unreachable {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| CallError::NotJson {
                url: url.to_string(),
                status,
            })?
        };
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_under_the_base_path() {
        let api = Api::new("https://api.example.com/prod/", None).unwrap();
        let url = api.url(
            &["v1".into(), "executions".into(), "a/b ..".into()],
            &[("status", "BLOCKED".into()), ("cursor", "x&y=z".into())],
        );
        assert_eq!(
            url.as_str(),
            "https://api.example.com/prod/v1/executions/a%2Fb%20..?status=BLOCKED&cursor=x%26y%3Dz"
        );
        let api = Api::new("http://127.0.0.1:3000", None).unwrap();
        assert_eq!(
            api.url(&["v1".into(), "health".into()], &[]).as_str(),
            "http://127.0.0.1:3000/v1/health"
        );
    }

    #[test]
    fn a_base_that_is_not_an_http_url_is_refused() {
        for bad in ["", "127.0.0.1:3000", "ftp://x", "http://"] {
            assert!(
                matches!(Api::new(bad, None), Err(CallError::BadUrl(_))),
                "{bad}"
            );
        }
    }
}
