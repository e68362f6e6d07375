//! RTSP ingest against a real RTSP server (GStreamer's gst-rtsp-server, started by this test on
//! loopback): frames arrive over TCP and UDP; the server dies and comes back and the stream
//! recovers by itself; a camera whose video stops while its session goes on is found stalled; an
//! unreachable camera is reported, with its credentials hidden; a camera
//! that asks for a password streams with the right one and says why it refuses a wrong one, none
//! or a wrong path; H.265
//! cameras decode as well as H.264 ones; a camera that never answers or answers garbage is
//! reported and retried.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_base::{Backoff, Shutdown, SystemClock};
use aegis_ingest::{Frame, SourceSpec, StreamIngest, StreamState, StreamStatus};
use aegis_testkit::{free_port, KillOnDrop};

/// The server process, killed when dropped.
struct RtspServer {
    _process: KillOnDrop,
}

impl RtspServer {
    fn start(port: u16) -> Self {
        Self::start_with(port, "h264")
    }

    /// `source`: `h264` or `h265` (see hil-tests/rtsp_server.py).
    fn start_with(port: u16, source: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hil-tests/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(source)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the RTSP server (scripts/setup.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "RTSP server did not start");
        Self {
            _process: KillOnDrop(child),
        }
    }
}

struct Running {
    rx: Receiver<Frame>,
    status: Arc<StreamStatus>,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn ingest(url: &str, udp: bool) -> Running {
    ingest_with(url, udp, Duration::from_secs(2))
}

/// `stall`: no video frame for this long counts as a stalled stream.
fn ingest_with(url: &str, udp: bool, stall: Duration) -> Running {
    aegis_ingest::init().unwrap();
    let status = Arc::new(StreamStatus::new("cam", url));
    let ingest = StreamIngest {
        spec: SourceSpec::Rtsp {
            url: url.to_owned(),
            udp,
            stall_timeout: stall,
        },
        input_size: (64, 48),
        detect_fps: 5.0,
        status: status.clone(),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        clock: Arc::new(SystemClock),
    };
    let (tx, rx) = sync_channel(2);
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let thread = Some(std::thread::spawn(move || ingest.run(tx, s)));
    Running {
        rx,
        status,
        shutdown,
        thread,
    }
}

/// Receives `n` frames, failing after `within`.
fn frames(r: &Running, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    for i in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let f =
            r.rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("frame {i} of {n} not received: {:?}", r.status.view()));
        assert_eq!((f.width, f.height), (640, 360));
        assert_eq!(f.input.len(), 64 * 48 * 3);
    }
}

fn wait_until(
    r: &Running,
    within: Duration,
    what: &str,
    cond: impl Fn(&aegis_ingest::StreamStatusView) -> bool,
) {
    let deadline = Instant::now() + within;
    while !cond(&r.status.view()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", r.status.view());
        // Drain frames so the source never blocks on a full queue while we watch its status.
        let _ = r.rx.recv_timeout(Duration::from_millis(50));
    }
}

#[test]
fn an_rtsp_camera_that_dies_and_comes_back_recovers_by_itself() {
    let port = free_port();
    let server = RtspServer::start(port);
    let r = ingest(
        &format!("rtsp://viewer:secret@127.0.0.1:{port}/live"),
        false,
    );
    frames(&r, 10, Duration::from_secs(20));
    let v = r.status.view();
    assert_eq!(v.state, StreamState::Online);
    assert!(!v.url.contains("secret"), "{}", v.url);
    // 15 fps sampled to 5: about a third of the decoded frames reach the detector queue.
    assert!(v.frames_sampled * 2 < v.frames_decoded, "{v:?}");

    drop(server);
    wait_until(&r, Duration::from_secs(10), "goes offline", |v| {
        v.state == StreamState::Offline
    });
    assert!(r.status.view().last_error.is_some());

    let _server = RtspServer::start(port);
    wait_until(&r, Duration::from_secs(20), "comes back online", |v| {
        v.state == StreamState::Online
    });
    frames(&r, 5, Duration::from_secs(10));
    assert!(r.status.view().reconnects >= 1);
}

#[test]
fn frames_arrive_over_udp_too() {
    let port = free_port();
    let _server = RtspServer::start(port);
    let r = ingest(&format!("rtsp://127.0.0.1:{port}/live"), true);
    frames(&r, 10, Duration::from_secs(20));
}

