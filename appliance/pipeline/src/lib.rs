//! The appliance's hot path, wired: per camera, an ingest thread (decode, sample, resize) feeds a
//! bounded queue to a detect thread (detect, track, lifecycle, commit). Everything per frame is
//! in-process and synchronous; committed events are broadcast to live subscribers (SSE). One
//! snapshot thread, shared by the cameras, encodes and stores snapshots after the events that
//! name them are committed.

mod lifecycle;
mod live;
mod rules;
mod settings;
mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Clock, Shutdown};
use aegis_config::{Backend, CameraConfig, Config, DetectorConfig};
use aegis_detect::{BackendKind, DetectError, ObjectDetector, PostProcess};
use aegis_domain::{BlobUrn, Tracker};
use aegis_ingest::{Frame, SourceSpec, StreamIngest, StreamState, StreamStatus};
use aegis_store::{Limits, Store, StoreError, StoredEvent};
use aegis_track::{ByteTracker, TrackerParams};
use tokio::sync::broadcast;
use tracing::{error, info, info_span};

pub use lifecycle::{Lifecycle, Pending};
pub use live::{LiveTracks, LiveView};
pub use settings::{Change, RulesSection, Settings, SettingsError};
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
    #[error("the appliance is stopping")]
    Stopped,
    #[error("rules file {path}: {reason}")]
    Rules { path: PathBuf, reason: String },
}

/// A committed event as live subscribers see it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub stored: StoredEvent,
    /// When the frame behind this event was read from its source. Objects that end because
    /// their stream went quiet or stopped have no frame behind them: when that was found.
    pub read_at: Instant,
    /// Time the decoder spent on that frame (zero without one).
    pub decode: Duration,
    /// Time the detector spent on that frame (zero without one).
    pub inference: Duration,
}

/// The running appliance: its store, cameras, rules and live event feed. Cameras and rules can
/// be changed while it runs; the other cameras carry on untouched.
pub struct Appliance {
    pub store: Arc<Store>,
    events: broadcast::Sender<LiveEvent>,
    occupancy: broadcast::Sender<ZoneCount>,
    shutdown: Shutdown,
    rules: Arc<LiveRules>,
    /// The model's classes: rules may name only these.
    labels: RwLock<Vec<String>>,
    /// What a camera needs to start: the detector, tracker and event settings.
    template: RwLock<Config>,
    /// The loaded model; each camera detects with a clone, which shares it.
    detector: RwLock<ObjectDetector>,
    ort_library: PathBuf,
    clock: Arc<dyn Clock>,
    cameras: RwLock<Vec<Camera>>,
    /// One change of cameras at a time.
    editing: Mutex<()>,
    snapshots: Mutex<Option<SyncSender<SnapshotJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running camera: two threads (ingest, detect) with their own stop signal.
struct Camera {
    config: CameraConfig,
    status: Arc<StreamStatus>,
    live: Arc<LiveView>,
    stop: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

/// The rules every detect thread follows; a change takes effect at each camera's next frame.
#[derive(Default)]
struct LiveRules {
    version: AtomicU64,
    set: Mutex<Arc<aegis_rules::RuleSet>>,
}

impl LiveRules {
    fn get(&self) -> Arc<aegis_rules::RuleSet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, rules: aegis_rules::RuleSet) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.version.fetch_add(1, Ordering::Release);
    }
}

