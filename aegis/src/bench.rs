//! `aegis bench …`: the measurements behind docs/BENCHMARKS.md. Each returns a JSON report;
//! `scripts/bench.sh` runs them beside their references (the `ffmpeg` CLI, onnxruntime's Python
//! API) in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_config::Config;
use aegis_detect::{BackendKind, ObjectDetector, PostProcess};
use aegis_ingest::{SourceSpec, StreamIngest, StreamStatus};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum Bench {
    /// Run a config for a while: glass-to-event latency (frame read -> event committed and on
    /// the live feed that SSE serves), its parts, per-stream counters and memory.
    Pipeline {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Also write each event's id and when it was committed (Unix ms) as JSON lines, to
        /// pair with what a subscriber saw (`scripts/bench.sh mqtt`).
        #[arg(long)]
        events_out: Option<PathBuf>,
    },
    /// One detector on one image, many times: latency of preprocess + inference + decode + NMS.
    Detector(DetectorArgs),
    /// Decode a file as fast as possible through the ingest path (frame threading, sampling to
    /// `detect_fps`, one resize per sampled frame): frames per second. `--detect-fps 0`
    /// decodes only.
    Decode {
        file: PathBuf,
        #[arg(long, default_value_t = 5.0)]
        detect_fps: f64,
    },
}

#[derive(Args)]
pub struct DetectorArgs {
    /// The model's manifest (models/*.yaml).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendArg::Ort)]
    backend: BackendArg,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Packed RGB24 at the model's input size (e.g. `ffmpeg … -pix_fmt rgb24 -f rawvideo`).
    #[arg(long)]
    rgb: PathBuf,
    /// tract only: also where a run's time goes, by kind of operation (`runs` more runs).
    #[arg(long)]
    profile: bool,
    /// With --profile: by node (its kind, name and input shapes) instead of by kind.
    #[arg(long, requires = "profile")]
    per_node: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Ort,
    Tract,
}

