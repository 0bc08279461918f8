//! Where the local run keeps its state: process memory, or a DynamoDB table and an SQS queue at
//! an endpoint (a local engine such as ministack, or AWS itself), optionally created first.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;
use sluice::adapters::backend::AwsBackend;
use sluice::adapters::http_tool::HttpToolClient;
use sluice::app::App;
use sluice::clock::SystemClock;
use sluice::config::ReliabilityConfig;
use sluice::manifest::{Manifest, Secrets};
use sluice::StoreError;

/// The endpoint of DynamoDB and SQS (both on one URL, as ministack serves them).
pub const ENDPOINT_VAR: &str = "SLUICE_AWS_ENDPOINT";
/// The stage queue's URL.
pub const QUEUE_URL_VAR: &str = "SLUICE_STAGE_QUEUE_URL";
/// The queue `--create` makes when no URL is given.
pub const DEFAULT_QUEUE_NAME: &str = "sluice-stage";

/// Why the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{QUEUE_URL_VAR} is not set (use --create to make a queue)")]
    NoQueue,
    #[error("creating table {table}: {source}")]
    CreateTable {
        table: String,
        #[source]
        source: StoreError,
    },
    #[error("creating queue {name}: {detail}")]
    CreateQueue { name: String, detail: String },
    #[error("the HTTP tool client cannot start: {0}")]
    Tools(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An app over DynamoDB and SQS at `SLUICE_AWS_ENDPOINT` (or AWS), with a description of where
/// the state is for the start-up text.
pub async fn aws_app(
    manifest: Manifest,
    secrets: Secrets,
    config: ReliabilityConfig,
    create: bool,
) -> Result<(App<AwsBackend, HttpToolClient>, String), StateError> {
    let endpoint = std::env::var(ENDPOINT_VAR).ok().filter(|v| !v.is_empty());
    let sdk = sdk_config(endpoint.as_deref()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = config.table_name.clone();
    let queue_url = std::env::var(QUEUE_URL_VAR).ok().filter(|v| !v.is_empty());
    let queue_url = if create {
        create_table_if_missing(&dynamodb, &table).await?;
        let name = queue_url
            .as_deref()
            .and_then(|url| url.rsplit('/').next())
            .unwrap_or(DEFAULT_QUEUE_NAME)
            .to_owned();
        create_queue(&sqs, &name).await?
    } else {
        queue_url.ok_or(StateError::NoQueue)?
    };
    let description = format!(
        "DynamoDB table {table} and SQS queue {queue_url} at {}",
        endpoint.as_deref().unwrap_or("AWS")
    );
    let tools = HttpToolClient::try_new().map_err(|e| StateError::Tools(Box::new(e)))?;
    let app = App::new(
        AwsBackend::new(dynamodb, sqs, &table, &queue_url),
        tools,
        Arc::new(SystemClock),
        manifest,
        secrets,
        config,
    );
    Ok((app, description))
}

/// A CloudWatch client for `SLUICE_AWS_ENDPOINT` (or AWS), for `--cloudwatch`.
pub async fn cloudwatch_client() -> aws_sdk_cloudwatch::Client {
    let endpoint = std::env::var(ENDPOINT_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    aws_sdk_cloudwatch::Client::new(&sdk_config(endpoint.as_deref()).await)
}

/// SDK settings: the endpoint if given; for an endpoint without AWS credentials in the
/// environment, region us-east-1 and static test credentials (local engines accept any).
async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            loader = loader.region(Region::from_static("us-east-1"));
        }
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() && std::env::var("AWS_PROFILE").is_err() {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "sluice-local",
            ));
        }
    }
    loader.load().await
}

async fn create_table_if_missing(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), StateError> {
    if client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok()
    {
        tracing::info!(table, "table exists");
        return Ok(());
    }
    sluice::adapters::dynamodb::create_table(client, table)
        .await
        .map_err(|source| StateError::CreateTable {
            table: table.to_owned(),
            source,
        })?;
    tracing::info!(table, "table created");
    Ok(())
}

/// Creates `name` and its dead-letter queue `<name>-dlq` (SQS answers an existing queue's URL
/// when the attributes match), returning the queue's URL.
async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, StateError> {
    let failed = |detail: String| StateError::CreateQueue {
        name: name.to_owned(),
        detail,
    };
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
        .queue_url
        .ok_or_else(|| failed("no URL for the dead-letter queue".into()))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| failed("no ARN for the dead-letter queue".into()))?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5 });
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
        .queue_url
        .ok_or_else(|| failed("no URL for the queue".into()))?;
    tracing::info!(queue = %url, "queue ready");
    Ok(url)
}
