//! The core's side of the bus: heartbeats into the registry, and each device's events into the
//! core's database, exactly once.
//!
//! Events: a durable pull consumer `core` on the device's `EVENTS` stream, reached through the
//! hub in the device's JetStream domain. A batch is applied in one transaction (the sink ignores
//! ids it already has), then acknowledged; the work-queue stream deletes what was acknowledged.
//! A crash between the two redelivers the batch, and the sink ignores it. A message that is not
//! a valid v1 event of that device is counted, logged and acknowledged, so it never blocks the
//! ones behind it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_base::{Backoff, Clock, Shutdown, SystemClock};
use aegis_proto::{subject, v1};
use async_nats::jetstream::{self, consumer::pull};
use futures::{FutureExt, StreamExt};

use crate::stream_name;

/// The core's consumer on every device stream.
pub const CONSUMER: &str = "core";

/// The most messages applied in one transaction, and asked for per pull request.
const BATCH: usize = 2_000;

pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where ingested data goes (the core's database). Blocking: called off the async threads.
pub trait Sink: Send + Sync + 'static {
    /// Applies a batch of one device's events in one transaction, ignoring ids it already has.
    /// Returns how many were new.
    fn apply(&self, device: &str, events: &[v1::Event]) -> Result<u64, SinkError>;
    /// Records a heartbeat (creating the device's registry entry on its first).
    fn heartbeat(&self, health: &v1::Health, received_ms: i64) -> Result<(), SinkError>;
}

/// What ingest has done, for `/metrics` and the console.
#[derive(Debug, Default)]
pub struct IngestStatus {
    /// Woken after each batch is applied (for the core's live event stream).
    pub changed: tokio::sync::Notify,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub heartbeats: AtomicU64,
}

/// How the core reaches the hub.
#[derive(Debug, Clone)]
pub struct HubAccess {
    pub url: String,
    pub user: String,
    pub password: String,
}

impl HubAccess {
    /// A connection to the hub whose inboxes start with `inbox_prefix`.
    pub async fn connect(
        &self,
        inbox_prefix: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_user_and_password(self.user.clone(), self.password.clone())
            .custom_inbox_prefix(inbox_prefix)
            .retry_on_initial_connect()
            .connect(&self.url)
            .await
    }
}

/// Runs ingest until `shutdown`: each of `devices` (those already registered) and each device
/// a heartbeat registers gets its own event pump, on its own connection whose inboxes only that
/// device may answer on (ADR 0007).
pub async fn run(
    hub: HubAccess,
    sink: Arc<dyn Sink>,
    devices: Vec<String>,
    status: Arc<IngestStatus>,
    shutdown: Shutdown,
) -> Result<(), async_nats::Error> {
    // Not `_aegis_core.`: that prefix belongs to the per-device connections.
    let client = hub.connect("_aegis_core_main").await?;
    let mut health = client.subscribe(subject::ALL_HEALTH).await?;
    let pumps = Arc::new(Mutex::new(HashSet::new()));
    let start_pump = {
        let (hub, sink, status, shutdown) =
            (hub.clone(), sink.clone(), status.clone(), shutdown.clone());
        let pumps = pumps.clone();
        move |device: String| {
            if pumps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(device.clone())
            {
                tokio::spawn(pump(
                    hub.clone(),
                    device,
                    sink.clone(),
                    status.clone(),
                    shutdown.clone(),
                ));
            }
        }
    };
    devices.into_iter().for_each(&start_pump);
    loop {
        let message = tokio::select! {
            m = health.next() => match m { Some(m) => m, None => return Ok(()) },
            _ = shutdown.triggered() => return Ok(()),
        };
        let Some(h) = parse_health(&message) else {
            status.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject = %message.subject, "rejected a malformed heartbeat");
            continue;
        };
        status.heartbeats.fetch_add(1, Ordering::Relaxed);
        let device = h.device.clone();
        let s = sink.clone();
        let now = SystemClock.now_ms();
        match tokio::task::spawn_blocking(move || s.heartbeat(&h, now)).await {
            Ok(Ok(())) => start_pump(device),
            Ok(Err(e)) => tracing::error!(error = %e, %device, "cannot record a heartbeat"),
            Err(e) => tracing::error!(error = %e, "cannot record a heartbeat"),
        }
    }
}