pub fn pipeline(
    config: &Config,
    duration: Duration,
    events_out: Option<&std::path::Path>,
) -> anyhow::Result<Value> {
    let mut events_out = events_out
        .map(|p| std::fs::File::create(p).map(std::io::BufWriter::new))
        .transpose()?;
    let appliance = aegis_pipeline::Appliance::start(
        config,
        &aegis_detect::default_ort_library(),
        Arc::new(aegis_base::SystemClock),
    )?;
    // With an `mqtt` section, the publisher runs too: its cost shows in the figures.
    let mqtt = crate::edge::start_mqtt(config, &appliance)?;
    let mut feed = appliance.feed().subscribe();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (cpu_start, started) = (aegis_base::proc::process_cpu_seconds(), Instant::now());
    let end = started + duration;
    let (mut total, mut own, mut inference) = (vec![], vec![], vec![]);
    let (mut decode, mut after_decode) = (vec![], vec![]);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match runtime.block_on(async { tokio::time::timeout(left, feed.recv()).await }) {
            Ok(Ok(e)) => {
                let glass = e.read_at.elapsed().as_secs_f64() * 1e3;
                if let Some(out) = &mut events_out {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                    let line = json!({"id": e.stored.event.id, "committed_unix_ms": now.as_secs_f64() * 1e3});
                    std::io::Write::write_all(out, format!("{line}\n").as_bytes())?;
                }
                let inf = e.inference.as_secs_f64() * 1e3;
                let dec = e.decode.as_secs_f64() * 1e3;
                total.push(glass);
                inference.push(inf);
                own.push(glass - inf);
                decode.push(dec);
                after_decode.push(glass - inf - dec);
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(missed = n, "benchmark fell behind")
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    let streams: Vec<_> = appliance.streams().iter().map(|s| s.view()).collect();
    let memory = memory_mb();
    let cores_used =
        (aegis_base::proc::process_cpu_seconds() - cpu_start) / started.elapsed().as_secs_f64();
    appliance.shutdown_handle().trigger();
    let mqtt_dropped = mqtt.map(|(status, thread)| {
        let _ = thread.join();
        status.dropped.load(std::sync::atomic::Ordering::Relaxed)
    });
    appliance.stop();
    Ok(json!({
        "events": total.len(),
        "mqtt_dropped": mqtt_dropped,
        "seconds": duration.as_secs(),
        "glass_to_event_ms": percentiles(&mut total),
        "pipeline_share_ms": percentiles(&mut own),
        "inference_ms": percentiles(&mut inference),
        "decode_ms": percentiles(&mut decode),
        "pipeline_share_after_decode_ms": percentiles(&mut after_decode),
        "memory_mb": memory,
        "cpu_cores_used": (cores_used * 100.0).round() / 100.0,
        "streams": streams,
    }))
}

pub fn detector(args: &DetectorArgs) -> anyhow::Result<Value> {
    let kind = match args.backend {
        BackendArg::Ort => BackendKind::Ort,
        BackendArg::Tract => BackendKind::Tract,
    };
    let mut detector = ObjectDetector::load(
        &args.model,
        kind,
        aegis_detect::Threads::new(args.threads),
        &aegis_detect::default_ort_library(),
        |m| PostProcess::new(m, 0.3, &BTreeMap::new(), None, 0.5),
    )?;
    let rgb = std::fs::read(&args.rgb).with_context(|| args.rgb.display().to_string())?;
    let (w, h) = detector.input_size();
    // Warm-up, as the reference does.
    for _ in 0..5 {
        detector.detect(&rgb, w, h)?;
    }
    let mut times = Vec::with_capacity(args.runs);
    let mut found = 0;
    for _ in 0..args.runs {
        let started = Instant::now();
        found = detector.detect(&rgb, w, h)?.len();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut report = json!({
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "detections": found,
        "latency_ms": percentiles(&mut times),
    });
    if args.profile {
        report["profile_ms_per_run"] = tract_profile(args)?;
    }
    Ok(report)
}

#[cfg(feature = "tract")]
fn tract_profile(args: &DetectorArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(
        matches!(args.backend, BackendArg::Tract),
        "--profile is for --backend tract"
    );
    let ops = aegis_detect::tract_profile(&args.model, args.threads, args.runs, args.per_node)?;
    Ok(ops
        .into_iter()
        .map(|(op, ms)| json!({"op": op, "ms": (ms * 100.0).round() / 100.0}))
        .collect())
}

#[cfg(not(feature = "tract"))]
fn tract_profile(_: &DetectorArgs) -> anyhow::Result<Value> {
    anyhow::bail!("--profile needs a build with the tract feature")
}

pub fn decode(file: &Path, detect_fps: f64) -> anyhow::Result<Value> {
    aegis_ingest::init()?;
    let status = Arc::new(StreamStatus::new("bench", &file.display().to_string()));
    let ingest = StreamIngest {
        spec: SourceSpec::File {
            path: file.to_owned(),
            looping: false,
            realtime: false,
        },
        input_size: (512, 512),
        detect_fps,
        status: status.clone(),
        backoff: aegis_base::Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        clock: Arc::new(aegis_base::SystemClock),
    };
    let (tx, rx) = sync_channel(2);
    let drain = std::thread::spawn(move || rx.into_iter().count());
    // A camera is retried after an error; a benchmark stops at the first.
    let shutdown = aegis_base::Shutdown::new();
    let watch = {
        let (status, shutdown) = (status.clone(), shutdown.clone());
        std::thread::spawn(move || {
            while !shutdown.is_triggered() {
                if status.view().last_error.is_some() {
                    shutdown.trigger();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    ingest.run(tx, shutdown.clone());
    let seconds = started.elapsed().as_secs_f64();
    shutdown.trigger();
    let _ = watch.join();
    let sampled = drain.join().expect("drain thread");
    let view = status.view();
    anyhow::ensure!(
        view.frames_decoded > 0,
        "nothing decoded: {:?}",
        view.last_error
    );
    Ok(json!({
        "file": file,
        "frames_decoded": view.frames_decoded,
        "frames_sampled": sampled,
        "seconds": seconds,
        "decode_fps": view.frames_decoded as f64 / seconds,
    }))
}

/// Resident and peak resident memory of this process, from /proc (Linux).
fn memory_mb() -> Value {
    let (rss, peak) = aegis_base::proc::process_memory();
    let mb = |b: Option<u64>| b.map(|b| (b as f64 / 1_048_576.0).round());
    json!({"rss": mb(rss), "peak_rss": mb(peak)})
}

fn percentiles(v: &mut [f64]) -> Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map(|x| (x * 100.0).round() / 100.0)
    };
    json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": v.last()})
}
