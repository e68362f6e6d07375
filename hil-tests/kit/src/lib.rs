//! Helpers the tests share for the real components they start on loopback: free ports,
//! processes that die with the test, a mosquitto broker with a `mosquitto_sub` client, headless
//! Chromium, small disks to fill, and the `ffmpeg` CLI to make test media. A dev-dependency
//! only.

mod browser;

pub use browser::Browser;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A TCP port free on loopback right now, and never handed out before in this process: the
/// tests in one binary run side by side, and a port one of them frees for a moment (a server
/// restarting) must not become another's.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A child process that is killed (and reaped) when this goes out of scope, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs of `mb` MiB mounted at `dir`, unmounted when dropped: a disk a test can fill without
/// filling the machine's. Mounting needs root, which `scripts/test.sh` has (it installs packages
/// with apt-get).
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, mb: u32) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "this test mounts a tmpfs, as root");
        SmallDisk(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the disk holding it is full, then gives `leave` bytes of it back.
pub fn fill_disk(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
}

/// Runs the `ffmpeg` CLI (scripts/setup.sh installs it) quietly: the options `before` the
/// input (its format, say), the input (a file, or a lavfi graph), the options `after` it, and
/// the output, overwritten (`-` for standard output, which is returned). Fails the test if
/// ffmpeg fails.
pub fn ffmpeg(
    before: &[&str],
    input: impl AsRef<OsStr>,
    after: &[&str],
    output: impl AsRef<OsStr>,
) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-nostdin", "-y"])
        .args(before)
        .arg("-i")
        .arg(input)
        .args(after)
        .arg(output)
        .output()
        .expect("run ffmpeg (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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

/// `program` (`mosquitto_sub` or `mosquitto_pub`) for the broker on `port`, on `topic`.
pub fn mosquitto_client(program: &str, port: u16, topic: &str) -> Command {
    let mut command = Command::new(program);
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic]);
    command
}

/// `mosquitto_sub -v` on `topic`: a channel of "topic payload" lines.
pub fn mosquitto_sub(port: u16, topic: &str) -> (KillOnDrop, Receiver<String>) {
    let mut child = mosquitto_client("mosquitto_sub", port, topic)
        .arg("-v")
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

/// A PostgreSQL server of the test's own, on loopback. Stopped (fast shutdown) and its data
/// deleted on drop.
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    /// `postgres://aegis@127.0.0.1:<port>/postgres` (trust authentication, loopback only).
    pub url: String,
}

impl Postgres {
    /// Stops the server (fast shutdown, as a service manager would) and starts it again on the
    /// same port and data; returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        self.child = start_postgres(&self.bin, self.port, self.dir.path());
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts the server on the cluster in `dir`/data; returns once it accepts connections.
fn start_postgres(bin: &Path, port: u16, dir: &Path) -> Child {
    let mut server = Command::new(bin.join("postgres"));
    server
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = as_postgres_user(server).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "PostgreSQL did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `c` as the `postgres` user when we are root: PostgreSQL refuses to run as root.
fn as_postgres_user(mut c: Command) -> Command {
    if let Some((uid, gid)) = postgres_user() {
        std::os::unix::process::CommandExt::uid(&mut c, uid);
        std::os::unix::process::CommandExt::gid(&mut c, gid);
    }
    c
}

/// Starts PostgreSQL (Debian's `postgresql`, which scripts/setup.sh installs) on `port` with a
/// fresh cluster; returns once it accepts connections. As root, the server runs as the
/// `postgres` user, since PostgreSQL refuses to run as root.
pub fn postgres(port: u16) -> Postgres {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (scripts/setup.sh installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .max()
        .expect("PostgreSQL's initdb under /usr/lib/postgresql/*/bin");
    let dir = tempfile::Builder::new()
        .prefix("aegis-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    if let Some((uid, gid)) = postgres_user() {
        let ok = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.path().join("data"))
        .args(["-U", "aegis", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null());
    let out = as_postgres_user(initdb).output().unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Postgres {
        child: start_postgres(&bin, port, dir.path()),
        bin,
        port,
        dir,
        url: format!("postgres://aegis@127.0.0.1:{port}/postgres"),
    }
}

/// The `postgres` user's ids when running as root (else the server runs as us).
fn postgres_user() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}
