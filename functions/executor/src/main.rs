//! The executor Lambda: runs pipeline stages from the SQS stage queue and answers with the
//! records to deliver again. The App is built once per cold start; the worker id (the lease
//! owner) lives as long as the execution environment.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sluice::domain::ids::HolderId;
use sluice::startup::{self, SecretScope};

#[tokio::main]
async fn main() -> Result<(), Error> {
    startup::init_tracing();
    let app = startup::aws_app_from_env_with(SecretScope::Connectors).await?;
    let worker = HolderId::random();
    let (app, worker) = (&app, &worker);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(sluice_executor::handle(app, worker, event.payload).await)
    }))
    .await
}
