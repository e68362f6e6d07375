//! Configuration and live-view endpoints: cameras, zones, lines and rules (changed without a
//! restart, through [`Settings`]), each camera's latest frame and tracks, and the system page's
//! figures.

use std::sync::{Arc, Mutex};

use aegis_pipeline::{Change, LiveTracks, RulesSection, Settings};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::{ApiError, Body, WebState};

fn settings(s: &WebState) -> Result<Arc<Settings>, ApiError> {
    s.settings.clone().ok_or_else(|| {
        ApiError::Conflict("this appliance was started without a config file to change".into())
    })
}

/// Runs a settings change off the async runtime (it may load a model or join threads).
async fn change(
    s: &WebState,
    f: impl FnOnce(&Settings) -> Result<(), aegis_pipeline::SettingsError> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    let settings = settings(s)?;
    tokio::task::spawn_blocking(move || f(&settings)).await??;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn cameras(
    State(s): State<WebState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let settings = settings(&s)?;
    Ok(Json(
        tokio::task::spawn_blocking(move || settings.cameras()).await??,
    ))
}

pub(crate) async fn create_camera(
    State(s): State<WebState>,
    Body(body): Body<serde_json::Value>,
) -> Result<StatusCode, ApiError> {
    let name = body
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| {
            ApiError::Invalid(vec![aegis_config::FieldError {
                path: "name".into(),
                message: "missing".into(),
            }])
        })?
        .to_owned();
    change(&s, move |st| st.change_camera(&name, Change::Create(body)))
        .await
        .map(|_| StatusCode::CREATED)
}

pub(crate) async fn put_camera(
    State(s): State<WebState>,
    Path(name): Path<String>,
    Body(body): Body<serde_json::Value>,
) -> Result<StatusCode, ApiError> {
    change(&s, move |st| st.change_camera(&name, Change::Put(body))).await
}

pub(crate) async fn delete_camera(
    State(s): State<WebState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&s, move |st| st.change_camera(&name, Change::Delete)).await
}

pub(crate) async fn rules(State(s): State<WebState>) -> Result<Json<serde_json::Value>, ApiError> {
    let settings = settings(&s)?;
    Ok(Json(
        tokio::task::spawn_blocking(move || settings.rules()).await??,
    ))
}

/// PUT and DELETE of one zone, line or rule.
macro_rules! rules_item {
    ($put:ident, $delete:ident, $section:expr) => {
        pub(crate) async fn $put(
            State(s): State<WebState>,
            Path(name): Path<String>,
            Body(body): Body<serde_json::Value>,
        ) -> Result<StatusCode, ApiError> {
            change(&s, move |st| {
                st.change_rules_item($section, &name, Change::Put(body))
            })
            .await
        }

        pub(crate) async fn $delete(
            State(s): State<WebState>,
            Path(name): Path<String>,
        ) -> Result<StatusCode, ApiError> {
            change(&s, move |st| {
                st.change_rules_item($section, &name, Change::Delete)
            })
            .await
        }
    };
}

rules_item!(put_zone, delete_zone, RulesSection::Zones);
rules_item!(put_line, delete_line, RulesSection::Lines);
rules_item!(put_rule, delete_rule, RulesSection::Rules);

fn live_view(s: &WebState, camera: &str) -> Result<Arc<aegis_pipeline::LiveView>, ApiError> {
    s.appliance
        .live(camera)
        .ok_or_else(|| ApiError::NotFound(format!("no running camera {camera:?}")))
}

/// The latest frame. The first request starts the camera publishing frames, so it may answer
/// 404 until the detector has seen one.
pub(crate) async fn frame(
    State(s): State<WebState>,
    Path(camera): Path<String>,
) -> Result<Response, ApiError> {
    let live = live_view(&s, &camera)?;
    let (seq, jpeg) = tokio::task::spawn_blocking(move || live.jpeg())
        .await?
        .map_err(ApiError::Internal)?
        .ok_or_else(|| ApiError::NotFound(format!("{camera}: no frame yet; try again")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("x-frame-seq"),
                seq.to_string(),
            ),
        ],
        jpeg.as_ref().clone(),
    )
        .into_response())
}

/// The tracks on the latest frame, in its pixels.
pub(crate) async fn tracks(
    State(s): State<WebState>,
    Path(camera): Path<String>,
) -> Result<Json<LiveTracks>, ApiError> {
    live_view(&s, &camera)?
        .tracks()
        .map(|t| Json(LiveTracks::clone(&t)))
        .ok_or_else(|| ApiError::NotFound(format!("{camera}: no frame yet; try again")))
}

#[derive(Serialize)]
pub(crate) struct System {
    /// Share of the host's CPU in use since the previous request (0..1), all cores.
    cpu: Option<f64>,
    memory_total_bytes: Option<u64>,
    memory_available_bytes: Option<u64>,
    process_rss_bytes: Option<u64>,
    disk_free_bytes: u64,
    store_bytes: u64,
    outbox_backlog: u64,
    streams: Vec<StreamFigures>,
}

#[derive(Serialize)]
struct StreamFigures {
    name: String,
    state: aegis_ingest::StreamState,
    fps: f64,
    frames_dropped: u64,
    frames_detected: u64,
    detect_mean_ms: Option<f64>,
    /// An upper bound (a histogram bucket's).
    detect_p95_ms: Option<f64>,
}

/// The host's CPU ticks at the previous request.
#[derive(Default)]
pub struct CpuSampler(Mutex<Option<(u64, u64)>>);

impl CpuSampler {
    fn share(&self) -> Option<f64> {
        let now = aegis_base::proc::host_cpu_ticks();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last.replace(now)?;
        let (busy, total) = (now.0 - previous.0, now.1 - previous.1);
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

pub(crate) async fn system(State(s): State<WebState>) -> Result<Json<System>, ApiError> {
    let store = s.store.clone();
    let (disk_free, size, backlog) = tokio::task::spawn_blocking(move || {
        Ok::<_, aegis_store::StoreError>((
            store.disk_free()?,
            store.size()?,
            store.outbox_backlog()?,
        ))
    })
    .await??;
    let (memory_total_bytes, memory_available_bytes) = aegis_base::proc::host_memory();
    let streams = s
        .appliance
        .streams()
        .iter()
        .map(|st| {
            let v = st.view();
            let h = st.detect_latency.snapshot();
            StreamFigures {
                name: v.name,
                state: v.state,
                fps: v.fps,
                frames_dropped: v.frames_dropped,
                frames_detected: v.frames_detected,
                detect_mean_ms: (h.count > 0).then(|| h.sum_seconds / h.count as f64 * 1e3),
                detect_p95_ms: h.quantile(0.95).map(|b| b * 1e3),
            }
        })
        .collect();
    Ok(Json(System {
        cpu: s.cpu.share(),
        memory_total_bytes,
        memory_available_bytes,
        process_rss_bytes: aegis_base::proc::process_memory().0,
        disk_free_bytes: disk_free,
        store_bytes: size,
        outbox_backlog: backlog,
        streams,
    }))
}
