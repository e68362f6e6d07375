//! The file source on real media: what reaches the detector (upright, for recordings stored
//! sideways), and what happens with bad files.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Shutdown, SystemClock};
use aegis_ingest::{Frame, SourceSpec, StreamIngest, StreamState, StreamStatus};
use aegis_testkit::ffmpeg;

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hil-tests/fixtures/vtest_h264.mp4")
}

/// Reads `path` once, as fast as possible; returns the delivered frames' times and the status.
fn read_all(path: &Path, detect_fps: f64) -> (Vec<f64>, Arc<StreamStatus>) {
    read(path, detect_fps, false, Duration::MAX)
}

/// A file source running on its own thread; stopped when dropped.
struct Reading {
    rx: Receiver<Frame>,
    status: Arc<StreamStatus>,
    stop: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.stop.trigger();
        // A source reading as fast as it can waits for room in the queue: hang up on it.
        drop(std::mem::replace(&mut self.rx, sync_channel(0).1));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Starts reading `path` once (at its own pace if `realtime`), at 64 × 48 for the model.
fn start(path: &Path, detect_fps: f64, realtime: bool) -> Reading {
    aegis_ingest::init().unwrap();
    let status = Arc::new(StreamStatus::new("t", &path.display().to_string()));
    let ingest = StreamIngest {
        spec: SourceSpec::File {
            path: path.to_owned(),
            looping: false,
            realtime,
        },
        input_size: (64, 48),
        detect_fps,
        status: status.clone(),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
        clock: Arc::new(SystemClock),
    };
    let (tx, rx) = sync_channel(4);
    let stop = Shutdown::new();
    let shutdown = stop.clone();
    Reading {
        rx,
        status,
        stop,
        thread: Some(std::thread::spawn(move || ingest.run(tx, shutdown))),
    }
}

/// Reads `path` once (at its own pace if `realtime`) for at most `limit`.
fn read(
    path: &Path,
    detect_fps: f64,
    realtime: bool,
    limit: Duration,
) -> (Vec<f64>, Arc<StreamStatus>) {
    let reading = start(path, detect_fps, realtime);
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < limit {
        let Ok(frame) = reading.rx.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        assert_eq!(
            frame.input.len(),
            64 * 48 * 3,
            "converted once to the model size"
        );
        assert_eq!((frame.width, frame.height), (768, 576));
        times.push(frame.pts_s);
    }
    (times, reading.status.clone())
}

/// The clip remuxed by the `ffmpeg` CLI into `dir` with `args` (after the input).
fn remux(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    ffmpeg(&[], clip(), args, &out);
    out
}

#[test]
fn samples_the_clip_to_the_detect_rate() {
    let (times, status) = read_all(&clip(), 5.0);
    let v = status.view();
    assert_eq!(v.state, StreamState::Finished);
    assert_eq!(v.frames_decoded, 795);
    assert_eq!(
        times.len(),
        398,
        "every other frame of 795, first included: {:?}",
        &times[..6]
    );
    assert!(
        times.windows(2).all(|w| (w[1] - w[0] - 0.2).abs() < 1e-3),
        "{times:?}"
    );
}

#[test]
fn a_raw_h264_stream_without_timestamps_is_sampled_and_paced_like_the_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let raw = remux(
        dir.path(),
        "clip.h264",
        &["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"],
    );
    let (times, status) = read_all(&raw, 5.0);
    assert_eq!(status.view().frames_decoded, 795);
    assert_eq!(times.len(), 398, "every other frame of the 10 fps stream");
    assert!(
        times.windows(2).all(|w| (w[1] - w[0] - 0.2).abs() < 1e-3),
        "{times:?}"
    );

    // At its own pace, 1.5 s of reading reaches about 1.5 s into the stream, not its end.
    let (times, status) = read(&raw, 5.0, true, Duration::from_millis(1500));
    let reached = times.last().copied().unwrap_or_default();
    assert!(reached > 0.0 && reached < 3.0, "reached {reached} s");
    assert_eq!(status.view().frames_dropped, 0);
}

#[test]
fn a_recording_whose_clock_jumps_plays_on_at_its_own_pace() {
    // Three 1 s pieces of the clip, each from a key frame, joined as cameras' recordings are:
    // stream times about 100 s, then about 5000 s (over an hour ahead), then about 200 s (back).
    let dir = tempfile::tempdir().unwrap();
    let mut joined = Vec::new();
    for (i, (from, at)) in [(0, 100), (2, 5000), (4, 200)].into_iter().enumerate() {
        let piece = remux(
            dir.path(),
            &format!("{i}.ts"),
            &[
                "-ss",
                &from.to_string(),
                "-t",
                "1",
                "-c",
                "copy",
                "-output_ts_offset",
                &at.to_string(),
                "-f",
                "mpegts",
            ],
        );
        joined.extend(std::fs::read(piece).unwrap());
    }
    let path = dir.path().join("joined.ts");
    std::fs::write(&path, joined).unwrap();
    let (times, status) = read(&path, 10.0, true, Duration::from_secs(30));
    let v = status.view();
    assert_eq!(v.state, StreamState::Finished);
    assert_eq!(
        v.frames_dropped, 0,
        "no rushing through a piece to catch up"
    );
    for (piece, at) in [(1, 100.0), (2, 5000.0), (3, 200.0)] {
        let n = times.iter().filter(|t| (at..at + 3.0).contains(*t)).count();
        assert_eq!(n, 10, "piece {piece} at {at} s: {times:?}");
    }
}

