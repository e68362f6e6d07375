//! FFmpeg decoding shared by every source: packets in, sampled frames out, each converted once
//! to packed RGB at the model's input size.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use aegis_base::Clock;
use ff::codec::threading;
use ffmpeg_next as ff;

use crate::rotate::{Turn, Upright};
use crate::{FrameSampler, IngestError, RgbConverter, StreamStatus};

/// One decoded frame picked for detection.
pub struct Frame {
    /// Decoded-frame counter within the session.
    pub seq: u64,
    /// Stream time in seconds.
    pub pts_s: f64,
    /// Wall time when the frame was read (ms since the Unix epoch).
    pub wall_ms: i64,
    /// When the packet that completed this frame was read from the source: the "glass" time.
    pub read_at: Instant,
    /// When the decoder handed the picture over (decode time = this − `read_at`).
    pub decoded_at: Instant,
    pub width: u32,
    pub height: u32,
    /// Packed RGB24 at the model's input size.
    pub input: Vec<u8>,
    /// The full decoded picture, kept for snapshots.
    pub full: ff::frame::Video,
}

/// Where sampled frames go. Real-time sources drop when the detector is behind (latency first);
/// as-fast-as-possible files wait instead (nothing dropped).
pub(crate) struct FrameSink<'a> {
    pub tx: &'a SyncSender<Frame>,
    pub block: bool,
    pub status: &'a StreamStatus,
    pub clock: &'a Arc<dyn Clock>,
}

impl FrameSink<'_> {
    /// Returns false once the receiving side has gone away.
    fn deliver(&self, frame: Frame) -> bool {
        if self.block {
            return self.tx.send(frame).is_ok();
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.status
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// How many consecutive undecodable packets end a session (a hostile or broken stream).
const MAX_BAD_PACKETS: u32 = 100;

/// The largest picture decoded: DCI 8K (8192 × 4320) and a little more.
const MAX_PICTURE: (u64, u64) = (8192, 4352);
const MAX_PIXELS: u64 = MAX_PICTURE.0 * MAX_PICTURE.1;

pub(crate) struct VideoDecoder {
    decoder: ff::decoder::Video,
    upright: Upright,
    converter: RgbConverter,
    sampler: FrameSampler,
    time_base: f64,
    seq: u64,
    bad_packets: u32,
}

impl VideoDecoder {
    /// `frame_threads`: FFmpeg frame threading for throughput; it delays each frame by one per
    /// extra thread, so real-time sources decode on one thread for latency. `turn`: how far
    /// the stream's pictures turn to stand upright; sampled frames are delivered upright.
    pub(crate) fn new(
        mut ctx: ff::codec::context::Context,
        time_base: f64,
        input_size: (u32, u32),
        detect_fps: f64,
        frame_threads: bool,
        turn: Option<Turn>,
    ) -> Result<Self, IngestError> {
        if frame_threads {
            ctx.set_threading(threading::Config {
                kind: threading::Type::Frame,
                count: 0,
                ..Default::default()
            });
        }
        // The picture size the container states (0 × 0 where it states none, as for RTSP).
        // SAFETY: `ctx` owns a valid AVCodecContext; this reads two of its fields.
        let (width, height) = unsafe {
            let p = ctx.as_ptr();
            ((*p).width, (*p).height)
        };
        if i64::from(width) * i64::from(height) > MAX_PIXELS as i64 {
            let (w, h) = MAX_PICTURE;
            return Err(IngestError::Decode(format!(
                "pictures of {width}×{height} are larger than the {w} × {h} pixels (8K) the appliance decodes"
            )));
        }
        // FFmpeg refuses larger pictures later in the stream too, so that one that claims an
        // enormous size (hostile, or broken) cannot take the box's memory.
        let decoder = ctx.decoder();
        let codec = decoder
            .codec()
            .or_else(|| ff::codec::decoder::find(decoder.id()))
            .ok_or_else(|| IngestError::Codec(format!("{:?}", decoder.id())))?;
        let mut options = ff::Dictionary::new();
        options.set("max_pixels", &MAX_PIXELS.to_string());
        let decoder = decoder
            .open_as_with(codec, options)
            .and_then(|d| d.video())
            .map_err(|e| IngestError::Codec(e.to_string()))?;
        Ok(Self {
            decoder,
            upright: Upright::new(turn),
            converter: RgbConverter::to_size(input_size.0, input_size.1),
            sampler: FrameSampler::new(detect_fps),
            time_base,
            seq: 0,
            bad_packets: 0,
        })
    }

    /// Decodes one packet; returns Ok(false) once the sink has gone away.
    pub(crate) fn send(
        &mut self,
        packet: &ff::Packet,
        read_at: Instant,
        sink: &FrameSink,
    ) -> Result<bool, IngestError> {
        match self.decoder.send_packet(packet) {
            Ok(()) => self.bad_packets = 0,
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
            Err(e) => {
                self.bad_packets += 1;
                if self.bad_packets >= MAX_BAD_PACKETS {
                    return Err(IngestError::Decode(format!(
                        "{MAX_BAD_PACKETS} undecodable packets in a row, last: {e}"
                    )));
                }
            }
        }
        self.drain(read_at, sink)
    }

    /// Signals end of input and delivers what the decoder still holds.
    pub(crate) fn finish(&mut self, sink: &FrameSink) -> Result<bool, IngestError> {
        let _ = self.decoder.send_eof();
        self.drain(Instant::now(), sink)
    }

    fn drain(&mut self, read_at: Instant, sink: &FrameSink) -> Result<bool, IngestError> {
        let mut frame = ff::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let decoded_at = Instant::now();
            let wall_ms = sink.clock.now_ms();
            sink.status.frame_decoded(wall_ms);
            self.seq += 1;
            let pts_s = match frame.timestamp() {
                Some(ts) => ts as f64 * self.time_base,
                None => self.seq as f64 / 25.0,
            };
            if !self.sampler.keep(pts_s) {
                continue;
            }
            sink.status
                .sampled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let full = self
                .upright
                .apply(std::mem::replace(&mut frame, ff::frame::Video::empty()))?;
            let input = self.converter.convert(&full)?;
            let out = Frame {
                seq: self.seq,
                pts_s,
                wall_ms,
                read_at,
                decoded_at,
                width: full.width(),
                height: full.height(),
                input,
                full,
            };
            if !sink.deliver(out) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
