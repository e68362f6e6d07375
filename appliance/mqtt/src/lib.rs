//! MQTT publisher (rumqttc), in the layout Frigate users know, under a configurable prefix:
//! - `<prefix>/available`: `online`, or `offline` (retained; also the broker's last will);
//! - `<prefix>/events`: `{"type": "new"|"update"|"end"|"rule", "before": …, "after": …}`;
//! - `<prefix>/<camera>/<label>`: how many such objects are in view (retained);
//! - `<discovery>/sensor/<client_id>/<camera>_<label>/config`: a Home Assistant discovery
//!   message (retained) for each of those counts, the first time it is published.
//!
//! It runs on its own thread and reads the appliance's live feed. The broker being down never
//! slows the appliance: messages wait in a bounded queue, and what does not fit is dropped and
//! counted (`MqttStatus::dropped`, `aegis_mqtt_dropped_total`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Starts the publisher thread; it stops when `shutdown` is triggered (publishing `offline`).
pub fn start(
    config: MqttConfig,
    feed: &broadcast::Sender<LiveEvent>,
    shutdown: Shutdown,
) -> std::io::Result<(Arc<MqttStatus>, std::thread::JoinHandle<()>)> {
    let status = Arc::new(MqttStatus::default());
    let rx = feed.subscribe();
    let s = status.clone();
    let thread = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            runtime.block_on(Publisher::new(config, s).run(rx, shutdown));
        })?;
    Ok((status, thread))
}

struct Publisher {
    config: MqttConfig,
    status: Arc<MqttStatus>,
    /// The last message about each object, the `before` of the next.
    last: HashMap<(String, u64), Value>,
    /// Objects in view per camera and label.
    in_view: HashMap<(String, String), BTreeSet<u64>>,
}

impl Publisher {
    fn new(config: MqttConfig, status: Arc<MqttStatus>) -> Self {
        Self {
            config,
            status,
            last: HashMap::new(),
            in_view: HashMap::new(),
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.config.prefix)
    }

    async fn run(mut self, mut rx: broadcast::Receiver<LiveEvent>, shutdown: Shutdown) {
        let available = self.topic("available");
        let mut options =
            MqttOptions::new(&self.config.client_id, &self.config.host, self.config.port);
        options.set_keep_alive(Duration::from_secs(10));
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
                        tokio::spawn(async move {
                            let _ = c.publish(topic, QoS::AtLeastOnce, true, "online").await;
                        });
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

    /// Queues a message; a full queue (broker away too long) drops it, counted.
    fn publish(&self, client: &AsyncClient, topic: &str, retain: bool, payload: String) {
        match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => self.status.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.status.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}
