//! Wire schemas shared by the appliance and the core, versioned. A version, once shipped, only
//! gains optional fields; readers ignore fields they do not know. `tests/compat.rs` holds
//! captured messages that every later build must still read.

pub mod v1 {
    use serde::{Deserialize, Serialize};

    /// The `schema` tag of every v1 event.
    pub const EVENT_SCHEMA: &str = "aegis.event.v1";

    /// An object lifecycle event as it leaves the box. Snapshots travel as URNs, never bytes.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Event {
        pub schema: String,
        /// Unique; the core applies events idempotently by this id.
        pub id: String,
        /// `new`, `update`, `end`, or `rule` (then `rule` says which).
        pub kind: String,
        pub stream: String,
        pub track_id: u64,
        pub label: String,
        pub score: f32,
        /// x1, y1, x2, y2 in pixels of a `frame_size` frame.
        pub bbox: [f32; 4],
        pub frame_size: [u32; 2],
        pub started_at_ms: i64,
        pub at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub snapshot: Option<String>,
        /// Added after the first release, so optional: the rule behind a `rule` event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rule: Option<RuleHit>,
    }

    /// The rule behind a `rule` event: its name, and what it saw (kind, zone or line,
    /// direction, count…) as the appliance's rules engine reports it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct RuleHit {
        pub name: String,
        pub detail: serde_json::Value,
    }

    /// The `schema` tag of every v1 health report.
    pub const HEALTH_SCHEMA: &str = "aegis.health.v1";

    /// A box's heartbeat: who it is and how it is doing, every few seconds.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Health {
        pub schema: String,
        pub device: String,
        /// The appliance's version.
        pub version: String,
        pub uptime_s: u64,
        pub streams_total: u32,
        pub streams_online: u32,
        /// Frames read per second, all streams together.
        pub fps: f64,
        /// Detector latency p95 over all streams, when anything was detected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub detector_p95_ms: Option<f64>,
        pub disk_free_bytes: u64,
        /// Events committed on the box and not yet handed to the bus.
        pub outbox_backlog: u64,
        /// Events the box had to delete before they were synced (disk budget).
        pub events_dropped_unsynced: u64,
        pub at_ms: i64,
        /// The model manifest in use (its file name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<String>,
        /// What became of the last desired config the box received (absent before the first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub config: Option<ConfigReport>,
    }

    /// What a box sends to the core's `POST /api/enrol`, once.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct EnrolRequest {
        pub device: String,
        /// The one-time join token the core issued for this device.
        pub token: String,
        /// The box's public nkey (`U…`); its seed never leaves the box.
        pub public_key: String,
    }

    /// The core asks a box for a snapshot: the box uploads its bytes over HTTP to
    /// `PUT <core>/api/devices/<device>/blobs/<urn>` with `Authorization: Bearer <token>`.
    /// Bytes never travel on the bus.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct BlobRequest {
        pub urn: String,
        /// Good for this one upload.
        pub token: String,
    }

    /// The header of an empty upload by which a box says it has no such snapshot (lost, or
    /// deleted by retention).
    pub const BLOB_MISSING_HEADER: &str = "x-aegis-missing";

    /// The `schema` tag of every v1 desired config.
    pub const DESIRED_SCHEMA: &str = "aegis.desired.v1";

    /// The config the core wants a box to run, versioned. The box replaces its cameras and its
    /// whole rules file with these, as one transaction.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Desired {
        pub schema: String,
        pub device: String,
        /// Grows by one with every change the core makes.
        pub version: u64,
        /// The cameras, as in the appliance's config file.
        pub cameras: serde_json::Value,
        /// The rules file: `zones`, `lines` and `rules`.
        pub rules: serde_json::Value,
        /// The model manifest to detect with: a file name in the box's model directory (beside
        /// the manifest in use). Absent: keep the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<String>,
    }

    /// How a box dealt with a desired config.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ConfigReport {
        pub version: u64,
        pub state: ConfigState,
        /// Why it was rolled back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ConfigState {
        /// Received, being applied.
        Pending,
        /// In force.
        Applied,
        /// Refused or failed; the box runs its last known good config.
        RolledBack,
    }
}

/// Subjects on the bus. Every device's traffic lives under `aegis.<device>.`, so one
/// permission per device covers it (ADR 0007).
pub mod subject {
    /// A box's events (its JetStream stream `EVENTS`, in its own domain).
    pub fn events(device: &str) -> String {
        format!("aegis.{device}.events")
    }

    /// A box's heartbeats (core NATS).
    pub fn health(device: &str) -> String {
        format!("aegis.{device}.health")
    }

    /// The core's requests for a box's snapshots (core NATS).
    pub fn blob_requests(device: &str) -> String {
        format!("aegis.{device}.blob-requests")
    }

    /// Every box's heartbeats, for the core.
    pub const ALL_HEALTH: &str = "aegis.*.health";

    /// A device's own key-value bucket on the hub, holding its desired config under
    /// [`DESIRED_KEY`]. One bucket per device, so that a device can be allowed to read its own
    /// and nothing else.
    pub fn desired_bucket(device: &str) -> String {
        format!("aegis-desired-{device}")
    }

    /// The key of the desired config in a device's bucket.
    pub const DESIRED_KEY: &str = "config";

    /// The device a subject under `aegis.<device>.` belongs to.
    pub fn device_of(subject: &str) -> Option<&str> {
        subject.strip_prefix("aegis.")?.split('.').next()
    }

    /// Whether `id` can name a device: it becomes a subject token and a JetStream domain.
    pub fn valid_device_id(id: &str) -> bool {
        (1..=63).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.starts_with('-')
    }
}
