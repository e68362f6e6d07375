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
}
