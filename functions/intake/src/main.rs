//! The intake Lambda: `POST /webhooks/{source}` from API Gateway's HTTP API. The App (config,
//! manifest, secrets, DynamoDB and SQS clients) is built once per cold start.

use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::startup::init_tracing();
    let app = sluice::startup::aws_app_from_env().await?;
    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        let answer = sluice::usecases::intake::handle(app, sluice_intake::edge_request(request));
        Ok::<_, std::convert::Infallible>(sluice_intake::http_response(answer.await))
    }))
    .await
}
