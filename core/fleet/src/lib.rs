//! The fleet core's API. This first slice answers health, with the wire schemas it accepts, so
//! the `core` build of `aegis` runs and can be deployed and probed; the device registry, event
//! ingest over NATS and desired/reported configuration arrive with issue 4.

use aegis_base::Shutdown;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    role: &'static str,
    version: &'static str,
    /// Event schemas this core can ingest.
    event_schemas: [&'static str; 1],
}

pub fn router() -> Router {
    Router::new().route("/api/health", get(health))
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        role: "core",
        version: env!("CARGO_PKG_VERSION"),
        event_schemas: [aegis_proto::v1::EVENT_SCHEMA],
    })
}

/// Serves until `shutdown` is triggered.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}
