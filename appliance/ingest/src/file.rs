use std::path::Path;
use std::time::{Duration, Instant};

use ffmpeg_next as ff;

use crate::decode::VideoDecoder;
use crate::rotate::Turn;
use crate::supervisor::{Session, SessionEnd};
use crate::IngestError;

/// How far a packet's stream time may be from where pacing expects it (either way) before it is
/// taken as a jump in the stream's clock.
const MAX_JUMP_S: f64 = 5.0;

/// Paces reading at the stream's own speed: a packet is due at its stream time relative to an
/// anchor (a stream time and the instant it was read).
#[derive(Default)]
struct Pacer {
    anchor: Option<(f64, Instant)>,
}

impl Pacer {
    /// How long to wait before handing on the packet at stream time `t` (seconds), read `now`.
    fn wait(&mut self, t: f64, now: Instant) -> Duration {
        let (t0, at) = *self.anchor.get_or_insert((t, now));
        let ahead = t - t0 - now.duration_since(at).as_secs_f64();
        if ahead.abs() > MAX_JUMP_S {
            // A jump in the stream's clock (joined recordings, a wrapped or reset clock), or a
            // reader this far behind: go on from here rather than wait out the gap or rush
            // through the file to catch up.
            self.anchor = Some((t, now));
            return Duration::ZERO;
        }
        Duration::from_secs_f64(ahead.max(0.0))
    }
}

/// Gives timestamps to the packets of raw streams (.h264, .h265 as cameras dump them), which
/// carry none, so they are paced, sampled and timed like any other file: each a frame duration
/// after the last. The duration is the packet's own (from the stream's timing info), else one
/// frame at the stream's frame rate.
struct Untimed {
    next: i64,
    frame_ticks: i64,
}

impl Untimed {
    /// `fps`: the stream's frame rate, if it states one (FFmpeg assumes 25 otherwise).
    fn new(fps: Option<f64>, time_base: f64) -> Self {
        let fps = fps.unwrap_or(25.0);
        Self {
            next: 0,
            frame_ticks: ((1.0 / fps / time_base).round() as i64).max(1),
        }
    }

    /// The timestamp (in time-base ticks) for a packet without one, lasting `duration` ticks
    /// (0 when unknown).
    fn stamp(&mut self, duration: i64) -> i64 {
        let t = self.next;
        self.next += if duration > 0 {
            duration
        } else {
            self.frame_ticks
        };
        t
    }
}

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
    // Phone recordings are stored sideways, with a display matrix saying how to turn them.
    let turn = stream
        .side_data()
        .find(|d| d.kind() == ff::packet::side_data::Type::DisplayMatrix)
        .and_then(|d| Turn::from_display_matrix(d.data()));
    let mut decoder =
        VideoDecoder::new(ctx, time_base, s.input_size, s.detect_fps, !realtime, turn)?;
    let fps = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .map(f64::from);
    let mut untimed = Untimed::new(fps, time_base);
    let mut pacer = Pacer::default();
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
            packet.set_dts(Some(untimed.stamp(packet.duration())));
        }
        // Decode order (dts) is the order packets are read in; pts goes back and forth with
        // B-frames.
        if let (true, Some(ts)) = (realtime, packet.dts().or(packet.pts())) {
            let wait = pacer.wait(ts as f64 * time_base, Instant::now());
            if !wait.is_zero() && s.shutdown.wait_timeout(wait) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        (d.as_secs_f64() * 1e3).round() as u64
    }

    #[test]
    fn packets_are_due_at_their_stream_time() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut p = Pacer::default();
        assert_eq!(ms(p.wait(100.0, at(0.0))), 0, "the first sets the clock");
        assert_eq!(ms(p.wait(100.1, at(0.0))), 100);
        assert_eq!(ms(p.wait(100.2, at(0.15))), 50);
        assert_eq!(ms(p.wait(100.3, at(0.4))), 0, "late: at once");
    }

    #[test]
    fn a_jump_either_way_or_a_reader_far_behind_starts_the_clock_over() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut p = Pacer::default();
        p.wait(100.0, at(0.0));
        assert_eq!(
            ms(p.wait(5000.0, at(0.1))),
            0,
            "an hour ahead: no waiting it out"
        );
        assert_eq!(ms(p.wait(5000.1, at(0.1))), 100, "paced from there");
        assert_eq!(ms(p.wait(200.0, at(0.2))), 0, "back");
        assert_eq!(ms(p.wait(200.1, at(0.2))), 100);
        assert_eq!(ms(p.wait(200.2, at(20.0))), 0, "far behind");
        assert_eq!(ms(p.wait(200.3, at(20.0))), 100, "no rushing to catch up");
    }

    #[test]
    fn untimed_packets_follow_one_another_by_their_duration_or_the_frame_rate() {
        // A 1/1,200,000 time base, as FFmpeg's raw H.264 demuxer has.
        let mut u = Untimed::new(Some(10.0), 1.0 / 1_200_000.0);
        assert_eq!(u.stamp(120_000), 0);
        assert_eq!(u.stamp(0), 120_000);
        assert_eq!(u.stamp(0), 240_000, "no duration: one frame at 10 fps");
        let mut u = Untimed::new(None, 1.0 / 1_200_000.0);
        u.stamp(0);
        assert_eq!(u.stamp(0), 48_000, "no rate either: 25 fps");
    }
}
