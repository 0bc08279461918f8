//! Race suites on DynamoDB Local.

sluice_tests::dynamodb_race_tests!(engines::Engine::DynamoDbLocal);
