//! Output decoders: model tensors in, boxes in model-input pixels out. Each checks the shapes it
//! is given and says what it expected, so a user's own ONNX fails at load with a clear message.

use aegis_domain::BBox;

use crate::{DecoderSpec, DetectError, OutputTensor};

/// A detection in model-input pixel coordinates, before thresholds and NMS.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: u32,
}

/// Decodes a model's outputs. `min_score` drops candidates early (before NMS); `classes` is the
/// number of classes in the manifest.
pub fn decode(
    spec: &DecoderSpec,
    outputs: &[OutputTensor],
    input_w: f32,
    input_h: f32,
    classes: usize,
    min_score: f32,
) -> Result<Vec<RawDetection>, DetectError> {
    match spec {
        DecoderSpec::Centernet => centernet(outputs, classes, min_score),
        DecoderSpec::Ssd { scales } => ssd(outputs, scales, input_w, input_h, classes, min_score),
        DecoderSpec::Yolo => yolo(outputs, classes, min_score),
    }
}

fn shape_err(decoder: &'static str, reason: String) -> DetectError {
    DetectError::OutputShape { decoder, reason }
}

fn single_output<'a>(
    decoder: &'static str,
    outputs: &'a [OutputTensor],
) -> Result<&'a OutputTensor, DetectError> {
    match outputs {
        [out] => Ok(out),
        _ => Err(shape_err(
            decoder,
            format!("expected 1 output, got {}", outputs.len()),
        )),
    }
}

fn centernet(
    outputs: &[OutputTensor],
    classes: usize,
    min_score: f32,
) -> Result<Vec<RawDetection>, DetectError> {
    let out = single_output("centernet", outputs)?;
    let n = match out.shape[..] {
        [1, n, 6] => n,
        _ => {
            return Err(shape_err(
                "centernet",
                format!("expected [1, N, 6], got {:?}", out.shape),
            ))
        }
    };
    let mut dets = Vec::new();
    for row in out.data.chunks_exact(6).take(n) {
        let (score, class) = (row[4], row[5]);
        if score < min_score || !(class >= 0.0 && (class as usize) < classes) {
            continue;
        }
        dets.push(RawDetection {
            bbox: BBox::new(row[0], row[1], row[2], row[3]),
            score,
            class_id: class as u32,
        });
    }
    Ok(dets)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn ssd(
    outputs: &[OutputTensor],
    s: &[f32; 4],
    input_w: f32,
    input_h: f32,
    classes: usize,
    min_score: f32,
) -> Result<Vec<RawDetection>, DetectError> {
    let expected = || {
        format!(
            "expected box encodings [1, A, 4], logits [1, A, {}] and anchors [A, 4]; got {:?}",
            classes + 1,
            outputs.iter().map(|o| &o.shape).collect::<Vec<_>>()
        )
    };
    let rank3 = |o: &&OutputTensor| o.shape.len() == 3 && o.shape[0] == 1;
    let boxes = outputs.iter().filter(rank3).find(|o| o.shape[2] == 4);
    let logits = outputs
        .iter()
        .filter(rank3)
        .find(|o| o.shape[2] == classes + 1 && !boxes.is_some_and(|b| std::ptr::eq(*o, b)));
    let anchors = outputs
        .iter()
        .find(|o| o.shape.len() == 2 && o.shape[1] == 4);
    let (Some(boxes), Some(logits), Some(anchors)) = (boxes, logits, anchors) else {
        return Err(shape_err("ssd", expected()));
    };
    let a = anchors.shape[0];
    if boxes.shape[1] != a || logits.shape[1] != a {
        return Err(shape_err("ssd", expected()));
    }
    let c1 = classes + 1;
    let mut dets = Vec::new();
    for i in 0..a {
        let scores = &logits.data[i * c1..(i + 1) * c1];
        // Background is column 0; take the best real class.
        let (best, logit) =
            scores[1..]
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (k, &v)| if v > acc.1 { (k, v) } else { acc },
                );
        let score = sigmoid(logit);
        if score < min_score {
            continue;
        }
        let an = &anchors.data[i * 4..i * 4 + 4];
        let (ya, xa) = ((an[0] + an[2]) / 2.0, (an[1] + an[3]) / 2.0);
        let (ha, wa) = (an[2] - an[0], an[3] - an[1]);
        let e = &boxes.data[i * 4..i * 4 + 4];
        let yc = e[0] / s[0] * ha + ya;
        let xc = e[1] / s[1] * wa + xa;
        let h = (e[2] / s[2]).exp() * ha;
        let w = (e[3] / s[3]).exp() * wa;
        dets.push(RawDetection {
            bbox: BBox::new(
                (xc - w / 2.0) * input_w,
                (yc - h / 2.0) * input_h,
                (xc + w / 2.0) * input_w,
                (yc + h / 2.0) * input_h,
            ),
            score,
            class_id: best as u32,
        });
    }
    Ok(dets)
}