impl Appliance {
    /// Opens the store, loads the model (shared by every camera) and starts every enabled
    /// camera. Fails before starting anything if the model cannot be loaded.
    pub fn start(
        config: &Config,
        ort_library: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Appliance, PipelineError> {
        aegis_ingest::init().map_err(|e| PipelineError::Media(e.to_string()))?;
        // The detector also tells which labels rules may name.
        let detector =
            load_detector(config, ort_library).map_err(|source| PipelineError::Detector {
                camera: config
                    .cameras
                    .first()
                    .map_or_else(String::new, |c| c.name.clone()),
                source,
            })?;
        let labels: Vec<String> = detector.labels().iter().map(|l| l.to_string()).collect();
        let rules = match &config.rules {
            Some(path) => load_rules(path, &labels)?,
            None => aegis_rules::RuleSet::default(),
        };
        let store = Arc::new(Store::open(&config.storage.dir)?);
        let recovered = store.recover_snapshots()?;
        if recovered != aegis_store::SnapshotRecovery::default() {
            info!(
                adopted = recovered.adopted,
                lost = recovered.lost,
                "snapshots interrupted by a crash: complete files kept, the rest unlinked"
            );
        }
        // Objects a crash or a kill left without an end end where they were last seen.
        let ends: Vec<aegis_domain::Event> = store
            .open_objects()?
            .into_iter()
            .map(|last| aegis_domain::Event {
                id: uuid::Uuid::now_v7().to_string(),
                kind: aegis_domain::EventKind::End,
                ..last
            })
            .collect();
        if !ends.is_empty() {
            store.commit(&ends)?;
            info!(
                objects = ends.len(),
                "objects an unclean stop left open end where they were last seen"
            );
        }
        let (events, _) = broadcast::channel(1024);
        let (snapshots, jobs) = sync_channel(snapshot::QUEUE_JOBS);
        let appliance = Appliance {
            store,
            events,
            occupancy: broadcast::channel(1024).0,
            shutdown: Shutdown::new(),
            rules: Arc::default(),
            labels: RwLock::new(labels),
            template: RwLock::new(config.clone()),
            detector: RwLock::new(detector),
            ort_library: ort_library.to_owned(),
            clock: clock.clone(),
            cameras: RwLock::default(),
            editing: Mutex::default(),
            snapshots: Mutex::new(Some(snapshots)),
            threads: Mutex::default(),
        };
        appliance.rules.set(rules);
        let (store, quality) = (appliance.store.clone(), config.events.snapshot_quality);
        appliance.spawn("snapshots", info_span!("snapshots"), move || {
            snapshot::run(jobs, store, quality)
        })?;
        let mut started = Vec::new();
        for cam in config.cameras.iter().filter(|c| c.enabled) {
            started.push(appliance.start_camera(cam)?);
        }
        *appliance.cameras.write().unwrap_or_else(|e| e.into_inner()) = started;
        let s = &config.storage;
        if s.max_age_days.is_some() || s.max_size_mb.is_some() || s.min_free_mb > 0 {
            let retention = Retention {
                store: appliance.store.clone(),
                max_age_ms: s.max_age_days.map(|d| (d * 86_400_000.0) as i64),
                max_bytes: s.max_size_mb.map(|mb| mb * 1_000_000),
                min_free_bytes: (s.min_free_mb > 0).then(|| s.min_free_mb * 1_000_000),
                clock,
            };
            let shutdown = appliance.shutdown.clone();
            appliance.spawn("retention", info_span!("retention"), move || {
                retention.run(shutdown)
            })?;
        }
        Ok(appliance)
    }

    /// A camera's detector: it shares the loaded model.
    fn detector(&self) -> ObjectDetector {
        self.detector
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts `cam`'s threads; it detects with the loaded model.
    fn start_camera(&self, cam: &CameraConfig) -> Result<Camera, PipelineError> {
        let detector = self.detector();
        let snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(PipelineError::Stopped)?;
        let status = Arc::new(StreamStatus::new(&cam.name, &cam.url));
        let live = Arc::new(LiveView::default());
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
            clock: self.clock.clone(),
        };
        let config = self
            .template
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let t = &config.tracker;
        let max_lost_frames = (t.buffer_s * cam.detect_fps).ceil().max(1.0) as u32;
        // No frame for as long as the tracker remembers a lost object, and two frame intervals
        // more, from a stream no longer online: the objects in view have left.
        let quiet = Duration::from_secs_f64(t.buffer_s.max(0.0) + 2.0 / cam.detect_fps);
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
            rules: CameraRules {
                live: self.rules.clone(),
                version: u64::MAX,
                engine: None,
                zones: Vec::new(),
                counts: BTreeMap::new(),
            },
            occupancy: self.occupancy.clone(),
            live: live.clone(),
            snapshots,
            paced,
            store: self.store.clone(),
            waiting: Vec::new(),
            last_frame: None,
            events: self.events.clone(),
            status: status.clone(),
        };
        let stop = Shutdown::new();
        let name = &cam.name;
        let ingest_stop = stop.clone();
        let threads = vec![
            spawn_thread(
                &format!("ingest-{name}"),
                info_span!("ingest", stream = %name),
                move || ingest.run(tx, ingest_stop),
            )?,
            spawn_thread(
                &format!("detect-{name}"),
                info_span!("detect", stream = %name),
                move || worker.run(rx, quiet),
            )?,
        ];
        info!(stream = %cam.name, url = %aegis_base::redact_url(&cam.url), "camera started");
        Ok(Camera {
            config: cam.clone(),
            status,
            live,
            stop,
            threads,
        })
    }

