use ff::software::scaling;
use ffmpeg_next as ff;

use crate::IngestError;

type ScalerKey = (ff::format::Pixel, u32, u32);

/// Converts decoded frames to one pixel format, either at a fixed size or at the frame's own
/// size. Rebuilds its scaler only when the input format or size changes.
pub(crate) struct Scaler {
    target: ff::format::Pixel,
    size: Option<(u32, u32)>,
    scaler: Option<(scaling::Context, ScalerKey)>,
    out: ff::frame::Video,
}

impl Scaler {
    /// To `target`, at `size` (stretched, bilinear), or at the frame's own size.
    pub(crate) fn new(target: ff::format::Pixel, size: Option<(u32, u32)>) -> Self {
        Self {
            target,
            size,
            scaler: None,
            out: ff::frame::Video::empty(),
        }
    }

    pub(crate) fn run(
        &mut self,
        frame: &ff::frame::Video,
    ) -> Result<&ff::frame::Video, IngestError> {
        let key = (frame.format(), frame.width(), frame.height());
        let (w, h) = self.size.unwrap_or((key.1, key.2));
        let scaler = match &mut self.scaler {
            Some((s, k)) if *k == key => s,
            slot => {
                let ctx = scaling::Context::get(
                    key.0,
                    key.1,
                    key.2,
                    self.target,
                    w,
                    h,
                    scaling::Flags::FAST_BILINEAR,
                )
                .map_err(|e| IngestError::Decode(format!("cannot convert {key:?}: {e}")))?;
                // The output follows the input's size when it keeps it (a camera that changes
                // resolution): a fresh frame is allocated at the new size.
                self.out = ff::frame::Video::empty();
                &mut slot.insert((ctx, key)).0
            }
        };
        scaler
            .run(frame, &mut self.out)
            .map_err(|e| IngestError::Decode(format!("convert: {e}")))?;
        Ok(&self.out)
    }
}

/// Converts decoded frames to packed RGB24, either at a fixed size (the model's input) or at the
/// frame's own size (snapshots). Lives on the thread that uses it.
pub struct RgbConverter(Scaler);

impl RgbConverter {
    /// Resizes (stretches) every frame to `width x height`, bilinear.
    pub fn to_size(width: u32, height: u32) -> Self {
        Self(Scaler::new(ff::format::Pixel::RGB24, Some((width, height))))
    }

    /// Keeps each frame's own size.
    pub fn native() -> Self {
        Self(Scaler::new(ff::format::Pixel::RGB24, None))
    }

    pub fn convert(&mut self, frame: &ff::frame::Video) -> Result<Vec<u8>, IngestError> {
        Ok(pack_rgb(self.0.run(frame)?))
    }
}

/// Copies an RGB24 frame into a tightly packed buffer (FFmpeg pads rows).
fn pack_rgb(frame: &ff::frame::Video) -> Vec<u8> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut out = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        out.extend_from_slice(&data[row * stride..row * stride + w * 3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: u32, height: u32) -> ff::frame::Video {
        let mut frame = ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height);
        for plane in 0..3 {
            frame.data_mut(plane).fill(128);
        }
        frame
    }

    #[test]
    fn follows_a_stream_whose_size_changes() {
        ff::init().unwrap();
        let mut native = RgbConverter::native();
        let mut fixed = RgbConverter::to_size(64, 48);
        for (w, h) in [(320, 240), (640, 360), (320, 240)] {
            let frame = grey(w, h);
            let rgb = native.convert(&frame).unwrap();
            assert_eq!(rgb.len(), (w * h * 3) as usize, "{w}x{h} at its own size");
            assert_eq!(fixed.convert(&frame).unwrap().len(), 64 * 48 * 3);
        }
    }
}
