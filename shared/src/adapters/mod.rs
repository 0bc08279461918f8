//! Implementations of the ports: DynamoDB, SQS and CloudWatch for deployments and the engine-backed tests,
//! memory for the local run and fast tests. Only this module imports AWS SDK crates.

pub mod apigw;
pub mod backend;
pub mod cloudwatch;
pub mod dynamodb;
pub mod http_tool;
pub mod memory;
pub mod sdk_failure;
pub mod sqs;
#[cfg(test)]
mod template_contract;
