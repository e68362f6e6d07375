//! Object lifecycle events from tracks: `new` when a track is confirmed, `update` at most every
//! interval when the object moved or scored higher, `end` when the tracker drops it. Pure.

use std::collections::HashMap;

use aegis_domain::{BBox, BlobUrn, Event, EventKind, Track};

/// An event about to be written, and whether it wants a fresh snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub event: Event,
    pub snapshot: bool,
}

#[derive(Debug)]
struct Object {
    started_ms: i64,
    last_event_ms: i64,
    last_event_bbox: BBox,
    best_score: f32,
    last: Track,
    snapshot: Option<BlobUrn>,
}

#[derive(Debug)]
pub struct Lifecycle {
    stream: String,
    frame_size: (u32, u32),
    update_interval_ms: i64,
    objects: HashMap<u64, Object>,
}

impl Lifecycle {
    pub fn new(stream: &str, update_interval_ms: i64) -> Self {
        Self {
            stream: stream.to_owned(),
            frame_size: (0, 0),
            update_interval_ms,
            objects: HashMap::new(),
        }
    }

    fn event(
        &self,
        kind: EventKind,
        t: &Track,
        started_ms: i64,
        at_ms: i64,
        snapshot: Option<BlobUrn>,
    ) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            stream: self.stream.clone(),
            track_id: t.id,
            label: t.label.to_string(),
            score: t.score,
            bbox: t.bbox,
            frame_size: self.frame_size,
            started_at_ms: started_ms,
            at_ms,
            snapshot,
            rule: None,
        }
    }

    /// Feeds one frame's tracks and the ids the tracker ended.
    pub fn update(
        &mut self,
        tracks: &[Track],
        ended: &[u64],
        now_ms: i64,
        frame_size: (u32, u32),
    ) -> Vec<Pending> {
        self.frame_size = frame_size;
        let mut out = Vec::new();
        for t in tracks {
            match self.objects.get_mut(&t.id) {
                None => {
                    let event = self.event(EventKind::New, t, now_ms, now_ms, None);
                    self.objects.insert(
                        t.id,
                        Object {
                            started_ms: now_ms,
                            last_event_ms: now_ms,
                            last_event_bbox: t.bbox,
                            best_score: t.score,
                            last: t.clone(),
                            snapshot: None,
                        },
                    );
                    out.push(Pending {
                        event,
                        snapshot: true,
                    });
                }
                Some(o) => {
                    o.last = t.clone();
                    let better = t.score > o.best_score * 1.1;
                    let moved = t.bbox.iou(&o.last_event_bbox) < 0.7;
                    if now_ms - o.last_event_ms >= self.update_interval_ms && (better || moved) {
                        o.last_event_ms = now_ms;
                        o.last_event_bbox = t.bbox;
                        o.best_score = o.best_score.max(t.score);
                        let (started, snap) = (o.started_ms, o.snapshot.clone());
                        let event = self.event(EventKind::Update, t, started, now_ms, snap);
                        out.push(Pending {
                            event,
                            snapshot: better,
                        });
                    }
                }
            }
        }
        for id in ended {
            if let Some(o) = self.objects.remove(id) {
                let event = self.event(EventKind::End, &o.last, o.started_ms, now_ms, o.snapshot);
                out.push(Pending {
                    event,
                    snapshot: false,
                });
            }
        }
        out
    }

    /// Records the snapshot taken for an object's event; later events refer to it.
    pub fn set_snapshot(&mut self, track_id: u64, urn: BlobUrn) {
        if let Some(o) = self.objects.get_mut(&track_id) {
            o.snapshot = Some(urn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn track(id: u64, x: f32, score: f32) -> Track {
        Track {
            id,
            bbox: BBox::from_xywh(x, 0.0, 50.0, 100.0),
            score,
            class_id: 0,
            label: Arc::from("person"),
        }
    }

    fn kinds(p: &[Pending]) -> Vec<(EventKind, u64, bool)> {
        p.iter()
            .map(|p| (p.event.kind, p.event.track_id, p.snapshot))
            .collect()
    }

    #[test]
    fn new_then_throttled_updates_then_end() {
        let mut l = Lifecycle::new("cam", 1000);
        assert_eq!(
            kinds(&l.update(&[track(1, 0.0, 0.6)], &[], 0, (640, 480))),
            [(EventKind::New, 1, true)]
        );
        let urn = BlobUrn::new(uuid::Uuid::now_v7());
        l.set_snapshot(1, urn.clone());
        // Moved a lot, but within the interval: nothing.
        assert!(l
            .update(&[track(1, 200.0, 0.6)], &[], 500, (640, 480))
            .is_empty());
        // After the interval and moved: an update without a new snapshot (score not better).
        let u = l.update(&[track(1, 210.0, 0.6)], &[], 1000, (640, 480));
        assert_eq!(kinds(&u), [(EventKind::Update, 1, false)]);
        assert_eq!(u[0].event.snapshot, Some(urn.clone()));
        // Standing still at the same score: no update, however long.
        assert!(l
            .update(&[track(1, 210.0, 0.6)], &[], 5000, (640, 480))
            .is_empty());
        // Much better view: update with a fresh snapshot.
        assert_eq!(
            kinds(&l.update(&[track(1, 210.0, 0.9)], &[], 6000, (640, 480))),
            [(EventKind::Update, 1, true)]
        );
        let end = l.update(&[], &[1], 7000, (640, 480));
        assert_eq!(kinds(&end), [(EventKind::End, 1, false)]);
        assert_eq!((end[0].event.started_at_ms, end[0].event.at_ms), (0, 7000));
        assert_eq!(end[0].event.snapshot, Some(urn));
        assert!(
            l.update(&[], &[1], 8000, (640, 480)).is_empty(),
            "ended once"
        );
    }
}
