//! The fleet core: the NATS hub the boxes connect to, event ingest from every device into the
//! core's database, the device registry, and the API over them (ADR 0007).

pub mod blobs;
pub mod db;
pub mod enrol;
pub mod pg;
mod sse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aegis_base::{Clock, Shutdown, SystemClock};
use aegis_sync::ingest::{self, HubAccess, IngestStatus};
use aegis_sync::{NatsServer, Role, ServerSpec};
use async_nats::jetstream::kv;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use db::{Database, SqliteDb};
use pg::PgDb;
use serde::{Deserialize, Serialize};

/// A device is online while its last heartbeat is younger than this.
pub const ONLINE_WITHIN_MS: i64 = 15_000;

/// `aegis core --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// The API's address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Holds the hub's JetStream store, and the SQLite database unless `database` is set.
    pub data: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host/db`); SQLite in `data` when absent.
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub hub: HubConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Where the core (and other clients) connect.
    #[serde(default = "default_hub_listen")]
    pub listen: SocketAddr,
    /// Where the boxes' leaf nodes connect.
    #[serde(default = "default_leaf_listen")]
    pub leaf_listen: SocketAddr,
    /// The nats-server executable (default: `AEGIS_NATS_SERVER`, else `nats-server` on PATH).
    #[serde(default)]
    pub nats_server: Option<PathBuf>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: default_hub_listen(),
            leaf_listen: default_leaf_listen(),
            nats_server: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

fn default_hub_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4222))
}

fn default_leaf_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7422))
}

impl CoreConfig {
    /// Reads and checks a config file; the error names the file and the field. A relative
    /// `data` is taken from the file's directory.
    pub fn load(path: &std::path::Path) -> Result<CoreConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let mut config: CoreConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            format!("{at}: {}", e.into_inner())
        })?;
        if config.data.is_relative() {
            config.data = path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(&config.data);
        }
        Ok(config)
    }
}

#[derive(Clone)]
pub struct CoreState {
    pub db: Arc<dyn Database>,
    pub ingest: Arc<IngestStatus>,
    /// The hub's JetStream, which holds each device's desired-config bucket.
    desired: async_nats::jetstream::Context,
    /// The core's connection to the hub, for requests to the boxes.
    bus: async_nats::Client,
    blobs: Arc<blobs::Blobs>,
    /// Ends the live event streams when the core stops.
    shutdown: Shutdown,
    hub: Arc<NatsServer>,
    hub_auth: Arc<HubAuth>,
}

/// A running core: its hub, ingest and state. The API is served with [`serve`].
pub struct Core {
    pub state: CoreState,
    hub: Arc<NatsServer>,
    ingest: tokio::task::JoinHandle<()>,
}

impl Core {
    /// Opens the database, starts the hub and ingest. Call inside a Tokio runtime.
    pub async fn start(config: &CoreConfig, shutdown: Shutdown) -> anyhow::Result<Core> {
        std::fs::create_dir_all(&config.data)?;
        let db: Arc<dyn Database> =
            match &config.database {
                Some(url) => Arc::new(PgDb::connect(url).await.map_err(|e| {
                    anyhow::anyhow!("PostgreSQL {}: {e}", aegis_base::redact_url(url))
                })?),
                None => {
                    let path = config.data.join("core.db");
                    Arc::new(
                        tokio::task::spawn_blocking(move || SqliteDb::open(&path))
                            .await?
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    )
                }
            };
        let d = db.clone();
        let (devices, keys) = tokio::task::spawn_blocking(move || {
            Ok::<_, aegis_sync::ingest::SinkError>((d.list_devices()?, d.device_keys()?))
        })
        .await?
        .map_err(|e| anyhow::anyhow!("cannot read the device registry: {e}"))?;
        // The core's own hub user, with a password made afresh at each start.
        let access = HubAccess {
            url: format!("nats://{}", config.hub.listen),
            user: "aegis-core".into(),
            password: enrol::random_hex(),
        };
        let hub_auth = HubAuth {
            leaf_listen: config.hub.leaf_listen,
            core: (access.user.clone(), access.password.clone()),
        };
        let spec = ServerSpec {
            binary: aegis_sync::default_binary(config.hub.nats_server.as_deref()),
            dir: config.data.join("hub"),
            listen: config.hub.listen,
            role: hub_auth.role(keys),
        };
        let hub = Arc::new(tokio::task::spawn_blocking(move || NatsServer::start(spec)).await??);
        let bus = access.connect("_aegis_core_bus").await?;
        let desired = async_nats::jetstream::new(bus.clone());
        let status = Arc::new(IngestStatus::default());
        let (sink, s) = (db.clone(), status.clone());
        let stop_streams = shutdown.clone();
        let ingest = tokio::spawn(async move {
            let ids = devices.into_iter().map(|d| d.id).collect();
            if let Err(e) = ingest::run(access, sink, ids, s, shutdown).await {
                tracing::error!(error = %e, "ingest stopped");
            }
        });
        tracing::info!(hub = %config.hub.listen, leaf = %config.hub.leaf_listen, "hub running");
        Ok(Core {
            state: CoreState {
                db,
                ingest: status,
                desired,
                bus,
                blobs: Arc::new(blobs::Blobs::new(config.data.join("blobs"))),
                shutdown: stop_streams,
                hub: hub.clone(),
                hub_auth: Arc::new(hub_auth),
            },
            hub,
            ingest,
        })
    }

    /// The hub's nats-server process id.
    pub fn hub_pid(&self) -> u32 {
        self.hub.pid()
    }

    /// Waits for ingest to stop (after `shutdown`), then stops the hub.
    pub async fn stop(self) {
        let _ = self.ingest.await;
        let hub = self.hub;
        let _ = tokio::task::spawn_blocking(move || hub.stop()).await;
    }
}

/// What the hub's config is made of, besides the enrolled devices.
pub struct HubAuth {
    leaf_listen: SocketAddr,
    core: (String, String),
}

impl HubAuth {
    fn role(&self, devices: Vec<aegis_sync::DeviceKey>) -> Role {
        Role::Hub {
            leaf_listen: self.leaf_listen,
            core: self.core.clone(),
            devices,
        }
    }
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    role: &'static str,
    version: &'static str,
    /// Event schemas this core can ingest.
    event_schemas: [&'static str; 1],
}

pub fn router(state: CoreState) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/api/health", get(health))
        .route("/api/devices", get(devices))
        .route("/api/events", get(events))
        .route("/api/events/stream", get(sse::stream))
        .route("/api/ingest", get(ingest_status))
        .route("/api/devices/{id}/config", get(get_config).put(put_config))
        .route("/api/devices/{id}/token", post(enrol::issue))
        .route("/api/devices/{id}/revoke", post(enrol::revoke))
        .route("/api/enrol", post(enrol::enrol))
        .route(
            "/api/devices/{id}/blobs/{urn}",
            get(blobs::get)
                .put(blobs::put)
                .layer(DefaultBodyLimit::max(16 << 20)),
        )
        .with_state(state)
}

/// The console: one page, embedded.
async fn console() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/console.html"))
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        role: "core",
        version: env!("CARGO_PKG_VERSION"),
        event_schemas: [aegis_proto::v1::EVENT_SCHEMA],
    })
}

/// An RFC 9457 problem.
pub(crate) fn problem(status: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Debug, Serialize)]
struct DeviceView {
    #[serde(flatten)]
    device: db::Device,
    online: bool,
}

async fn devices(State(s): State<CoreState>) -> Response {
    match s.with_db(|db| db.list_devices()).await {
        Ok(list) => {
            let now = SystemClock.now_ms();
            let views: Vec<DeviceView> = list
                .into_iter()
                .map(|device| DeviceView {
                    online: now - device.last_seen_ms < ONLINE_WITHIN_MS,
                    device,
                })
                .collect();
            Json(views).into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    device: Option<String>,
    camera: Option<String>,
    label: Option<String>,
    rule: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    cursor: Option<i64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct EventPage {
    events: Vec<db::CoreEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<i64>,
}

async fn events(
    State(s): State<CoreState>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return problem(StatusCode::BAD_REQUEST, "limit must be 1..=1000".into());
    }
    let q = db::Query {
        device: p.device,
        camera: p.camera,
        label: p.label,
        rule: p.rule,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        before: p.cursor,
        after: None,
        limit,
    };
    match s.with_db(move |db| db.events(&q)).await {
        Ok(events) => {
            let next_cursor = (events.len() == limit)
                .then(|| events.last().map(|e| e.seq))
                .flatten();
            Json(EventPage {
                events,
                next_cursor,
            })
            .into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    /// The cameras, as in the appliance's config file.
    cameras: Vec<serde_json::Value>,
    /// The rules file: zones, lines, rules.
    rules: serde_json::Map<String, serde_json::Value>,
    /// The model manifest to use (a file name in the box's model directory); absent: keep it.
    #[serde(default)]
    model: Option<String>,
}

/// A device's desired config and what it last reported of it.
async fn get_config(State(s): State<CoreState>, Path(id): Path<String>) -> Response {
    let found = s
        .with_db(move |db| {
            let desired = db.desired(&id)?;
            let reported = db
                .list_devices()?
                .into_iter()
                .find(|d| d.id == id)
                .map(|d| d.health["config"].clone());
            Ok((desired, reported))
        })
        .await;
    match found {
        Ok((desired, reported)) => Json(serde_json::json!({
            "desired": desired,
            "reported": reported.unwrap_or_default(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

/// Records a new desired config (the next version) and hands it to the hub for the box, which
/// applies it now, or when it next connects.
async fn put_config(
    State(s): State<CoreState>,
    Path(id): Path<String>,
    body: Result<Json<ConfigBody>, JsonRejection>,
) -> Response {
    if !aegis_proto::subject::valid_device_id(&id) {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no device can be called {id:?}"),
        );
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    let desired = db::NewDesired {
        device: id,
        cameras: serde_json::Value::Array(body.cameras),
        rules: serde_json::Value::Object(body.rules),
        model: body.model,
    };
    match s.put_desired(desired).await {
        Ok(desired) => Json(desired).into_response(),
        Err(DesiredError::Database(e)) => internal(e),
        Err(e @ DesiredError::Hub { .. }) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// Why a desired config could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("{0}")]
    Database(String),
    #[error("version {version} is recorded but the hub did not take it: {error}")]
    Hub { version: u64, error: String },
}

impl CoreState {
    /// Runs `f` on the database off the async threads; any failure as text.
    pub(crate) async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Database) -> Result<T, aegis_sync::ingest::SinkError> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(db.as_ref()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Records a new desired config for `device` (the next version) and puts it in the
    /// device's bucket on the hub, where the box finds it now or when it next connects.
    pub async fn put_desired(
        &self,
        new: db::NewDesired,
    ) -> Result<aegis_proto::v1::Desired, DesiredError> {
        let desired = self
            .with_db(move |db| db.put_desired(&new))
            .await
            .map_err(DesiredError::Database)?;
        let bytes = serde_json::to_vec(&desired).expect("desired configs always serialise");
        let hub = |error: String| DesiredError::Hub {
            version: desired.version,
            error,
        };
        let bucket = self
            .desired
            .create_or_update_key_value(kv::Config {
                bucket: aegis_proto::subject::desired_bucket(&desired.device),
                history: 1,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| hub(e.to_string()))?;
        bucket
            .put(aegis_proto::subject::DESIRED_KEY, bytes.into())
            .await
            .map_err(|e| hub(e.to_string()))?;
        Ok(desired)
    }
}

async fn ingest_status(State(s): State<CoreState>) -> Json<serde_json::Value> {
    let i = &s.ingest;
    Json(serde_json::json!({
        "applied": i.applied.load(Ordering::Relaxed),
        "duplicates": i.duplicates.load(Ordering::Relaxed),
        "rejected": i.rejected.load(Ordering::Relaxed),
        "heartbeats": i.heartbeats.load(Ordering::Relaxed),
    }))
}

/// Serves the API until `shutdown` is triggered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: CoreState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}
