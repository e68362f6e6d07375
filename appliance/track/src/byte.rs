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
        let boxes: Vec<BBox> = tracks.iter().map(|&t| self.tracks[t].bbox()).collect();
        let mut edges = Vec::new();
        for (ti, di) in overlapping(&boxes, dets) {
            let (tr, d) = (&self.tracks[tracks[ti]], dets[di]);
            if self.params.per_class && d.class_id != tr.class_id {
                continue;
            }
            let iou = boxes[ti].iou(&d.bbox);
            let sim = if fuse_score { iou * d.score } else { iou };
            edges.push((ti, di, 1.0 - sim));
        }
        let a = assign(tracks.len(), dets.len(), &edges, limit);
        for &(ti, di) in &a.matches {
            self.tracks[tracks[ti]].absorb(dets[di], self.frame);
        }
        (
            a.unmatched_rows.iter().map(|&i| tracks[i]).collect(),
            a.unmatched_cols,
        )
    }
}

/// Pairs `(box index, detection index)` whose boxes overlap, by a sweep over detections sorted
/// by left edge: O((n + k) log n) instead of testing all n x m pairs. Pairs that do not overlap
/// have IoU 0, which no association stage accepts, so nothing is lost.
fn overlapping(boxes: &[BBox], dets: &[&Detection]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_unstable_by(|&a, &b| dets[a].bbox.x1.total_cmp(&dets[b].bbox.x1));
    let widest = dets.iter().map(|d| d.bbox.width()).fold(0.0f32, f32::max);
    let mut pairs = Vec::new();
    for (bi, b) in boxes.iter().enumerate() {
        // Candidates start no further left than the widest detection could reach from.
        let from = order.partition_point(|&i| dets[i].bbox.x1 < b.x1 - widest);
        for &di in &order[from..] {
            let d = &dets[di].bbox;
            if d.x1 >= b.x2 {
                break;
            }
            if d.x2 > b.x1 && d.y1 < b.y2 && d.y2 > b.y1 {
                pairs.push((bi, di));
            }
        }
    }
    pairs
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

    fn end_all(&mut self) {
        self.ended = self
            .tracks
            .drain(..)
            .filter(|t| t.id != 0)
            .map(|t| t.id)
            .collect();
    }
}

impl ByteTracker {
    /// A lost track that overlaps a tracked one almost exactly is the same object twice:
    /// keep whichever has existed longer (ByteTrack's `remove_duplicate_stracks`).
    fn remove_duplicates(&mut self) {
        let boxes: Vec<BBox> = self.tracks.iter().map(Tracklet::bbox).collect();
        let of = |state: State| -> Vec<usize> {
            (0..self.tracks.len())
                .filter(|&i| self.tracks[i].state == state && self.tracks[i].id != 0)
                .collect()
        };
        let (tracked, lost) = (of(State::Tracked), of(State::Lost));
        let mut drop = vec![false; self.tracks.len()];
        for &i in &tracked {
            for &j in &lost {
                if boxes[i].iou(&boxes[j]) > 0.85 {
                    let older_i = self.tracks[i].start_frame < self.tracks[j].start_frame;
                    drop[if older_i { j } else { i }] = true;
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
    fn the_overlap_sweep_finds_exactly_the_overlapping_pairs() {
        let mut seed = 7u64;
        let mut rnd = |scale: f32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 * scale
        };
        for _ in 0..50 {
            let mut boxes = Vec::new();
            let mut dets = Vec::new();
            for _ in 0..40 {
                boxes.push(BBox::from_xywh(
                    rnd(500.0),
                    rnd(500.0),
                    rnd(90.0),
                    rnd(90.0),
                ));
                dets.push(Detection {
                    bbox: BBox::from_xywh(rnd(500.0), rnd(500.0), rnd(120.0), rnd(60.0)),
                    ..det(0.0, 0.0, 0.9)
                });
                BBox::from_xywh(rnd(500.0), rnd(500.0), rnd(120.0), rnd(60.0));
            }
            let refs: Vec<&Detection> = dets.iter().collect();
            let mut got = overlapping(&boxes, &refs);
            got.sort_unstable();
            let mut want = Vec::new();
            for (bi, b) in boxes.iter().enumerate() {
                for (di, d) in dets.iter().enumerate() {
                    if b.iou(&d.bbox) > 0.0 {
                        want.push((bi, di));
                    }
                }
            }
            assert_eq!(got, want);
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
    fn ending_all_names_every_confirmed_track_lost_or_seen_and_starts_afresh() {
        let mut t = ByteTracker::new(TrackerParams::default());
        let seen = t.update(&[det(0.0, 0.0, 0.9), det(300.0, 0.0, 0.9)]);
        // One object goes out of sight (lost, still remembered); a new one is not yet confirmed.
        t.update(&[det(0.0, 0.0, 0.9), det(600.0, 0.0, 0.9)]);
        t.end_all();
        let mut ended = t.ended().to_vec();
        ended.sort_unstable();
        assert_eq!(ended, [seen[0].id, seen[1].id]);
        // Nothing is carried over: the first object seen again is a new track.
        t.update(&[det(0.0, 0.0, 0.9)]);
        let again = t.update(&[det(0.0, 0.0, 0.9)]);
        assert!(t.ended().is_empty());
        assert_eq!(again.len(), 1);
        assert!(again[0].id > seen[1].id, "{again:?}");
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
