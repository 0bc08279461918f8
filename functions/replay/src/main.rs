//! The replay Lambda: the operator API behind API Gateway's JWT authorizer. It reads no
//! secrets: identity comes from the authorizer's claims (see the library's docs).

use lambda_http::{service_fn, Error, Request};
use sluice::startup::SecretScope;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::startup::init_tracing();
    let app = sluice::startup::aws_app_from_env_with(SecretScope::None).await?;
    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(sluice_replay::handle_request(app, request).await)
    }))
    .await
}
