//! Frame sources: files (anything FFmpeg demuxes) and RTSP cameras (retina, TCP or UDP, H.264
//! and H.265). Each stream runs on its own thread under a supervisor that reconnects with
//! exponential backoff and jitter, detects stalls, and keeps a per-stream status. Decoded frames
//! are sampled down to the detect rate and converted once, to the model's input size.

mod convert;
mod decode;
mod error;
mod file;
mod rotate;
mod rtsp;
mod sampler;
mod status;
mod supervisor;

pub use convert::RgbConverter;
pub use decode::Frame;
pub use error::IngestError;
pub use ffmpeg_next as ff;
pub use sampler::FrameSampler;
pub use status::{StreamState, StreamStatus, StreamStatusView};
pub use supervisor::{SourceSpec, StreamIngest};

/// Initialises FFmpeg once; safe to call repeatedly.
pub fn init() -> Result<(), IngestError> {
    ffmpeg_next::init().map_err(|e| IngestError::Decode(format!("FFmpeg initialisation: {e}")))?;
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    Ok(())
}
