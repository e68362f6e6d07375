//! Pictures turned upright. Phones (and some cameras) store video sideways, with a display
//! matrix that tells a player how far to turn it; the detector, snapshots and the live view want
//! the picture as a person sees it.

use ff::format::Pixel;
use ffmpeg_next as ff;

use crate::convert::Scaler;
use crate::IngestError;

/// How far a stream's pictures turn clockwise to stand upright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    Cw90,
    Cw180,
    Cw270,
}

impl Turn {
    /// From a stream's display matrix (FFmpeg side data: 3 × 3 native-endian i32, 16.16 fixed
    /// point), to the nearest quarter turn, as FFmpeg's player turns it; none for pictures
    /// already upright, or no matrix. Mirroring is ignored.
    pub(crate) fn from_display_matrix(bytes: &[u8]) -> Option<Self> {
        let m: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
            .collect();
        if m.len() < 9 {
            return None;
        }
        let (sx, sy) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
        if sx == 0.0 || sy == 0.0 {
            return None;
        }
        // FFmpeg's av_display_rotation_get is the negative of this (it turns counterclockwise).
        let clockwise = (m[1] / sy).atan2(m[0] / sx).to_degrees();
        match ((clockwise / 90.0).round() as i64).rem_euclid(4) {
            1 => Some(Self::Cw90),
            2 => Some(Self::Cw180),
            3 => Some(Self::Cw270),
            _ => None,
        }
    }
}

/// Turns a stream's frames upright. Formats whose planes it cannot turn as they are (more than
/// a byte a sample, or subsampled one way only) are converted to 8-bit YUV 4:2:0 first.
pub(crate) struct Upright {
    turn: Option<Turn>,
    to_yuv: Scaler,
}

impl Upright {
    pub(crate) fn new(turn: Option<Turn>) -> Self {
        Self {
            turn,
            to_yuv: Scaler::new(Pixel::YUV420P, None),
        }
    }

    pub(crate) fn apply(
        &mut self,
        frame: ff::frame::Video,
    ) -> Result<ff::frame::Video, IngestError> {
        let Some(turn) = self.turn else {
            return Ok(frame);
        };
        let src = match frame.format() {
            Pixel::YUV420P | Pixel::YUVJ420P | Pixel::YUV444P | Pixel::YUVJ444P | Pixel::GRAY8 => {
                &frame
            }
            _ => self.to_yuv.run(&frame)?,
        };
        let (w, h) = match turn {
            Turn::Cw90 | Turn::Cw270 => (src.height(), src.width()),
            Turn::Cw180 => (src.width(), src.height()),
        };
        let mut out = ff::frame::Video::new(src.format(), w, h);
        out.set_color_range(src.color_range());
        out.set_color_space(src.color_space());
        for plane in 0..src.planes() {
            let size = (
                src.plane_width(plane) as usize,
                src.plane_height(plane) as usize,
            );
            let stride = out.stride(plane);
            turn_plane(
                turn,
                src.data(plane),
                src.stride(plane),
                size,
                out.data_mut(plane),
                stride,
            );
        }
        Ok(out)
    }
}

/// Turns one plane of `width × height` one-byte samples.
fn turn_plane(
    turn: Turn,
    src: &[u8],
    src_stride: usize,
    (width, height): (usize, usize),
    dst: &mut [u8],
    dst_stride: usize,
) {
    for y in 0..height {
        for (x, &v) in src[y * src_stride..][..width].iter().enumerate() {
            let (dx, dy) = match turn {
                Turn::Cw90 => (height - 1 - y, x),
                Turn::Cw180 => (width - 1 - x, height - 1 - y),
                Turn::Cw270 => (y, width - 1 - x),
            };
            dst[dy * dst_stride + dx] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A display matrix as FFmpeg stores it, from its first two rows' first two entries.
    fn matrix(a: i32, b: i32, c: i32, d: i32) -> Vec<u8> {
        [a, b, 0, c, d, 0, 0, 0, 1 << 30]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    #[test]
    fn reads_the_quarter_turn_players_make() {
        const ONE: i32 = 1 << 16;
        // As `ffmpeg -metadata:s:v rotate=…` writes them (ffprobe: rotation 90, -180, -90);
        // FFmpeg's player turns the first counterclockwise, the last clockwise.
        let turn = |a, b, c, d| Turn::from_display_matrix(&matrix(a, b, c, d));
        assert_eq!(turn(0, -ONE, ONE, 0), Some(Turn::Cw270));
        assert_eq!(turn(-ONE, 0, 0, -ONE), Some(Turn::Cw180));
        assert_eq!(turn(0, ONE, -ONE, 0), Some(Turn::Cw90));
        assert_eq!(turn(ONE, 0, 0, ONE), None);
        // Scaled, and a few degrees off a quarter turn.
        assert_eq!(turn(8, 2 * ONE, -2 * ONE, 8), Some(Turn::Cw90));
        // Not a matrix: left as it is.
        assert_eq!(Turn::from_display_matrix(&[0; 12]), None);
        assert_eq!(turn(0, 0, 0, 0), None);
    }

    #[test]
    fn turns_every_plane_and_converts_what_it_cannot_turn_as_it_is() {
        ff::init().unwrap();
        // 4 × 2, each sample its own value; NV12 (chroma interleaved) goes through YUV 4:2:0.
        for format in [Pixel::YUV420P, Pixel::GRAY8, Pixel::NV12] {
            let mut frame = ff::frame::Video::new(format, 4, 2);
            for plane in 0..frame.planes() {
                let stride = frame.stride(plane);
                for (i, v) in frame.data_mut(plane).iter_mut().enumerate() {
                    *v = (plane * 100 + (i / stride) * 10 + i % stride) as u8;
                }
            }
            let luma = |f: &ff::frame::Video, x: usize, y: usize| f.data(0)[y * f.stride(0) + x];
            let turned = Upright::new(Some(Turn::Cw90)).apply(frame.clone()).unwrap();
            assert_eq!((turned.width(), turned.height()), (2, 4), "{format:?}");
            // Clockwise: the top row becomes the right column, read top to bottom.
            for x in 0..4 {
                assert_eq!(luma(&turned, 1, x), luma(&frame, x, 0), "{format:?}");
                assert_eq!(luma(&turned, 0, x), luma(&frame, x, 1), "{format:?}");
            }
            let half = Upright::new(Some(Turn::Cw180))
                .apply(frame.clone())
                .unwrap();
            assert_eq!(luma(&half, 0, 0), luma(&frame, 3, 1), "{format:?}");
            let back = Upright::new(Some(Turn::Cw270)).apply(turned).unwrap();
            assert_eq!((back.width(), back.height()), (4, 2));
            // Turned as they are, every plane comes back; converted, the luma does.
            let planes = if back.format() == format {
                frame.planes()
            } else {
                assert_eq!(back.format(), Pixel::YUV420P);
                1
            };
            for plane in 0..planes {
                for row in 0..frame.plane_height(plane) as usize {
                    let width = frame.plane_width(plane) as usize;
                    assert_eq!(
                        back.data(plane)[row * back.stride(plane)..][..width],
                        frame.data(plane)[row * frame.stride(plane)..][..width],
                        "{format:?} plane {plane} row {row} there and back"
                    );
                }
            }
        }
    }
}
