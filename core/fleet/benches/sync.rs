//! `cargo bench -p aegis-fleet --bench sync`: the sync's figures on loopback, with the real
//! nats-servers, store and databases (a PostgreSQL of its own). Prints one JSON object a line:
//! - `db_apply`: events/s a database applies in batches of 2,000, through the `Sink` alone;
//! - `drain`: events/s from a box's backlog of 100,000 (made while the hub was down) into the
//!   core, through leaf and hub;
//! - `latency`: edge → core, from the box's commit to the core's, one event at a time;
//! - `fleet`: the core's memory and CPU with 100 devices (their own leaf nats-servers) sending
//!   a heartbeat every 5 s and an event a second each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_fleet::db::{Database, SqliteDb};
use aegis_fleet::pg::PgDb;
use aegis_proto::v1;
use aegis_store::Store;
use aegis_sync::forward;
use aegis_sync::{NatsServer, Role, ServerSpec};
use aegis_testkit::free_port;
use common::{commit, enrol, start_box, start_core, wait_for, Ports};
use serde_json::json;

const DB_EVENTS: usize = 200_000;
const BACKLOG: usize = 100_000;
const LATENCY_EVENTS: usize = 500;

fn wire_event(n: usize) -> v1::Event {
    v1::Event {
        schema: v1::EVENT_SCHEMA.into(),
        id: format!("{n:012}-0000-7000-8000-000000000000"),
        kind: "new".into(),
        stream: "gate".into(),
        track_id: n as u64,
        label: "person".into(),
        score: 0.8,
        bbox: [1.0, 2.0, 30.0, 40.0],
        frame_size: [768, 576],
        started_at_ms: n as i64,
        at_ms: n as i64,
        snapshot: Some(format!(
            "urn:aegis:blob:{n:012}-0000-7000-8000-000000000000"
        )),
        rule: None,
    }
}

async fn db_apply(name: &str, db: Arc<dyn Database>) {
    let events: Vec<v1::Event> = (0..DB_EVENTS).map(wire_event).collect();
    let started = Instant::now();
    let applied = tokio::task::spawn_blocking(move || {
        events
            .chunks(2_000)
            .map(|c| db.apply("bench-box", c).unwrap())
            .sum::<u64>()
    })
    .await
    .unwrap();
    assert_eq!(applied, DB_EVENTS as u64);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "db_apply", "database": name, "events": DB_EVENTS, "batch": 2000,
               "seconds": secs, "events_per_s": (DB_EVENTS as f64 / secs).round()})
    );
}

async fn drain(name: &str, database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let (core, shutdown) = start_core(dir.path(), &ports, database.clone()).await;
    let seed = enrol(&core, dir.path(), "box-1").await;
    shutdown.trigger();
    core.stop().await;
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    commit(&store, BACKLOG);
    let b = start_box(dir.path(), "box-1", store.clone(), ports.hub_leaf, seed).await;
    wait_for(
        "the backlog in the leaf",
        Duration::from_secs(300),
        async || store.outbox_backlog().unwrap() == 0,
    )
    .await;
    let (core, shutdown) = start_core(dir.path(), &ports, database).await;
    let applied = || core.state.ingest.applied.load(Ordering::Relaxed);
    wait_for("the first event", Duration::from_secs(60), async || {
        applied() > 0
    })
    .await;
    let (started, from) = (Instant::now(), applied());
    wait_for(
        "the backlog in the core",
        Duration::from_secs(600),
        async || applied() >= BACKLOG as u64,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "drain", "database": name, "events": BACKLOG,
               "seconds": secs, "events_per_s": ((BACKLOG as u64 - from) as f64 / secs).round()})
    );
    b.shutdown.trigger();
    shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}

