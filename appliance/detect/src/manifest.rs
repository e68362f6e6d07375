use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::DetectError;

/// A model and everything needed to run it: what it is, how to feed it, how to read its output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The ONNX file, relative to the manifest.
    pub file: PathBuf,
    pub sha256: String,
    pub input: InputSpec,
    pub decoder: DecoderSpec,
    /// Class names in the model's output order (without SSD's background class).
    pub classes: Vec<String>,
    /// Where the model came from and under what licence.
    #[serde(default)]
    pub provenance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputLayout {
    Nhwc,
    Nchw,
}

/// Input tensor: RGB, resized (stretched) to `width x height`, value = pixel * scale + offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub layout: InputLayout,
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub offset: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DecoderSpec {
    /// One `[1, N, 6]` output: x1, y1, x2, y2 (input pixels), score, class index.
    Centernet,
    /// Box encodings `[1, A, 4]`, class logits `[1, A, C+1]` (background first), anchors
    /// `[A, 4]` as normalised ymin, xmin, ymax, xmax; TF Object Detection API box coder.
    Ssd {
        #[serde(default = "ssd_scales")]
        scales: [f32; 4],
    },
    /// YOLOv5-style `[1, N, 5+C]` (with objectness) or YOLOv8-style `[1, 4+C, N]`;
    /// boxes as centre x, centre y, width, height in input pixels.
    Yolo,
}

fn ssd_scales() -> [f32; 4] {
    [10.0, 10.0, 5.0, 5.0]
}

impl Manifest {
    /// The shape of the model's input tensor, batch 1.
    pub(crate) fn input_shape(&self) -> [usize; 4] {
        let (w, h) = (self.input.width as usize, self.input.height as usize);
        match self.input.layout {
            InputLayout::Nhwc => [1, h, w, 3],
            InputLayout::Nchw => [1, 3, h, w],
        }
    }

    /// Reads a manifest and its model file, checking the file's sha256.
    /// Returns the manifest and the model bytes.
    pub fn load(path: &Path) -> Result<(Manifest, Vec<u8>), DetectError> {
        let text = std::fs::read_to_string(path).map_err(|source| DetectError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bad = |reason: String| DetectError::Manifest {
            path: path.to_owned(),
            reason,
        };
        let manifest: Manifest = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.classes.is_empty() {
            return Err(bad("classes must not be empty".into()));
        }
        if manifest.input.width == 0
            || manifest.input.height == 0
            || manifest.input.width > 8192
            || manifest.input.height > 8192
        {
            return Err(bad("input width and height must be 1-8192".into()));
        }
        let model_path = path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
        let bytes = std::fs::read(&model_path).map_err(|source| DetectError::Read {
            path: model_path.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(manifest.sha256.trim()) {
            return Err(DetectError::Checksum {
                path: model_path,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        Ok((manifest, bytes))
    }
}
