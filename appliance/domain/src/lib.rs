//! The vocabulary of the appliance: boxes, detections, tracks, events, URNs, and the traits the
//! pipeline stages implement. No I/O and no async runtime here.

mod geometry;
mod urn;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use geometry::BBox;
pub use urn::{BlobUrn, UrnError};

/// One object found by a detector in one frame, in frame pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: u32,
    pub label: Arc<str>,
}

/// A tracked object as reported after one tracker update.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Stable per stream for the object's lifetime; never reused within a tracker.
    pub id: u64,
    pub bbox: BBox,
    pub score: f32,
    pub class_id: u32,
    pub label: Arc<str>,
}

/// Turns detections into tracks, one call per processed frame. Synchronous and pure.
pub trait Tracker {
    /// Updates with this frame's detections; returns the tracks confirmed and seen in this frame.
    fn update(&mut self, detections: &[Detection]) -> Vec<Track>;
    /// Ids of tracks that ended (lost for longer than the buffer) during the last `update`, or
    /// by `end_all`.
    fn ended(&self) -> &[u64];
    /// Ends every track at once, as when the stream stops: `ended` then names the confirmed
    /// ones, and the next `update` starts afresh.
    fn end_all(&mut self);
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    New,
    Update,
    End,
    /// Raised by a rule (zone, line, dwell…); `Event::rule` says which and what it saw.
    Rule,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Update => "update",
            EventKind::End => "end",
            EventKind::Rule => "rule",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(EventKind::New),
            "update" => Some(EventKind::Update),
            "end" => Some(EventKind::End),
            "rule" => Some(EventKind::Rule),
            _ => None,
        }
    }
}

/// The rule behind a `rule` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    /// The rule's name in the rules file.
    pub name: String,
    /// What it saw, as the rules engine reports it: kind, zone or line, direction, count…
    pub detail: serde_json::Value,
}

/// An object lifecycle event, or an event a rule raised. Carries URNs, never pixels. Rule
/// events about no single object (occupancy, combinations) have track id 0, an empty label
/// and an empty box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Globally unique (UUIDv7); the idempotency key downstream.
    pub id: String,
    pub kind: EventKind,
    pub stream: String,
    pub track_id: u64,
    pub label: String,
    pub score: f32,
    pub bbox: BBox,
    /// Frame width and height the box refers to.
    pub frame_size: (u32, u32),
    /// When the object was first seen (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// The frame time this event describes (ms since the Unix epoch).
    pub at_ms: i64,
    pub snapshot: Option<BlobUrn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleHit>,
}
