//! Object detection: model manifests (checked by sha256 at load), inference backends behind one
//! trait (ONNX Runtime by default, tract behind a feature; TensorRT will be a third), the output
//! decoders for CenterNet, SSD and YOLOv5/v8 heads, and post-processing (per-class thresholds,
//! class filter, NMS).

mod backend;
mod decode;
mod detector;
mod error;
mod manifest;
mod nms;
#[cfg(feature = "tract")]
mod tract_ops;

pub use backend::{Backend, BackendKind, OutputTensor, Threads};
pub use decode::{decode, RawDetection};
pub use detector::{ObjectDetector, PostProcess};
pub use error::DetectError;
pub use manifest::{DecoderSpec, InputLayout, InputSpec, Manifest};
pub use nms::nms;

/// Where a tract run of the model in `manifest` spends its time, as the mean milliseconds per
/// run of each kind of operation, or with `per_node` of each node (its kind, name and input
/// shapes), slowest first (`runs` runs on a blank input, on `threads` threads).
#[cfg(feature = "tract")]
pub fn tract_profile(
    manifest: &std::path::Path,
    threads: usize,
    runs: usize,
    per_node: bool,
) -> Result<Vec<(String, f64)>, DetectError> {
    let (manifest, model) = Manifest::load(manifest)?;
    let shape = manifest.input_shape();
    backend::tract_backend::profile(&model, shape, threads, runs.max(1), per_node)
}

/// Where the setup script puts the ONNX Runtime library, unless `AEGIS_ORT_LIB` says otherwise.
pub fn default_ort_library() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("AEGIS_ORT_LIB") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::Path::new(&home).join(".cache/aegis/onnxruntime-1.31.1/libonnxruntime.so")
}
