//! Snapshots on demand. The console asks the core for a device's snapshot; if the core does
//! not have it yet, it asks the box over the bus (a small request with a one-time upload
//! token), and the box uploads the bytes over HTTP. The core keeps them, so the next look is
//! local. Bytes never travel on the bus.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::{internal, problem, CoreState};

/// How long a look at a snapshot waits for the box to send it.
const UPLOAD_WAIT: Duration = Duration::from_secs(10);

/// Snapshots are JPEG; nothing else is taken.
const JPEG: &str = "image/jpeg";

/// Where snapshots are kept, and the uploads being waited for.
pub struct Blobs {
    dir: PathBuf,
    pending: Mutex<HashMap<(String, String), Pending>>,
}

struct Pending {
    token: String,
    /// `Some(true)` once the bytes are here, `Some(false)` if the box has no such snapshot.
    answer: watch::Sender<Option<bool>>,
}

impl Blobs {
    pub fn new(dir: PathBuf) -> Blobs {
        Blobs {
            dir,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Ends a pending upload: the bytes are here, or the box has none.
    fn answer(&self, key: &(String, String), arrived: bool) {
        let done = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(p) = done {
            p.answer.send_replace(Some(arrived));
        }
    }

    /// The file for a device's snapshot, if `urn` can name one.
    fn path(&self, device: &str, urn: &str) -> Option<PathBuf> {
        let id = urn.strip_prefix("urn:aegis:blob:")?;
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        (aegis_proto::subject::valid_device_id(device) && plain(id))
            .then(|| self.dir.join(device).join(format!("{id}.jpg")))
    }
}

fn jpeg(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, JPEG),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /api/devices/{id}/blobs/{urn}`: the snapshot, fetched from the box the first time.
pub(crate) async fn get(
    State(s): State<CoreState>,
    Path((device, urn)): Path<(String, String)>,
) -> Response {
    let Some(path) = s.blobs.path(&device, &urn) else {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("{urn:?} is not a snapshot URN"),
        );
    };
    if let Ok(bytes) = tokio::fs::read(&path).await {
        return jpeg(bytes);
    }
    let (token, mut answer) = {
        let mut pending = s.blobs.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = pending
            .entry((device.clone(), urn.clone()))
            .or_insert_with(|| Pending {
                token: crate::enrol::random_hex(),
                answer: watch::channel(None).0,
            });
        (p.token.clone(), p.answer.subscribe())
    };
    let request = serde_json::to_vec(&aegis_proto::v1::BlobRequest { urn, token })
        .expect("requests always serialise");
    if let Err(e) = s
        .bus
        .publish(aegis_proto::subject::blob_requests(&device), request.into())
        .await
    {
        return internal(e);
    }
    let answer = tokio::time::timeout(UPLOAD_WAIT, answer.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|a| *a));
    match (answer, tokio::fs::read(&path).await) {
        (Some(true), Ok(bytes)) => jpeg(bytes),
        (Some(false), _) => problem(
            StatusCode::NOT_FOUND,
            format!("{device} has no such snapshot (lost, or deleted by retention)"),
        ),
        _ => problem(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{device} did not send the snapshot within {UPLOAD_WAIT:?} (offline?)"),
        ),
    }
}

/// `PUT /api/devices/{id}/blobs/{urn}`: a box uploads a snapshot the core asked for, with the
/// request's one-time token; or, with no body and `X-Aegis-Missing: true`, says it has none.
pub(crate) async fn put(
    State(s): State<CoreState>,
    Path((device, urn)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(path) = s.blobs.path(&device, &urn) else {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("{urn:?} is not a snapshot URN"),
        );
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = (device, urn);
    let expected = {
        let pending = s.blobs.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(&key).map(|p| p.token.clone())
    };
    if expected.is_none() || bearer != expected.as_deref() {
        return problem(
            StatusCode::FORBIDDEN,
            "no upload of this snapshot was asked for with that token".into(),
        );
    }
    if headers.contains_key(aegis_proto::v1::BLOB_MISSING_HEADER) && body.is_empty() {
        s.blobs.answer(&key, false);
        return StatusCode::NO_CONTENT.into_response();
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some(JPEG)
    {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "snapshots are image/jpeg".into(),
        );
    }
    let dir = path
        .parent()
        .expect("snapshot paths have a device directory");
    let written = tokio::task::spawn_blocking({
        let (dir, path) = (dir.to_owned(), path.clone());
        move || {
            std::fs::create_dir_all(&dir)?;
            aegis_base::write_durably(&path.with_extension("tmp"), &path, &body)
        }
    })
    .await;
    match written {
        Ok(Ok(())) => {
            s.blobs.answer(&key, true);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
