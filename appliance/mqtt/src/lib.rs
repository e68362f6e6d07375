//! MQTT publisher (rumqttc), in the layout Frigate users know, under a configurable prefix:
//! - `<prefix>/available`: `online`, or `offline` (retained; also the broker's last will);
//! - `<prefix>/events`: `{"type": "new"|"update"|"end"|"rule", "before": …, "after": …}`;
//! - `<prefix>/<camera>/<label>`: how many such objects are in view (retained);
//! - `<prefix>/<zone>/<label>`: how many stand in the zone (retained; zones share the level
//!   below the prefix with cameras, as in Frigate, so their names should differ);
//! - `<prefix>/<camera>/<label>/snapshot`: the JPEG of the latest new object (retained);
//! - `<discovery>/sensor/<client_id>/<camera>_<label>/config`: a Home Assistant discovery
//!   message (retained) for each of those counts, the first time it is published.
//!
//! Each time it connects, it publishes every count it knows again, and reads back the counts
//! the broker kept (a run that crashed, or counts dropped while the broker was away, leave
//! them stale) to put right any that differ from the count now.
//!
//! It runs on its own thread and reads the appliance's live feed. The broker being down never
//! slows the appliance: messages wait in a bounded queue, and what does not fit is dropped and
//! counted (`MqttStatus::dropped`, `aegis_mqtt_dropped_total`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_domain::BlobUrn;
use aegis_pipeline::ZoneCount;
use aegis_store::Store;

use aegis_base::{Backoff, Shutdown};
pub use aegis_config::MqttConfig;
use aegis_domain::EventKind;
use aegis_pipeline::LiveEvent;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tracing::{info, warn};

/// What the publisher reports (for `/metrics`).
#[derive(Debug, Default)]
pub struct MqttStatus {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
}

/// What the publisher reads: the appliance's feeds, and the store snapshots are read from.
pub struct Feeds {
    pub events: broadcast::Receiver<LiveEvent>,
    pub occupancy: broadcast::Receiver<ZoneCount>,
    pub store: Arc<Store>,
}

/// The largest message sent or received; a larger snapshot is dropped (counted), never sent,
/// since a packet the client refuses would break the connection each time it is retried.
const MAX_PACKET: usize = 16 << 20;

/// How long a snapshot may take to land after its event before it is not published.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

/// Starts the publisher thread; it stops when `shutdown` is triggered (publishing `offline`).
pub fn start(
    config: MqttConfig,
    feeds: Feeds,
    shutdown: Shutdown,
) -> std::io::Result<(Arc<MqttStatus>, std::thread::JoinHandle<()>)> {
    let status = Arc::new(MqttStatus::default());
    let s = status.clone();
    let thread = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            runtime.block_on(Publisher::new(config, s, feeds.store).run(
                feeds.events,
                feeds.occupancy,
                shutdown,
            ));
        })?;
    Ok((status, thread))
}

struct Publisher {
    config: MqttConfig,
    status: Arc<MqttStatus>,
    store: Arc<Store>,
    /// The last message about each object, the `before` of the next.
    last: HashMap<(String, u64), Value>,
    /// Objects in view per camera and label.
    in_view: HashMap<(String, String), BTreeSet<u64>>,
    /// The last count per zone and label.
    in_zone: HashMap<(String, String), u32>,
}

impl Publisher {
    fn new(config: MqttConfig, status: Arc<MqttStatus>, store: Arc<Store>) -> Self {
        Self {
            config,
            status,
            store,
            last: HashMap::new(),
            in_view: HashMap::new(),
            in_zone: HashMap::new(),
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.config.prefix)
    }