async fn latency(name: &str, database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let (core, shutdown) = start_core(dir.path(), &ports, database).await;
    let seed = enrol(&core, dir.path(), "box-1").await;
    let b = start_box(dir.path(), "box-1", store.clone(), ports.hub_leaf, seed).await;
    let applied = || core.state.ingest.applied.load(Ordering::Relaxed);
    // Warm up: the device is registered and its pump attached.
    commit(&store, 1);
    let _ = b.wake.send(());
    wait_for("the first event", Duration::from_secs(60), async || {
        applied() == 1
    })
    .await;
    let mut ms = Vec::with_capacity(LATENCY_EVENTS);
    for n in 0..LATENCY_EVENTS {
        let started = Instant::now();
        commit(&store, 1);
        let _ = b.wake.send(());
        while applied() < n as u64 + 2 {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        // About 20 events a second, as a busy box makes them.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| (ms[((ms.len() - 1) as f64 * p).round() as usize] * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({"bench": "latency", "database": name, "events": LATENCY_EVENTS,
               "p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99), "max_ms": q(1.0)})
    );
    b.shutdown.trigger();
    shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}

const DEVICES: usize = 100;

async fn fleet() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let hub_leaf = format!("nats-leaf://127.0.0.1:{}", ports.hub_leaf);
    // Enrolled first; then the devices start (their leaves dial the hub until it is there),
    // so that what the process gains afterwards is the core's.
    let names: Vec<String> = (0..DEVICES).map(|i| format!("sim-{i:03}")).collect();
    let mut seeds = Vec::new();
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    for device in &names {
        seeds.push(enrol(&core, dir.path(), device).await);
    }
    core_shutdown.trigger();
    core.stop().await;
    let mut leaves = Vec::new();
    let mut clients = Vec::new();
    for (device, seed) in names.into_iter().zip(seeds) {
        let spec = ServerSpec {
            binary: aegis_sync::default_binary(None),
            dir: dir.path().join(&device),
            listen: ([127, 0, 0, 1], free_port()).into(),
            role: Role::Leaf {
                device: device.clone(),
                hub: vec![hub_leaf.clone()],
                max_file_store: 64 << 20,
                seed: Some(seed),
            },
        };
        let leaf = tokio::task::spawn_blocking(move || NatsServer::start(spec))
            .await
            .unwrap()
            .unwrap();
        let client = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(aegis_sync::box_inbox(&device))
            .connect(leaf.client_url())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.create_or_update_stream(forward::stream_config(&device, 32 << 20))
            .await
            .unwrap();
        leaves.push(leaf);
        clients.push((device, client, js));
    }
    let shutdown = aegis_base::Shutdown::new();
    for (device, client, js) in clients {
        let d = device.clone();
        tokio::spawn(forward::heartbeat(
            client,
            device.clone(),
            Duration::from_secs(5),
            Arc::new(move || common::health(&d)),
            shutdown.clone(),
        ));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_triggered() {
                let e = serde_json::to_vec(&wire_event(n)).unwrap();
                let _ = js
                    .publish(aegis_proto::subject::events(&device), e.into())
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let before = aegis_base::proc::process_memory().0.unwrap_or(0);
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    let db = core.state.db.clone();
    wait_for(
        "every device registered",
        Duration::from_secs(120),
        async || {
            let db = db.clone();
            tokio::task::spawn_blocking(move || db.list_devices().unwrap().len())
                .await
                .unwrap()
                == DEVICES
        },
    )
    .await;
    // Settle, then measure a minute of steady state.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let hub_pid = core.hub_pid();
    let (cpu0, hub_cpu0, applied0, t0) = (
        aegis_base::proc::process_cpu_seconds(),
        aegis_base::proc::cpu_seconds_of(hub_pid),
        core.state.ingest.applied.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (aegis_base::proc::process_cpu_seconds() - cpu0) / secs;
    let hub_cpu = (aegis_base::proc::cpu_seconds_of(hub_pid) - hub_cpu0) / secs;
    let applied = core.state.ingest.applied.load(Ordering::Relaxed) - applied0;
    let after = aegis_base::proc::process_memory().0.unwrap_or(0);
    let hub = aegis_base::proc::memory_of(hub_pid).unwrap_or(0);
    println!(
        "{}",
        json!({"bench": "fleet", "devices": DEVICES,
               "core_rss_mb": ((after.saturating_sub(before)) as f64 / 1048576.0).round(),
               "hub_rss_mb": (hub as f64 / 1048576.0).round(),
               "events_per_s": (applied as f64 / secs).round(),
               "core_and_simulators_cpu_cores": (cpu * 100.0).round() / 100.0,
               "hub_cpu_cores": (hub_cpu * 100.0).round() / 100.0})
    );
    shutdown.trigger();
    core_shutdown.trigger();
    core.stop().await;
    for leaf in leaves {
        tokio::task::spawn_blocking(move || leaf.stop())
            .await
            .unwrap();
    }
}

/// `cargo bench -p aegis-fleet --bench sync [-- db_apply|drain|latency|fleet ...]`.
fn main() {
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if runs("db_apply") {
            let pg = aegis_testkit::postgres(free_port());
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqliteDb::open(&dir.path().join("core.db")).unwrap();
            db_apply("sqlite", Arc::new(sqlite)).await;
            db_apply(
                "postgresql",
                Arc::new(PgDb::connect(&pg.url).await.unwrap()),
            )
            .await;
        }
        if runs("drain") {
            drain("sqlite", None).await;
            let pg = aegis_testkit::postgres(free_port());
            drain("postgresql", Some(pg.url.clone())).await;
        }
        if runs("latency") {
            latency("sqlite", None).await;
        }
        if runs("fleet") {
            fleet().await;
        }
    });
}
