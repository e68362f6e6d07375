//! Its own test binary, so this process has never loaded ONNX Runtime when the test runs.

use std::collections::BTreeMap;
use std::path::Path;

use aegis_detect::{BackendKind, ObjectDetector, PostProcess};

#[test]
fn a_missing_runtime_library_is_a_clear_error() {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ssdlite_mbv2_person.yaml");
    let err = ObjectDetector::load(
        &manifest,
        BackendKind::Ort,
        aegis_detect::Threads::new(1),
        Path::new("/nonexistent/libonnxruntime.so"),
        |m| PostProcess::new(m, 0.3, &BTreeMap::new(), None, 0.5),
    )
    .err()
    .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot load ONNX Runtime from /nonexistent/libonnxruntime.so"),
        "{msg}"
    );
}
