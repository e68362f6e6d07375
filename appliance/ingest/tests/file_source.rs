//! The file source on real media: what reaches the detector, and what happens with bad files.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Shutdown, SystemClock};
use aegis_ingest::{SourceSpec, StreamIngest, StreamState, StreamStatus};

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hil-tests/fixtures/vtest_h264.mp4")
}

/// Reads `path` once, as fast as possible; returns the delivered frames' times and the status.
fn read_all(path: &Path, detect_fps: f64) -> (Vec<f64>, Arc<StreamStatus>) {
    read(path, detect_fps, false, Duration::MAX)
}

/// Reads `path` once (at its own pace if `realtime`) for at most `limit`.
fn read(
    path: &Path,
    detect_fps: f64,
    realtime: bool,
    limit: Duration,
) -> (Vec<f64>, Arc<StreamStatus>) {
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
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let t = std::thread::spawn(move || ingest.run(tx, shutdown));
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < limit {
        let Ok(frame) = rx.recv_timeout(Duration::from_secs(5)) else {
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
    stop.trigger();
    t.join().unwrap();
    (times, status)
}

/// The clip remuxed by the `ffmpeg` CLI into `dir` with `args` (after the input).
fn remux(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let ok = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(clip())
        .args(args)
        .arg(&out)
        .status()
        .unwrap();
    assert!(ok.success());
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
