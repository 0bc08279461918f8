//! SQS adapter.
