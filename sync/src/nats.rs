//! nats-server as a supervised child process: the box's leaf node or the core's hub (ADR 0007).
//! The config is written as JSON, which nats-server's config format accepts, so no value ever
//! needs quoting by hand.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_base::Backoff;
use serde_json::json;

/// How long a stopping nats-server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("nats-server exited ({status}); its log ends with:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
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
        /// The device's nkey seed, which authenticates its leaf connection (enrolment).
        seed: Option<String>,
    },
    /// The core's hub: JetStream in the `hub` domain, accepting leaf nodes on `leaf_listen`
    /// from enrolled devices only, each limited to its own subjects.
    Hub {
        leaf_listen: SocketAddr,
        /// The core's own client: user name and password (made afresh at each start).
        core: (String, String),
        /// Enrolled devices and their public nkeys.
        devices: Vec<DeviceKey>,
    },
}

/// An enrolled device's identity on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub device: String,
    /// Its public nkey (`U…`); it holds the seed, the hub only this.
    pub nkey: String,
}

/// The inbox prefix of the core's client for one device: that device may answer on it, and
/// on no other client's inbox.
pub fn core_inbox(device: &str) -> String {
    format!("_aegis_core.{device}")
}

/// The inbox prefix of a box's own client: the hub sends a device only its own replies.
pub fn box_inbox(device: &str) -> String {
    format!("_aegis_box.{device}")
}

