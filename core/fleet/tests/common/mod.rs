//! What the sync tests and the sync benchmark share: a box (store, leaf node, forwarder,
//! heartbeat) and a core, on loopback, with real nats-servers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_base::{Shutdown, SystemClock};
use aegis_domain::{BBox, Event, EventKind};
use aegis_fleet::db::Query;
use aegis_fleet::{Core, CoreConfig, HubConfig};
use aegis_proto::v1;
use aegis_proto::v1::EnrolRequest;
use aegis_store::Store;
use aegis_sync::enrol::Identity;
use aegis_sync::forward::{self, ForwardStatus};
use aegis_sync::{NatsServer, Role, ServerSpec};
use aegis_testkit::free_port;
use async_nats::jetstream;

pub fn event(n: usize) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        kind: EventKind::New,
        stream: "gate".into(),
        track_id: n as u64,
        label: if n.is_multiple_of(3) { "car" } else { "person" }.into(),
        score: 0.8,
        bbox: BBox::new(1.0, 2.0, 30.0, 40.0),
        frame_size: (768, 576),
        started_at_ms: 1_000 + n as i64,
        at_ms: 1_000 + n as i64,
        snapshot: None,
        rule: None,
    }
}

/// Commits `n` events on the box, a thousand per transaction; returns their ids.
pub fn commit(store: &Store, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let events: Vec<Event> = chunk.iter().map(|&i| event(i)).collect();
        ids.extend(events.iter().map(|e| e.id.clone()));
        store.commit(&events).unwrap();
    }
    ids
}

pub struct Ports {
    pub hub: u16,
    pub hub_leaf: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            hub: free_port(),
            hub_leaf: free_port(),
        }
    }
}

/// A box's side: its leaf node, forwarder and heartbeat, over `store`.
pub struct BoxSide {
    pub leaf: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub status: Arc<ForwardStatus>,
    pub shutdown: Shutdown,
    /// Wakes the forwarder, as the appliance does after each commit.
    pub wake: tokio::sync::broadcast::Sender<()>,
}

/// The box's key pair, kept under `dir` (made on first use).
pub fn identity(dir: &Path, device: &str) -> Identity {
    Identity::load_or_create(&dir.join(device)).unwrap()
}

/// Enrols `device` with the core as an operator and the box would: a join token from the
/// core, then the box's public key with it. Returns the box's seed.
pub async fn enrol(core: &Core, dir: &Path, device: &str) -> String {
    let id = identity(dir, device);
    let (token, _) = core.state.issue_token(device).await.unwrap();
    let enrolled = core
        .state
        .enrol(&EnrolRequest {
            device: device.into(),
            token,
            public_key: id.public_key.clone(),
        })
        .await
        .unwrap();
    assert!(enrolled);
    id.seed
}

/// Starts a box: its leaf (authenticating with `seed`) dials the hub's leaf port `hub_leaf`.
pub async fn start_box(
    dir: &Path,
    device: &str,
    store: Arc<Store>,
    hub_leaf: u16,
    seed: String,
) -> BoxSide {
    start_box_with_budget(dir, device, store, hub_leaf, seed, 256 << 20).await
}

/// A box whose stream may hold `budget` bytes.
pub async fn start_box_with_budget(
    dir: &Path,
    device: &str,
    store: Arc<Store>,
    hub_leaf: u16,
    seed: String,
    budget: u64,
) -> BoxSide {
    let spec = ServerSpec {
        binary: aegis_sync::default_binary(None),
        dir: dir.join(device).join("nats"),
        listen: ([127, 0, 0, 1], free_port()).into(),
        role: Role::Leaf {
            device: device.into(),
            hub: vec![format!("nats-leaf://127.0.0.1:{hub_leaf}")],
            max_file_store: 512 << 20,
            seed: Some(seed),
        },
    };
    let leaf = tokio::task::spawn_blocking(move || NatsServer::start(spec))
        .await
        .unwrap()
        .expect("the leaf starts (scripts/setup.sh installs nats-server)");
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(aegis_sync::box_inbox(device))
        .connect(leaf.client_url())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let shutdown = Shutdown::new();
    let status = Arc::new(ForwardStatus::default());
    let (wake, wake_rx) = tokio::sync::broadcast::channel(1);
    tokio::spawn(forward::forward(
        store,
        js.clone(),
        forward::stream_config(device, budget),
        wake_rx,
        Arc::new(SystemClock),
        status.clone(),
        shutdown.clone(),
    ));
    let d = device.to_string();
    tokio::spawn(forward::heartbeat(
        client.clone(),
        device.into(),
        Duration::from_millis(500),
        Arc::new(move || health(&d)),
        shutdown.clone(),
    ));
    BoxSide {
        leaf,
        client,
        js,
        status,
        shutdown,
        wake,
    }
}

pub fn health(device: &str) -> v1::Health {
    v1::Health {
        schema: v1::HEALTH_SCHEMA.into(),
        device: device.into(),
        version: "test".into(),
        uptime_s: 1,
        streams_total: 1,
        streams_online: 1,
        fps: 25.0,
        detector_p95_ms: Some(40.0),
        disk_free_bytes: 1 << 30,
        outbox_backlog: 0,
        events_dropped_unsynced: 0,
        model: None,
        config: None,
        at_ms: 0,
    }
}

pub async fn start_core(dir: &Path, ports: &Ports, database: Option<String>) -> (Core, Shutdown) {
    let config = CoreConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data: dir.join("core"),
        database,
        hub: HubConfig {
            listen: ([127, 0, 0, 1], ports.hub).into(),
            leaf_listen: ([127, 0, 0, 1], ports.hub_leaf).into(),
            nats_server: None,
        },
    };
    let shutdown = Shutdown::new();
    let core = Core::start(&config, shutdown.clone()).await.unwrap();
    (core, shutdown)
}

/// The ids the core holds for `device`, sorted, read page by page through its database API.
pub async fn core_ids(core: &Core, device: &str) -> Vec<String> {
    let (db, device) = (core.state.db.clone(), device.to_string());
    tokio::task::spawn_blocking(move || {
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let page = db
                .events(&Query {
                    device: Some(device.clone()),
                    before,
                    limit: 5_000,
                    ..Default::default()
                })
                .unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            ids.extend(page.into_iter().map(|e| e.event.id));
        }
        ids.sort();
        ids
    })
    .await
    .unwrap()
}

pub async fn stream_messages(js: &jetstream::Context, device: &str) -> u64 {
    js.get_stream(aegis_sync::stream_name(device))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

pub async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