/// A heartbeat, if it is well-formed and its device is the one its subject names.
fn parse_health(message: &async_nats::Message) -> Option<v1::Health> {
    let h: v1::Health = serde_json::from_slice(&message.payload).ok()?;
    let device = subject::device_of(&message.subject)?;
    (h.schema == v1::HEALTH_SCHEMA && h.device == device && subject::valid_device_id(device))
        .then_some(h)
}

/// Pulls one device's events for ever, re-attaching whenever its leaf is away.
async fn pump(
    hub: HubAccess,
    device: String,
    sink: Arc<dyn Sink>,
    status: Arc<IngestStatus>,
    shutdown: Shutdown,
) {
    let client = match hub.connect(&crate::core_inbox(&device)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%device, error = %e, "cannot connect to the hub");
            return;
        }
    };
    let js = jetstream::with_domain(client, &device);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut reported = false;
    while !shutdown.is_triggered() {
        let attached = attach(&js, &device).await;
        let result = match attached {
            Ok(consumer) => {
                backoff.reset();
                reported = false;
                drain(&consumer, &device, &sink, &status, &shutdown).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if !reported {
                tracing::info!(%device, error = %e, "device stream unreachable; retrying");
                reported = true;
            }
            shutdown.sleep(backoff.next_delay()).await;
        }
    }
}

async fn attach(
    js: &jetstream::Context,
    device: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    let stream = js
        .get_stream(stream_name(device))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                // What a killed core had fetched comes again after this.
                ack_wait: Duration::from_secs(10),
                max_ack_pending: (BATCH * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// Applies and acknowledges messages until an error or `shutdown`. A batch is the first
/// message to arrive and whatever else has arrived by then (up to `BATCH`): one event alone
/// goes straight through, and a backlog goes in big transactions.
async fn drain(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    device: &str,
    sink: &Arc<dyn Sink>,
    status: &IngestStatus,
    shutdown: &Shutdown,
) -> Result<(), String> {
    let expected = subject::events(device);
    let mut stream = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let first = tokio::select! {
            m = stream.next() => m,
            _ = shutdown.triggered() => return Ok(()),
        };
        let Some(first) = first else {
            return Err("the device stream ended".into());
        };
        let mut messages = vec![first.map_err(|e| e.to_string())?];
        while messages.len() < BATCH {
            match stream.next().now_or_never() {
                Some(Some(m)) => messages.push(m.map_err(|e| e.to_string())?),
                _ => break,
            }
        }
        let mut events = Vec::with_capacity(messages.len());
        for m in &messages {
            match parse_event(&m.subject, &expected, &m.payload) {
                Some(e) => events.push(e),
                None => {
                    status.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%device, subject = %m.subject, "rejected a malformed event");
                }
            }
        }
        let n = events.len() as u64;
        let (s, d) = (sink.clone(), device.to_string());
        let applied = tokio::task::spawn_blocking(move || s.apply(&d, &events))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot apply events: {e}"))?;
        status.applied.fetch_add(applied, Ordering::Relaxed);
        status.duplicates.fetch_add(n - applied, Ordering::Relaxed);
        if applied > 0 {
            status.changed.notify_waiters();
        }
        for m in &messages {
            m.ack().await.map_err(|e| e.to_string())?;
        }
    }
}

/// A valid v1 event published on the device's own events subject.
fn parse_event(subject: &str, expected: &str, payload: &[u8]) -> Option<v1::Event> {
    let e: v1::Event = serde_json::from_slice(payload).ok()?;
    (subject == expected && e.schema == v1::EVENT_SCHEMA && !e.id.is_empty()).then_some(e)
}
