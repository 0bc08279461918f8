//! The executor Lambda: runs pipeline stages from the SQS stage queue and answers with the
//! records to deliver again. The App is built once per cold start; the worker id (the lease
//! owner) lives as long as the execution environment. Each batch runs within the invocation's
//! deadline (see the library's "Time budget").

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sluice::domain::ids::HolderId;
use sluice::startup::{self, SecretScope};

#[tokio::main]
async fn main() -> Result<(), Error> {
    startup::init_tracing();
    let app = startup::aws_app_from_env_with(SecretScope::Connectors).await?;
    // The template's limits against the config and the manifest: a mismatch stops the cold
    // start with the values that do not fit.
    let flush = app.alerts.delivery_bound();
    startup::validate_executor(|n| std::env::var(n).ok(), &app.config, &app.manifest, flush)?;
    let worker = HolderId::random();
    let (app, worker) = (&app, &worker);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let budget = sluice_executor::budget_for(event.context.deadline(), flush);
        Ok::<_, Error>(sluice_executor::handle(app, worker, event.payload, &budget).await)
    }))
    .await
}
