//! The engine harness: connects tests to the local engines that `infra/engines/start.sh` runs
//! (DynamoDB Local, and ministack for DynamoDB, SQS and CloudWatch), and hands out fresh tables and queues.
//!
//! Endpoints come from `SLUICE_DYNAMODB_LOCAL_ENDPOINT` and `SLUICE_MINISTACK_ENDPOINT`, which
//! `bash infra/test.sh` exports. An engine that is not configured or not listening fails the
//! test with a panic saying how to start it: an engine test never skips, with or without `CI`.

use std::collections::HashSet;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;

/// How the tests reach the engines when nothing is running: the message of every harness panic.
const HOW_TO_START: &str = "run the whole suite with `bash infra/test.sh`, or start the engines \
     with `bash infra/engines/start.sh` and source the env file it prints (by default \
     ~/.cache/sluice/engines/run/engines.env) before `cargo test`";

/// A local engine the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// AWS's DynamoDB Local (DynamoDB only).
    DynamoDbLocal,
    /// ministack: DynamoDB, SQS and CloudWatch on one endpoint.
    Ministack,
}

impl Engine {
    /// A short name for test output, e.g. `dynamodb-local`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::DynamoDbLocal => "dynamodb-local",
            Engine::Ministack => "ministack",
        }
    }

    /// The environment variable holding this engine's endpoint.
    pub fn endpoint_var(&self) -> &'static str {
        match self {
            Engine::DynamoDbLocal => "SLUICE_DYNAMODB_LOCAL_ENDPOINT",
            Engine::Ministack => "SLUICE_MINISTACK_ENDPOINT",
        }
    }

    /// The engine's endpoint URL, e.g. `http://127.0.0.1:41234`.
    ///
    /// # Panics
    /// If the variable is unset, is not an `http://host:port` URL, or nothing accepts a
    /// connection there (checked once per engine and process).
    pub fn endpoint(&self) -> String {
        let var = self.endpoint_var();
        let endpoint = match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => value.trim().trim_end_matches('/').to_owned(),
            _ => panic!(
                "{var} is not set, so the tests cannot reach {}: {HOW_TO_START}",
                self.name()
            ),
        };
        static CHECKED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        let checked = CHECKED.get_or_init(Default::default);
        let mut checked = checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !checked.contains(&endpoint) {
            if let Err(reason) = accepts_connections(&endpoint) {
                panic!(
                    "{} is not answering at {var}={endpoint} ({reason}): {HOW_TO_START}",
                    self.name()
                );
            }
            checked.insert(endpoint.clone());
        }
        endpoint
    }
}

/// Whether a TCP connection to the URL's host and port succeeds within a second.
fn accepts_connections(endpoint: &str) -> Result<(), String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| "the endpoint must start with http://".to_owned())?
        .split('/')
        .next()
        .unwrap_or_default();
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority:?}: {e}"))?
        .collect();
    let mut last_error = format!("{authority:?} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// SDK configuration for an engine: its endpoint, region us-east-1, static test credentials,
/// and the standard retry mode with a few attempts (local engines throttle under load too).
pub async fn sdk_config(engine: Engine) -> SdkConfig {
    config_loader(engine).load().await
}

/// The loader behind [`sdk_config`] (and `counting::counted_sdk_config`).
pub(crate) fn config_loader(engine: Engine) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(engine.endpoint())
        .region(Region::from_static("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "sluice-tests"))
        .retry_config(RetryConfig::standard().with_max_attempts(4))
}

/// A DynamoDB client for an engine.
pub async fn dynamodb(engine: Engine) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(engine).await)
}

/// A new, empty Sluice table on an engine (`sluice-test-<ulid>`, created by the same
/// `create_table` the local run uses), with a client for it.
///
/// # Panics
/// If the engine is not running or refuses the table.
pub async fn fresh_table(engine: Engine) -> (aws_sdk_dynamodb::Client, String) {
    let client = dynamodb(engine).await;
    let name = unique_name("sluice-test");
    if let Err(error) = sluice::adapters::dynamodb::create_table(&client, &name).await {
        panic!(
            "creating table {name} on {}: {}",
            engine.name(),
            aws_sdk_dynamodb::error::DisplayErrorContext(&error)
        );
    }
    (client, name)
}

/// An SQS client for ministack.
pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(Engine::Ministack).await)
}

/// A CloudWatch client for ministack (the Rust SDK speaks CBOR to CloudWatch; ministack needs
/// its `cbor2` module, which `infra/engines/install.sh` installs).
pub async fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_config(Engine::Ministack).await)
}

/// How many receives send a message of a [`fresh_queue`] to its dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 3;
/// The visibility timeout of a [`fresh_queue`], in seconds.
pub const VISIBILITY_TIMEOUT_SECONDS: u32 = 30;

/// A new standard queue on ministack and its dead-letter queue: returns the client, the queue
/// URL and the DLQ URL. The queue redrives to the DLQ after [`MAX_RECEIVE_COUNT`] receives and
/// hides a received message for [`VISIBILITY_TIMEOUT_SECONDS`].
///
/// # Panics
/// If ministack is not running or refuses a queue.
pub async fn fresh_queue() -> (aws_sdk_sqs::Client, String, String) {
    let client = sqs().await;
    let name = unique_name("sluice-test");
    let context = |step: &str, error: &dyn std::error::Error| -> String {
        format!(
            "{step} for queue {name} on ministack: {}",
            aws_sdk_sqs::error::DisplayErrorContext(error)
        )
    };

    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", context("creating the DLQ", &e)))
        .queue_url
        .unwrap_or_else(|| panic!("ministack returned no URL for the DLQ of {name}"));
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", context("reading the DLQ ARN", &e)))
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_else(|| panic!("ministack returned no QueueArn for the DLQ of {name}"));
    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    });
    let queue_url = client
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            redrive_policy.to_string(),
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT_SECONDS.to_string(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", context("creating the queue", &e)))
        .queue_url
        .unwrap_or_else(|| panic!("ministack returned no URL for queue {name}"));
    (client, queue_url, dlq_url)
}

/// `<prefix>-<ulid>` in lower case: valid as a table name and as a queue name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}
