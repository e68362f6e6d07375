use crate::RawDetection;

/// Greedy class-aware non-maximum suppression: keeps the highest-scoring box of each cluster of
/// same-class boxes that overlap by more than `iou`. Returns the survivors, best first.
pub fn nms(mut dets: Vec<RawDetection>, iou: f32) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<RawDetection> = Vec::with_capacity(dets.len());
    for d in dets {
        if keep
            .iter()
            .all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou)
        {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_domain::BBox;

    fn d(x: f32, score: f32, class_id: u32) -> RawDetection {
        RawDetection {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            score,
            class_id,
        }
    }

    #[test]
    fn suppresses_overlaps_within_a_class_only() {
        let out = nms(
            vec![
                d(0.0, 0.5, 0),
                d(1.0, 0.9, 0),
                d(1.0, 0.8, 1),
                d(50.0, 0.3, 0),
            ],
            0.5,
        );
        let got: Vec<_> = out.iter().map(|r| (r.score, r.class_id)).collect();
        assert_eq!(got, [(0.9, 0), (0.8, 1), (0.3, 0)]);
    }
}
