use std::sync::Arc;

use aegis_domain::{BBox, Detection, Track, Tracker};

use crate::assign::assign;
use crate::kalman::Kalman;

/// Tracker settings; defaults are ByteTrack's published ones.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerParams {
    /// Detections at or above this score take part in the first association.
    pub high_score: f32,
    /// Detections in `[low_score, high_score)` can only extend existing tracks.
    pub low_score: f32,
    /// An unmatched detection starts a new track only at or above this score.
    pub new_track_score: f32,
    /// Cost limits (1 - IoU, score-fused in the first stage) for the three association steps.
    pub match_cost: f32,
    pub low_match_cost: f32,
    pub unconfirmed_match_cost: f32,
    /// A lost track is dropped after this many processed frames without a match.
    pub max_lost_frames: u32,
    /// Only associate detections with tracks of the same class.
    pub per_class: bool,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self {
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.6,
            match_cost: 0.8,
            low_match_cost: 0.5,
            unconfirmed_match_cost: 0.7,
            max_lost_frames: 30,
            per_class: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Born last frame from a single detection; needs a second one to be confirmed.
    Tentative,
    Tracked,
    Lost,
}

#[derive(Debug, Clone)]
struct Tracklet {
    /// 0 until confirmed; ids are handed out at confirmation so they stay dense.
    id: u64,
    kalman: Kalman,
    state: State,
    score: f32,
    class_id: u32,
    label: Arc<str>,
    last_frame: u64,
    start_frame: u64,
}

fn xyah(b: &BBox) -> [f32; 4] {
    let (w, h) = (b.width(), b.height().max(1e-3));
    [b.x1 + w / 2.0, b.y1 + h / 2.0, w / h, h]
}

impl Tracklet {
    fn bbox(&self) -> BBox {
        let [cx, cy, a, h] = self.kalman.state();
        let w = a * h;
        BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }

    fn absorb(&mut self, det: &Detection, frame: u64) {
        self.kalman.update(xyah(&det.bbox));
        self.score = det.score;
        self.state = State::Tracked;
        self.last_frame = frame;
    }
}

/// ByteTrack (Zhang et al., 2022) over the domain types.
#[derive(Debug)]
pub struct ByteTracker {
    params: TrackerParams,
    tracks: Vec<Tracklet>,
    frame: u64,
    next_id: u64,
    ended: Vec<u64>,
}

impl ByteTracker {
    pub fn new(params: TrackerParams) -> Self {
        Self {
            params,
            tracks: Vec::new(),
            frame: 0,
            next_id: 1,
            ended: Vec::new(),
        }
    }

    /// Associates `dets` (by index) with `tracks` (by index) and applies the matches.
    /// Returns the unmatched track and detection indices.
    fn associate(
        &mut self,
        tracks: &[usize],
        dets: &[&Detection],
        limit: f32,
        fuse_score: bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut cost = Vec::with_capacity(tracks.len() * dets.len());
        for &t in tracks {
            let tr = &self.tracks[t];
            let tb = tr.bbox();
            for d in dets {
                let same_class = !self.params.per_class || d.class_id == tr.class_id;
                let iou = if same_class { tb.iou(&d.bbox) } else { 0.0 };
                let sim = if fuse_score { iou * d.score } else { iou };
                cost.push(1.0 - sim);
            }
        }
        let a = assign(&cost, tracks.len(), dets.len(), limit);
        for &(ti, di) in &a.matches {
            self.tracks[tracks[ti]].absorb(dets[di], self.frame);
        }
        (
            a.unmatched_rows.iter().map(|&i| tracks[i]).collect(),
            a.unmatched_cols,
        )
    }
}

impl Tracker for ByteTracker {
    fn update(&mut self, detections: &[Detection]) -> Vec<Track> {
        self.frame += 1;
        self.ended.clear();
        let p = self.params.clone();

        let high: Vec<&Detection> = detections
            .iter()
            .filter(|d| d.score >= p.high_score)
            .collect();
        let low: Vec<&Detection> = detections
            .iter()
            .filter(|d| d.score >= p.low_score && d.score < p.high_score)
            .collect();

        for t in &mut self.tracks {
            if t.state != State::Tracked {
                t.kalman.freeze_height_velocity();
            }
            t.kalman.predict();
        }

        // Stage 1: high-score detections against confirmed tracks, tracked and lost.
        let pool: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state != State::Tentative)
            .collect();
        let (unmatched_tracks, unmatched_high) = self.associate(&pool, &high, p.match_cost, true);

        // Stage 2: low-score detections keep currently tracked objects alive (occlusion).
        let still_tracked: Vec<usize> = unmatched_tracks
            .iter()
            .copied()
            .filter(|&i| self.tracks[i].state == State::Tracked)
            .collect();
        let (missed, _) = self.associate(&still_tracked, &low, p.low_match_cost, false);
        for i in missed {
            self.tracks[i].state = State::Lost;
        }

