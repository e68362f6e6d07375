//! The appliance's hot path, wired: per camera, an ingest thread (decode, sample, resize) feeds a
//! bounded queue to a detect thread (detect, track, lifecycle, snapshot, commit). Everything per
//! frame is in-process and synchronous; committed events are broadcast to live subscribers (SSE).

mod lifecycle;
mod snapshot;

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Clock, Shutdown};
use aegis_config::{Backend, CameraConfig, Config};
use aegis_detect::{BackendKind, DetectError, ObjectDetector, PostProcess};
use aegis_domain::Tracker;
use aegis_ingest::{Frame, RgbConverter, SourceSpec, StreamIngest, StreamStatus};
use aegis_store::{StagedBlob, Store, StoreError, StoredEvent};
use aegis_track::{ByteTracker, TrackerParams};
use tokio::sync::broadcast;
use tracing::{error, info, info_span, warn};

pub use lifecycle::{Lifecycle, Pending};
pub use snapshot::encode_snapshot;

/// Frames waiting for the detector, per camera. Small on purpose: stale frames are worth less
/// than fresh ones, so a slow detector drops (and counts) rather than queues.
const QUEUE_FRAMES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("camera {camera}: {source}")]
    Detector { camera: String, source: DetectError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("media library: {0}")]
    Media(String),
}

/// A committed event as live subscribers see it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub stored: StoredEvent,
    /// When the frame behind this event was read from its source.
    pub read_at: Instant,
    /// Time the detector spent on that frame.
    pub inference: Duration,
}

/// The running appliance: its store, streams and live event feed.
pub struct Appliance {
    pub store: Arc<Store>,
    pub streams: Vec<Arc<StreamStatus>>,
    events: broadcast::Sender<LiveEvent>,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

impl Appliance {
    /// Opens the store, loads a detector per camera and starts every enabled camera.
    /// Fails before starting anything if a model cannot be loaded.
    pub fn start(
        config: &Config,
        ort_library: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Appliance, PipelineError> {
        aegis_ingest::init().map_err(|e| PipelineError::Media(e.to_string()))?;
        let store = Arc::new(Store::open(&config.storage.dir)?);
        let (events, _) = broadcast::channel(1024);
        let shutdown = Shutdown::new();
        let mut workers = Vec::new();
        for cam in config.cameras.iter().filter(|c| c.enabled) {
            let detector =
                load_detector(config, ort_library).map_err(|source| PipelineError::Detector {
                    camera: cam.name.clone(),
                    source,
                })?;
            workers.push((cam, detector));
        }
        let mut appliance = Appliance {
            store,
            streams: Vec::new(),
            events,
            shutdown,
            threads: Vec::new(),
        };
        for (cam, detector) in workers {
            appliance.start_camera(config, cam, detector, clock.clone())?;
        }
        Ok(appliance)
    }

    fn start_camera(
        &mut self,
        config: &Config,
        cam: &CameraConfig,
        detector: ObjectDetector,
        clock: Arc<dyn Clock>,
    ) -> Result<(), PipelineError> {
        let status = Arc::new(StreamStatus::new(&cam.name, &cam.url));
        let (tx, rx) = sync_channel(QUEUE_FRAMES);
        let spec = if cam.is_rtsp() {
            SourceSpec::Rtsp {
                url: cam.url.clone(),
                udp: cam.transport == aegis_config::RtspTransport::Udp,
                stall_timeout: Duration::from_secs_f64(cam.stall_timeout_s),
            }
        } else {
            SourceSpec::File {
                path: cam.url.strip_prefix("file://").unwrap_or(&cam.url).into(),
                looping: cam.looping,
                realtime: cam.realtime,
            }
        };
        let ingest = StreamIngest {
            spec,
            input_size: detector.input_size(),
            detect_fps: cam.detect_fps,
            status: status.clone(),
            backoff: Backoff::new(
                Duration::from_secs_f64(cam.reconnect_initial_s),
                Duration::from_secs_f64(cam.reconnect_max_s),
            ),
            clock,
        };
        let t = &config.tracker;
        let max_lost_frames = (t.buffer_s * cam.detect_fps).ceil().max(1.0) as u32;
        let worker = CameraWorker {
            detector,
            tracker: ByteTracker::new(TrackerParams {
                high_score: t.high_score,
                low_score: t.low_score,
                new_track_score: t.new_track_score,
                match_cost: t.match_cost,
                max_lost_frames,
                ..TrackerParams::default()
            }),
            lifecycle: Lifecycle::new(&cam.name, (config.events.update_interval_s * 1000.0) as i64),
            quality: config.events.snapshot_quality,
            store: self.store.clone(),
            events: self.events.clone(),
            status: status.clone(),
        };
        let shutdown = self.shutdown.clone();
        let name = cam.name.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name(format!("ingest-{name}"))
                .spawn(move || {
                    let _span = info_span!("ingest", stream = %name).entered();
                    ingest.run(tx, shutdown)
                })
                .map_err(PipelineError::Thread)?,
        );
        let name = cam.name.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name(format!("detect-{name}"))
                .spawn(move || {
                    let _span = info_span!("detect", stream = %name).entered();
                    worker.run(rx)
                })
                .map_err(PipelineError::Thread)?,
        );
        info!(stream = %cam.name, url = %aegis_base::redact_url(&cam.url), "camera started");
        self.streams.push(status);
        Ok(())
    }

