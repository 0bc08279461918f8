//! The sweeper Lambda, run by an EventBridge schedule: recovers executions whose lease expired
//! and queues those recorded but never queued. Needs no secrets.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sluice::startup::{self, SecretScope};

#[tokio::main]
async fn main() -> Result<(), Error> {
    startup::init_tracing();
    let app = startup::aws_app_from_env_with(SecretScope::None).await?;
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
            sluice_sweeper::handle(app, event.payload)
                .await
                .map_err(Error::from)
        },
    ))
    .await
}
