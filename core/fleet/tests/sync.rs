//! The sync end to end on loopback, with real nats-servers (a box's leaf node and the core's
//! hub, both run by the code under test) and the real store and core database.

mod common;

use std::collections::BTreeSet;

use aegis_proto::v1;
use async_nats::jetstream;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aegis_store::Store;
use aegis_testkit::free_port;
use common::{
    commit, core_ids, enrol, identity, start_box, start_core, stream_messages, wait_for, Ports,
};

/// 100,000 events made while the hub is down, then the hub and the core come up.
async fn outage_then_catch_up(database: Option<String>) {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    // Enrolled while the core was up; then the core goes away.
    let (core, core_shutdown) = start_core(dir.path(), &ports, database.clone()).await;
    let seed = enrol(&core, dir.path(), "box-1").await;
    core_shutdown.trigger();
    core.stop().await;

    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let ids = commit(&store, N);

    // No hub: the box's own stream takes everything, and the outbox empties.
    let b = start_box(dir.path(), "box-1", store.clone(), ports.hub_leaf, seed).await;
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
async fn a_postgresql_restart_under_the_core_loses_and_repeats_no_event() {
    let mut pg = aegis_testkit::postgres(free_port());
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let (core, core_shutdown) = start_core(dir.path(), &ports, Some(pg.url.clone())).await;
    let seed = enrol(&core, dir.path(), "box-1").await;
    let b = start_box(dir.path(), "box-1", store.clone(), ports.hub_leaf, seed).await;
    let mut ids = commit(&store, 500);
    wait_for("the first events", Duration::from_secs(60), async || {
        core_ids(&core, "box-1").await.len() == 500
    })
    .await;

    // PostgreSQL restarts (its connection to the core goes) while more events come.
    let restarted = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    });
    ids.extend(commit(&store, 500));
    let _ = b.wake.send(());
    let _pg = restarted.await.unwrap();
    wait_for(
        "the events made around the restart",
        Duration::from_secs(90),
        async || core_ids(&core, "box-1").await.len() >= 1_000,
    )
    .await;
    let got = core_ids(&core, "box-1").await;
    assert_eq!(got.len(), 1_000, "no duplicates");
    assert!(got.into_iter().eq(ids.into_iter()), "every id, once");

    b.shutdown.trigger();
    core_shutdown.trigger();
    core.stop().await;
    b.leaf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_a_device_stream_are_rejected_counted_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    let seed = enrol(&core, dir.path(), "box-2").await;
    let b = start_box(dir.path(), "box-2", store.clone(), ports.hub_leaf, seed).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enrolled_boxes_get_in_each_only_as_itself_and_a_revoked_one_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = Ports::new();
    let (core, core_shutdown) = start_core(d, &ports, None).await;
    let store_a = Arc::new(Store::open(&d.join("a-store")).unwrap());
    let seed_a = enrol(&core, d, "box-a").await;
    let a = start_box(d, "box-a", store_a.clone(), ports.hub_leaf, seed_a).await;
    let seed_b = enrol(&core, d, "box-b").await;
    let store_b = Arc::new(Store::open(&d.join("b-store")).unwrap());
    let b = start_box(d, "box-b", store_b.clone(), ports.hub_leaf, seed_b).await;
    let first = commit(&store_a, 5);
    // box-b's event arriving too says its leaf is up, so that what box-b is refused below is
    // refused by the hub, not lost on the way.
    commit(&store_b, 1);
    wait_for("both boxes' events", Duration::from_secs(60), async || {
        core_ids(&core, "box-a").await.len() == 5 && core_ids(&core, "box-b").await.len() == 1
    })
    .await;

    // A forged credential: a key the core never enrolled is refused at the hub.
    let intruder = start_box(
        d,
        "intruder",
        Arc::new(Store::open(&d.join("i-store")).unwrap()),
        ports.hub_leaf,
        identity(d, "intruder").seed,
    )
    .await;
    // box-b, enrolled, tries to pass for box-a: a heartbeat on box-a's subject, and a request
    // to delete box-a's stream in box-a's domain.
    let forged = serde_json::to_vec(&v1::Health {
        streams_total: 99,
        ..common::health("box-a")
    })
    .unwrap();
    for _ in 0..5 {
        b.client
            .publish(aegis_proto::subject::health("box-a"), forged.clone().into())
            .await
            .unwrap();
    }
    let deleted = jetstream::with_domain(b.client.clone(), "box-a")
        .delete_stream(aegis_sync::stream_name("box-a"))
        .await;
    assert!(deleted.is_err(), "box-b deleted box-a's stream");
    // ...nor read box-a's desired config (which holds its cameras' credentials), though box-b
    // reads its own.
    for device in ["box-a", "box-b"] {
        core.state
            .put_desired(aegis_fleet::db::NewDesired {
                device: device.into(),
                cameras: serde_json::json!([{"name": "door", "url": "rtsp://user:secret@cam/1"}]),
                rules: serde_json::json!({}),
                model: None,
            })
            .await
            .unwrap();
    }
    let hub = jetstream::with_domain(b.client.clone(), "hub");
    // The hub's JetStream API may answer box-b's client a moment after its events flow.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let own = loop {
        match hub
            .get_key_value(aegis_proto::subject::desired_bucket("box-b"))
            .await
        {
            Ok(own) => break own,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "box-b cannot open its own config: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut own = own
        .watch_with_history(aegis_proto::subject::DESIRED_KEY)
        .await
        .unwrap();
    let entry = tokio::time::timeout(Duration::from_secs(5), own.next()).await;
    assert!(
        matches!(entry, Ok(Some(Ok(_)))),
        "box-b reads its own config"
    );
    let other = hub
        .get_key_value(aegis_proto::subject::desired_bucket("box-a"))
        .await;
    assert!(other.is_err(), "box-b opened box-a's config");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let devices = list_devices(&core).await;
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["box-a", "box-b"], "the intruder never registered");
    let a_health = &devices[0].health;
    assert_eq!(a_health["streams_total"], 1, "only box-a speaks for box-a");
    let refused = std::fs::read_to_string(d.join("intruder/nats/nats-server.log")).unwrap();
    assert!(refused.contains("Authorization Violation"), "{refused}");
    // box-a still syncs (its stream was not touched).
    let second = commit(&store_a, 5);
    wait_for(
        "box-a's later events",
        Duration::from_secs(60),
        async || core_ids(&core, "box-a").await.len() == 10,
    )
    .await;
    let all: BTreeSet<String> = first.union(&second).cloned().collect();
    assert!(core_ids(&core, "box-a").await.into_iter().eq(all));

    // Revoked: box-a is cut off; what it makes now stays on the box.
    assert!(core.state.revoke("box-a").await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    commit(&store_a, 5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(core_ids(&core, "box-a").await.len(), 10);
    wait_for(
        "box-a's events to wait on the box",
        Duration::from_secs(10),
        async || stream_messages(&a.js, "box-a").await == 5,
    )
    .await;
    let log = std::fs::read_to_string(d.join("box-a/nats/nats-server.log")).unwrap();
    assert!(log.contains("Authorization Violation"), "{log}");

    for side in [a, b, intruder] {
        side.shutdown.trigger();
        side.leaf.stop();
    }
    core_shutdown.trigger();
    core.stop().await;
}

async fn list_devices(core: &aegis_fleet::Core) -> Vec<aegis_fleet::db::Device> {
    let db = core.state.db.clone();
    tokio::task::spawn_blocking(move || db.list_devices().unwrap())
        .await
        .unwrap()
}

/// Reads SSE frames from `response` until `n` events arrived: (SSE id, event id) pairs.
async fn sse_events(response: reqwest::Response, n: usize) -> Vec<(i64, String)> {
    let mut body = response.bytes_stream();
    let (mut text, mut out) = (String::new(), Vec::new());
    let read = async {
        while out.len() < n {
            let chunk = body.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    frame
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::to_owned))
                };
                if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                    let e: serde_json::Value = serde_json::from_str(&data).unwrap();
                    out.push((
                        id.parse().unwrap(),
                        e["event"]["id"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the events arrive on the stream");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_streams_events_resumes_from_last_event_id_and_fetches_snapshots_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(aegis_fleet::serve(
        listener,
        core.state.clone(),
        core_shutdown.clone(),
    ));
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let seed = enrol(&core, dir.path(), "box-1").await;
    let b = start_box(dir.path(), "box-1", store.clone(), ports.hub_leaf, seed).await;
    let url = format!("{api}/api/events/stream?device=box-1");

    let live = reqwest::get(&url).await.unwrap();
    assert_eq!(live.status(), 200);
    let first = commit(&store, 5);
    let got = sse_events(live, 5).await;
    let ids: BTreeSet<String> = got.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, first);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "SSE ids increase");

    // Disconnected after the third; more events come meanwhile; resuming loses and repeats
    // nothing.
    let later = commit(&store, 3);
    wait_for("the later events", Duration::from_secs(60), async || {
        core_ids(&core, "box-1").await.len() == 8
    })
    .await;
    let resumed = reqwest::Client::new()
        .get(&url)
        .header("Last-Event-ID", got[2].0.to_string())
        .send()
        .await
        .unwrap();
    let rest: Vec<String> = sse_events(resumed, 5)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let after_third: Vec<String> = got[3..].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(rest[..2], after_third[..], "what followed the third, first");
    let new: BTreeSet<String> = rest[2..].iter().cloned().collect();
    assert_eq!(new, later, "then the later ones, each once");

    // Snapshots on demand: asked of the box over the bus, its bytes uploaded over HTTP.
    tokio::spawn(aegis_sync::blobs::serve(
        b.client.clone(),
        "box-1".into(),
        store.clone(),
        api.clone(),
        b.shutdown.clone(),
    ));
    let jpeg = b"\xff\xd8\xff\xe0 not much of a picture \xff\xd9".to_vec();
    let urn = aegis_domain::BlobUrn::new(uuid::Uuid::now_v7());
    let staged = store.stage_blob(urn.clone(), &jpeg, "image/jpeg").unwrap();
    store.attach_blobs(&[staged], 0).unwrap();
    let blob_url = format!("{api}/api/devices/box-1/blobs/{urn}");
    let fetched = reqwest::get(&blob_url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), jpeg);
    // One the box does not have is a quick 404, not a wait.
    let started = std::time::Instant::now();
    let unknown = aegis_domain::BlobUrn::new(uuid::Uuid::now_v7());
    let missing = reqwest::get(format!("{api}/api/devices/box-1/blobs/{unknown}"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nobody uploads without the request's token.
    let forged = reqwest::Client::new()
        .put(format!("{api}/api/devices/box-1/blobs/{unknown}"))
        .bearer_auth("guess")
        .header("Content-Type", "image/jpeg")
        .body(jpeg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // Once fetched, the core serves it alone, the box gone.
    b.shutdown.trigger();
    b.leaf.stop();
    let again = reqwest::get(&blob_url).await.unwrap();
    assert_eq!(again.bytes().await.unwrap().to_vec(), jpeg);

    core_shutdown.trigger();
    server.await.unwrap().unwrap();
    core.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_box_stream_holds_events_back_in_the_outbox_and_loses_none() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    let seed = enrol(&core, dir.path(), "box-1").await;
    core_shutdown.trigger();
    core.stop().await;

    // The hub is away and the box's stream may hold 1 MiB: it fills, then refuses, and the
    // rest wait in the outbox.
    let store = Arc::new(Store::open(&dir.path().join("box")).unwrap());
    let ids = commit(&store, N);
    let b = common::start_box_with_budget(
        dir.path(),
        "box-1",
        store.clone(),
        ports.hub_leaf,
        seed,
        1 << 20,
    )
    .await;
    wait_for("the stream to fill", Duration::from_secs(60), async || {
        b.status.last_error().is_some_and(|e| e.contains("refused"))
    })
    .await;
    let held = stream_messages(&b.js, "box-1").await;
    let waiting = store.outbox_backlog().unwrap();
    assert!(held > 0 && waiting > 0, "held {held}, waiting {waiting}");
    assert_eq!(
        held + waiting,
        N as u64,
        "every event is in one place or the other"
    );

    // The hub is back: the stream drains, the outbox follows, and everything arrives once.
    let (core, core_shutdown) = start_core(dir.path(), &ports, None).await;
    wait_for(
        "every event in the core",
        Duration::from_secs(120),
        async || core.state.ingest.applied.load(Ordering::Relaxed) >= N as u64,
    )
    .await;
    assert!(core_ids(&core, "box-1").await.into_iter().eq(ids));
    assert_eq!(store.outbox_backlog().unwrap(), 0);

    b.shutdown.trigger();
    b.leaf.stop();
    core_shutdown.trigger();
    core.stop().await;
}
