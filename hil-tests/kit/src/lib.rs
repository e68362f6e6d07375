//! Helpers the tests share for the real components they start on loopback: free ports,
//! processes that die with the test, a mosquitto broker with a `mosquitto_sub` client, and
//! headless Chromium. A dev-dependency only.

mod browser;

pub use browser::Browser;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed (and reaped) when this goes out of scope, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mosquitto on `port`, anonymous, loopback only (config written into `dir`); returns once it
/// accepts connections.
pub fn mosquitto(dir: &Path, port: u16) -> KillOnDrop {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/setup.sh installs it)");
    let broker = KillOnDrop(child);
    wait_listening(port, Duration::from_secs(10));
    broker
}

/// `mosquitto_sub -v` on `topic`: a channel of "topic payload" lines.
pub fn mosquitto_sub(port: u16, topic: &str) -> (KillOnDrop, Receiver<String>) {
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-v",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (scripts/setup.sh installs it)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        // Payloads may be binary (snapshots): lines are read as bytes and shown lossily.
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\n')
                .to_owned();
            let _ = tx.send(text);
            line.clear();
        }
    });
    // Let it subscribe before anything is published.
    std::thread::sleep(Duration::from_millis(300));
    (KillOnDrop(child), rx)
}