#[test]
fn an_h265_camera_decodes_like_an_h264_one() {
    let port = free_port();
    let _server = RtspServer::start_with(port, "h265");
    let r = ingest(&format!("rtsp://127.0.0.1:{port}/live"), false);
    frames(&r, 10, Duration::from_secs(20));
    assert_eq!(r.status.view().state, StreamState::Online);
}

#[test]
fn an_unreachable_camera_is_offline_with_a_reason_and_no_password() {
    let port = free_port();
    let r = ingest(
        &format!("rtsp://admin:hunter2@127.0.0.1:{port}/live"),
        false,
    );
    wait_until(&r, Duration::from_secs(10), "reports the failure", |v| {
        v.state == StreamState::Offline && v.reconnects >= 2
    });
    let v = r.status.view();
    let shown = format!("{v:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        v.last_error.unwrap().to_lowercase().contains("refused"),
        "{shown}"
    );
}

#[test]
fn a_camera_whose_video_stops_while_its_session_goes_on_is_found_stalled() {
    let port = free_port();
    let _server = RtspServer::start_with(port, "h264-freeze");
    // Longer than the server's RTCP report interval (5 s, randomised), so that only video
    // frames, not the reports that go on arriving, may keep the stream from counting as stalled.
    let r = ingest_with(
        &format!("rtsp://127.0.0.1:{port}/live"),
        false,
        Duration::from_secs(8),
    );
    frames(&r, 5, Duration::from_secs(10));
    wait_until(&r, Duration::from_secs(25), "is found stalled", |v| {
        v.state == StreamState::Offline
    });
    let v = r.status.view();
    assert!(
        v.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no frame for 8.0 s"),
        "{v:?}"
    );
}

#[test]
fn a_camera_behind_a_password_streams_with_it_and_says_why_it_refuses_otherwise() {
    let port = free_port();
    let _server = RtspServer::start_with(port, "h264-auth");
    // The password holds characters a URL must escape (`p@ss:w/rd`), as camera passwords often
    // do; the server asks for Digest authentication, as IP cameras do.
    let good = ingest(
        &format!("rtsp://admin:p%40ss%3Aw%2Frd@127.0.0.1:{port}/live"),
        false,
    );
    let wrong = ingest(
        &format!("rtsp://admin:hunter2@127.0.0.1:{port}/live"),
        false,
    );
    let none = ingest(&format!("rtsp://127.0.0.1:{port}/live"), false);
    let lost = ingest(
        &format!("rtsp://admin:p%40ss%3Aw%2Frd@127.0.0.1:{port}/stream1"),
        false,
    );
    frames(&good, 10, Duration::from_secs(20));
    assert_eq!(good.status.view().state, StreamState::Online);
    for (r, what, says) in [
        (
            &wrong,
            "a wrong password",
            "refused the user name or password (401",
        ),
        (
            &none,
            "no credentials",
            "asks for a user name and password (401",
        ),
        (&lost, "a wrong path", "no stream at this path (404"),
    ] {
        wait_until(r, Duration::from_secs(20), what, |v| {
            v.state == StreamState::Offline && v.reconnects >= 2
        });
        let v = r.status.view();
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(v.last_error.unwrap().contains(says), "{what}: {shown}");
        assert_eq!(v.frames_decoded, 0, "{what}");
    }
}

/// A "camera" on loopback that accepts connections and then, for each, runs `behave`.
fn hostile_camera(behave: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || behave(conn));
        }
    });
    port
}

#[test]
fn a_camera_that_never_answers_or_answers_garbage_is_offline_with_a_reason_and_retried() {
    use std::io::{Read, Write};
    let silent = hostile_camera(|mut c| {
        // Reads the request and says nothing, holding the connection open.
        let mut buf = [0u8; 4096];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    let garbage = hostile_camera(|mut c| {
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf);
        let junk: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = c.write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n");
        let _ = c.write_all(&junk);
    });
    let started = Instant::now();
    let quiet = ingest(&format!("rtsp://127.0.0.1:{silent}/live"), false);
    let noisy = ingest(&format!("rtsp://127.0.0.1:{garbage}/live"), false);
    for (r, what) in [(&quiet, "a silent camera"), (&noisy, "a garbage camera")] {
        wait_until(r, Duration::from_secs(60), what, |v| {
            v.state == StreamState::Offline && v.last_error.is_some() && v.reconnects >= 2
        });
        assert_eq!(r.status.view().frames_decoded, 0);
    }
    // Stopping does not wait on a camera that never answers.
    let stopping = Instant::now();
    drop(quiet);
    drop(noisy);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?} (test ran {:?})",
        stopping.elapsed(),
        started.elapsed()
    );
}
