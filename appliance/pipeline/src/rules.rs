//! Between the tracker and the rules engine: tracks in, events of kind `rule` out, committed
//! with the frame's object events (same transaction, outbox and snapshot path).

use aegis_domain::{BBox, Event, EventKind, RuleHit, Track};
use aegis_rules::{RuleEvent, TrackFrame, TrackIn, What};

use crate::Pending;

/// The engine's view of one moment of a stream: a frame's, or the end of every object when the
/// stream goes quiet.
pub(crate) fn track_frame(
    stream: &str,
    t_ms: i64,
    (width, height): (u32, u32),
    tracks: &[Track],
    ended: &[u64],
) -> TrackFrame {
    TrackFrame {
        stream: stream.to_owned(),
        t_ms,
        frame: [width, height],
        tracks: tracks.iter().map(track_in).collect(),
        ended: ended.to_vec(),
    }
}

/// A track as the rules engine and the live view take it.
pub(crate) fn track_in(t: &Track) -> TrackIn {
    TrackIn {
        id: t.id,
        label: t.label.to_string(),
        score: t.score,
        bbox: [t.bbox.x1, t.bbox.y1, t.bbox.x2, t.bbox.y2],
    }
}

/// A rule event as a stored event. One about an object still in view carries its box and
/// wants a snapshot; occupancy and combinations are about no single object.
pub(crate) fn pending(hit: RuleEvent, tracks: &[Track], frame_size: (u32, u32)) -> Pending {
    let object = match &hit.what {
        What::ZoneEnter { object, .. }
        | What::ZoneExit { object, .. }
        | What::LineCross { object, .. }
        | What::Dwell { object, .. }
        | What::Stationary { object, .. } => Some(object),
        What::Combination { .. } | What::Occupancy { .. } => None,
    };
    let seen = object.and_then(|o| tracks.iter().find(|t| t.id == o.track_id));
    let detail = serde_json::to_value(&hit.what).expect("rule events always serialise");
    let event = Event {
        id: uuid::Uuid::now_v7().to_string(),
        kind: EventKind::Rule,
        stream: hit.stream,
        track_id: object.map_or(0, |o| o.track_id),
        label: object.map(|o| o.label.clone()).unwrap_or_default(),
        score: object.map_or(0.0, |o| o.score),
        bbox: seen.map_or(BBox::new(0.0, 0.0, 0.0, 0.0), |t| t.bbox),
        frame_size,
        started_at_ms: hit.at_ms,
        at_ms: hit.at_ms,
        snapshot: None,
        rule: Some(RuleHit {
            name: hit.rule,
            detail,
        }),
    };
    Pending {
        event,
        snapshot: seen.is_some(),
    }
}