#[test]
fn a_recording_stored_sideways_is_analysed_upright_as_players_show_it() {
    let dir = tempfile::tempdir().unwrap();
    for rotate in ["90", "180", "270"] {
        let path = remux(
            dir.path(),
            &format!("turned{rotate}.mp4"),
            &["-c", "copy", "-metadata:s:v", &format!("rotate={rotate}")],
        );
        // What the `ffmpeg` CLI shows: the first picture, turned as it turns it (its luma plane
        // comes first).
        let shown = ffmpeg(
            &[],
            &path,
            &["-frames:v", "1", "-pix_fmt", "yuv420p", "-f", "rawvideo"],
            "-",
        );
        let reading = start(&path, 5.0, false);
        let frame = reading.rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (w, h) = if rotate == "180" {
            (768, 576)
        } else {
            (576, 768)
        };
        assert_eq!((frame.width, frame.height), (w, h), "rotate={rotate}");
        assert_eq!(frame.input.len(), 64 * 48 * 3);
        let (w, h) = (w as usize, h as usize);
        assert_eq!(shown.len(), w * h * 3 / 2);
        let (luma, stride) = (frame.full.data(0), frame.full.stride(0));
        for y in 0..h {
            assert_eq!(
                luma[y * stride..][..w],
                shown[y * w..][..w],
                "rotate={rotate}, row {y}"
            );
        }
    }
}

#[test]
fn a_file_of_enormous_pictures_is_refused_with_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.mp4");
    let x264 = ["-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast"];
    ffmpeg(
        &["-f", "lavfi"],
        "color=c=gray:size=8192x8192",
        &x264,
        &huge,
    );
    let reading = start(&huge, 5.0, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reading.status.view().last_error.is_none() {
        assert!(Instant::now() < deadline, "{:?}", reading.status.view());
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = reading.status.view();
    assert_eq!(v.frames_decoded, 0);
    assert!(
        v.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("8192×8192 are larger than"),
        "{v:?}"
    );
    drop(reading);

    // A raw stream that starts small and then claims the enormous size: the small pictures
    // decode, the enormous one is refused (FFmpeg's own limit), and the file plays to its end.
    let raw = |size: &str, frames: &str| {
        let lavfi = format!("color=c=gray:size={size}:rate=10");
        let args = [
            "-frames:v",
            frames,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-f",
            "h264",
        ];
        ffmpeg(&["-f", "lavfi"], lavfi, &args, "-")
    };
    let mut stream = raw("64x64", "10");
    stream.extend(raw("8192x8192", "1"));
    let joined = dir.path().join("joined.h264");
    std::fs::write(&joined, stream).unwrap();
    let reading = start(&joined, 10.0, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reading.status.view().state != StreamState::Finished {
        assert!(Instant::now() < deadline, "{:?}", reading.status.view());
        let _ = reading.rx.recv_timeout(Duration::from_millis(20));
    }
    assert_eq!(reading.status.view().frames_decoded, 10);
}

#[test]
fn a_truncated_file_yields_what_it_holds_and_a_garbage_file_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(clip()).unwrap();
    // An MP4 cut in half has lost its index (at the end): a clear error, no crash.
    let truncated_mp4 = dir.path().join("truncated.mp4");
    std::fs::write(&truncated_mp4, &bytes[..bytes.len() / 2]).unwrap();
    let (times, status) = read_all(&truncated_mp4, 10.0);
    assert!(times.is_empty());
    assert!(status.view().last_error.unwrap().contains("cannot open"));

    // A transport stream cut mid-packet yields every frame before the cut, then finishes.
    let ts = remux(dir.path(), "clip.ts", &["-c", "copy", "-f", "mpegts"]);
    let ts_bytes = std::fs::read(&ts).unwrap();
    let truncated_ts = dir.path().join("truncated.ts");
    std::fs::write(&truncated_ts, &ts_bytes[..ts_bytes.len() / 2 + 77]).unwrap();
    let (times, status) = read_all(&truncated_ts, 10.0);
    assert!(times.len() > 300 && times.len() < 500, "{}", times.len());
    assert_eq!(status.view().state, StreamState::Finished);

    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, vec![0x47u8; 100_000]).unwrap();
    let (times, status) = read_all(&garbage, 10.0);
    assert!(times.is_empty());
    let v = status.view();
    assert_eq!(v.state, StreamState::Offline);
    assert!(v.last_error.unwrap().contains("cannot open"));
    assert!(v.reconnects >= 1, "keeps retrying with backoff");
}
