//! The port contracts on DynamoDB Local, AWS's own engine: the reference for DynamoDB behaviour.

sluice_tests::dynamodb_contract_tests!(engines::Engine::DynamoDbLocal);
