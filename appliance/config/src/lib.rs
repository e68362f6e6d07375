//! The appliance configuration: schema, loading and validation.
//!
//! Loading is strict (`deny_unknown_fields`) and reports *every* problem at once, each with its
//! path (`cameras[1].detect_fps: ...`): every section and every camera is deserialised on its
//! own, then validated. `${VAR}` in camera URLs is replaced from the environment so secrets stay
//! out of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub tracker: TrackerConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// A rules file (zones, lines, rules: docs/rules.md); no rules when absent.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// Publish events to an MQTT broker; off when absent.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Sync events to the fleet core through a NATS leaf node (ADR 0007); off when absent.
    #[serde(default)]
    pub sync: Option<SyncConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique; used in URLs, topics and file names, so `[a-z0-9_-]` only.
    pub name: String,
    /// `rtsp://…` or a file path / `file://` URL (anything FFmpeg demuxes).
    pub url: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Frames per second given to the detector; decoded frames in between are skipped.
    #[serde(default = "default_detect_fps")]
    pub detect_fps: f64,
    #[serde(default)]
    pub transport: RtspTransport,
    /// Files only: start again at the end.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Files only: read at the file's own frame rate, like a camera (false: as fast as possible).
    #[serde(default = "yes")]
    pub realtime: bool,
    /// A stream with no frame for this long is declared stalled and reconnected.
    #[serde(default = "default_stall")]
    pub stall_timeout_s: f64,
    #[serde(default = "default_backoff_initial")]
    pub reconnect_initial_s: f64,
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Ort,
    Tract,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    #[serde(default)]
    pub backend: Backend,
    /// The model manifest (YAML) beside its ONNX file.
    #[serde(default = "default_model")]
    pub model: PathBuf,
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Inferences that may run at once. Every camera shares the model; this many copies of it
    /// are loaded, each using `threads` threads. One suits a box with `threads` cores; a bigger
    /// box with several cameras may want cores ÷ threads.
    #[serde(default = "one")]
    pub sessions: usize,
    /// The detector's threads (ONNX Runtime's, or tract's) spin while they wait for work within
    /// an inference, which makes it faster; they stop when it ends, so MQTT and the web UI have
    /// the cores between frames. Off saves a little CPU at a cost in inference time
    /// (docs/BENCHMARKS.md).
    #[serde(default = "yes")]
    pub spin: bool,
    /// Detections below this score are discarded (per-class `scores` override it).
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    #[serde(default)]
    pub scores: BTreeMap<String, f32>,
    /// Keep only these labels; absent means all of the model's classes.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default = "default_nms")]
    pub nms_iou: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    #[serde(default = "default_high")]
    pub high_score: f32,
    #[serde(default = "default_low")]
    pub low_score: f32,
    #[serde(default = "default_new_track")]
    pub new_track_score: f32,
    #[serde(default = "default_match_cost")]
    pub match_cost: f32,
    /// How long a lost object is remembered before its track ends.
    #[serde(default = "default_buffer")]
    pub buffer_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// An `update` event is written at most this often per object, when it moved or scored higher.
    #[serde(default = "default_update_interval")]
    pub update_interval_s: f64,
    #[serde(default = "default_quality")]
    pub snapshot_quality: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `aegis.db` and `blobs/`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Events and their snapshots older than this are deleted (kept forever when absent).
    #[serde(default)]
    pub max_age_days: Option<f64>,
    /// The store (database and snapshots) is kept under this size by deleting the oldest
    /// events first (no limit when absent).
    #[serde(default)]
    pub max_size_mb: Option<u64>,
    /// The oldest events and their snapshots are deleted while the disk holding the store has
    /// less than this free (0: never).
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn yes() -> bool {
    true
}
fn default_detect_fps() -> f64 {
    5.0
}
fn default_stall() -> f64 {
    10.0
}
fn default_backoff_initial() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    30.0
}
fn default_model() -> PathBuf {
    PathBuf::from("models/centernet_mbv3_coco80.yaml")
}
fn default_threads() -> usize {
    2
}
fn one() -> usize {
    1
}
fn default_min_score() -> f32 {
    0.2
}
fn default_nms() -> f32 {
    0.5
}
fn default_high() -> f32 {
    0.4
}
fn default_low() -> f32 {
    0.2
}
fn default_new_track() -> f32 {
    0.45
}
fn default_match_cost() -> f32 {
    0.8
}
fn default_buffer() -> f64 {
    3.0
}
fn default_update_interval() -> f64 {
    5.0
}
fn default_quality() -> u8 {
    80
}
fn default_min_free_mb() -> u64 {
    256
}
fn default_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The `mqtt` section: the broker the appliance publishes to (`appliance/mqtt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Messages that may wait for the broker; beyond this they are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Home Assistant's discovery prefix; `null` turns discovery messages off.
    #[serde(default = "default_discovery")]
    pub discovery_prefix: Option<String>,
}

/// The `sync` section: this box's leaf node and its hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// This box's id in the fleet: lowercase letters, digits and `-`, at most 63.
    pub device: String,
    /// The core hub's leaf-node URL, e.g. `nats-leaf://core.example:7422`.
    pub hub: String,
    /// Where the box's own nats-server (the leaf) listens for the appliance.
    #[serde(default = "default_leaf_listen")]
    pub listen: SocketAddr,
    /// The most disk the leaf may fill with events the core has not yet taken.
    #[serde(default = "default_sync_budget")]
    pub budget_mb: u64,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: f64,
    /// The nats-server executable (default: `AEGIS_NATS_SERVER`, else `nats-server` on PATH).
    #[serde(default)]
    pub nats_server: Option<PathBuf>,
    /// The core's API (`http://core.example:8090`), to enrol at.
    #[serde(default)]
    pub core: Option<String>,
    /// The join token the core issued for this device; needed until the box is enrolled.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_leaf_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4250))
}
fn default_sync_budget() -> u64 {
    1024
}
fn default_heartbeat() -> f64 {
    5.0
}

fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "aegis".into()
}
fn default_discovery() -> Option<String> {
    Some("homeassistant".into())
}
fn default_client_id() -> String {
    "aegis".into()
}
fn default_queue() -> usize {
    1000
}

/// Builds a section's defaults through serde, so the defaults live in one place.
fn defaults<T: DeserializeOwned>() -> T {
    serde_yaml::from_value(serde_yaml::Value::Mapping(Default::default()))
        .expect("every field of a config section has a default")
}

impl Default for DetectorConfig {
    fn default() -> Self {
        defaults()
    }
}
impl Default for TrackerConfig {
    fn default() -> Self {
        defaults()
    }
}
impl Default for EventsConfig {
    fn default() -> Self {
        defaults()
    }
}
impl Default for StorageConfig {
    fn default() -> Self {
        defaults()
    }
}
impl Default for HttpConfig {
    fn default() -> Self {
        defaults()
    }
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} error(s) in the configuration:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl Config {
    /// Reads, parses and validates a file; relative paths inside are taken relative to it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|k| std::env::var(k).ok())
    }

    /// Parses and validates YAML text. `env` resolves `${VAR}` references.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let root: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            ConfigError::Invalid(vec![FieldError {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }])
        })?;
        let serde_yaml::Value::Mapping(map) = root else {
            return Err(ConfigError::Invalid(vec![FieldError {
                path: String::new(),
                message: "the configuration must be a mapping of sections".into(),
            }]));
        };
        const SECTIONS: [&str; 9] = [
            "cameras", "detector", "tracker", "events", "storage", "http", "rules", "mqtt", "sync",
        ];
        for key in map.keys() {
            let name = key.as_str().unwrap_or("?");
            if !SECTIONS.contains(&name) {
                errors.push(FieldError {
                    path: name.to_owned(),
                    message: format!("unknown section, expected one of {}", SECTIONS.join(", ")),
                });
            }
        }
        let mut cameras = Vec::new();
        match map.get("cameras") {
            None => errors.push(FieldError {
                path: "cameras".into(),
                message: "missing: at least one camera is required".into(),
            }),
            Some(serde_yaml::Value::Sequence(items)) => {
                let mut names = std::collections::HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(mut c) =
                        section::<CameraConfig>(Some(item), &format!("cameras[{i}]"), &mut errors)
                    {
                        c.resolve_and_check(i, base_dir, env, &mut errors);
                        if !names.insert(c.name.clone()) {
                            errors.push(FieldError {
                                path: format!("cameras[{i}].name"),
                                message: "duplicate camera name".into(),
                            });
                        }
                        cameras.push(c);
                    }
                }
            }
            Some(_) => errors.push(FieldError {
                path: "cameras".into(),
                message: "must be a list".into(),
            }),
        }
        let mut config = Config {
            cameras,
            detector: section(map.get("detector"), "detector", &mut errors).unwrap_or_default(),
            tracker: section(map.get("tracker"), "tracker", &mut errors).unwrap_or_default(),
            events: section(map.get("events"), "events", &mut errors).unwrap_or_default(),
            storage: section(map.get("storage"), "storage", &mut errors).unwrap_or_default(),
            http: section(map.get("http"), "http", &mut errors).unwrap_or_default(),
            mqtt: map.get("mqtt").and_then(|v| {
                let mut m: MqttConfig = section(Some(v), "mqtt", &mut errors)?;
                if let Some(p) = &m.password {
                    match interpolate(p, env) {
                        Ok(p) => m.password = Some(p),
                        Err(message) => errors.push(FieldError {
                            path: "mqtt.password".into(),
                            message,
                        }),
                    }
                }
                Some(m)
            }),
            sync: map
                .get("sync")
                .and_then(|v| section(Some(v), "sync", &mut errors)),
            rules: map.get("rules").and_then(|v| match v.as_str() {
                Some(path) => Some(PathBuf::from(path)),
                None => {
                    errors.push(FieldError {
                        path: "rules".into(),
                        message: "must be the path of a rules file".into(),
                    });
                    None
                }
            }),
        };
        config.resolve(base_dir);
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    fn resolve(&mut self, base: &Path) {
        if self.detector.model.is_relative() {
            self.detector.model = base.join(&self.detector.model);
        }
        if self.storage.dir.is_relative() {
            self.storage.dir = base.join(&self.storage.dir);
        }
        if let Some(rules) = self.rules.as_mut().filter(|r| r.is_relative()) {
            *rules = base.join(&*rules);
        }
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        let mut err = |path: String, message: &str| {
            errors.push(FieldError {
                path,
                message: message.to_owned(),
            })
        };
        let d = &self.detector;
        if d.threads == 0 || d.threads > 64 {
            err("detector.threads".into(), "must be 1-64");
        }
        if d.sessions == 0 || d.sessions > 64 {
            err("detector.sessions".into(), "must be 1-64");
        }
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(d.min_score) {
            err("detector.min_score".into(), "must be in [0, 1]");
        }
        if !unit(d.nms_iou) {
            err("detector.nms_iou".into(), "must be in [0, 1]");
        }
        for (label, s) in &d.scores {
            if !unit(*s) {
                err(format!("detector.scores.{label}"), "must be in [0, 1]");
            }
        }
        let t = &self.tracker;
        for (name, v) in [
            ("high_score", t.high_score),
            ("low_score", t.low_score),
            ("new_track_score", t.new_track_score),
            ("match_cost", t.match_cost),
        ] {
            if !unit(v) {
                err(format!("tracker.{name}"), "must be in [0, 1]");
            }
        }
        if t.low_score > t.high_score {
            err(
                "tracker.low_score".into(),
                "must not exceed tracker.high_score",
            );
        }
        if !(t.buffer_s >= 0.0 && t.buffer_s.is_finite()) {
            err(
                "tracker.buffer_s".into(),
                "must be a non-negative number of seconds",
            );
        }
        if let Some(days) = self.storage.max_age_days {
            if !(days > 0.0 && days.is_finite()) {
                err(
                    "storage.max_age_days".into(),
                    "must be a positive number of days",
                );
            }
        }
        if self.storage.max_size_mb == Some(0) {
            err("storage.max_size_mb".into(), "must be at least 1");
        }
        if !(self.events.update_interval_s > 0.0 && self.events.update_interval_s.is_finite()) {
            err(
                "events.update_interval_s".into(),
                "must be a positive number of seconds",
            );
        }
        if !(1..=100).contains(&self.events.snapshot_quality) {
            err("events.snapshot_quality".into(), "must be 1-100");
        }
        if let Some(sync) = &self.sync {
            if !aegis_proto::subject::valid_device_id(&sync.device) {
                err(
                    "sync.device".into(),
                    "must be 1-63 lowercase letters, digits or '-', not starting with '-'",
                );
            }
            if !["nats-leaf://", "nats://", "tls://"]
                .iter()
                .any(|scheme| sync.hub.starts_with(scheme))
            {
                err(
                    "sync.hub".into(),
                    "must be a nats-leaf://, nats:// or tls:// URL of the hub's leaf-node port",
                );
            }
            if let Some(core) = &sync.core {
                if !core.starts_with("http://") && !core.starts_with("https://") {
                    err(
                        "sync.core".into(),
                        "must be the http:// or https:// URL of the core's API",
                    );
                }
            }
            if sync.budget_mb < 16 {
                err("sync.budget_mb".into(), "must be at least 16");
            }
            if !(sync.heartbeat_s >= 0.5 && sync.heartbeat_s.is_finite()) {
                err("sync.heartbeat_s".into(), "must be at least 0.5 seconds");
            }
        }
    }
}

