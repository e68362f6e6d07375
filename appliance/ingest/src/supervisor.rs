use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use aegis_base::{Backoff, Clock, Shutdown};
use tracing::{info, warn};

use crate::decode::FrameSink;
use crate::{file, rtsp, Frame, IngestError, StreamState, StreamStatus};

/// What to read.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    File {
        path: PathBuf,
        looping: bool,
        /// Pace reading at the file's own frame rate.
        realtime: bool,
    },
    Rtsp {
        url: String,
        udp: bool,
        stall_timeout: Duration,
    },
}

impl SourceSpec {
    /// Whether frames arrive at the source's own pace (a camera, a file read in real time):
    /// then a stage that falls behind drops work rather than wait. A file read as fast as
    /// possible is never paced: every stage waits for the next, and nothing is dropped.
    pub fn is_paced(&self) -> bool {
        !matches!(
            self,
            SourceSpec::File {
                realtime: false,
                ..
            }
        )
    }
}

/// How a session ended without an error.
pub(crate) enum SessionEnd {
    /// End of file.
    Ended,
    /// Shutdown, or nobody is listening any more.
    Stopped,
}

/// Everything a source session needs.
pub(crate) struct Session<'a> {
    pub sink: FrameSink<'a>,
    pub shutdown: &'a Shutdown,
    pub input_size: (u32, u32),
    pub detect_fps: f64,
}

/// One stream: runs sessions against its source until shutdown, reconnecting on failure.
pub struct StreamIngest {
    pub spec: SourceSpec,
    /// The model's input size: frames are converted to it once.
    pub input_size: (u32, u32),
    pub detect_fps: f64,
    pub status: Arc<StreamStatus>,
    pub backoff: Backoff,
    pub clock: Arc<dyn Clock>,
}

impl StreamIngest {
    /// Blocks until shutdown (or a non-looping file ends). Call on a dedicated thread.
    pub fn run(mut self, tx: SyncSender<Frame>, shutdown: Shutdown) {
        let block = !self.spec.is_paced();
        let name = self.status.name().to_owned();
        while !shutdown.is_triggered() {
            self.status.set_state(StreamState::Connecting);
            let decoded_before = self.status.decoded.load(Ordering::Relaxed);
            let session = Session {
                sink: FrameSink {
                    tx: &tx,
                    block,
                    status: &self.status,
                    clock: &self.clock,
                },
                shutdown: &shutdown,
                input_size: self.input_size,
                detect_fps: self.detect_fps,
            };
            let result = match &self.spec {
                SourceSpec::File {
                    path,
                    looping: _,
                    realtime,
                } => file::run(path, *realtime, &session),
                SourceSpec::Rtsp {
                    url,
                    udp,
                    stall_timeout,
                } => rtsp::run(url, *udp, *stall_timeout, &session),
            };
            match result {
                Ok(SessionEnd::Stopped) => break,
                Ok(SessionEnd::Ended)
                    if matches!(self.spec, SourceSpec::File { looping: true, .. }) =>
                {
                    if self.status.decoded.load(Ordering::Relaxed) == decoded_before {
                        // An empty file would loop at full speed: treat it as a failure.
                        self.fail(
                            &name,
                            &IngestError::Decode("no frames in file".into()),
                            &shutdown,
                            false,
                        );
                    }
                }
                Ok(SessionEnd::Ended) => {
                    info!(stream = %name, "file finished");
                    self.status.set_state(StreamState::Finished);
                    break;
                }
                Err(e) => {
                    let progressed = self.status.decoded.load(Ordering::Relaxed) > decoded_before;
                    if self.fail(&name, &e, &shutdown, progressed) {
                        break;
                    }
                }
            }
        }
    }

    /// Records the failure and waits out the backoff. Returns true on shutdown.
    fn fail(&mut self, name: &str, e: &IngestError, shutdown: &Shutdown, progressed: bool) -> bool {
        if progressed {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        warn!(stream = %name, error = %aegis_base::redact_url(&e.to_string()), retry_in_ms = delay.as_millis() as u64, "stream offline");
        self.status.set_error(&e.to_string());
        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
        shutdown.wait_timeout(delay)
    }
}
