//! Race suites on ministack.

sluice_tests::dynamodb_race_tests!(engines::Engine::Ministack);