        // Stage 3: tentative tracks against the leftover high-score detections.
        let leftover: Vec<&Detection> = unmatched_high.iter().map(|&i| high[i]).collect();
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state == State::Tentative)
            .collect();
        let (failed_tentative, unmatched_new) =
            self.associate(&tentative, &leftover, p.unconfirmed_match_cost, true);

        // Confirm tentatives that matched; forget those that did not.
        let mut remove = vec![false; self.tracks.len()];
        for i in failed_tentative {
            remove[i] = true;
        }
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if t.id == 0 && t.state == State::Tracked && !remove[i] {
                t.id = self.next_id;
                self.next_id += 1;
            }
            if t.state == State::Lost && self.frame - t.last_frame > u64::from(p.max_lost_frames) {
                remove[i] = true;
            }
        }
        let mut i = 0;
        self.tracks.retain(|t| {
            let keep = !remove[i];
            i += 1;
            if !keep && t.id != 0 {
                self.ended.push(t.id);
            }
            keep
        });

        // Births. On the very first frame tracks are confirmed at once, as in ByteTrack.
        for di in unmatched_new {
            let d = leftover[di];
            if d.score < p.new_track_score {
                continue;
            }
            let confirmed = self.frame == 1;
            let id = if confirmed {
                self.next_id += 1;
                self.next_id - 1
            } else {
                0
            };
            self.tracks.push(Tracklet {
                id,
                kalman: Kalman::new(xyah(&d.bbox)),
                state: if confirmed {
                    State::Tracked
                } else {
                    State::Tentative
                },
                score: d.score,
                class_id: d.class_id,
                label: d.label.clone(),
                last_frame: self.frame,
                start_frame: self.frame,
            });
        }

        self.remove_duplicates();

        self.tracks
            .iter()
            .filter(|t| t.id != 0 && t.state == State::Tracked && t.last_frame == self.frame)
            .map(|t| Track {
                id: t.id,
                bbox: t.bbox(),
                score: t.score,
                class_id: t.class_id,
                label: t.label.clone(),
            })
            .collect()
    }

    fn ended(&self) -> &[u64] {
        &self.ended
    }
}

impl ByteTracker {
    /// A lost track that overlaps a tracked one almost exactly is the same object twice:
    /// keep whichever has existed longer (ByteTrack's `remove_duplicate_stracks`).
    fn remove_duplicates(&mut self) {
        let mut drop = vec![false; self.tracks.len()];
        for i in 0..self.tracks.len() {
            for j in 0..self.tracks.len() {
                let (a, b) = (&self.tracks[i], &self.tracks[j]);
                if a.state == State::Tracked
                    && b.state == State::Lost
                    && a.id != 0
                    && a.bbox().iou(&b.bbox()) > 0.85
                {
                    let older_a = self.frame - a.start_frame > self.frame - b.start_frame;
                    drop[if older_a { j } else { i }] = true;
                }
            }
        }
        if drop.iter().any(|&d| d) {
            let mut k = 0;
            self.tracks.retain(|t| {
                let keep = !drop[k];
                k += 1;
                if !keep {
                    self.ended.push(t.id);
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox::from_xywh(x, y, 40.0, 100.0),
            score,
            class_id: 0,
            label: Arc::from("person"),
        }
    }

    #[test]
    fn keeps_ids_stable_for_moving_objects() {
        let mut t = ByteTracker::new(TrackerParams::default());
        let mut ids = Vec::new();
        for f in 0..20 {
            let x = f as f32 * 5.0;
            let tracks = t.update(&[det(x, 10.0, 0.9), det(400.0 - x, 300.0, 0.8)]);
            assert_eq!(tracks.len(), 2, "frame {f}");
            let mut frame_ids: Vec<_> = tracks.iter().map(|t| t.id).collect();
            frame_ids.sort();
            ids.push(frame_ids);
        }
        assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    }

    #[test]
    fn low_score_detections_bridge_an_occlusion() {
        let mut t = ByteTracker::new(TrackerParams::default());
        let first = t.update(&[det(0.0, 0.0, 0.9)])[0].id;
        for f in 1..5 {
            t.update(&[det(f as f32 * 3.0, 0.0, 0.9)]);
        }
        // Partly occluded: the detector is unsure, but the track continues with the same id.
        let tracks = t.update(&[det(15.0, 0.0, 0.3)]);
        assert_eq!(tracks.len(), 1);
        assert_eq!(tracks[0].id, first);
    }

    #[test]
    fn a_single_false_positive_never_becomes_a_track() {
        let mut t = ByteTracker::new(TrackerParams::default());
        t.update(&[]);
        assert!(t.update(&[det(100.0, 100.0, 0.95)]).is_empty());
        assert!(t.update(&[]).is_empty());
        for _ in 0..5 {
            assert!(t.update(&[]).is_empty());
        }
        assert!(t.ended().is_empty(), "an unconfirmed track ends silently");
    }

    #[test]
    fn lost_tracks_end_after_the_buffer_and_are_reacquired_within_it() {
        let params = TrackerParams {
            max_lost_frames: 5,
            ..TrackerParams::default()
        };
        let mut t = ByteTracker::new(params);
        let id = t.update(&[det(0.0, 0.0, 0.9)])[0].id;
        t.update(&[det(0.0, 0.0, 0.9)]);
        for _ in 0..3 {
            assert!(t.update(&[]).is_empty());
        }
        assert_eq!(t.update(&[det(0.0, 0.0, 0.9)])[0].id, id, "reacquired");
        let mut ended_at = None;
        for f in 0..10 {
            t.update(&[]);
            if t.ended() == [id] {
                ended_at = Some(f);
            }
        }
        assert_eq!(ended_at, Some(5));
    }

    #[test]
    fn different_classes_do_not_steal_each_others_tracks() {
        let mut t = ByteTracker::new(TrackerParams::default());
        let mut car = det(0.0, 0.0, 0.9);
        car.class_id = 2;
        car.label = Arc::from("car");
        let person = det(0.0, 0.0, 0.9);
        let c = t.update(&[car.clone()])[0].id;
        t.update(&[car]);
        let tracks = t.update(&[person]);
        assert!(tracks.iter().all(|tr| tr.id != c));
    }
}
