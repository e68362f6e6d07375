//! The on-box HTTP API and UI (axum): health, login, streams, events with cursor pagination, a
//! live event stream (SSE, resumable with `Last-Event-ID`), blobs by URN, cameras, zones, lines
//! and rules (changed live), each camera's latest frame and tracks, system figures, metrics,
//! and the embedded single-page UI. Everything but health and the login page needs a session
//! (`auth`). Every error is an RFC 9457 problem document.

mod api;
mod auth;
mod metrics;
mod problem;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;

use aegis_base::Shutdown;
use aegis_domain::BlobUrn;
use aegis_ingest::{StreamState, StreamStatusView};
use aegis_pipeline::{Appliance, LiveEvent, Settings};
use aegis_store::{EventQuery, Store, StoredEvent};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use auth::{ensure_admin, INITIAL_PASSWORD_FILE};
pub use problem::{ApiError, Body};

/// Request bodies larger than this are refused (413): every body here is a small JSON document.
const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub appliance: Arc<Appliance>,
    store: Arc<Store>,
    live: broadcast::Sender<LiveEvent>,
    shutdown: Shutdown,
    /// The config file behind the appliance, for changes through the API.
    settings: Option<Arc<Settings>>,
    /// The MQTT publisher's counters, when one runs.
    mqtt: Option<Arc<aegis_mqtt::MqttStatus>>,
    /// The sync forwarder's counters, when the box syncs to a core.
    sync: Option<Arc<aegis_sync::forward::ForwardStatus>>,
    auth: Arc<auth::Auth>,
    cpu: Arc<api::CpuSampler>,
}

impl WebState {
    pub fn new(
        appliance: Arc<Appliance>,
        settings: Option<Arc<Settings>>,
        mqtt: Option<Arc<aegis_mqtt::MqttStatus>>,
    ) -> Self {
        Self {
            store: appliance.store.clone(),
            live: appliance.feed(),
            shutdown: appliance.shutdown_handle(),
            appliance,
            settings,
            mqtt,
            sync: None,
            auth: Arc::default(),
            cpu: Arc::default(),
        }
    }

    /// Shows the sync forwarder's counters in `/metrics`.
    pub fn with_sync(mut self, status: Arc<aegis_sync::forward::ForwardStatus>) -> Self {
        self.sync = Some(status);
        self
    }
}

/// The routes, registered in one place so that the OpenAPI document can be checked against
/// exactly what the router serves.
struct Routes {
    router: Router<WebState>,
    /// (method, path) of every route.
    served: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn route<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, WebState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        let name = match method {
            Method::GET => "get",
            Method::POST => "post",
            Method::PUT => "put",
            Method::DELETE => "delete",
            _ => unreachable!("only these are used"),
        };
        self.served.push((name, path));
        self
    }

    fn get<H: axum::handler::Handler<T, WebState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
    ) -> Self {
        self.route(Method::GET, path, handler)
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        served: Vec::new(),
    }
    .get("/", index)
    .get("/login", login_page)
    .get("/api/health", health)
    .route(Method::POST, "/api/auth/login", auth::login)
    .route(Method::POST, "/api/auth/logout", auth::logout)
    .get("/api/auth/session", auth::session)
    .route(Method::POST, "/api/auth/password", auth::change_password)
    .get("/api/streams", streams)
    .get("/api/events", events)
    .get("/api/events/stream", sse::stream)
    .get("/api/blobs/{urn}", blob)
    .get("/api/cameras", api::cameras)
    .route(Method::POST, "/api/cameras", api::create_camera)
    .route(Method::PUT, "/api/cameras/{name}", api::put_camera)
    .route(Method::DELETE, "/api/cameras/{name}", api::delete_camera)
    .get("/api/cameras/{name}/frame.jpg", api::frame)
    .get("/api/cameras/{name}/tracks", api::tracks)
    .get("/api/rules", api::rules)
    .route(Method::PUT, "/api/zones/{name}", api::put_zone)
    .route(Method::DELETE, "/api/zones/{name}", api::delete_zone)
    .route(Method::PUT, "/api/lines/{name}", api::put_line)
    .route(Method::DELETE, "/api/lines/{name}", api::delete_line)
    .route(Method::PUT, "/api/rules/{name}", api::put_rule)
    .route(Method::DELETE, "/api/rules/{name}", api::delete_rule)
    .get("/api/system", api::system)
    .get("/api/openapi.json", openapi)
    .get("/metrics", metrics::metrics)
}

pub fn router(state: WebState) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::Body(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Serves until shutdown is triggered.
pub async fn serve(listener: tokio::net::TcpListener, state: WebState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.triggered().await })
    .await
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

async fn login_page() -> Html<&'static str> {
    Html(include_str!("../assets/login.html"))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    streams_online: usize,
    streams_total: usize,
}

async fn health(State(s): State<WebState>) -> Json<Health> {
    let streams = s.appliance.streams();
    let online = streams
        .iter()
        .filter(|st| st.view().state == StreamState::Online)
        .count();
    Json(Health {
        status: if online == streams.len() {
            "ok"
        } else {
            "degraded"
        },
        version: env!("CARGO_PKG_VERSION"),
        streams_online: online,
        streams_total: streams.len(),
    })
}

async fn streams(State(s): State<WebState>) -> Json<Vec<StreamStatusView>> {
    Json(s.appliance.streams().iter().map(|st| st.view()).collect())
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
    /// Only events at or after this time (ms since the Unix epoch).
    since_ms: Option<i64>,
    /// Only events before this time.
    until_ms: Option<i64>,
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
        since_ms: p.since_ms,
        until_ms: p.until_ms,
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

    /// The OpenAPI document and the router agree, method and path for each route. (The
    /// appliance tests check that each one answers on a real server.)
    #[test]
    fn the_openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(|m| (m.clone(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut served: Vec<(String, String)> = routes()
            .served
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
