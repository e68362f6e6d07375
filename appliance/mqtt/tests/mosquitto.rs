//! The publisher against a real broker (mosquitto on loopback, started here) and a real client
//! (`mosquitto_sub`). The events are made here rather than by a detector: what is under test is
//! what reaches MQTT subscribers.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use aegis_base::Shutdown;
use aegis_domain::BlobUrn;
use aegis_domain::{BBox, Event, EventKind};
use aegis_mqtt::{Feeds, MqttConfig};
use aegis_pipeline::{LiveEvent, ZoneCount};
use aegis_store::{Store, StoredEvent};
use aegis_testkit::{free_port, mosquitto, mosquitto_client, mosquitto_sub};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The appliance's side of the publisher: its feeds and a store in `dir`.
struct Appliance {
    events: broadcast::Sender<LiveEvent>,
    occupancy: broadcast::Sender<ZoneCount>,
    store: Arc<Store>,
}

impl Appliance {
    fn new(dir: &std::path::Path) -> Self {
        Self {
            events: broadcast::channel(256).0,
            occupancy: broadcast::channel(64).0,
            store: Arc::new(Store::open(&dir.join("store")).unwrap()),
        }
    }

    fn feeds(&self) -> Feeds {
        Feeds {
            events: self.events.subscribe(),
            occupancy: self.occupancy.subscribe(),
            store: self.store.clone(),
        }
    }
}

fn config(port: u16, queue: usize) -> MqttConfig {
    serde_json::from_value(serde_json::json!({"host": "127.0.0.1", "port": port, "queue": queue}))
        .unwrap()
}

fn live(seq: i64, kind: EventKind, track_id: u64) -> LiveEvent {
    LiveEvent {
        stored: StoredEvent {
            seq,
            event: Event {
                id: format!("event-{seq}"),
                kind,
                stream: "plaza".into(),
                track_id,
                label: "person".into(),
                score: 0.9,
                bbox: BBox::new(1.0, 2.0, 30.0, 80.0),
                frame_size: (768, 576),
                started_at_ms: 1000,
                at_ms: 1000 + seq,
                snapshot: None,
                rule: None,
            },
        },
        read_at: Instant::now(),
        decode: Duration::ZERO,
        inference: Duration::ZERO,
    }
}

/// Lines received until `done` says so (or 10 s pass).
fn collect(rx: &Receiver<String>, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        got.push(line);
        if done(&got) {
            return got;
        }
    }
    panic!("not everything came; got {got:#?}");
}

/// Lines received until `want` shows up.
fn until(rx: &Receiver<String>, want: &str) -> Vec<String> {
    collect(rx, |got| got.last().is_some_and(|l| l == want))
}

