use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model file {path} has sha256 {actual}, but its manifest says {expected}; refusing to load it")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("backend {0} is not compiled into this build (enable its Cargo feature)")]
    BackendUnavailable(&'static str),
    #[error("inference runtime: {0}")]
    Runtime(String),
    #[error("unsupported model output for the {decoder} decoder: {reason}")]
    OutputShape {
        decoder: &'static str,
        reason: String,
    },
    #[error("input image is {got} bytes, the model needs {want} ({width}x{height} RGB)")]
    InputSize {
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
}

impl DetectError {
    pub(crate) fn unknown_label(label: &str, model: &str) -> Self {
        DetectError::Manifest {
            path: model.into(),
            reason: format!("label {label:?} is not one of the model's classes"),
        }
    }
}
