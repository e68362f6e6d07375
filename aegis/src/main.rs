//! `aegis`: the appliance binary. Thin: each sub-command parses its arguments and calls a library.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aegis_config::{Config, ConfigError};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aegis", version, about = "AegisVision edge video analytics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// End-to-end benchmark: run the config for a while and report glass-to-event latency
    /// (frame read -> event committed and on the live feed that SSE serves).
    Bench {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
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

/// Exit status for a bad config or bad arguments (EX_USAGE / EX_DATAERR).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    aegis_base::init_tracing();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e: ConfigError| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
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
        Command::Bench { config, seconds } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            bench(&config, std::time::Duration::from_secs(seconds))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let appliance = aegis_pipeline::Appliance::start(
        &config,
        &aegis_detect::default_ort_library(),
        Arc::new(aegis_base::SystemClock),
    )?;
    let state = aegis_web::WebState {
        store: appliance.store.clone(),
        streams: appliance.streams.clone(),
        live: appliance.feed(),
        shutdown: appliance.shutdown_handle(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let shutdown = appliance.shutdown_handle();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "web API listening");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
            shutdown.trigger();
        });
        aegis_web::serve(listener, state).await?;
        anyhow::Ok(())
    });
    appliance.stop();
    result
}

fn bench(config: &Config, duration: std::time::Duration) -> anyhow::Result<()> {
    let appliance = aegis_pipeline::Appliance::start(
        config,
        &aegis_detect::default_ort_library(),
        Arc::new(aegis_base::SystemClock),
    )?;
    let mut feed = appliance.feed().subscribe();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let end = std::time::Instant::now() + duration;
    let (mut total, mut own, mut inference) = (vec![], vec![], vec![]);
    let (mut decode, mut after_decode) = (vec![], vec![]);
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match runtime.block_on(async { tokio::time::timeout(left, feed.recv()).await }) {
            Ok(Ok(e)) => {
                let glass = e.read_at.elapsed().as_secs_f64() * 1e3;
                let inf = e.inference.as_secs_f64() * 1e3;
                total.push(glass);
                inference.push(inf);
                own.push(glass - inf);
                let dec = e.decode.as_secs_f64() * 1e3;
                decode.push(dec);
                after_decode.push(glass - inf - dec);
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(missed = n, "benchmark fell behind")
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    let streams: Vec<_> = appliance.streams.iter().map(|s| s.view()).collect();
    appliance.stop();
    let report = serde_json::json!({
        "events": total.len(),
        "seconds": duration.as_secs(),
        "glass_to_event_ms": percentiles(&mut total),
        "pipeline_share_ms": percentiles(&mut own),
        "inference_ms": percentiles(&mut inference),
        "decode_ms": percentiles(&mut decode),
        "pipeline_share_after_decode_ms": percentiles(&mut after_decode),
        "streams": streams,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn percentiles(v: &mut [f64]) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map(|x| (x * 100.0).round() / 100.0)
    };
    serde_json::json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": v.last()})
}
