use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aegis_domain::Detection;

use crate::backend::{self, BackendKind, Pool, Threads};
use crate::{decode, nms, DetectError, InputLayout, Manifest};

/// Thresholds and filters applied after decoding, resolved to class indices.
#[derive(Debug, Clone)]
pub struct PostProcess {
    /// Minimum score per class; `None` means the class is filtered out.
    thresholds: Vec<Option<f32>>,
    nms_iou: f32,
}

impl PostProcess {
    /// `scores` overrides `min_score` per label; `labels`, if given, keeps only those labels.
    /// Labels the model does not know are an error.
    pub fn new(
        manifest: &Manifest,
        min_score: f32,
        scores: &BTreeMap<String, f32>,
        labels: Option<&[String]>,
        nms_iou: f32,
    ) -> Result<Self, DetectError> {
        let index = |l: &str| {
            manifest
                .classes
                .iter()
                .position(|c| c == l)
                .ok_or_else(|| DetectError::unknown_label(l, &manifest.name))
        };
        let mut thresholds = vec![labels.is_none().then_some(min_score); manifest.classes.len()];
        for l in labels.unwrap_or_default() {
            thresholds[index(l)?] = Some(min_score);
        }
        for (l, &s) in scores {
            let i = index(l)?;
            if thresholds[i].is_some() {
                thresholds[i] = Some(s);
            }
        }
        Ok(Self {
            thresholds,
            nms_iou,
        })
    }

    /// The lowest threshold in force: candidates below it are dropped while decoding.
    fn floor(&self) -> f32 {
        self.thresholds
            .iter()
            .flatten()
            .copied()
            .fold(1.0, f32::min)
    }
}

/// A loaded model ready to detect: preprocess, infer, decode, threshold, NMS. A clone shares
/// the loaded model (see [`Threads::sessions`]) and has its own buffers: one per camera.
#[derive(Clone)]
pub struct ObjectDetector {
    manifest: Manifest,
    labels: Vec<Arc<str>>,
    backend: Arc<Pool>,
    post: PostProcess,
    input: Vec<f32>,
}

impl ObjectDetector {
    /// Loads a model from its manifest (sha256 checked), builds the backend and runs one
    /// inference on a blank image so an unsupported output shape is refused now, not later.
    pub fn load(
        manifest_path: &Path,
        kind: BackendKind,
        threads: Threads,
        ort_library: &Path,
        post: impl FnOnce(&Manifest) -> Result<PostProcess, DetectError>,
    ) -> Result<Self, DetectError> {
        let (manifest, bytes) = Manifest::load(manifest_path)?;
        let post = post(&manifest)?;
        let backend = (0..threads.sessions.max(1))
            .map(|_| backend::build(kind, &bytes, manifest.input_shape(), threads, ort_library))
            .collect::<Result<Vec<_>, _>>()?;
        let (w, h) = (manifest.input.width, manifest.input.height);
        let mut detector = Self {
            labels: manifest
                .classes
                .iter()
                .map(|c| Arc::from(c.as_str()))
                .collect(),
            manifest,
            backend: Arc::new(Pool::new(backend)),
            post,
            input: Vec::new(),
        };
        detector.detect(&vec![0u8; (w * h * 3) as usize], w, h)?;
        Ok(detector)
    }

    /// The model's class labels, by class id.
    pub fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }

    /// The size images must be resized to before `detect`.
    pub fn input_size(&self) -> (u32, u32) {
        (self.manifest.input.width, self.manifest.input.height)
    }

    /// Detects objects in `rgb` (packed RGB24 at `input_size()`), returning boxes scaled to a
    /// frame of `frame_w x frame_h`.
    pub fn detect(
        &mut self,
        rgb: &[u8],
        frame_w: u32,
        frame_h: u32,
    ) -> Result<Vec<Detection>, DetectError> {
        let spec = &self.manifest.input;
        let (w, h) = (spec.width as usize, spec.height as usize);
        if rgb.len() != w * h * 3 {
            return Err(DetectError::InputSize {
                got: rgb.len(),
                want: w * h * 3,
                width: spec.width,
                height: spec.height,
            });
        }
        preprocess(
            rgb,
            spec.layout,
            spec.scale,
            spec.offset,
            w * h,
            &mut self.input,
        );
        let outputs = self.backend.run(&self.input, self.manifest.input_shape())?;
        let raw = decode(
            &self.manifest.decoder,
            &outputs,
            w as f32,
            h as f32,
            self.labels.len(),
            self.post.floor(),
        )?;
        let kept: Vec<_> = raw
            .into_iter()
            .filter(|d| {
                self.post.thresholds[d.class_id as usize].is_some_and(|t| d.score >= t)
                    && d.bbox.width() > 0.0
                    && d.bbox.height() > 0.0
            })
            .collect();
        let (sx, sy) = (frame_w as f32 / w as f32, frame_h as f32 / h as f32);
        Ok(nms(kept, self.post.nms_iou)
            .into_iter()
            .map(|d| Detection {
                bbox: d.bbox.scale_clamped(sx, sy, frame_w as f32, frame_h as f32),
                score: d.score,
                class_id: d.class_id,
                label: self.labels[d.class_id as usize].clone(),
            })
            .collect())
    }
}

/// Packed RGB24 to the model's f32 layout, `value = pixel * scale + offset`.
fn preprocess(
    rgb: &[u8],
    layout: InputLayout,
    scale: f32,
    offset: f32,
    pixels: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    match layout {
        InputLayout::Nhwc => out.extend(rgb.iter().map(|&v| f32::from(v) * scale + offset)),
        InputLayout::Nchw => {
            out.resize(pixels * 3, 0.0);
            let (r, rest) = out.split_at_mut(pixels);
            let (g, b) = rest.split_at_mut(pixels);
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                r[i] = f32::from(px[0]) * scale + offset;
                g[i] = f32::from(px[1]) * scale + offset;
                b[i] = f32::from(px[2]) * scale + offset;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_planes_and_normalisation() {
        let mut out = Vec::new();
        preprocess(
            &[0, 128, 255, 255, 0, 0],
            InputLayout::Nchw,
            2.0 / 255.0,
            -1.0,
            2,
            &mut out,
        );
        let want = [-1.0, 1.0, 128.0 * 2.0 / 255.0 - 1.0, -1.0, 1.0, -1.0];
        assert!(
            out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{out:?}"
        );
        preprocess(&[1, 2, 3], InputLayout::Nhwc, 1.0, 0.0, 1, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }
}
