//! The throughput baseline of the benchmarks: a bare axum server on 127.0.0.1 that reads the
//! request body and answers `202 {"ok": true}` on any path.
//!
//! Usage: `bench-hello-http <port>`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::{Json, Router};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(|_body: Bytes| async {
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "ok": true })),
        )
    });
    axum::serve(listener, app).await
}