fn yolo(
    outputs: &[OutputTensor],
    classes: usize,
    min_score: f32,
) -> Result<Vec<RawDetection>, DetectError> {
    let out = single_output("yolo", outputs)?;
    let (n, stride, with_objectness, transposed) = match out.shape[..] {
        [1, n, k] if k == 5 + classes => (n, k, true, false),
        [1, k, n] if k == 4 + classes => (n, k, false, true),
        _ => {
            return Err(shape_err(
                "yolo",
                format!(
                    "expected [1, N, {}] (v5) or [1, {}, N] (v8), got {:?}",
                    5 + classes,
                    4 + classes,
                    out.shape
                ),
            ))
        }
    };
    let at = |i: usize, j: usize| {
        if transposed {
            out.data[j * n + i]
        } else {
            out.data[i * stride + j]
        }
    };
    let first_class = if with_objectness { 5 } else { 4 };
    let mut dets = Vec::new();
    for i in 0..n {
        let objectness = if with_objectness { at(i, 4) } else { 1.0 };
        if objectness < min_score {
            continue;
        }
        let (best, p) = (0..classes).map(|c| (c, at(i, first_class + c))).fold(
            (0, f32::NEG_INFINITY),
            |acc, v| if v.1 > acc.1 { v } else { acc },
        );
        let score = objectness * p;
        if score < min_score {
            continue;
        }
        let (cx, cy, w, h) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
        dets.push(RawDetection {
            bbox: BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0),
            score,
            class_id: best as u32,
        });
    }
    Ok(dets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: Vec<f32>) -> OutputTensor {
        OutputTensor {
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn centernet_reads_rows_and_drops_low_scores_and_bad_classes() {
        let out = t(
            &[1, 3, 6],
            vec![
                10.0, 20.0, 30.0, 60.0, 0.9, 0.0, //
                1.0, 1.0, 2.0, 2.0, 0.1, 0.0, //
                1.0, 1.0, 2.0, 2.0, 0.9, 95.0,
            ],
        );
        let d = decode(&DecoderSpec::Centernet, &[out], 512.0, 512.0, 80, 0.3).unwrap();
        assert_eq!(
            d,
            vec![RawDetection {
                bbox: BBox::new(10.0, 20.0, 30.0, 60.0),
                score: 0.9,
                class_id: 0
            }]
        );
        let err = decode(
            &DecoderSpec::Centernet,
            &[t(&[1, 100, 7], vec![0.0; 700])],
            1.0,
            1.0,
            80,
            0.3,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected [1, N, 6], got [1, 100, 7]"),
            "{err}"
        );
    }

    #[test]
    fn ssd_applies_the_box_coder_to_anchors() {
        // One anchor centred at (0.5, 0.5), 0.2 x 0.4; the encoding shifts x by +0.1*w and doubles h.
        let anchors = t(&[1, 4], vec![0.4, 0.3, 0.6, 0.7]);
        let boxes = t(&[1, 1, 4], vec![0.0, 1.0, 5.0 * 2f32.ln(), 0.0]);
        let logits = t(&[1, 1, 2], vec![5.0, 2.0]);
        let d = decode(
            &DecoderSpec::Ssd {
                scales: ssd_scales(),
            },
            &[boxes, logits, anchors],
            300.0,
            300.0,
            1,
            0.5,
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        let b = d[0].bbox;
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        assert!(
            close(b.x1, (0.54 - 0.2) * 300.0) && close(b.x2, (0.54 + 0.2) * 300.0),
            "{b:?}"
        );
        assert!(
            close(b.y1, (0.5 - 0.2) * 300.0) && close(b.y2, (0.5 + 0.2) * 300.0),
            "{b:?}"
        );
        assert!(close(d[0].score, sigmoid(2.0)));
    }

    fn ssd_scales() -> [f32; 4] {
        [10.0, 10.0, 5.0, 5.0]
    }

    #[test]
    fn yolo_v5_and_v8_layouts_decode_to_the_same_box() {
        // Two classes; the box is class 1 at centre (100, 50), 20 x 40.
        let v5 = t(&[1, 1, 7], vec![100.0, 50.0, 20.0, 40.0, 0.9, 0.1, 0.8]);
        let v8 = t(
            &[1, 6, 2],
            vec![
                100.0, 0.0, 50.0, 0.0, 20.0, 0.0, 40.0, 0.0, 0.1, 0.0, 0.72, 0.0,
            ],
        );
        let a = decode(&DecoderSpec::Yolo, &[v5], 640.0, 640.0, 2, 0.25).unwrap();
        let b = decode(&DecoderSpec::Yolo, &[v8], 640.0, 640.0, 2, 0.25).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].bbox, BBox::new(90.0, 30.0, 110.0, 70.0));
        assert_eq!(a[0].class_id, 1);
        assert!((a[0].score - 0.72).abs() < 1e-6);
        assert_eq!((b[0].bbox, b[0].class_id), (a[0].bbox, a[0].class_id));
        assert!((b[0].score - 0.72).abs() < 1e-6);
        assert!(decode(
            &DecoderSpec::Yolo,
            &[t(&[1, 3, 9], vec![0.0; 27])],
            1.0,
            1.0,
            2,
            0.1
        )
        .is_err());
    }
}