    /// Live feed of committed events (for SSE): `subscribe()` to it. Slow subscribers lose the
    /// oldest and must catch up from the store.
    pub fn feed(&self) -> broadcast::Sender<LiveEvent> {
        self.events.clone()
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops every stream and waits for in-flight frames to be committed.
    pub fn stop(self) {
        self.shutdown.trigger();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn load_detector(config: &Config, ort_library: &Path) -> Result<ObjectDetector, DetectError> {
    let d = &config.detector;
    let kind = match d.backend {
        Backend::Ort => BackendKind::Ort,
        Backend::Tract => BackendKind::Tract,
    };
    ObjectDetector::load(&d.model, kind, d.threads, ort_library, |m| {
        PostProcess::new(m, d.min_score, &d.scores, d.labels.as_deref(), d.nms_iou)
    })
}

struct CameraWorker {
    detector: ObjectDetector,
    tracker: ByteTracker,
    lifecycle: Lifecycle,
    quality: u8,
    store: Arc<Store>,
    events: broadcast::Sender<LiveEvent>,
    status: Arc<StreamStatus>,
}

impl CameraWorker {
    fn run(mut self, rx: Receiver<Frame>) {
        // FFmpeg's scaler is not Send: it is made here, on the thread that uses it.
        let mut converter = RgbConverter::native();
        while let Ok(frame) = rx.recv() {
            if let Err(e) = self.process(&frame, &mut converter) {
                // A frame that cannot be processed is lost, not the stream; say so and go on.
                error!(error = %e, seq = frame.seq, "frame not processed");
            }
        }
    }

    fn process(&mut self, frame: &Frame, converter: &mut RgbConverter) -> Result<(), String> {
        let started = Instant::now();
        let detections = self
            .detector
            .detect(&frame.input, frame.width, frame.height)
            .map_err(|e| e.to_string())?;
        let inference = started.elapsed();
        self.status
            .detected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tracks = self.tracker.update(&detections);
        let mut pending = self.lifecycle.update(
            &tracks,
            self.tracker.ended(),
            frame.wall_ms,
            (frame.width, frame.height),
        );
        if pending.is_empty() {
            return Ok(());
        }
        let blobs = self.take_snapshots(frame, converter, &mut pending);
        let events: Vec<_> = pending.into_iter().map(|p| p.event).collect();
        let seqs = self
            .store
            .commit(&events, &blobs)
            .map_err(|e| e.to_string())?;
        for (seq, event) in seqs.into_iter().zip(events) {
            // No subscribers is fine: the events are in the store.
            let _ = self.events.send(LiveEvent {
                stored: StoredEvent { seq, event },
                read_at: frame.read_at,
                inference,
            });
        }
        Ok(())
    }

    /// Encodes and durably stages a snapshot for each event that wants one. A snapshot that
    /// fails is logged and the event goes without it: the event itself is never lost.
    fn take_snapshots(
        &mut self,
        frame: &Frame,
        converter: &mut RgbConverter,
        pending: &mut [Pending],
    ) -> Vec<StagedBlob> {
        if !pending.iter().any(|p| p.snapshot) {
            return Vec::new();
        }
        let rgb = match converter.convert(&frame.full) {
            Ok(rgb) => rgb,
            Err(e) => {
                warn!(error = %e, "snapshot conversion failed");
                return Vec::new();
            }
        };
        let mut blobs = Vec::new();
        for p in pending.iter_mut().filter(|p| p.snapshot) {
            let staged =
                encode_snapshot(&rgb, frame.width, frame.height, &p.event.bbox, self.quality)
                    .and_then(|jpeg| {
                        self.store
                            .stage_blob(&jpeg, "image/jpeg")
                            .map_err(|e| e.to_string())
                    });
            match staged {
                Ok(blob) => {
                    p.event.snapshot = Some(blob.urn.clone());
                    self.lifecycle
                        .set_snapshot(p.event.track_id, blob.urn.clone());
                    blobs.push(blob);
                }
                Err(e) => warn!(error = %e, track = p.event.track_id, "snapshot not stored"),
            }
        }
        blobs
    }
}
