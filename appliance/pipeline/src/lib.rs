//! The appliance's hot path, wired: per camera, an ingest thread (decode, sample, resize) feeds a
//! bounded queue to a detect thread (detect, track, lifecycle, commit). Everything per frame is
//! in-process and synchronous; committed events are broadcast to live subscribers (SSE). One
//! snapshot thread, shared by the cameras, encodes and stores snapshots after the events that
//! name them are committed.

mod lifecycle;
mod rules;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Clock, Shutdown};
use aegis_config::{Backend, CameraConfig, Config};
use aegis_detect::{BackendKind, DetectError, ObjectDetector, PostProcess};
use aegis_domain::{BlobUrn, Tracker};
use aegis_ingest::{Frame, SourceSpec, StreamIngest, StreamStatus};
use aegis_store::{Store, StoreError, StoredEvent};
use aegis_track::{ByteTracker, TrackerParams};
use tokio::sync::broadcast;
use tracing::{error, info, info_span};

pub use lifecycle::{Lifecycle, Pending};
pub use snapshot::encode_snapshot;
use snapshot::SnapshotJob;

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
    #[error("rules file {path}: {reason}")]
    Rules { path: PathBuf, reason: String },
}

/// A committed event as live subscribers see it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub stored: StoredEvent,
    /// When the frame behind this event was read from its source.
    pub read_at: Instant,
    /// Time the decoder spent on that frame.
    pub decode: Duration,
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
        let recovered = store.recover_snapshots()?;
        if recovered != aegis_store::SnapshotRecovery::default() {
            info!(
                adopted = recovered.adopted,
                lost = recovered.lost,
                "snapshots interrupted by a crash: complete files kept, the rest unlinked"
            );
        }
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
        let rules = match &config.rules {
            Some(path) => {
                let labels: Vec<String> = workers
                    .first()
                    .map(|(_, d)| d.labels().iter().map(|l| l.to_string()).collect())
                    .unwrap_or_default();
                Some(load_rules(path, &labels)?)
            }
            None => None,
        };
        let mut appliance = Appliance {
            store,
            streams: Vec::new(),
            events,
            shutdown,
            threads: Vec::new(),
        };
        let (snapshots, jobs) = sync_channel(snapshot::QUEUE_JOBS);
        let (store, quality) = (appliance.store.clone(), config.events.snapshot_quality);
        appliance.spawn("snapshots", info_span!("snapshots"), move || {
            snapshot::run(jobs, store, quality)
        })?;
        for (cam, detector) in workers {
            let rules = rules.clone().map(aegis_rules::Engine::new);
            appliance.start_camera(
                config,
                cam,
                detector,
                rules,
                snapshots.clone(),
                clock.clone(),
            )?;
        }
        let s = &config.storage;
        if s.max_age_days.is_some() || s.max_size_mb.is_some() {
            let retention = Retention {
                store: appliance.store.clone(),
                max_age_ms: s.max_age_days.map(|d| (d * 86_400_000.0) as i64),
                max_bytes: s.max_size_mb.map(|mb| mb * 1_000_000),
                clock,
            };
            let shutdown = appliance.shutdown.clone();
            appliance.spawn("retention", info_span!("retention"), move || {
                retention.run(shutdown)
            })?;
        }
        Ok(appliance)
    }

    fn start_camera(
        &mut self,
        config: &Config,
        cam: &CameraConfig,
        detector: ObjectDetector,
        rules: Option<aegis_rules::Engine>,
        snapshots: SyncSender<SnapshotJob>,
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
        let paced = spec.is_paced();
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
            rules,
            snapshots,
            paced,
            store: self.store.clone(),
            events: self.events.clone(),
            status: status.clone(),
        };
        let shutdown = self.shutdown.clone();
        let name = &cam.name;
        self.spawn(
            &format!("ingest-{name}"),
            info_span!("ingest", stream = %name),
            move || ingest.run(tx, shutdown),
        )?;
        self.spawn(
            &format!("detect-{name}"),
            info_span!("detect", stream = %name),
            move || worker.run(rx),
        )?;
        info!(stream = %cam.name, url = %aegis_base::redact_url(&cam.url), "camera started");
        self.streams.push(status);
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        span: tracing::Span,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), PipelineError> {
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _span = span.entered();
                body()
            })
            .map_err(PipelineError::Thread)?;
        self.threads.push(thread);
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

    /// Stops every stream and waits for in-flight frames and snapshots to be committed.
    pub fn stop(self) {
        self.shutdown.trigger();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Reads and validates a rules file against the model's labels.
fn load_rules(path: &Path, labels: &[String]) -> Result<aegis_rules::RuleSet, PipelineError> {
    let fail = |reason: String| PipelineError::Rules {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    aegis_rules::RuleSet::parse(&text, Some(labels)).map_err(|e| fail(e.to_string()))
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

/// How often retention runs (and once at start-up).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

struct Retention {
    store: Arc<Store>,
    max_age_ms: Option<i64>,
    max_bytes: Option<u64>,
    clock: Arc<dyn Clock>,
}

impl Retention {
    fn run(self, shutdown: Shutdown) {
        loop {
            let older_than = self.max_age_ms.map(|age| self.clock.now_ms() - age);
            match self.store.prune(older_than, self.max_bytes) {
                Ok(r) if r.events > 0 => info!(
                    events = r.events,
                    snapshots = r.blobs,
                    bytes = r.blob_bytes,
                    unsynced = r.unsynced,
                    "retention"
                ),
                Ok(_) => {}
                Err(e) => error!(error = %e, "retention failed; will try again"),
            }
            if shutdown.wait_timeout(RETENTION_EVERY) {
                return;
            }
        }
    }
}

struct CameraWorker {
    detector: ObjectDetector,
    tracker: ByteTracker,
    lifecycle: Lifecycle,
    /// This camera's rules, if any: their events join the object events of the same frame.
    rules: Option<aegis_rules::Engine>,
    snapshots: SyncSender<SnapshotJob>,
    /// Frames come at the source's pace: snapshots are dropped rather than waited for.
    paced: bool,
    store: Arc<Store>,
    events: broadcast::Sender<LiveEvent>,
    status: Arc<StreamStatus>,
}

impl CameraWorker {
    fn run(mut self, rx: Receiver<Frame>) {
        while let Ok(frame) = rx.recv() {
            let seq = frame.seq;
            if let Err(e) = self.process(frame) {
                // A frame that cannot be processed is lost, not the stream; say so and go on.
                error!(error = %e, seq, "frame not processed");
            }
        }
    }

    fn process(&mut self, frame: Frame) -> Result<(), String> {
        let started = Instant::now();
        let detections = self
            .detector
            .detect(&frame.input, frame.width, frame.height)
            .map_err(|e| e.to_string())?;
        let inference = started.elapsed();
        self.status.detected.fetch_add(1, Ordering::Relaxed);
        self.status.detect_latency.observe(inference);
        let tracks = self.tracker.update(&detections);
        let frame_size = (frame.width, frame.height);
        let mut pending =
            self.lifecycle
                .update(&tracks, self.tracker.ended(), frame.wall_ms, frame_size);
        if let Some(engine) = &mut self.rules {
            let input =
                rules::track_frame(self.status.name(), &frame, &tracks, self.tracker.ended());
            for hit in engine.update(&input) {
                pending.push(rules::pending(hit, &tracks, frame_size));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let (read_at, decode) = (frame.read_at, frame.decoded_at - frame.read_at);
        let job = self.name_snapshots(frame, &mut pending);
        let mut events: Vec<_> = pending.into_iter().map(|p| p.event).collect();
        let seqs = self.store.commit(&events).map_err(|e| e.to_string())?;
        if let Some(job) = job {
            self.queue_snapshots(job, &mut events);
        }
        for (seq, event) in seqs.into_iter().zip(events) {
            // No subscribers is fine: the events are in the store.
            let _ = self.events.send(LiveEvent {
                stored: StoredEvent { seq, event },
                read_at,
                decode,
                inference,
            });
        }
        Ok(())
    }

    /// Names a snapshot for each event that wants one; the job is queued once they are committed.
    fn name_snapshots(&self, frame: Frame, pending: &mut [Pending]) -> Option<SnapshotJob> {
        let shots: Vec<_> = pending
            .iter_mut()
            .filter(|p| p.snapshot)
            .map(|p| {
                let urn = BlobUrn::new(uuid::Uuid::now_v7());
                p.event.snapshot = Some(urn.clone());
                (urn, p.event.bbox)
            })
            .collect();
        (!shots.is_empty()).then(|| SnapshotJob {
            frame,
            shots,
            status: self.status.clone(),
        })
    }

    /// Hands committed events' snapshots to the snapshot thread. With its queue full, a paced
    /// source does not wait: the snapshots are counted as lost and unlinked from their events.
    fn queue_snapshots(&mut self, job: SnapshotJob, events: &mut [aegis_domain::Event]) {
        let urns: Vec<_> = job.shots.iter().map(|(urn, _)| urn.clone()).collect();
        let named = |e: &aegis_domain::Event| e.snapshot.as_ref().is_some_and(|u| urns.contains(u));
        let queued = if self.paced {
            self.snapshots.try_send(job).is_ok()
        } else {
            self.snapshots.send(job).is_ok()
        };
        if queued {
            // Later lifecycle events refer to the object's own snapshot, not a rule's.
            let lifecycle = |e: &&aegis_domain::Event| e.kind != aegis_domain::EventKind::Rule;
            for e in events.iter().filter(|e| named(e)).filter(lifecycle) {
                self.lifecycle
                    .set_snapshot(e.track_id, e.snapshot.clone().expect("named"));
            }
            return;
        }
        self.status
            .snapshots_lost
            .fetch_add(urns.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.store.forget_snapshots(&urns) {
            // `recover_snapshots` at the next start-up unlinks them instead.
            error!(error = %e, "lost snapshots not unlinked");
        }
        for e in events.iter_mut().filter(|e| named(e)) {
            e.snapshot = None;
        }
    }
}
