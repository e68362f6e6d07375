use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting,
    Online,
    Offline,
    /// A non-looping file reached its end.
    Finished,
}

/// Live status of one stream, shared between its threads and the API. Counters are cumulative.
#[derive(Debug)]
pub struct StreamStatus {
    name: String,
    /// Already redacted: never holds credentials.
    url: String,
    inner: Mutex<Inner>,
    pub decoded: AtomicU64,
    pub sampled: AtomicU64,
    /// Frames the detector could not keep up with, dropped at the queue.
    pub dropped: AtomicU64,
    pub detected: AtomicU64,
    pub reconnects: AtomicU64,
    /// Snapshots that events named but that could not be stored (queue full, encode or disk
    /// error); those events stay, without a snapshot.
    pub snapshots_lost: AtomicU64,
    /// Events dropped because the store refused them (a full disk, say) for longer than the
    /// detect thread holds them in memory.
    pub events_lost: AtomicU64,
    /// Events held in memory because the store refused them; stored once it takes them again.
    pub events_waiting: AtomicU64,
    /// Time the detector takes per frame (preprocess, inference, decoding, NMS).
    pub detect_latency: aegis_base::Histogram,
}

/// Detector latency buckets, seconds.
const DETECT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
];

#[derive(Debug)]
struct Inner {
    state: StreamState,
    last_error: Option<String>,
    last_frame_ms: Option<i64>,
    window_start: Instant,
    window_frames: u64,
    fps: f64,
}

/// What the API shows for a stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamStatusView {
    pub name: String,
    pub url: String,
    pub state: StreamState,
    pub last_error: Option<String>,
    pub last_frame_ms: Option<i64>,
    /// Decoded frames per second over the last second or so; it falls to 0 once frames stop
    /// coming (a finished file, a frozen camera).
    pub fps: f64,
    pub frames_decoded: u64,
    pub frames_sampled: u64,
    pub frames_dropped: u64,
    pub frames_detected: u64,
    pub reconnects: u64,
    pub snapshots_lost: u64,
    pub events_lost: u64,
    pub events_waiting: u64,
}

impl Inner {
    /// The frame rate at `now`: the last whole window's, until the open window has lasted
    /// longer than two windows or two frame intervals (a time-lapse camera's frame can be
    /// seconds apart). Then the open window's own rate, so that a stream whose frames stop
    /// falls towards 0 instead of keeping its last rate until the stall is found.
    fn fps_at(&self, now: Instant) -> f64 {
        let open = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let patience = if self.fps > 0.0 { 2.0 / self.fps } else { 0.0 };
        if open >= patience.max(2.0) {
            self.window_frames as f64 / open
        } else {
            self.fps
        }
    }
}

impl StreamStatus {
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            url: aegis_base::redact_url(url),
            inner: Mutex::new(Inner {
                state: StreamState::Connecting,
                last_error: None,
                last_frame_ms: None,
                window_start: Instant::now(),
                window_frames: 0,
                fps: 0.0,
            }),
            decoded: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            detected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            snapshots_lost: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
            events_waiting: AtomicU64::new(0),
            detect_latency: aegis_base::Histogram::new(DETECT_BOUNDS),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> StreamState {
        self.lock().state
    }

    pub fn set_state(&self, state: StreamState) {
        self.lock().state = state;
    }

    /// Records a failure; the stream is offline until it reconnects.
    pub fn set_error(&self, error: &str) {
        let mut s = self.lock();
        s.state = StreamState::Offline;
        s.last_error = Some(aegis_base::redact_url(error));
        s.fps = 0.0;
        s.window_frames = 0;
    }

    /// Counts a decoded frame; the first one after connecting marks the stream online.
    pub fn frame_decoded(&self, wall_ms: i64) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.state = StreamState::Online;
        s.last_frame_ms = Some(wall_ms);
        s.window_frames += 1;
        let elapsed = s.window_start.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            s.fps = s.window_frames as f64 / elapsed;
            s.window_frames = 0;
            s.window_start = Instant::now();
        }
    }

    pub fn view(&self) -> StreamStatusView {
        let s = self.lock();
        StreamStatusView {
            name: self.name.clone(),
            url: self.url.clone(),
            state: s.state,
            last_error: s.last_error.clone(),
            last_frame_ms: s.last_frame_ms,
            fps: (s.fps_at(Instant::now()) * 10.0).round() / 10.0,
            frames_decoded: self.decoded.load(Ordering::Relaxed),
            frames_sampled: self.sampled.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
            frames_detected: self.detected.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            snapshots_lost: self.snapshots_lost.load(Ordering::Relaxed),
            events_lost: self.events_lost.load(Ordering::Relaxed),
            events_waiting: self.events_waiting.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A stream whose last whole window ran at `fps`, and whose open window began `open_s`
    /// seconds before `now` with `frames` in it so far.
    fn inner(fps: f64, open_s: f64, frames: u64, now: Instant) -> Inner {
        Inner {
            state: StreamState::Online,
            last_error: None,
            last_frame_ms: None,
            window_start: now - Duration::from_secs_f64(open_s),
            window_frames: frames,
            fps,
        }
    }

    #[test]
    fn the_frame_rate_falls_when_frames_stop_but_not_between_slow_frames() {
        let now = Instant::now();
        // Frames at 25 fps: the last window's rate, while the open one is young.
        assert_eq!(inner(25.0, 0.5, 12, now).fps_at(now), 25.0);
        // No frame for 5 s: 0, not the 25 fps of before.
        assert_eq!(inner(25.0, 5.0, 0, now).fps_at(now), 0.0);
        // Frames slowing: the open window's own rate once it is old.
        assert_eq!(inner(25.0, 2.5, 5, now).fps_at(now), 2.0);
        // A time-lapse camera, one frame in 3 s: 3 s without one is its usual gap.
        assert_eq!(inner(1.0 / 3.0, 3.0, 0, now).fps_at(now), 1.0 / 3.0);
        assert_eq!(inner(1.0 / 3.0, 8.0, 0, now).fps_at(now), 0.0);
    }
}