/// What a device's leaf connection may send into the hub (`publish`) and receive from it
/// (`subscribe`): its own subjects, its answers to the core, and the reading of its own desired
/// config. Everything else is refused by the hub.
fn device_permissions(device: &str) -> serde_json::Value {
    let bucket = aegis_proto::subject::desired_bucket(device);
    json!({
        "publish": { "allow": [
            format!("aegis.{device}.>"),
            format!("{}.>", core_inbox(device)),
            format!("$JS.{HUB_DOMAIN}.API.STREAM.INFO.KV_{bucket}"),
            format!("$JS.{HUB_DOMAIN}.API.CONSUMER.CREATE.KV_{bucket}"),
            format!("$JS.{HUB_DOMAIN}.API.CONSUMER.CREATE.KV_{bucket}.>"),
            format!("$JS.{HUB_DOMAIN}.API.CONSUMER.DELETE.KV_{bucket}.*"),
            format!("$JS.FC.KV_{bucket}.>"),
        ]},
        "subscribe": { "allow": [
            format!("aegis.{device}.>"),
            format!("$JS.{device}.API.>"),
            format!("$JS.ACK.{}.>", crate::stream_name(device)),
            format!("$JS.ACK.{device}.>"),
            format!("{}.>", box_inbox(device)),
        ]},
    })
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
            // Each server names the ports it bound in `<exe>_<pid>.ports` here: readiness is
            // judged by our own child's file, never by whoever answers on the port.
            "ports_file_dir": self.dir,
        });
        match &self.role {
            Role::Leaf {
                device,
                hub,
                max_file_store,
                seed,
            } => {
                conf["server_name"] = json!(format!("aegis-leaf-{device}"));
                conf["jetstream"] = json!({
                    "store_dir": store,
                    "domain": device,
                    "max_file_store": max_file_store,
                    "max_memory_store": 0,
                });
                let mut remote = json!({ "urls": hub });
                if let Some(seed) = seed {
                    remote["nkey"] = json!(seed);
                }
                conf["leafnodes"] = json!({ "reconnect": "1s", "remotes": [remote] });
            }
            Role::Hub {
                leaf_listen,
                core,
                devices,
            } => {
                conf["server_name"] = json!("aegis-hub");
                conf["jetstream"] = json!({ "store_dir": store, "domain": HUB_DOMAIN });
                conf["leafnodes"] = json!({ "listen": leaf_listen.to_string() });
                let mut users = vec![json!({ "user": core.0, "password": core.1 })];
                users.extend(devices.iter().map(|d| {
                    json!({
                        "nkey": d.nkey,
                        "allowed_connection_types": ["LEAFNODE"],
                        "permissions": device_permissions(&d.device),
                    })
                }));
                conf["authorization"] = json!({ "users": users });
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

    /// Writes the config file durably (it holds credentials: owner-only).
    fn write_conf(&self) -> Result<(), NatsServerError> {
        let conf = self.conf_path();
        aegis_base::write_durably(
            &self.dir.join("nats-server.conf.tmp"),
            &conf,
            self.render().as_bytes(),
        )
        .and_then(|()| {
            std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        })
        .map_err(|e| NatsServerError::Write(conf, e))
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
    control: Arc<Control>,
    supervisor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl NatsServer {
    /// Writes the config, starts the server and waits until it accepts clients.
    pub fn start(spec: ServerSpec) -> Result<NatsServer, NatsServerError> {
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| NatsServerError::Write(spec.dir.clone(), e))?;
        spec.write_conf()?;
        // A server left over from a killed predecessor exits with it (see `spawn`); give it the
        // time to, rather than mistake it for ours.
        wait_port_free(&spec)?;
        let control = Arc::new(Control::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // The child is spawned by the thread that supervises it: its parent-death signal is
        // tied to that thread, which lives exactly as long as the server should.
        let supervisor = {
            let binary = spec.binary.clone();
            let (spec, control) = (spec.clone(), control.clone());
            std::thread::Builder::new()
                .name("nats-server".into())
                .spawn(move || {
                    let started = spawn(&spec).and_then(|mut child| {
                        control.pid.store(child.id(), Ordering::SeqCst);
                        match wait_ready(&spec, &mut child) {
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
                            supervise(spec, child, control);
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
            control,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    pub fn client_url(&self) -> String {
        self.spec.client_url()
    }

    /// The server's process id (0 while it is being restarted).
    pub fn pid(&self) -> u32 {
        self.control.pid.load(Ordering::SeqCst)
    }

    /// Puts a new role in force by restarting the server: every connection is made anew under
    /// it. Not a SIGHUP reload: a reload keeps the leaf connections of users it removes, and
    /// nats-server drops signals that arrive while it handles one, so quick reloads can be lost.
    /// A restart reads the newest config whenever it happens. Leaf nodes reconnect within a
    /// second; JetStream state is on disk.
    pub fn restart(&self, role: Role) -> Result<(), NatsServerError> {
        let spec = ServerSpec {
            role,
            ..self.spec.clone()
        };
        spec.write_conf()?;
        self.control.restarting.store(true, Ordering::SeqCst);
        signal(self.pid(), libc::SIGTERM);
        Ok(())
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        let thread = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            // A signal can be lost while the server handles another (see `restart`): ask again
            // until it has gone, and kill it if it will not.
            let started = Instant::now();
            let mut asked = None::<Instant>;
            while !thread.is_finished() {
                if asked.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    let sig = if started.elapsed() > STOP_TIMEOUT {
                        libc::SIGKILL
                    } else {
                        libc::SIGTERM
                    };
                    signal(self.pid(), sig);
                    asked = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = thread.join();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server. It gets SIGTERM when the thread that started it ends, so a `kill -9` of
/// the appliance or the core takes its nats-server down too.
fn spawn(spec: &ServerSpec) -> Result<Child, NatsServerError> {
    // A predecessor killed outright leaves its ports file; a new child could reuse its pid.
    for entry in std::fs::read_dir(&spec.dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "ports") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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

/// Waits until the listen address can be bound. A bind, not a connection, is the probe: a
/// listener that never accepts stops answering connections once its backlog is full.
fn wait_port_free(spec: &ServerSpec) -> Result<(), NatsServerError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::net::TcpListener::bind(spec.listen).is_err() {
        if Instant::now() > deadline {
            return Err(NatsServerError::InUse(spec.listen));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits until `child` has bound its ports (it writes them to its ports file) and the client
/// port answers. A port chosen as free may be taken by another process before the child binds
/// it; a connection alone would mistake that process for ours. A child that exits (its port
/// taken, a bad config) is reported at once.
fn wait_ready(spec: &ServerSpec, child: &mut Child) -> Result<(), NatsServerError> {
    let ports_file = format!("_{}.ports", child.id());
    let bound = || {
        std::fs::read_dir(&spec.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(&ports_file))
        })
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if bound() && TcpStream::connect_timeout(&spec.listen, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NatsServerError::Exited {
                status,
                log: log_tail(&spec.log_path()),
            });
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

/// What the supervising thread and the handle share.
#[derive(Default)]
struct Control {
    /// The child's pid (0 while there is none).
    pid: AtomicU32,
    /// Set by `stop`: the exit that follows is the end.
    stopping: AtomicBool,
    /// Set by `restart`: the exit that follows is asked for; start again at once.
    restarting: AtomicBool,
}

/// Waits on the child; when it exits without being asked to, logs why and starts it again.
fn supervise(spec: ServerSpec, child: Child, control: Arc<Control>) {
    let Control {
        pid,
        stopping,
        restarting,
    } = &*control;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut child = Some(child);
    loop {
        if let Some(mut c) = child.take() {
            let status = c.wait();
            pid.store(0, Ordering::SeqCst);
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            if restarting.swap(false, Ordering::SeqCst) {
                tracing::info!("nats-server restarted with its new config");
            } else {
                tracing::error!(?status, log = %log_tail(&spec.log_path()), "nats-server exited; restarting it");
                std::thread::sleep(backoff.next_delay());
            }
        } else {
            std::thread::sleep(backoff.next_delay());
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match spawn(&spec) {
            Ok(mut c) => {
                pid.store(c.id(), Ordering::SeqCst);
                // `stop` sets the flag before it reads the pid; one of the two sees the other.
                if stopping.load(Ordering::SeqCst) {
                    signal(c.id(), libc::SIGTERM);
                } else if wait_ready(&spec, &mut c).is_ok() {
                    backoff.reset();
                }
                child = Some(c);
            }
            Err(e) => tracing::error!(error = %e, "cannot restart nats-server"),
        }
    }
}
