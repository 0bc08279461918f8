//! DynamoDB adapters.