    async fn run(
        mut self,
        mut rx: broadcast::Receiver<LiveEvent>,
        mut occupancy: broadcast::Receiver<ZoneCount>,
        shutdown: Shutdown,
    ) {
        let available = self.topic("available");
        let mut options =
            MqttOptions::new(&self.config.client_id, &self.config.host, self.config.port);
        options.set_keep_alive(Duration::from_secs(10));
        // Snapshots are tens or hundreds of kilobytes; rumqttc's default limit is 10 KiB.
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        options.set_last_will(LastWill::new(&available, "offline", QoS::AtLeastOnce, true));
        if let (Some(user), Some(pass)) = (&self.config.username, &self.config.password) {
            options.set_credentials(user, pass);
        }
        let (client, mut eventloop) = AsyncClient::new(options, self.config.queue.max(1));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut retry_at = tokio::time::Instant::now();
        loop {
            let waiting = tokio::time::Instant::now() < retry_at;
            tokio::select! {
                _ = shutdown.triggered() => break,
                _ = tokio::time::sleep_until(retry_at), if waiting => {}
                polled = eventloop.poll(), if !waiting => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(host = %self.config.host, "MQTT connected");
                        self.status.connected.store(true, Ordering::Relaxed);
                        backoff.reset();
                        // Behind whatever queued while the broker was away, and never dropped:
                        // a task waits for room while this loop keeps the connection drained.
                        let (c, topic) = (client.clone(), available.clone());
                        let counts = self.topic("+/+");
                        tokio::spawn(async move {
                            let _ = c.publish(topic, QoS::AtLeastOnce, true, "online").await;
                            let _ = c.subscribe(counts, QoS::AtLeastOnce).await;
                        });
                        self.republish_counts(&client);
                    }
                    // Only what the broker kept comes flagged retained; our own counts, coming
                    // back live, do not.
                    Ok(Event::Incoming(Packet::Publish(kept))) if kept.retain => {
                        self.on_kept_count(&client, &kept.topic, &kept.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if self.status.connected.swap(false, Ordering::Relaxed) {
                            warn!(error = %e, "MQTT connection lost; reconnecting");
                        }
                        retry_at = tokio::time::Instant::now() + backoff.next_delay();
                    }
                },
                received = rx.recv() => match received {
                    Ok(live) => self.on_event(&client, &live),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.status.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                received = occupancy.recv() => match received {
                    Ok(z) => {
                        let topic = self.topic(&format!("{}/{}", z.zone, z.label));
                        self.publish(&client, &topic, true, z.count.to_string());
                        self.in_zone.insert((z.zone, z.label), z.count);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.status.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        // Say goodbye while the connection is there; a dead one leaves it to the last will.
        if self.status.connected.load(Ordering::Relaxed) {
            self.publish(&client, &available, true, "offline".into());
            let _ = client.try_disconnect();
            let flush = async { while eventloop.poll().await.is_ok() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
        }
    }

    fn on_event(&mut self, client: &AsyncClient, live: &LiveEvent) {
        let e = &live.stored.event;
        let after = serde_json::to_value(&live.stored).expect("events always serialise");
        let key = (e.stream.clone(), e.track_id);
        let before = match e.kind {
            EventKind::Rule => Value::Null,
            EventKind::End => self.last.remove(&key).unwrap_or(Value::Null),
            EventKind::New | EventKind::Update => {
                self.last.insert(key, after.clone()).unwrap_or(Value::Null)
            }
        };
        let message = json!({"type": e.kind.as_str(), "before": before, "after": after});
        self.publish(client, &self.topic("events"), false, message.to_string());
        let counted = match e.kind {
            EventKind::New => Some(true),
            EventKind::End => Some(false),
            EventKind::Update | EventKind::Rule => None,
        };
        if let (EventKind::New, Some(urn)) = (e.kind, &e.snapshot) {
            let topic = self.topic(&format!("{}/{}/snapshot", e.stream, e.label));
            let (client, status, store, urn) = (
                client.clone(),
                self.status.clone(),
                self.store.clone(),
                urn.clone(),
            );
            tokio::spawn(async move {
                match landed_snapshot(store, urn).await {
                    Some(jpeg) if jpeg.len() < MAX_PACKET - 1024 => {
                        publish(&client, &status, &topic, true, jpeg)
                    }
                    Some(_) => _ = status.dropped.fetch_add(1, Ordering::Relaxed),
                    None => {}
                }
            });
        }
        if let Some(entered) = counted {
            let key = (e.stream.clone(), e.label.clone());
            if !self.in_view.contains_key(&key) {
                self.announce(client, &e.stream, &e.label);
            }
            let set = self.in_view.entry(key).or_default();
            if entered {
                set.insert(e.track_id);
            } else {
                set.remove(&e.track_id);
            }
            let count = set.len().to_string();
            let topic = self.topic(&format!("{}/{}", e.stream, e.label));
            self.publish(client, &topic, true, count);
        }
    }

    /// Every count this run knows, retained: a broker that restarted without keeping its
    /// retained messages, or counts dropped while it was away, would otherwise leave them
    /// unknown or stale until they next change.
    fn republish_counts(&self, client: &AsyncClient) {
        let in_view = self
            .in_view
            .iter()
            .map(|(key, objects)| (key, objects.len()));
        let in_zone = self.in_zone.iter().map(|(key, &n)| (key, n as usize));
        for ((place, label), count) in in_view.chain(in_zone) {
            let topic = self.topic(&format!("{place}/{label}"));
            self.publish(client, &topic, true, count.to_string());
        }
    }

    /// A count the broker kept on `topic` (`<prefix>/<camera or zone>/<label>`): published
    /// again, retained, if it is not the count now (0 for one this run has not counted).
    fn on_kept_count(&self, client: &AsyncClient, topic: &str, payload: &[u8]) {
        let Some(key) = topic
            .strip_prefix(&self.config.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
            .map(|(place, label)| (place.to_owned(), label.to_owned()))
        else {
            return;
        };
        let Some(kept) = std::str::from_utf8(payload)
            .ok()
            .and_then(|p| p.parse::<usize>().ok())
        else {
            return;
        };
        let now = match self.in_view.get(&key) {
            Some(objects) => objects.len(),
            None => self.in_zone.get(&key).map_or(0, |&n| n as usize),
        };
        if kept != now {
            self.publish(client, topic, true, now.to_string());
        }
    }

    /// Tells Home Assistant about a count sensor, so it appears without any YAML.
    fn announce(&self, client: &AsyncClient, camera: &str, label: &str) {
        let Some(discovery) = &self.config.discovery_prefix else {
            return;
        };
        let id = &self.config.client_id;
        let config = json!({
            "name": format!("{camera} {label} count"),
            "unique_id": format!("{id}_{camera}_{label}_count"),
            "state_topic": self.topic(&format!("{camera}/{label}")),
            "availability_topic": self.topic("available"),
            "state_class": "measurement",
            "device": {"identifiers": [id], "name": format!("AegisVision {id}"), "manufacturer": "AegisVision"},
        });
        let topic = format!("{discovery}/sensor/{id}/{camera}_{label}/config");
        self.publish(client, &topic, true, config.to_string());
    }

    fn publish(&self, client: &AsyncClient, topic: &str, retain: bool, payload: String) {
        publish(client, &self.status, topic, retain, payload.into_bytes());
    }
}

/// Queues a message; a full queue (broker away too long) drops it, counted.
fn publish(client: &AsyncClient, status: &MqttStatus, topic: &str, retain: bool, payload: Vec<u8>) {
    match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
        Ok(()) => status.published.fetch_add(1, Ordering::Relaxed),
        Err(_) => status.dropped.fetch_add(1, Ordering::Relaxed),
    };
}

/// A snapshot's bytes once it has landed (it is stored just after its event), or `None` if it
/// does not within `SNAPSHOT_WAIT` (it was lost, and counted, by the appliance).
async fn landed_snapshot(store: Arc<Store>, urn: BlobUrn) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
    loop {
        let (s, u) = (store.clone(), urn.clone());
        if let Ok(Ok(Some(blob))) = tokio::task::spawn_blocking(move || s.blob(&u)).await {
            return tokio::fs::read(&blob.path).await.ok();
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