    fn spawn(
        &self,
        name: &str,
        span: tracing::Span,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), PipelineError> {
        let thread = spawn_thread(name, span, body)?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
        Ok(())
    }

    /// Every camera's status, in the order of the config.
    pub fn streams(&self) -> Vec<Arc<StreamStatus>> {
        let cameras = self.cameras.read().unwrap_or_else(|e| e.into_inner());
        cameras.iter().map(|c| c.status.clone()).collect()
    }

    /// A running camera's live view.
    pub fn live(&self, camera: &str) -> Option<Arc<LiveView>> {
        let cameras = self.cameras.read().unwrap_or_else(|e| e.into_inner());
        cameras
            .iter()
            .find(|c| c.config.name == camera)
            .map(|c| c.live.clone())
    }

    /// The labels the model detects (what rules may name).
    pub fn labels(&self) -> Vec<String> {
        self.labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The detector settings in force.
    pub fn detector_config(&self) -> DetectorConfig {
        let template = self.template.read().unwrap_or_else(|e| e.into_inner());
        template.detector.clone()
    }

    /// The camera template with `detector` in place of its detector settings.
    fn template_with(&self, detector: &DetectorConfig) -> Config {
        let mut config = self
            .template
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        config.detector = detector.clone();
        config
    }

    /// Loads the model that `detector` names, to put in force with [`Appliance::set_detector`]
    /// (its classes tell which labels rules may name). A model that does not load is refused
    /// here, before anything changes.
    pub fn load_detector(
        &self,
        detector: &DetectorConfig,
    ) -> Result<ObjectDetector, PipelineError> {
        load_detector(&self.template_with(detector), &self.ort_library).map_err(|source| {
            PipelineError::Detector {
                camera: String::new(),
                source,
            }
        })
    }

    /// Puts `loaded` (loaded with the settings `detector`) in force: every camera restarts with
    /// it.
    pub fn set_detector(
        &self,
        detector: &DetectorConfig,
        loaded: ObjectDetector,
    ) -> Result<(), PipelineError> {
        let _editing = self.editing.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.template_with(detector);
        let running: Vec<CameraConfig> = {
            let cams = self.cameras.read().unwrap_or_else(|e| e.into_inner());
            cams.iter().map(|c| c.config.clone()).collect()
        };
        let labels = loaded.labels().iter().map(|l| l.to_string()).collect();
        *self.template.write().unwrap_or_else(|e| e.into_inner()) = next;
        *self.labels.write().unwrap_or_else(|e| e.into_inner()) = labels;
        *self.detector.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        let stopping =
            std::mem::take(&mut *self.cameras.write().unwrap_or_else(|e| e.into_inner()));
        for cam in stopping {
            info!(stream = %cam.config.name, "camera restarting with the new model");
            cam.halt();
        }
        let mut started = Vec::with_capacity(running.len());
        for cam in &running {
            started.push(self.start_camera(cam)?);
        }
        *self.cameras.write().unwrap_or_else(|e| e.into_inner()) = started;
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<aegis_rules::RuleSet> {
        self.rules.get()
    }

    /// Puts new rules in force; each camera picks them up at its next frame, with fresh
    /// per-object state (a visit in progress is not carried over).
    pub fn set_rules(&self, rules: aegis_rules::RuleSet) {
        self.rules.set(rules);
        info!("rules updated");
    }

    /// Makes the running cameras match `cameras`: new ones start, removed ones stop, changed
    /// ones restart; the rest are not touched.
    pub fn set_cameras(&self, cameras: &[CameraConfig]) -> Result<(), PipelineError> {
        let _editing = self.editing.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: Vec<&CameraConfig> = cameras.iter().filter(|c| c.enabled).collect();
        let running: Vec<CameraConfig> = {
            let cams = self.cameras.read().unwrap_or_else(|e| e.into_inner());
            cams.iter().map(|c| c.config.clone()).collect()
        };
        let starting: Vec<&CameraConfig> = wanted
            .iter()
            .copied()
            .filter(|c| !running.contains(*c))
            .collect();
        let stopping: Vec<Camera> = {
            let mut cams = self.cameras.write().unwrap_or_else(|e| e.into_inner());
            let (keep, stop) = std::mem::take(&mut *cams)
                .into_iter()
                .partition(|c| wanted.contains(&&c.config));
            *cams = keep;
            stop
        };
        for cam in stopping {
            info!(stream = %cam.config.name, "camera stopping");
            cam.halt();
        }
        let mut started = Vec::new();
        for cam in starting {
            started.push(self.start_camera(cam)?);
        }
        let mut cams = self.cameras.write().unwrap_or_else(|e| e.into_inner());
        cams.extend(started);
        let order = |c: &Camera| wanted.iter().position(|w| w.name == c.config.name);
        cams.sort_by_key(order);
        Ok(())
    }

    /// Live feed of committed events (for SSE): `subscribe()` to it. Slow subscribers lose the
    /// oldest and must catch up from the store.
    pub fn feed(&self) -> broadcast::Sender<LiveEvent> {
        self.events.clone()
    }

    /// Zone occupancy as it changes (for MQTT): `subscribe()` to it.
    pub fn occupancy(&self) -> broadcast::Sender<ZoneCount> {
        self.occupancy.clone()
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops every stream and waits for in-flight frames and snapshots to be committed.
    pub fn stop(&self) {
        self.shutdown.trigger();
        let cameras = std::mem::take(&mut *self.cameras.write().unwrap_or_else(|e| e.into_inner()));
        for cam in cameras {
            cam.halt();
        }
        // The last sender: the snapshot thread finishes its queue and returns.
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Camera {
    /// Stops the camera and waits for its in-flight frames to be committed.
    fn halt(self) {
        self.stop.trigger();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn spawn_thread(
    name: &str,
    span: tracing::Span,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, PipelineError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _span = span.entered();
            body()
        })
        .map_err(PipelineError::Thread)
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
    let threads = aegis_detect::Threads {
        count: d.threads,
        sessions: d.sessions,
        spin: d.spin,
    };
    ObjectDetector::load(&d.model, kind, threads, ort_library, |m| {
        PostProcess::new(m, d.min_score, &d.scores, d.labels.as_deref(), d.nms_iou)
    })
}

/// How often retention runs (and once at start-up).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

struct Retention {
    store: Arc<Store>,
    max_age_ms: Option<i64>,
    max_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    clock: Arc<dyn Clock>,
}

impl Retention {
    fn run(self, shutdown: Shutdown) {
        loop {
            let limits = Limits {
                older_than_ms: self.max_age_ms.map(|age| self.clock.now_ms() - age),
                max_bytes: self.max_bytes,
                min_free_bytes: self.min_free_bytes,
            };
            match self.store.prune(limits) {
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

/// Events a camera holds in memory while the store refuses them (about 1 KB each).
const WAITING_MAX: usize = 10_000;

struct CameraWorker {
    detector: ObjectDetector,
    tracker: ByteTracker,
    lifecycle: Lifecycle,
    /// Rule events join the object events of the same frame.
    rules: CameraRules,
    occupancy: broadcast::Sender<ZoneCount>,
    live: Arc<LiveView>,
    snapshots: SyncSender<SnapshotJob>,
    /// Frames come at the source's pace: snapshots are dropped rather than waited for.
    paced: bool,
    store: Arc<Store>,
    /// Events the store refused, oldest first; they go first in the next commit. Never empty
    /// after a failed commit, empty after one that succeeded.
    waiting: Vec<aegis_domain::Event>,
    /// The last frame processed: its wall time, when it was processed, and its size.
    last_frame: Option<(i64, Instant, (u32, u32))>,
    events: broadcast::Sender<LiveEvent>,
    status: Arc<StreamStatus>,
}

/// A camera's rules engine and zones, rebuilt when the rules in force change.
struct CameraRules {
    live: Arc<LiveRules>,
    version: u64,
    engine: Option<aegis_rules::Engine>,
    /// This camera's zones, whose occupancy is reported.
    zones: Vec<aegis_rules::ZoneDef>,
    /// The occupancy last reported, by (zone, label).
    counts: BTreeMap<(String, String), u32>,
}

impl CameraRules {
    /// Picks up the rules in force if they changed.
    fn refresh(&mut self, camera: &str) {
        let version = self.live.version.load(Ordering::Acquire);
        if version == self.version {
            return;
        }
        let rules = self.live.get();
        self.engine = (!rules.rules.is_empty()).then(|| aegis_rules::Engine::new((*rules).clone()));
        self.zones = rules
            .zones
            .iter()
            .filter(|z| z.camera == camera)
            .cloned()
            .collect();
        self.version = version;
    }

    /// Whether frames need to be looked at (rules to run or occupancy to report).
    fn active(&self) -> bool {
        self.engine.is_some() || !self.zones.is_empty() || !self.counts.is_empty()
    }

    /// How zone occupancy changed with this frame (a count that fell to nothing reads 0).
    fn occupancy_changes(&mut self, frame: &aegis_rules::TrackFrame) -> Vec<ZoneCount> {
        let now = aegis_rules::zone_occupancy(&self.zones, frame);
        let count = |(zone, label): &(String, String), count| ZoneCount {
            camera: frame.stream.clone(),
            zone: zone.clone(),
            label: label.clone(),
            count,
        };
        let mut changes: Vec<ZoneCount> = now
            .iter()
            .filter(|(k, n)| self.counts.get(*k) != Some(n))
            .map(|(k, &n)| count(k, n))
            .collect();
        changes.extend(
            self.counts
                .keys()
                .filter(|k| !now.contains_key(*k))
                .map(|k| count(k, 0)),
        );
        self.counts = now;
        changes
    }
}

/// How many objects of a label stand in a zone, sent when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCount {
    pub camera: String,
    pub zone: String,
    pub label: String,
    pub count: u32,
}

impl CameraWorker {
    /// Processes frames as they come. After `quiet` without one, once the stream is no longer
    /// online (finished, offline, reconnecting), every object in view ends.
    fn run(mut self, rx: Receiver<Frame>, quiet: Duration) {
        loop {
            match rx.recv_timeout(quiet) {
                Ok(frame) => {
                    let seq = frame.seq;
                    if let Err(e) = self.process(frame) {
                        // A frame that cannot be processed is lost, not the stream; say so and go
                        // on.
                        error!(error = %e, seq, "frame not processed");
                    }
                }
                // A file that ended, a camera offline or stalled: whatever was in view has left.
                // A stream that is only slow (a time-lapse) keeps its objects.
                Err(RecvTimeoutError::Timeout) if self.status.state() != StreamState::Online => {
                    self.end_all()
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The stream stopped (shutdown, or the camera was removed or changed).
                Err(RecvTimeoutError::Disconnected) => return self.end_all(),
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
        if self.live.watched() {
            self.live
                .publish(frame.seq, frame.wall_ms, &frame.full, &tracks);
        }
        let frame_size = (frame.width, frame.height);
        self.last_frame = Some((frame.wall_ms, Instant::now(), frame_size));
        let mut pending =
            self.lifecycle
                .update(&tracks, self.tracker.ended(), frame.wall_ms, frame_size);
        self.rule_events(frame.wall_ms, frame_size, &tracks, &mut pending);
        let (read_at, decode) = (frame.read_at, frame.decoded_at - frame.read_at);
        let job = self.name_snapshots(frame, &mut pending);
        self.commit(pending, job, read_at, decode, inference);
        Ok(())
    }

    /// Ends every object still in view, with its end event and what the rules make of its
    /// leaving (zone exits, occupancy).
    fn end_all(&mut self) {
        self.tracker.end_all();
        let Some((wall_ms, at, frame_size)) = self.last_frame else {
            return;
        };
        if self.tracker.ended().is_empty() {
            return;
        }
        let now_ms = wall_ms + at.elapsed().as_millis() as i64;
        let mut pending = self
            .lifecycle
            .update(&[], self.tracker.ended(), now_ms, frame_size);
        self.rule_events(now_ms, frame_size, &[], &mut pending);
        self.commit(
            pending,
            None,
            Instant::now(),
            Duration::ZERO,
            Duration::ZERO,
        );
    }

    /// Adds to `pending` the rule events of this moment's `tracks` (and those the tracker
    /// ended), and reports how zone occupancy changed.
    fn rule_events(
        &mut self,
        t_ms: i64,
        frame_size: (u32, u32),
        tracks: &[aegis_domain::Track],
        pending: &mut Vec<Pending>,
    ) {
        self.rules.refresh(self.status.name());
        if !self.rules.active() {
            return;
        }
        let input = rules::track_frame(
            self.status.name(),
            t_ms,
            frame_size,
            tracks,
            self.tracker.ended(),
        );
        if let Some(engine) = &mut self.rules.engine {
            for hit in engine.update(&input) {
                pending.push(rules::pending(hit, tracks, frame_size));
            }
        }
        for change in self.rules.occupancy_changes(&input) {
            // No subscribers is fine: occupancy is only reported, never stored.
            let _ = self.occupancy.send(change);
        }
    }

    /// Stores `pending` after the events the store refused before, queues their snapshots
    /// (`job`) and hands them to live subscribers. When the store refuses them, they wait in
    /// memory and detection goes on.
    fn commit(
        &mut self,
        pending: Vec<Pending>,
        job: Option<SnapshotJob>,
        read_at: Instant,
        decode: Duration,
        inference: Duration,
    ) {
        if pending.is_empty() && self.waiting.is_empty() {
            return;
        }
        // Events the store refused before go first, in their order.
        let held = self.waiting.len();
        let mut events: Vec<_> = std::mem::take(&mut self.waiting)
            .into_iter()
            .chain(pending.into_iter().map(|p| p.event))
            .collect();
        let seqs = match self.store.commit(&events) {
            Ok(seqs) => seqs,
            Err(e) => {
                // Nothing is stored (the transaction is all or nothing): the events wait in
                // memory, without this frame's snapshots, and detection goes on. Said once, when
                // the store starts refusing (nothing was held yet), not at every frame.
                if held == 0 {
                    error!(error = %e, "events cannot be stored; holding them until the store takes them again");
                }
                if let Some(job) = &job {
                    for e in &mut events[held..] {
                        if e.snapshot.as_ref().is_some_and(|u| job.names(u)) {
                            e.snapshot = None;
                        }
                    }
                }
                self.hold(events);
                return;
            }
        };
        if held > 0 {
            info!(
                held,
                "the store takes events again; the held ones are stored"
            );
            self.status.events_waiting.store(0, Ordering::Relaxed);
        }
        if let Some(job) = job {
            self.queue_snapshots(job, &mut events[held..]);
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
    }

    /// Keeps `events` (oldest first) for the next commit; past `WAITING_MAX` the oldest are
    /// dropped and counted as lost.
    fn hold(&mut self, mut events: Vec<aegis_domain::Event>) {
        let over = events.len().saturating_sub(WAITING_MAX);
        if over > 0 {
            events.drain(..over);
            self.status
                .events_lost
                .fetch_add(over as u64, Ordering::Relaxed);
        }
        self.status
            .events_waiting
            .store(events.len() as u64, Ordering::Relaxed);
        self.waiting = events;
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
