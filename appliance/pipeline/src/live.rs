//! The live view: the latest frame a camera's detector saw and the tracks on it, for the web
//! UI. The detect thread keeps a copy only while someone is watching, so an unwatched camera
//! pays nothing for it; the JPEG is encoded on request, once per frame however many watch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_domain::Track;
use aegis_ingest::{ff, RgbConverter};
use aegis_rules::TrackIn;
use serde::Serialize;

use crate::snapshot::encode_jpeg;

/// A viewer that has not asked for this long is gone; the detect thread stops copying frames.
const WATCH_FOR: Duration = Duration::from_secs(5);
/// JPEG quality of live frames: enough to see, small enough for 2+ fps over a slow link.
const LIVE_QUALITY: u8 = 70;

/// What a viewer draws over the frame: pixel boxes on a `width` × `height` image.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTracks {
    pub seq: u64,
    pub at_ms: i64,
    pub width: u32,
    pub height: u32,
    pub tracks: Vec<TrackIn>,
}

/// A frame's sequence number and its JPEG.
pub type LiveJpeg = (u64, Arc<Vec<u8>>);

struct Latest {
    tracks: Arc<LiveTracks>,
    picture: Arc<ff::frame::Video>,
    jpeg: Option<Arc<Vec<u8>>>,
}

/// One camera's live view, shared by its detect thread and the web handlers.
pub struct LiveView {
    created: Instant,
    /// When a viewer last asked, in ms since `created`.
    watched_ms: AtomicU64,
    latest: Mutex<Option<Latest>>,
}

impl Default for LiveView {
    fn default() -> Self {
        Self {
            created: Instant::now(),
            watched_ms: AtomicU64::new(0),
            latest: Mutex::new(None),
        }
    }
}

impl LiveView {
    fn since_created(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }

    fn watch(&self) {
        // Offset by WATCH_FOR so that 0 (never) is not "watched just now".
        let now = self.since_created() + WATCH_FOR.as_millis() as u64;
        self.watched_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the detect thread should publish frames (someone asked within `WATCH_FOR`).
    pub(crate) fn watched(&self) -> bool {
        let last = self.watched_ms.load(Ordering::Relaxed);
        last != 0 && self.since_created() < last
    }

    /// Called by the detect thread after each frame while `watched()`.
    pub(crate) fn publish(
        &self,
        seq: u64,
        at_ms: i64,
        picture: &ff::frame::Video,
        tracks: &[Track],
    ) {
        let view = LiveTracks {
            seq,
            at_ms,
            width: picture.width(),
            height: picture.height(),
            tracks: tracks.iter().map(crate::rules::track_in).collect(),
        };
        let latest = Latest {
            tracks: Arc::new(view),
            picture: Arc::new(picture.clone()),
            jpeg: None,
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(latest);
    }

    /// The tracks of the latest frame; `None` until one has been seen while watched.
    pub fn tracks(&self) -> Option<Arc<LiveTracks>> {
        self.watch();
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.as_ref().map(|l| l.tracks.clone())
    }

    /// The latest frame as JPEG with its sequence number (blocking: call off the async
    /// runtime). `None` until one has been seen while watched. Encoding happens outside the
    /// lock, so the detect thread never waits for it.
    pub fn jpeg(&self) -> Result<Option<LiveJpeg>, String> {
        self.watch();
        let (seq, picture) = {
            let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            match latest.as_ref() {
                None => return Ok(None),
                Some(Latest {
                    tracks,
                    jpeg: Some(jpeg),
                    ..
                }) => return Ok(Some((tracks.seq, jpeg.clone()))),
                Some(l) => (l.tracks.seq, l.picture.clone()),
            }
        };
        let rgb = RgbConverter::native()
            .convert(&picture)
            .map_err(|e| e.to_string())?;
        let jpeg = Arc::new(encode_jpeg(
            &rgb,
            picture.width(),
            picture.height(),
            LIVE_QUALITY,
        )?);
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = latest.as_mut().filter(|l| l.tracks.seq == seq) {
            l.jpeg = Some(jpeg.clone());
        }
        Ok(Some((seq, jpeg)))
    }
}
