//! nats-server as a supervised child process: the box's leaf node or the core's hub (ADR 0007).
//! The config is written as JSON, which nats-server's config format accepts, so no value ever
//! needs quoting by hand.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_base::Backoff;
use serde_json::json;

/// How long a fresh nats-server may take to accept clients.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot start nats-server `{0}`: {1} (install it with scripts/setup.sh, or set sync.nats_server / AEGIS_NATS_SERVER)")]
    Spawn(PathBuf, std::io::Error),
    #[error("{0} is already in use by another process")]
    InUse(SocketAddr),
    #[error("nats-server did not accept clients on {addr} within {READY_TIMEOUT:?}; its log ends with:\n{log}")]
    NotReady { addr: SocketAddr, log: String },
}

/// What a server is for; everything else in its config follows from it.
#[derive(Debug, Clone)]
pub enum Role {
    /// A box's leaf node: JetStream in the device's own domain, connected out to the hub.
    Leaf {
        device: String,
        /// The hub's leaf-node listener(s), e.g. `nats-leaf://core.example:7422`.
        hub: Vec<String>,
        /// The most bytes JetStream may keep on disk.
        max_file_store: u64,
    },
    /// The core's hub: JetStream in the `hub` domain, accepting leaf nodes on `leaf_listen`.
    Hub { leaf_listen: SocketAddr },
}

/// The JetStream domain of the hub.
pub const HUB_DOMAIN: &str = "hub";

#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The nats-server executable.
    pub binary: PathBuf,
    /// Holds the config, the log and the JetStream store.
    pub dir: PathBuf,
    /// Where clients connect (always loopback on a box).
    pub listen: SocketAddr,
    pub role: Role,
}

impl ServerSpec {
    /// The config file's contents.
    pub fn render(&self) -> String {
        let store = self.dir.join("jetstream");
        let mut conf = json!({
            "listen": self.listen.to_string(),
            "logfile": self.log_path(),
            "logfile_size_limit": 10 << 20,
            "logfile_max_num": 3,
            "max_payload": 1 << 20,
        });
        match &self.role {
            Role::Leaf {
                device,
                hub,
                max_file_store,
            } => {
                conf["server_name"] = json!(format!("aegis-leaf-{device}"));
                conf["jetstream"] = json!({
                    "store_dir": store,
                    "domain": device,
                    "max_file_store": max_file_store,
                    "max_memory_store": 0,
                });
                conf["leafnodes"] = json!({
                    "reconnect": "1s",
                    "remotes": [{ "urls": hub }],
                });
            }
            Role::Hub { leaf_listen } => {
                conf["server_name"] = json!("aegis-hub");
                conf["jetstream"] = json!({ "store_dir": store, "domain": HUB_DOMAIN });
                conf["leafnodes"] = json!({ "listen": leaf_listen.to_string() });
            }
        }
        serde_json::to_string_pretty(&conf).expect("a JSON value always serialises")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    /// The URL clients use.
    pub fn client_url(&self) -> String {
        format!("nats://{}", self.listen)
    }
}

/// The nats-server to run: `configured`, else `AEGIS_NATS_SERVER`, else `nats-server` on PATH.
pub fn default_binary(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("AEGIS_NATS_SERVER").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A running nats-server, restarted with backoff whenever it exits on its own. Stopped (SIGTERM,
/// then waited for) by [`NatsServer::stop`] or on drop.
pub struct NatsServer {
    spec: ServerSpec,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl NatsServer {
    /// Writes the config, starts the server and waits until it accepts clients.
    pub fn start(spec: ServerSpec) -> Result<NatsServer, NatsServerError> {
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| NatsServerError::Write(spec.dir.clone(), e))?;
        let conf = spec.conf_path();
        aegis_base::write_durably(
            &spec.dir.join("nats-server.conf.tmp"),
            &conf,
            spec.render().as_bytes(),
        )
        .map_err(|e| NatsServerError::Write(conf.clone(), e))?;
        // A server left over from a killed predecessor exits with it (see `spawn`); give it the
        // time to, rather than mistake it for ours.
        wait_port_free(&spec)?;
        let pid = Arc::new(AtomicU32::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // The child is spawned by the thread that supervises it: its parent-death signal is
        // tied to that thread, which lives exactly as long as the server should.
        let supervisor = {
            let binary = spec.binary.clone();
            let (spec, pid, stopping) = (spec.clone(), pid.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("nats-server".into())
                .spawn(move || {
                    let started = spawn(&spec).and_then(|mut child| {
                        pid.store(child.id(), Ordering::SeqCst);
                        match wait_ready(&spec) {
                            Ok(()) => Ok(child),
                            Err(e) => {
                                let _ = child.kill();
                                let _ = child.wait();
                                Err(e)
                            }
                        }
                    });
                    match started {
                        Ok(child) => {
                            let _ = ready_tx.send(Ok(()));
                            supervise(spec, child, pid, stopping);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| NatsServerError::Spawn(binary, e))?
        };
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(NatsServerError::NotReady {
                addr: spec.listen,
                log: "the supervising thread died".into(),
            })
        });
        if let Err(e) = ready {
            let _ = supervisor.join();
            return Err(e);
        }
        Ok(NatsServer {
            spec,
            pid,
            stopping,
            supervisor: Some(supervisor),
        })
    }

    pub fn client_url(&self) -> String {
        self.spec.client_url()
    }

    /// The server's process id (0 while it is being restarted).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.supervisor.take() {
            signal(self.pid.load(Ordering::SeqCst), libc::SIGTERM);
            let _ = thread.join();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Starts the server. It gets SIGTERM when the thread that started it ends, so a `kill -9` of
/// the appliance or the core takes its nats-server down too.
fn spawn(spec: &ServerSpec) -> Result<Child, NatsServerError> {
    let mut command = Command::new(&spec.binary);
    command
        .arg("-c")
        .arg(spec.conf_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| NatsServerError::Spawn(spec.binary.clone(), e))
}

fn wait_port_free(spec: &ServerSpec) -> Result<(), NatsServerError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect_timeout(&spec.listen, Duration::from_millis(200)).is_ok() {
        if Instant::now() > deadline {
            return Err(NatsServerError::InUse(spec.listen));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn wait_ready(spec: &ServerSpec) -> Result<(), NatsServerError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&spec.listen, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(NatsServerError::NotReady {
        addr: spec.listen,
        log: log_tail(&spec.log_path()),
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid != 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Waits on the child; when it exits without being asked to, logs why and starts it again.
fn supervise(spec: ServerSpec, child: Child, pid: Arc<AtomicU32>, stopping: Arc<AtomicBool>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut child = Some(child);
    loop {
        if let Some(mut c) = child.take() {
            let status = c.wait();
            pid.store(0, Ordering::SeqCst);
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            tracing::error!(?status, log = %log_tail(&spec.log_path()), "nats-server exited; restarting it");
        }
        std::thread::sleep(backoff.next_delay());
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match spawn(&spec) {
            Ok(c) => {
                pid.store(c.id(), Ordering::SeqCst);
                // `stop` sets the flag before it reads the pid; one of the two sees the other.
                if stopping.load(Ordering::SeqCst) {
                    signal(c.id(), libc::SIGTERM);
                } else if wait_ready(&spec).is_ok() {
                    backoff.reset();
                }
                child = Some(c);
            }
            Err(e) => tracing::error!(error = %e, "cannot restart nats-server"),
        }
    }
}
