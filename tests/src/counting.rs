//! Exact AWS request counts: an SDK configuration whose HTTP client counts every request it
//! sends, by service and operation (`"dynamodb:PutItem"`, `"sqs:SendMessage"`).
//!
//! The count is taken at the transport, below the SDK's retry loop: a retried call counts once
//! per attempt, as AWS bills it. DynamoDB and SQS both speak AWS's JSON protocol, which names
//! the operation in the `X-Amz-Target` header (`DynamoDB_20120810.PutItem`,
//! `AmazonSQS.SendMessage`); a request without one counts under `"<uri>:unknown"`.
//!
//! The SDK's `Intercept` hooks can only be attached to one service's client config, not to an
//! [`SdkConfig`]; wrapping the HTTP client is what lets one counting [`SdkConfig`] serve every
//! client built from it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::engines::{self, Engine};

/// Counts requests by `"<service>:<Operation>"`. Clones share the counts.
#[derive(Clone, Default, Debug)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    /// Forgets every count.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// The counts so far, e.g. `{"dynamodb:PutItem": 2, "sqs:SendMessage": 1}`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    fn record(&self, key: String) {
        *self.lock().entry(key).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// [`engines::sdk_config`] for `engine`, with every request counted in `counter`.
pub async fn counted_sdk_config(engine: Engine, counter: &RequestCounter) -> SdkConfig {
    let inner = aws_smithy_http_client::Builder::new().build_http();
    engines::sdk_config(engine)
        .await
        .into_builder()
        .http_client(CountingClient {
            inner,
            counter: counter.clone(),
        })
        .build()
}

/// The key a request counts under.
fn operation_key(request: &HttpRequest) -> String {
    match request.headers().get("x-amz-target") {
        Some(target) => {
            let (prefix, operation) = target.split_once('.').unwrap_or(("", target));
            let service = match prefix {
                p if p.starts_with("DynamoDB") => "dynamodb".to_owned(),
                "AmazonSQS" => "sqs".to_owned(),
                other => other.to_ascii_lowercase(),
            };
            format!("{service}:{operation}")
        }
        None => format!("{}:unknown", request.uri()),
    }
}

#[derive(Debug)]
struct CountingClient {
    inner: SharedHttpClient,
    counter: RequestCounter,
}

impl HttpClient for CountingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector {
            inner: self.inner.http_connector(settings, components),
            counter: self.counter.clone(),
        })
    }
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    counter: RequestCounter,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.counter.record(operation_key(&request));
        self.inner.call(request)
    }
}