impl CameraConfig {
    fn resolve_and_check(
        &mut self,
        i: usize,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<FieldError>,
    ) {
        let mut err = |f: &str, message: &str| {
            errors.push(FieldError {
                path: format!("cameras[{i}].{f}"),
                message: message.to_owned(),
            })
        };
        match interpolate(&self.url, env) {
            Ok(url) => self.url = url,
            Err(message) => err("url", &message),
        }
        if !self.url.contains("://") && Path::new(&self.url).is_relative() {
            self.url = base.join(&self.url).to_string_lossy().into_owned();
        }
        let c = &*self;
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            err("name", "must be 1-64 characters of a-z, 0-9, '_' or '-'");
        }
        if c.url.starts_with("rtsp://") || c.url.starts_with("rtsps://") {
            if url::Url::parse(&c.url)
                .map(|u| u.host_str().is_none())
                .unwrap_or(true)
            {
                err("url", "not a valid RTSP URL");
            }
            if c.looping {
                err("loop", "only files can loop");
            }
        } else if c.url.contains("://") && !c.url.starts_with("file://") {
            err(
                "url",
                "unsupported scheme: use rtsp://, rtsps://, file:// or a path",
            );
        }
        if !(c.detect_fps > 0.0 && c.detect_fps <= 120.0) {
            err("detect_fps", "must be in (0, 120]");
        }
        if !(c.stall_timeout_s > 0.0 && c.stall_timeout_s.is_finite()) {
            err("stall_timeout_s", "must be a positive number of seconds");
        }
        if !(c.reconnect_initial_s > 0.0
            && c.reconnect_initial_s <= c.reconnect_max_s
            && c.reconnect_max_s.is_finite())
        {
            err(
                "reconnect_initial_s",
                "must be positive and at most reconnect_max_s",
            );
        }
    }

    /// True for network streams, false for files.
    pub fn is_rtsp(&self) -> bool {
        self.url.starts_with("rtsp://") || self.url.starts_with("rtsps://")
    }
}

