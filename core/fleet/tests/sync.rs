//! The sync end to end on loopback, with real nats-servers (a box's leaf node and the core's
//! hub, both run by the code under test) and the real store and core database.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aegis_store::Store;
use aegis_testkit::free_port;
use common::{commit, core_ids, start_box, start_core, stream_messages, wait_for, Ports};

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
    assert_eq!(stream_messages(&b.js, "box-1").await, N as u64);
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
        async || stream_messages(&b.js, "box-1").await == 0,
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
        async || stream_messages(&b.js, "box-2").await == 0,
    )
    .await;

    b.shutdown.trigger();
    core_shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}
