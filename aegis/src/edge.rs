//! The appliance's sub-commands (the `edge` feature).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aegis_config::{Config, ConfigError};
use clap::Subcommand;

use crate::{bench, EXIT_CONFIG};

#[derive(Subcommand)]
pub enum Command {
    /// Run the appliance: every camera in the config, and the web API.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and list every error in it.
    Validate { config: PathBuf },
    /// Verify the store (rows against blob files and hashes); --repair fixes what is safe.
    Check {
        /// The storage directory (holds aegis.db and blobs/).
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        repair: bool,
    },
    /// Benchmarks (docs/BENCHMARKS.md); each prints a JSON report.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
    /// Rules tools (docs/rules.md).
    Rules {
        #[command(subcommand)]
        what: RulesCommand,
    },
    /// Run the tracker alone on MOTChallenge detections.
    Track {
        #[arg(long)]
        mot_det: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Frames a lost track is kept for.
        #[arg(long, default_value_t = 30)]
        buffer: u32,
    },
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Run a rules file over recorded tracks (JSON lines) and print the rule events (JSON lines).
    Replay {
        /// The rules file: zones, lines and rules.
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        tracks: PathBuf,
        /// A model manifest: rules that name labels it does not detect are refused.
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

/// Loads a config and the rules file it names; a bad one is reported in full (exit 64).
/// Labels are checked against the model when the appliance starts.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    let config = Config::load(path).map_err(|e: ConfigError| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Some(rules) = &config.rules {
        let checked = std::fs::read_to_string(rules)
            .map_err(|e| e.to_string())
            .and_then(|text| aegis_rules::RuleSet::parse(&text, None).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            eprintln!("{}: {e}", rules.display());
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    Ok(config)
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => Ok(match load_config(&config) {
            Ok(c) => {
                println!("{}: ok ({} camera(s))", config.display(), c.cameras.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Command::Check { data, repair } => {
            let store = aegis_store::Store::open(&data)?;
            let report = store.check(repair)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rules {
            what:
                RulesCommand::Replay {
                    config,
                    tracks,
                    model,
                },
        } => replay(&config, &tracks, model.as_deref()),
        Command::Track {
            mot_det,
            out,
            buffer,
        } => {
            let file = std::fs::File::open(&mot_det)
                .map_err(|e| anyhow::anyhow!("{}: {e}", mot_det.display()))?;
            let dets = aegis_track::read_mot_detections(BufReader::new(file))
                .map_err(|e| anyhow::anyhow!("{}: {e}", mot_det.display()))?;
            let params = aegis_track::TrackerParams {
                max_lost_frames: buffer,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let tracks = aegis_track::track_mot(&dets, params);
            let elapsed = started.elapsed().as_secs_f64();
            let frames = dets.iter().map(|d| d.frame).max().unwrap_or(0);
            eprintln!(
                "tracked {frames} frames, {} detections in {:.3} ms ({:.0} frames/s)",
                dets.len(),
                elapsed * 1e3,
                f64::from(frames) / elapsed.max(1e-9)
            );
            let file = std::fs::File::create(&out)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            aegis_track::write_mot_tracks(&tracks, std::io::BufWriter::new(file))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { what } => {
            let report = match what {
                bench::Bench::Pipeline {
                    config,
                    seconds,
                    events_out,
                } => match load_config(&config) {
                    Ok(config) => bench::pipeline(
                        &config,
                        Duration::from_secs(seconds),
                        events_out.as_deref(),
                    )?,
                    Err(code) => return Ok(code),
                },
                bench::Bench::Detector(args) => bench::detector(&args)?,
                bench::Bench::Decode { file, detect_fps } => bench::decode(&file, detect_fps)?,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config: path } => {
            let config = match load_config(&path) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            serve(&path, config)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn replay(config: &Path, tracks: &Path, model: Option<&Path>) -> anyhow::Result<ExitCode> {
    let labels = match model {
        Some(m) => Some(aegis_detect::Manifest::load(m)?.0.classes),
        None => None,
    };
    let text = std::fs::read_to_string(config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let rules = match aegis_rules::RuleSet::parse(&text, labels.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let input =
        std::fs::File::open(tracks).map_err(|e| anyhow::anyhow!("{}: {e}", tracks.display()))?;
    let mut engine = aegis_rules::Engine::new(rules);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", tracks.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let frame: aegis_rules::TrackFrame = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}", tracks.display(), n + 1))?;
        for event in engine.update(&frame) {
            serde_json::to_writer(&mut out, &event)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The MQTT publisher, when the config has an `mqtt` section; it stops with the appliance.
pub(crate) fn start_mqtt(
    config: &Config,
    appliance: &aegis_pipeline::Appliance,
) -> std::io::Result<Option<(Arc<aegis_mqtt::MqttStatus>, std::thread::JoinHandle<()>)>> {
    let Some(m) = config.mqtt.clone() else {
        return Ok(None);
    };
    let feeds = aegis_mqtt::Feeds {
        events: appliance.feed().subscribe(),
        occupancy: appliance.occupancy().subscribe(),
        store: appliance.store.clone(),
    };
    aegis_mqtt::start(m, feeds, appliance.shutdown_handle()).map(Some)
}

/// The box's side of the fleet sync: its leaf nats-server, the outbox forwarder and the heartbeat.
/// The cameras never wait for it: while the leaf cannot start (its port taken, its binary
/// missing), events wait in the outbox and it is tried again with backoff.
struct EdgeSync {
    run: tokio::task::JoinHandle<()>,
}

/// What the sync needs from the appliance.
struct SyncParts {
    sc: aegis_config::SyncConfig,
    storage: std::path::PathBuf,
    identity: aegis_sync::enrol::Identity,
    spec: aegis_sync::ServerSpec,
    appliance: Arc<aegis_pipeline::Appliance>,
    settings: Arc<aegis_pipeline::Settings>,
    status: Arc<aegis_sync::forward::ForwardStatus>,
}

impl EdgeSync {
    /// Starts it when the config has a `sync` section. Call inside a Tokio runtime.
    fn start(
        config: &Config,
        appliance: &Arc<aegis_pipeline::Appliance>,
        settings: &Arc<aegis_pipeline::Settings>,
        status: Arc<aegis_sync::forward::ForwardStatus>,
    ) -> anyhow::Result<Option<EdgeSync>> {
        let Some(sc) = config.sync.clone() else {
            return Ok(None);
        };
        let nats_dir = config.storage.dir.join("nats");
        let identity = aegis_sync::enrol::Identity::load_or_create(&nats_dir)
            .map_err(|e| anyhow::anyhow!("sync: {e}"))?;
        let spec = aegis_sync::ServerSpec {
            binary: aegis_sync::default_binary(sc.nats_server.as_deref()),
            dir: nats_dir,
            listen: sc.listen,
            role: aegis_sync::Role::Leaf {
                device: sc.device.clone(),
                hub: vec![sc.hub.clone()],
                // Room for the stream's budget plus JetStream's own bookkeeping.
                max_file_store: sc.budget_mb * 1024 * 1024 + 64 * 1024 * 1024,
                seed: Some(identity.seed.clone()),
            },
        };
        let parts = SyncParts {
            sc,
            storage: config.storage.dir.clone(),
            identity,
            spec,
            appliance: appliance.clone(),
            settings: settings.clone(),
            status,
        };
        Ok(Some(EdgeSync {
            run: tokio::spawn(parts.run()),
        }))
    }

    /// Waits for it to wind down (the appliance's shutdown stops it).
    async fn stop(self) {
        let _ = self.run.await;
    }
}

impl SyncParts {
    async fn run(self) {
        let shutdown = self.appliance.shutdown_handle();
        let mut backoff = aegis_base::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let leaf = loop {
            let spec = self.spec.clone();
            match tokio::task::spawn_blocking(move || aegis_sync::NatsServer::start(spec)).await {
                Ok(Ok(leaf)) => break leaf,
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "sync: the leaf node cannot start; events wait in the outbox; retrying"
                ),
                Err(e) => tracing::error!(error = %e, "sync: starting the leaf node failed"),
            }
            if shutdown.sleep(backoff.next_delay()).await {
                return;
            }
        };
        let tasks = self.follow(&leaf).await;
        for task in tasks {
            let _ = task.await;
        }
        let _ = tokio::task::spawn_blocking(move || leaf.stop()).await;
    }

    /// Connects to the running `leaf` and starts enrolment, the forwarder, the heartbeat and
    /// the desired-config follower; they end with the appliance.
    async fn follow(self, leaf: &aegis_sync::NatsServer) -> Vec<tokio::task::JoinHandle<()>> {
        let SyncParts {
            sc,
            storage,
            identity,
            appliance,
            settings,
            status,
            ..
        } = self;
        let budget = sc.budget_mb * 1024 * 1024;
        let connected = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(aegis_sync::box_inbox(&sc.device))
            .retry_on_initial_connect()
            .connect(leaf.client_url())
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "sync: cannot connect to the leaf node; sync is off");
                return Vec::new();
            }
        };
        let shutdown = appliance.shutdown_handle();
        // Until it is enrolled the hub refuses the leaf; events wait on the box meanwhile.
        let enrol = tokio::spawn(enrol_until_done(identity, sc.clone(), shutdown.clone()));
        let mut tasks = vec![enrol];
        if let Some(core) = sc.core.clone() {
            tasks.push(tokio::spawn(aegis_sync::blobs::serve(
                client.clone(),
                sc.device.clone(),
                appliance.store.clone(),
                core,
                shutdown.clone(),
            )));
        }
        let forward = tokio::spawn(aegis_sync::forward::forward(
            appliance.store.clone(),
            async_nats::jetstream::new(client.clone()),
            aegis_sync::forward::stream_config(&sc.device, budget),
            appliance.feed().subscribe(),
            Arc::new(aegis_base::SystemClock),
            status,
            shutdown.clone(),
        ));
        let tracker = Arc::new(aegis_sync::desired::ConfigTracker::load(
            storage.join("desired-config.json"),
        ));
        let s = settings.clone();
        let follow = tokio::spawn(aegis_sync::desired::follow(
            client.clone(),
            sc.device.clone(),
            tracker.clone(),
            Arc::new(move |d: &aegis_proto::v1::Desired| {
                s.replace_all(&d.cameras, &d.rules, d.model.as_deref())
                    .map_err(explain)
            }),
            shutdown.clone(),
        ));
        let started = std::time::Instant::now();
        let (a, device) = (appliance.clone(), sc.device.clone());
        let health = Arc::new(move || {
            let mut h = health(&a, &device, started);
            h.config = tracker.report();
            h
        });
        let heartbeat = tokio::spawn(aegis_sync::forward::heartbeat(
            client,
            sc.device.clone(),
            Duration::from_secs_f64(sc.heartbeat_s),
            health,
            shutdown,
        ));
        tracing::info!(device = %sc.device, hub = %sc.hub, "sync: leaf node running");
        tasks.extend([forward, heartbeat, follow]);
        tasks
    }
}

/// Enrols the box with the core (once; retried while the core cannot be reached).
async fn enrol_until_done(
    identity: aegis_sync::enrol::Identity,
    sc: aegis_config::SyncConfig,
    shutdown: aegis_base::Shutdown,
) {
    if identity.is_enrolled() {
        return;
    }
    let (Some(core), Some(token)) = (&sc.core, &sc.token) else {
        tracing::error!(
            device = %sc.device,
            "sync: this box is not enrolled; set sync.core and sync.token (a join token from the core)"
        );
        return;
    };
    loop {
        match identity.enrol(core, &sc.device, token).await {
            Ok(()) => {
                tracing::info!(device = %sc.device, "sync: enrolled");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "sync: enrolment failed; retrying"),
        }
        if shutdown.sleep(Duration::from_secs(10)).await {
            return;
        }
    }
}

/// A settings error in full: each invalid field with its path.
fn explain(e: aegis_pipeline::SettingsError) -> String {
    match e {
        aegis_pipeline::SettingsError::Invalid(errors) => errors
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// The heartbeat's report of this box.
fn health(
    appliance: &aegis_pipeline::Appliance,
    device: &str,
    started: std::time::Instant,
) -> aegis_proto::v1::Health {
    let streams = appliance.streams();
    let views: Vec<_> = streams.iter().map(|s| s.view()).collect();
    let store = &appliance.store;
    aegis_proto::v1::Health {
        schema: aegis_proto::v1::HEALTH_SCHEMA.into(),
        device: device.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: started.elapsed().as_secs(),
        streams_total: views.len() as u32,
        streams_online: views
            .iter()
            .filter(|v| v.state == aegis_ingest::StreamState::Online)
            .count() as u32,
        fps: views.iter().map(|v| v.fps).sum(),
        detector_p95_ms: streams
            .iter()
            .filter_map(|s| s.detect_latency.snapshot().quantile(0.95))
            .reduce(f64::max)
            .map(|s| s * 1e3),
        disk_free_bytes: store.disk_free().unwrap_or(0),
        outbox_backlog: store.outbox_backlog().unwrap_or(0),
        events_dropped_unsynced: store.dropped_unsynced().unwrap_or(0),
        at_ms: aegis_base::Clock::now_ms(&aegis_base::SystemClock),
        model: appliance
            .detector_config()
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        config: None,
    }
}

fn serve(path: &Path, config: Config) -> anyhow::Result<()> {
    let appliance = Arc::new(aegis_pipeline::Appliance::start(
        &config,
        &aegis_detect::default_ort_library(),
        Arc::new(aegis_base::SystemClock),
    )?);
    if let Some(file) = aegis_web::ensure_admin(&appliance.store, &config.storage.dir)? {
        tracing::warn!(
            password_file = %file.display(),
            "first start: created the user `admin`; its password is in this file until it is changed"
        );
    }
    let mqtt = start_mqtt(&config, &appliance)?;
    let settings = Arc::new(aegis_pipeline::Settings::new(path, appliance.clone()));
    let sync_status = Arc::new(aegis_sync::forward::ForwardStatus::default());
    let mut state = aegis_web::WebState::new(
        appliance.clone(),
        Some(settings.clone()),
        mqtt.as_ref().map(|(status, _)| status.clone()),
    );
    if config.sync.is_some() {
        state = state.with_sync(sync_status.clone());
    }
    let shutdown = appliance.shutdown_handle();
    let result = tokio::runtime::Runtime::new()?.block_on(async {
        let listener = crate::bind(config.http.listen).await?;
        crate::stop_on_signal(shutdown.clone())?;
        let sync = EdgeSync::start(&config, &appliance, &settings, sync_status);
        let served = match &sync {
            Ok(_) => aegis_web::serve(listener, state).await.map_err(Into::into),
            Err(_) => Ok(()),
        };
        shutdown.trigger();
        match sync {
            Ok(Some(sync)) => sync.stop().await,
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        served
    });
    // However the server ended, everything stops; MQTT says `offline` first.
    appliance.shutdown_handle().trigger();
    if let Some((_, thread)) = mqtt {
        let _ = thread.join();
    }
    appliance.stop();
    result
}