/// Deserialises one section, recording any error with its full path.
pub fn section<T: DeserializeOwned>(
    value: Option<&serde_yaml::Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let value = value
        .cloned()
        .unwrap_or(serde_yaml::Value::Mapping(Default::default()));
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            errors.push(FieldError {
                path: full,
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

/// Replaces `${NAME}` with the variable's value; a missing variable is an error. A value that
/// lands in a URL's user info (`rtsp://admin:${PASS}@cam/live`) is percent-encoded, so that a
/// password may hold any character (`@`, `:`, `/`, …) as it is.
fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let userinfo = userinfo_span(s);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let at = s.len() - rest.len() + start;
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated ${...}")?;
        let name = &after[..end];
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        if userinfo.contains(&at) {
            percent_encode(&value, &mut out);
        } else {
            out.push_str(&value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the user info of URL `s` lies (after `scheme://`, before the `@` that ends it); empty
/// when it has none.
fn userinfo_span(s: &str) -> std::ops::Range<usize> {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return 0..0;
    };
    let authority = &s[start..];
    let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
    authority.rfind('@').map_or(0..0, |at| start..start + at)
}

/// Appends `value` with every byte but URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/aegis"), &|k| {
            (k == "CAM_PASS").then(|| "pw".to_owned())
        })
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths_and_secrets() {
        let c = parse("cameras:\n  - name: door\n    url: rtsp://admin:${CAM_PASS}@cam/live\n  - {name: demo, url: clip.mp4, loop: true}\n").unwrap();
        assert_eq!(c.cameras[0].url, "rtsp://admin:pw@cam/live");
        assert_eq!(c.cameras[1].url, "/etc/aegis/clip.mp4");
        assert_eq!(
            c.detector.model,
            Path::new("/etc/aegis/models/centernet_mbv3_coco80.yaml")
        );
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.cameras[0].detect_fps, 5.0);
    }

    #[test]
    fn a_secret_in_a_urls_user_info_may_hold_any_character() {
        let env = |k: &str| match k {
            "PASS" => Some("p@ss:w/rd 1%".to_owned()),
            "PATH" => Some("stream/1".to_owned()),
            _ => None,
        };
        let c = Config::parse(
            "cameras:\n  - name: door\n    url: rtsp://${PASS}:${PASS}@cam:554/${PATH}?u=${PATH}\n",
            Path::new("/etc/aegis"),
            &env,
        )
        .unwrap();
        // Encoded where it is the user info, as it is elsewhere.
        let secret = "p%40ss%3Aw%2Frd%201%25";
        assert_eq!(
            c.cameras[0].url,
            format!("rtsp://{secret}:{secret}@cam:554/stream/1?u=stream/1")
        );
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let errs = errors(
            "cameras:\n  - {name: Bad Name, url: 'rtsp://${NOPE}@x/'}\n  - {name: ok, url: a.mp4, detect_fps: 0, colour: red}\n  - {name: ok2, url: b.mp4, detect_fps: 0}\ndetector: {min_score: 2, sessions: 0}\ntracker: {buffer_s: fast}\nextra: 1\n",
        );
        let joined = errs.join("\n");
        for want in [
            "extra: unknown section",
            "cameras[0].url: environment variable NOPE is not set",
            "cameras[0].name: must be",
            "cameras[1].colour: unknown field `colour`",
            "cameras[2].detect_fps: must be in (0, 120]",
            "detector.min_score: must be in [0, 1]",
            "detector.sessions: must be 1-64",
            "tracker.buffer_s: invalid type",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        assert_eq!(errs.len(), 8, "{joined}");
    }

    #[test]
    fn rejects_non_mappings_missing_cameras_and_duplicates() {
        assert_eq!(
            errors("- 1\n- 2\n"),
            ["the configuration must be a mapping of sections"]
        );
        assert_eq!(
            errors("http: {}\n"),
            ["cameras: missing: at least one camera is required"]
        );
        let dup = errors("cameras: [{name: a, url: x.mp4}, {name: a, url: y.mp4}]\n");
        assert_eq!(dup, ["cameras[1].name: duplicate camera name"]);
        assert!(errors("cameras: [{name: a, url: 'http://x/y'}]")[0].contains("unsupported scheme"));
        assert!(errors("cameras: [")[0].starts_with("not valid YAML"));
    }

    #[test]
    fn a_sync_section_is_checked_field_by_field() {
        let ok = parse("cameras: [{name: a, url: x.mp4}]\nsync: {device: shop-1, hub: 'nats-leaf://core:7422', core: 'http://core:8090', token: t}\n").unwrap();
        let sync = ok.sync.unwrap();
        assert_eq!((sync.budget_mb, sync.listen.port()), (1024, 4250));
        let errs = errors(
            "cameras: [{name: a, url: x.mp4}]\nsync: {device: Shop_1, hub: 'http://core', core: 'ftp://core', budget_mb: 1, heartbeat_s: 0}\n",
        );
        let joined = errs.join("\n");
        for want in [
            "sync.device: must be 1-63 lowercase",
            "sync.hub: must be a nats-leaf://",
            "sync.core: must be the http:// or https:// URL",
            "sync.budget_mb: must be at least 16",
            "sync.heartbeat_s: must be at least 0.5",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        assert_eq!(errs.len(), 5, "{joined}");
        assert!(errors(
            "cameras: [{name: a, url: x.mp4}]\nsync: {device: a, hub: 'nats://h', budget: 3}\n"
        )[0]
        .contains("unknown field `budget`"));
    }
}
