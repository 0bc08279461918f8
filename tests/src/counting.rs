//! Counting the AWS requests a piece of code makes: [`counted_sdk_config`] is
//! [`crate::engines::sdk_config`] with an HTTP client that counts every request it transmits,
//! by service and operation, into a [`RequestCounter`].
//!
//! An `SdkConfig` cannot carry smithy interceptors (only a client's own config can), so the
//! count sits one layer lower, on the HTTP connector: every request the SDK sends, retries
//! included (each attempt is a billed request), is named by its `X-Amz-Target` header, which
//! both DynamoDB (`DynamoDB_20120810.PutItem`) and SQS (`AmazonSQS.SendMessage`, JSON protocol)
//! set. Keys are `service:Operation` with the service in lower case: `dynamodb:PutItem`,
//! `dynamodb:TransactWriteItems`, `sqs:SendMessage`. A request without that header is counted
//! as `other:{METHOD}`.
//!
//! ```no_run
//! # async fn demo() {
//! use sluice_tests::counting::{counted_sdk_config, RequestCounter};
//! use sluice_tests::engines::Engine;
//! let counter = RequestCounter::default();
//! let config = counted_sdk_config(Engine::Ministack, &counter).await;
//! let dynamodb = aws_sdk_dynamodb::Client::new(&config);
//! // ... use the client ...
//! let counts = counter.snapshot(); // {"dynamodb:PutItem": 1, ...}
//! counter.reset();
//! # let _ = (dynamodb, counts);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::engines::{config_loader, Engine};

/// Requests counted by `service:Operation`. Clones share one count.
#[derive(Clone, Default, Debug)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    /// Forgets every request counted so far.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// The counts so far, by `service:Operation` (e.g. `dynamodb:PutItem`, `sqs:SendMessage`).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    /// The requests to `service` (e.g. `"dynamodb"`) counted so far.
    pub fn total(&self, service: &str) -> u64 {
        service_total(&self.lock(), service)
    }

    fn count(&self, key: String) {
        *self.lock().entry(key).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sum of the counts in `counts` whose key starts with `service:` (e.g. `"dynamodb"`).
pub fn service_total(counts: &BTreeMap<String, u64>, service: &str) -> u64 {
    let prefix = format!("{service}:");
    counts
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, n)| n)
        .sum()
}

/// [`crate::engines::sdk_config`] for `engine`, whose clients count every request they send
/// into `counter`.
///
/// # Panics
/// As `sdk_config`: if the engine is not configured or not running.
pub async fn counted_sdk_config(engine: Engine, counter: &RequestCounter) -> SdkConfig {
    // The engines speak plain HTTP.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    config_loader(engine)
        .http_client(CountingClient {
            inner,
            counter: counter.clone(),
        })
        .load()
        .await
}

/// The key a request is counted under.
fn key_of(request: &HttpRequest) -> String {
    match request.headers().get("x-amz-target") {
        Some(target) => {
            let (service, operation) = target.split_once('.').unwrap_or(("other", target));
            let service = match service {
                s if s.starts_with("DynamoDB") => "dynamodb".to_owned(),
                "AmazonSQS" => "sqs".to_owned(),
                s => s.to_ascii_lowercase(),
            };
            format!("{service}:{operation}")
        }
        None => format!("other:{}", request.method()),
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
        self.counter.count(key_of(&request));
        self.inner.call(request)
    }
}
