//! The cold-start baseline of the benchmarks: a bare `lambda_runtime` function that echoes its
//! event, nothing else (no AWS SDK, no logging set-up).

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