#[test]
fn events_counts_and_availability_reach_a_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let (_sub, lines) = mosquitto_sub(port, "aegis/#");
    let (_ha, discovery) = mosquitto_sub(port, "homeassistant/#");
    let appliance = Appliance::new(dir.path());
    let feed = &appliance.events;
    let shutdown = Shutdown::new();
    let (status, thread) =
        aegis_mqtt::start(config(port, 100), appliance.feeds(), shutdown.clone()).unwrap();
    until(&lines, "aegis/available online");

    // The first object's snapshot is in the store: it is published, retained, as it is.
    let urn = BlobUrn::new(uuid::Uuid::now_v7());
    let jpeg = b"\xFF\xD8 not really a JPEG \xFF\xD9".to_vec();
    let blob = appliance
        .store
        .stage_blob(urn.clone(), &jpeg, "image/jpeg")
        .unwrap();
    appliance.store.attach_blobs(&[blob], 1000).unwrap();
    let mut first = live(1, EventKind::New, 1);
    first.stored.event.snapshot = Some(urn);
    feed.send(first).unwrap();
    feed.send(live(2, EventKind::New, 2)).unwrap();
    feed.send(live(3, EventKind::Update, 1)).unwrap();
    appliance
        .occupancy
        .send(ZoneCount {
            camera: "plaza".into(),
            zone: "porch".into(),
            label: "person".into(),
            count: 2,
        })
        .unwrap();
    feed.send(live(4, EventKind::End, 1)).unwrap();
    let is_count = |l: &String| l.starts_with("aegis/plaza/person ");
    let got = collect(&lines, |got| {
        got.iter().filter(|l| is_count(l)).count() == 3
            && got.iter().any(|l| l == "aegis/porch/person 2")
    });
    let counts: Vec<_> = got.iter().filter(|l| is_count(l)).collect();
    assert_eq!(
        counts,
        [
            "aegis/plaza/person 1",
            "aegis/plaza/person 2",
            "aegis/plaza/person 1"
        ]
    );
    let events: Vec<serde_json::Value> = got
        .iter()
        .filter_map(|l| l.strip_prefix("aegis/events "))
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["type"], "new");
    assert!(events[0]["before"].is_null());
    // The update's `before` is the new event of the same object; the end's is the update.
    assert_eq!(events[2]["before"]["seq"], 1);
    assert_eq!(events[2]["after"]["seq"], 3);
    assert_eq!(events[3]["type"], "end");
    assert_eq!(events[3]["before"]["seq"], 3);

    let snapshot = mosquitto_client("mosquitto_sub", port, "aegis/plaza/person/snapshot")
        .args(["-C", "1", "-N", "-W", "10"])
        .output()
        .unwrap();
    assert_eq!(snapshot.stdout, jpeg, "the retained snapshot");

    // Home Assistant learns about the count sensor once, retained.
    let announced = collect(&discovery, |got| !got.is_empty());
    let (topic, config) = announced[0].split_once(' ').unwrap();
    assert_eq!(topic, "homeassistant/sensor/aegis/plaza_person/config");
    let config: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!(config["state_topic"], "aegis/plaza/person");
    assert_eq!(config["availability_topic"], "aegis/available");

    shutdown.trigger();
    thread.join().unwrap();
    until(&lines, "aegis/available offline");
    assert_eq!(status.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn with_the_broker_down_events_are_dropped_and_counted_and_it_connects_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let appliance = Appliance::new(dir.path());
    let feed = &appliance.events;
    let shutdown = Shutdown::new();
    let (status, thread) =
        aegis_mqtt::start(config(port, 10), appliance.feeds(), shutdown.clone()).unwrap();
    for seq in 0..100 {
        feed.send(live(seq, EventKind::New, seq as u64)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while status.dropped.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "drops not counted: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!status.connected.load(Ordering::Relaxed));

    let _broker = mosquitto(dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !status.connected.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "never connected: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A subscriber arriving now sees the retained availability, and the count of the 100
    // objects in view, though most of the counts on the way there were dropped.
    let (_sub, lines) = mosquitto_sub(port, "aegis/#");
    until(&lines, "aegis/available online");
    until(&lines, "aegis/plaza/person 100");
    shutdown.trigger();
    thread.join().unwrap();
}

/// The first `n` counts (`aegis/<camera or zone>/<label>`) a new subscriber gets, as "topic
/// count" lines in order.
fn counts_kept(port: u16, n: usize) -> Vec<String> {
    let out = mosquitto_client("mosquitto_sub", port, "aegis/+/+")
        .args(["-v", "-C", &n.to_string(), "-W", "10"])
        .output()
        .unwrap();
    let mut lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// `mosquitto_pub -r`: `payload` on `topic`, retained.
fn retain(port: u16, topic: &str, payload: &str) {
    let status = mosquitto_client("mosquitto_pub", port, topic)
        .args(["-r", "-m", payload])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn counts_a_killed_run_left_on_the_broker_are_put_right_when_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    // What a run killed with two people on the plaza, one of them on the porch, left behind;
    // and a count that is right as it is.
    retain(port, "aegis/plaza/person", "2");
    retain(port, "aegis/porch/person", "1");
    retain(port, "aegis/plaza/car", "0");
    let (_sub, lines) = mosquitto_sub(port, "aegis/+/+");
    until(&lines, "aegis/plaza/car 0");

    let appliance = Appliance::new(dir.path());
    let shutdown = Shutdown::new();
    let (status, thread) =
        aegis_mqtt::start(config(port, 100), appliance.feeds(), shutdown.clone()).unwrap();
    // Nothing is in view yet.
    let got = collect(&lines, |got| {
        ["aegis/plaza/person 0", "aegis/porch/person 0"]
            .iter()
            .all(|want| got.iter().any(|l| l == want))
    });
    // A new person is counted from what is in view, not from what was kept.
    appliance.events.send(live(1, EventKind::New, 7)).unwrap();
    let got = [got, until(&lines, "aegis/plaza/person 1")].concat();
    assert!(
        !got.iter().any(|l| l.starts_with("aegis/plaza/car")),
        "a right count is left alone: {got:?}"
    );
    // Someone subscribing now gets the counts as they are.
    let now = counts_kept(port, 3);
    assert_eq!(
        now,
        [
            "aegis/plaza/car 0",
            "aegis/plaza/person 1",
            "aegis/porch/person 0"
        ]
    );
    shutdown.trigger();
    thread.join().unwrap();
    assert_eq!(status.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_broker_restarted_without_its_retained_messages_gets_the_counts_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port);
    let appliance = Appliance::new(dir.path());
    let shutdown = Shutdown::new();
    let (status, thread) =
        aegis_mqtt::start(config(port, 100), appliance.feeds(), shutdown.clone()).unwrap();
    let (sub, lines) = mosquitto_sub(port, "aegis/+/+");
    appliance.events.send(live(1, EventKind::New, 1)).unwrap();
    appliance.events.send(live(2, EventKind::New, 2)).unwrap();
    let porch = ZoneCount {
        camera: "plaza".into(),
        zone: "porch".into(),
        label: "person".into(),
        count: 1,
    };
    appliance.occupancy.send(porch).unwrap();
    collect(&lines, |got| {
        got.iter().any(|l| l == "aegis/plaza/person 2")
            && got.iter().any(|l| l == "aegis/porch/person 1")
    });

    drop((sub, broker));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status.connected.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the broker's loss went unnoticed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _broker = mosquitto(dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !status.connected.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "never connected again: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Someone subscribing now gets the counts as they are, though nothing changed.
    let now = counts_kept(port, 2);
    assert_eq!(now, ["aegis/plaza/person 2", "aegis/porch/person 1"]);
    shutdown.trigger();
    thread.join().unwrap();
}
