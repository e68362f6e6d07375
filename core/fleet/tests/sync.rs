//! The sync end to end on loopback, with real nats-servers (a box's leaf node and the core's
//! hub, both run by the code under test) and the real store and core database.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_base::{Shutdown, SystemClock};
use aegis_domain::{BBox, Event, EventKind};
use aegis_fleet::db::Query;
use aegis_fleet::{Core, CoreConfig, HubConfig};
use aegis_proto::v1;
use aegis_store::Store;
use aegis_sync::forward::{self, ForwardStatus};
use aegis_sync::{NatsServer, Role, ServerSpec};
use aegis_testkit::free_port;
use async_nats::jetstream;

fn event(n: usize) -> Event {
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
fn commit(store: &Store, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let events: Vec<Event> = chunk.iter().map(|&i| event(i)).collect();
        ids.extend(events.iter().map(|e| e.id.clone()));
        store.commit(&events).unwrap();
    }
    ids
}

struct Ports {
    hub: u16,
    hub_leaf: u16,
    leaf: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            hub: free_port(),
            hub_leaf: free_port(),
            leaf: free_port(),
        }
    }
}

/// A box's side: its leaf node, forwarder and heartbeat, over `store`.
struct BoxSide {
    leaf: NatsServer,
    js: jetstream::Context,
    status: Arc<ForwardStatus>,
    shutdown: Shutdown,
    _wake: tokio::sync::broadcast::Sender<()>,
}

async fn start_box(dir: &Path, device: &str, store: Arc<Store>, ports: &Ports) -> BoxSide {
    let spec = ServerSpec {
        binary: aegis_sync::default_binary(None),
        dir: dir.join("nats"),
        listen: ([127, 0, 0, 1], ports.leaf).into(),
        role: Role::Leaf {
            device: device.into(),
            hub: vec![format!("nats-leaf://127.0.0.1:{}", ports.hub_leaf)],
            max_file_store: 512 << 20,
        },
    };
    let leaf = tokio::task::spawn_blocking(move || NatsServer::start(spec))
        .await
        .unwrap()
        .expect("the leaf starts (scripts/setup.sh installs nats-server)");
    let client = async_nats::connect(leaf.client_url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let shutdown = Shutdown::new();
    let status = Arc::new(ForwardStatus::default());
    let (wake, wake_rx) = tokio::sync::broadcast::channel(1);
    tokio::spawn(forward::forward(
        store,
        js.clone(),
        forward::stream_config(device, 256 << 20),
        wake_rx,
        Arc::new(SystemClock),
        status.clone(),
        shutdown.clone(),
    ));
    let d = device.to_string();
    tokio::spawn(forward::heartbeat(
        client,
        device.into(),
        Duration::from_millis(500),
        Arc::new(move || health(&d)),
        shutdown.clone(),
    ));
    BoxSide {
        leaf,
        js,
        status,
        shutdown,
        _wake: wake,
    }
}

fn health(device: &str) -> v1::Health {
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
        at_ms: 0,
    }
}

async fn start_core(dir: &Path, ports: &Ports, database: Option<String>) -> (Core, Shutdown) {
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
async fn core_ids(core: &Core, device: &str) -> Vec<String> {
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

async fn stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream(forward::STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 100,000 events made while the hub is down, then the hub and the core come up.
async fn outage_then_catch_up(database: Option<String>) {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let ids = commit(&store, N);

    // No hub yet: the box's own stream takes everything, and the outbox empties.
    let b = start_box(dir.path(), "box-1", store.clone(), &ports).await;
    wait_for(
        "the outbox to drain into the leaf",
        Duration::from_secs(180),
        async || store.outbox_backlog().unwrap() == 0,
    )
    .await;
    assert_eq!(stream_messages(&b.js).await, N as u64);
    assert_eq!(b.status.forwarded.load(Ordering::Relaxed), N as u64);

    // The hub comes up: every event reaches the core once, and leaves the box's stream.
    let (core, core_shutdown) = start_core(dir.path(), &ports, database).await;
    wait_for(
        "the core to ingest every event",
        Duration::from_secs(240),
        async || core.state.ingest.applied.load(Ordering::Relaxed) >= N as u64,
    )
    .await;
    let got = core_ids(&core, "box-1").await;
    assert_eq!(got.len(), N, "no duplicates");
    assert!(
        got.into_iter().eq(ids.into_iter()),
        "the same ids as on the box"
    );
    wait_for(
        "the box's stream to empty",
        Duration::from_secs(30),
        async || stream_messages(&b.js).await == 0,
    )
    .await;
    assert_eq!(core.state.ingest.rejected.load(Ordering::Relaxed), 0);

    // The registry knows the box from its heartbeats.
    let db = core.state.db.clone();
    let devices = tokio::task::spawn_blocking(move || db.list_devices())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, "box-1");
    assert_eq!(devices[0].health["streams_online"], 1);

    b.shutdown.trigger();
    core_shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_made_while_the_hub_is_down_reach_sqlite_exactly_once() {
    outage_then_catch_up(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_made_while_the_hub_is_down_reach_postgresql_exactly_once() {
    let pg = aegis_testkit::postgres(free_port());
    outage_then_catch_up(Some(pg.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_a_device_stream_are_rejected_counted_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    let b = start_box(dir.path(), "box-2", store.clone(), &ports).await;

    let before = commit(&store, 10);
    wait_for("the first events", Duration::from_secs(60), async || {
        core_ids(&core, "box-2").await.len() == 10
    })
    .await;
    // Garbage, a v1 event with an unknown schema tag, and an event with no id, straight onto
    // the device's stream.
    let bad: [&[u8]; 3] = [
        b"\x00\xffnot json",
        br#"{"schema":"aegis.event.v9","id":"x"}"#,
        br#"{"schema":"aegis.event.v1","id":"","kind":"new","stream":"s","track_id":1,"label":"car","score":0.5,"bbox":[0,0,1,1],"frame_size":[2,2],"started_at_ms":0,"at_ms":0}"#,
    ];
    for payload in bad {
        b.js.publish(
            aegis_proto::subject::events("box-2"),
            payload.to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let after = commit(&store, 10);
    wait_for(
        "the events behind the bad ones",
        Duration::from_secs(60),
        async || core_ids(&core, "box-2").await.len() == 20,
    )
    .await;
    assert_eq!(core.state.ingest.rejected.load(Ordering::Relaxed), 3);
    let all: BTreeSet<String> = before.union(&after).cloned().collect();
    assert!(core_ids(&core, "box-2").await.into_iter().eq(all));
    wait_for(
        "the box's stream to empty",
        Duration::from_secs(30),
        async || stream_messages(&b.js).await == 0,
    )
    .await;

    b.shutdown.trigger();
    core_shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}
