use std::path::Path;
use std::time::{Duration, Instant};

use ffmpeg_next as ff;

use crate::decode::VideoDecoder;
use crate::supervisor::{Session, SessionEnd};
use crate::IngestError;

/// How far a packet's stream time may be from where pacing expects it (either way) before it is
/// taken as a jump in the stream's clock.
const MAX_JUMP_S: f64 = 5.0;

/// Reads a file to its end, optionally at its own pace.
pub(crate) fn run(path: &Path, realtime: bool, s: &Session) -> Result<SessionEnd, IngestError> {
    let name = path.display().to_string();
    let mut input = ff::format::input(&path).map_err(|e| IngestError::Open {
        source_name: name.clone(),
        reason: e.to_string(),
    })?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| IngestError::NoVideo(name.clone()))?;
    let index = stream.index();
    let tb = stream.time_base();
    let time_base = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| IngestError::Codec(e.to_string()))?;
    let mut decoder = VideoDecoder::new(ctx, time_base, s.input_size, s.detect_fps, !realtime)?;
    // Raw streams (.h264, .h265 as cameras dump them) carry no timestamps. Each of their packets
    // is given one, a frame duration after the last, so they are paced, sampled and timed like
    // any other file. The duration is the packet's own (from the stream's timing info), else the
    // stream's frame rate, else 25 fps as FFmpeg assumes.
    let rate = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .map_or(25.0, f64::from);
    let frame_ticks = ((1.0 / rate / time_base).round() as i64).max(1);
    let mut untimed_next = 0i64;

    // Pacing: a packet is due at its stream time relative to an anchor (a stream time and the
    // instant it was read at).
    let mut anchor: Option<(f64, Instant)> = None;
    let mut read_errors = 0u32;
    loop {
        if s.shutdown.is_triggered() {
            return Ok(SessionEnd::Stopped);
        }
        let mut packet = ff::Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => read_errors = 0,
            Err(ff::Error::Eof) => break,
            Err(e) => {
                // A damaged region: skip it, but give up on a file that is nothing but damage.
                read_errors += 1;
                if read_errors > 100 {
                    return Err(IngestError::Read(format!("{name}: {e}")));
                }
                continue;
            }
        }
        if packet.stream() != index {
            continue;
        }
        if packet.pts().is_none() && packet.dts().is_none() {
            packet.set_dts(Some(untimed_next));
            let ticks = packet.duration();
            untimed_next += if ticks > 0 { ticks } else { frame_ticks };
        }
        // Decode order (dts) is the order packets are read in; pts goes back and forth with
        // B-frames.
        if let (true, Some(ts)) = (realtime, packet.dts().or(packet.pts())) {
            let t = ts as f64 * time_base;
            let now = Instant::now();
            let (t0, at) = *anchor.get_or_insert((t, now));
            let ahead = t - t0 - now.duration_since(at).as_secs_f64();
            if ahead.abs() > MAX_JUMP_S {
                // A jump in the stream's clock (joined recordings, a wrapped or reset clock), or
                // a reader this far behind: go on from here rather than wait out the gap or
                // rush through the file to catch up.
                anchor = Some((t, now));
            } else if ahead > 0.0 && s.shutdown.wait_timeout(Duration::from_secs_f64(ahead)) {
                return Ok(SessionEnd::Stopped);
            }
        }
        if !decoder.send(&packet, Instant::now(), &s.sink)? {
            return Ok(SessionEnd::Stopped);
        }
    }
    if !decoder.finish(&s.sink)? {
        return Ok(SessionEnd::Stopped);
    }
    Ok(SessionEnd::Ended)
}
