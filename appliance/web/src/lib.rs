//! The on-box HTTP API (axum): health, streams, events with cursor pagination, a live event
//! stream (SSE, resumable with `Last-Event-ID`), blobs by URN, and a small status page.
//! Every error is an RFC 9457 problem document.

mod metrics;
mod problem;
mod sse;

use std::sync::Arc;

use aegis_base::Shutdown;
use aegis_domain::BlobUrn;
use aegis_ingest::{StreamState, StreamStatus, StreamStatusView};
use aegis_pipeline::LiveEvent;
use aegis_store::{EventQuery, Store, StoredEvent};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use problem::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub store: Arc<Store>,
    pub streams: Vec<Arc<StreamStatus>>,
    pub live: broadcast::Sender<LiveEvent>,
    pub shutdown: Shutdown,
    /// The MQTT publisher's counters, when one runs.
    pub mqtt: Option<Arc<aegis_mqtt::MqttStatus>>,
}

/// The routes, registered in one place so that the OpenAPI document can be checked against
/// exactly what the router serves.
struct Routes {
    router: Router<WebState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn get<H, T>(mut self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, WebState>,
        T: 'static,
    {
        self.router = self.router.route(path, get(handler));
        self.paths.push(path);
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        paths: Vec::new(),
    }
    .get("/", index)
    .get("/api/health", health)
    .get("/api/streams", streams)
    .get("/api/events", events)
    .get("/api/events/stream", sse::stream)
    .get("/api/blobs/{urn}", blob)
    .get("/api/openapi.json", openapi)
    .get("/metrics", metrics::metrics)
}

pub fn router(state: WebState) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}

const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Serves until shutdown is triggered.
pub async fn serve(listener: tokio::net::TcpListener, state: WebState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    streams_online: usize,
    streams_total: usize,
}

async fn health(State(s): State<WebState>) -> Json<Health> {
    let online = s
        .streams
        .iter()
        .filter(|st| st.view().state == StreamState::Online)
        .count();
    Json(Health {
        status: if online == s.streams.len() {
            "ok"
        } else {
            "degraded"
        },
        version: env!("CARGO_PKG_VERSION"),
        streams_online: online,
        streams_total: s.streams.len(),
    })
}

async fn streams(State(s): State<WebState>) -> Json<Vec<StreamStatusView>> {
    Json(s.streams.iter().map(|st| st.view()).collect())
}

const MAX_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    stream: Option<String>,
    label: Option<String>,
    /// Only events this rule raised.
    rule: Option<String>,
}

#[derive(Serialize)]
struct EventsPage {
    events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

async fn events(
    State(s): State<WebState>,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!("limit must be 1-{MAX_PAGE}")));
    }
    let before = p
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::BadRequest(format!("invalid cursor {c:?}")))
        })
        .transpose()?;
    let q = EventQuery {
        stream: p.stream,
        label: p.label,
        rule: p.rule,
        before,
        after: None,
        limit,
    };
    let store = s.store.clone();
    let events = tokio::task::spawn_blocking(move || store.events(&q)).await??;
    let next_cursor = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(EventsPage {
        events,
        next_cursor,
    }))
}

async fn blob(State(s): State<WebState>, Path(urn): Path<String>) -> Result<Response, ApiError> {
    let urn = BlobUrn::parse(&urn).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let store = s.store.clone();
    let lookup = urn.clone();
    let info = tokio::task::spawn_blocking(move || store.blob(&lookup))
        .await??
        .ok_or_else(|| ApiError::NotFound(format!("no blob {urn}")))?;
    let bytes = tokio::fs::read(&info.path)
        .await
        .map_err(|e| ApiError::Internal(format!("blob {urn} is unreadable: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, info.content_type),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
            (header::ETAG, format!("\"{}\"", info.sha256)),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document and the router agree, path for path, and every documented path
    /// answers on a real server (not with the fallback's "no such route").
    #[tokio::test]
    async fn the_openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut served = routes().paths;
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);

        let dir = tempfile::tempdir().unwrap();
        let (live, _) = broadcast::channel(4);
        let state = WebState {
            store: Arc::new(Store::open(dir.path()).unwrap()),
            streams: Vec::new(),
            live,
            shutdown: Shutdown::new(),
            mqtt: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, state.clone()));
        let example = "urn:aegis:blob:01a20d9b-c127-764e-99a2-022f0aec4881";
        for path in served {
            if path == "/api/events/stream" {
                continue; // an endless stream; the appliance tests read it
            }
            let url = format!("http://{addr}{}", path.replace("{urn}", example));
            let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
            assert!(!body.contains("no such route"), "{path} is not served");
        }
        state.shutdown.trigger();
    }
}
