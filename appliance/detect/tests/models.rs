//! The shipped models through the real runtimes: what a user sees when a model is right, and when
//! it is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aegis_detect::{
    default_ort_library, BackendKind, DetectError, ObjectDetector, PostProcess, Threads,
};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn load(manifest: &Path, kind: BackendKind) -> Result<ObjectDetector, DetectError> {
    load_with(manifest, kind, Threads::new(2))
}

fn load_with(
    manifest: &Path,
    kind: BackendKind,
    threads: Threads,
) -> Result<ObjectDetector, DetectError> {
    ObjectDetector::load(manifest, kind, threads, &default_ort_library(), |m| {
        PostProcess::new(m, 0.3, &BTreeMap::new(), None, 0.5)
    })
}

/// A copy of a shipped manifest and model in a temp dir, with the manifest text edited.
fn tampered(name: &str, edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(models().join(format!("{name}.yaml"))).unwrap();
    std::fs::write(dir.path().join(format!("{name}.yaml")), edit(text)).unwrap();
    std::fs::copy(
        models().join(format!("{name}.onnx")),
        dir.path().join(format!("{name}.onnx")),
    )
    .unwrap();
    let p = dir.path().join(format!("{name}.yaml"));
    (dir, p)
}

#[test]
fn a_model_whose_hash_differs_is_refused() {
    let (_dir, manifest) = tampered("ssdlite_mbv2_person", |t| {
        t.replace(
            "23b38b2b7966e9837925207cd7fcfa9ef02bbecea0381eee8f5c060b63838585",
            &"0".repeat(64),
        )
    });
    let err = load(&manifest, BackendKind::Ort)
        .err()
        .expect("must refuse");
    assert!(matches!(err, DetectError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("refusing to load"), "{err}");
}

#[test]
fn a_corrupted_model_file_is_refused_before_the_runtime_sees_it() {
    let (dir, manifest) = tampered("ssdlite_mbv2_person", |t| t);
    let onnx = dir.path().join("ssdlite_mbv2_person.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&onnx, bytes).unwrap();
    assert!(matches!(
        load(&manifest, BackendKind::Ort),
        Err(DetectError::Checksum { .. })
    ));
}

#[test]
fn a_decoder_that_does_not_fit_the_outputs_is_refused_at_load() {
    let (_dir, manifest) = tampered("centernet_mbv3_coco80", |t| {
        t.replace("kind: centernet", "kind: yolo")
    });
    let err = load(&manifest, BackendKind::Ort)
        .err()
        .expect("must refuse");
    assert!(
        matches!(
            err,
            DetectError::OutputShape {
                decoder: "yolo",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("got [1, 100, 6]"), "{err}");
}

#[test]
fn unknown_labels_in_the_filter_are_refused() {
    let err = ObjectDetector::load(
        &models().join("ssdlite_mbv2_person.yaml"),
        BackendKind::Ort,
        Threads::new(1),
        &default_ort_library(),
        |m| PostProcess::new(m, 0.3, &BTreeMap::new(), Some(&["unicorn".to_owned()]), 0.5),
    )
    .err()
    .expect("must refuse");
    assert!(
        err.to_string()
            .contains("\"unicorn\" is not one of the model's classes"),
        "{err}"
    );
}

#[test]
fn blank_images_give_no_detections_on_either_model() {
    for name in ["centernet_mbv3_coco80", "ssdlite_mbv2_person"] {
        let mut d = load(&models().join(format!("{name}.yaml")), BackendKind::Ort).unwrap();
        let (w, h) = d.input_size();
        let grey = vec![128u8; (w * h * 3) as usize];
        assert!(d.detect(&grey, 768, 576).unwrap().is_empty(), "{name}");
        assert!(matches!(
            d.detect(&grey[1..], 768, 576),
            Err(DetectError::InputSize { .. })
        ));
    }
}

/// Frame 5 of the demo clip, resized (bilinear) to `w x h` packed RGB by the `ffmpeg` CLI.
fn demo_frame(w: u32, h: u32) -> Vec<u8> {
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hil-tests/fixtures/vtest_h264.mp4");
    let select = format!("select=eq(n\\,5),scale={w}:{h}:flags=bilinear");
    let rgb = aegis_testkit::ffmpeg(
        &[],
        clip,
        &[
            "-vf", &select, "-vframes", "1", "-pix_fmt", "rgb24", "-f", "rawvideo",
        ],
        "-",
    );
    assert_eq!(rgb.len(), (w * h * 3) as usize);
    rgb
}

#[test]
fn both_shipped_models_find_the_people_in_the_plaza() {
    for (name, size) in [("centernet_mbv3_coco80", 512), ("ssdlite_mbv2_person", 300)] {
        let mut d = load(&models().join(format!("{name}.yaml")), BackendKind::Ort).unwrap();
        let people = d
            .detect(&demo_frame(size, size), 768, 576)
            .unwrap()
            .into_iter()
            .filter(|x| &*x.label == "person")
            .count();
        assert!(people >= 2, "{name}: {people} people on frame 5");
    }
}

#[cfg(feature = "tract")]
#[test]
fn tract_and_onnx_runtime_agree() {
    for (name, size) in [("centernet_mbv3_coco80", 512), ("ssdlite_mbv2_person", 300)] {
        let manifest = models().join(format!("{name}.yaml"));
        let mut a = load(&manifest, BackendKind::Ort).unwrap();
        let img = demo_frame(size, size);
        let da = a.detect(&img, 768, 576).unwrap();
        assert!(!da.is_empty(), "{name}: the frame has people in it");
        // tract on two threads that spin within a run (the default), on two that sleep, and
        // on one.
        let spinning = Threads::new(2);
        let sleeping = Threads {
            spin: false,
            ..spinning
        };
        for threads in [spinning, sleeping, Threads::new(1)] {
            let mut b = load_with(&manifest, BackendKind::Tract, threads).unwrap();
            let db = b.detect(&img, 768, 576).unwrap();
            assert_eq!(da.len(), db.len(), "{name} {threads:?}");
            for (x, y) in da.iter().zip(&db) {
                assert!(
                    x.label == y.label
                        && (x.score - y.score).abs() < 1e-3
                        && x.bbox.iou(&y.bbox) > 0.99,
                    "{name} {threads:?}: {x:?} vs {y:?}"
                );
            }
        }
    }
}

#[cfg(feature = "tract")]
#[test]
fn the_tract_profile_says_where_a_run_goes() {
    let ssd = models().join("ssdlite_mbv2_person.yaml");
    let ops = aegis_detect::tract_profile(&ssd, 1, 2, false).unwrap();
    let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
    // MobileNetV2 is depthwise and pointwise convolutions: those lead, on our ops.
    for ours in ["PlaneDepthwise", "Pointwise"] {
        assert!(names[..3].contains(&ours), "{ops:?}");
    }
    assert!(
        ops.windows(2).all(|w| w[0].1 >= w[1].1),
        "slowest first: {ops:?}"
    );
    assert!(ops.iter().map(|(_, ms)| ms).sum::<f64>() > 1.0, "{ops:?}");

    // By node: each its kind, name and input shapes. SSDLite's 19 × 19 depthwise layers run on
    // images laid out pixel by pixel, their 576 channels last.
    let nodes = aegis_detect::tract_profile(&ssd, 1, 1, true).unwrap();
    assert!(nodes.len() > ops.len(), "{nodes:?}");
    let kinds: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
    for (node, _) in &nodes {
        let kind = node.split(' ').next().unwrap();
        assert!(kinds.contains(&kind), "{node} not among {kinds:?}");
    }
    assert!(
        nodes
            .iter()
            .any(|(node, _)| node.starts_with("PixelDepthwise ")
                && node.contains("[[1, 19, 19, 576], ")),
        "{nodes:?}"
    );

    // CenterNet runs on our TopK, Resize, convolutions, max pool and axis moves, not tract's
    // slower ones.
    let ops =
        aegis_detect::tract_profile(&models().join("centernet_mbv3_coco80.yaml"), 1, 1, false)
            .unwrap();
    let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
    let pairs = [
        ("SelectTopk", "Topk"),
        ("RowResize", "Resize"),
        ("PlaneDepthwise", "DepthWiseConv"),
        ("Pointwise", "OptMatMul"),
        ("PlaneMaxPool", "OptMaxPool"),
        ("TiledMoveAxis", "MoveAxis"),
    ];
    for (ours, theirs) in pairs {
        assert!(
            names.contains(&ours) && !names.contains(&theirs),
            "{names:?}"
        );
    }
}

#[test]
fn cameras_sharing_one_loaded_model_each_get_their_own_answers() {
    let manifest = models().join("ssdlite_mbv2_person.yaml");
    let img = demo_frame(300, 300);
    let grey = vec![128u8; img.len()];
    let expected = load(&manifest, BackendKind::Ort)
        .unwrap()
        .detect(&img, 768, 576)
        .unwrap();
    assert!(!expected.is_empty(), "the frame has people in it");
    for sessions in [1, 2] {
        let shared = ObjectDetector::load(
            &manifest,
            BackendKind::Ort,
            Threads {
                sessions,
                ..Threads::new(1)
            },
            &default_ort_library(),
            |m| PostProcess::new(m, 0.3, &BTreeMap::new(), None, 0.5),
        )
        .unwrap();
        // Four cameras at once, two seeing people and two a blank wall, 20 frames each.
        let cameras: Vec<_> = (0..4)
            .map(|i| {
                let mut d = shared.clone();
                let frame = if i % 2 == 0 {
                    img.clone()
                } else {
                    grey.clone()
                };
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| d.detect(&frame, 768, 576).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, camera) in cameras.into_iter().enumerate() {
            for got in camera.join().unwrap() {
                if i % 2 == 0 {
                    assert_eq!(got.len(), expected.len(), "sessions: {sessions}");
                    for (x, y) in got.iter().zip(&expected) {
                        assert!(x.bbox.iou(&y.bbox) > 0.99, "{x:?} vs {y:?}");
                    }
                } else {
                    assert!(got.is_empty(), "sessions: {sessions}: {got:?}");
                }
            }
        }
    }
}
