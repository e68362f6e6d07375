//! The box's side of the bus: the outbox forwarder and the heartbeat.
//!
//! The forwarder hands outbox entries to the device's JetStream stream `EVENTS` on its own leaf
//! node, each with `Nats-Msg-Id` = the event id, and marks them sent only once the stream has
//! acknowledged them. A crash between the two republishes them, and the stream drops the
//! duplicates (within its window; the core applies by id in any case). The stream is a work
//! queue: an event leaves the box's disk only when the core has applied it and acknowledged it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_base::{Backoff, Clock, Shutdown};
use aegis_proto::{subject, v1};
use aegis_store::Store;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio::sync::broadcast;

use crate::stream_name;

/// Entries handed to the bus at a time; their acks are awaited together.
const BATCH: usize = 500;

/// How long the stream remembers message ids to drop republished events.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What the forwarder has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardStatus {
    pub forwarded: AtomicU64,
    /// Whether the last attempt to reach the stream worked.
    pub connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl ForwardStatus {
    fn failed(&self, error: String) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The device's stream: its subject only, a work queue, refusing new events when `max_bytes` is
/// reached (they then wait in the outbox, where retention counts any it must drop).
pub fn stream_config(device: &str, max_bytes: u64) -> stream::Config {
    stream::Config {
        name: stream_name(device),
        subjects: vec![subject::events(device)],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Forwards the outbox until `shutdown`. `wake` fires when events are committed; without it the
/// outbox is polled every second.
pub async fn forward<T: Clone>(
    store: Arc<Store>,
    js: jetstream::Context,
    config: stream::Config,
    mut wake: broadcast::Receiver<T>,
    clock: Arc<dyn Clock>,
    status: Arc<ForwardStatus>,
    shutdown: Shutdown,
) {
    let subject = config.subjects[0].clone();
    let name = config.name.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut stream_ready = false;
    while !shutdown.is_triggered() {
        let step = async {
            if !stream_ready {
                js.create_or_update_stream(config.clone())
                    .await
                    .map_err(|e| format!("cannot create the stream {name}: {e}"))?;
                stream_ready = true;
            }
            forward_batch(&store, &js, &subject, &name, clock.as_ref(), &status).await
        };
        let delay = match step.await {
            Ok(0) => {
                backoff.reset();
                tokio::select! {
                    _ = wake.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.triggered() => {}
                }
                continue;
            }
            Ok(_) => {
                backoff.reset();
                continue;
            }
            Err(e) => {
                if status.connected.load(Ordering::Relaxed) || status.last_error().is_none() {
                    tracing::warn!(error = %e, "sync: events wait in the outbox");
                }
                status.failed(e);
                backoff.next_delay()
            }
        };
        shutdown.sleep(delay).await;
    }
}

/// Publishes one batch and marks what the stream acknowledged, even when some of it failed.
/// Returns how many were sent.
async fn forward_batch(
    store: &Arc<Store>,
    js: &jetstream::Context,
    subject: &str,
    stream: &str,
    clock: &dyn Clock,
    status: &ForwardStatus,
) -> Result<usize, String> {
    let s = store.clone();
    let entries = tokio::task::spawn_blocking(move || s.unsent(BATCH))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut error = None;
    let mut pending = Vec::with_capacity(entries.len());
    for e in entries {
        let publish = PublishMessage::build()
            .payload(e.payload.into())
            .message_id(e.id);
        match js.send_publish(subject.to_string(), publish).await {
            Ok(ack) => pending.push((e.seq, ack)),
            Err(err) => {
                error = Some(format!("cannot publish to the stream {stream}: {err}"));
                break;
            }
        }
    }
    let mut acked = Vec::with_capacity(pending.len());
    for (seq, ack) in pending {
        match ack.await {
            Ok(_) => acked.push(seq),
            Err(e) => {
                error.get_or_insert_with(|| format!("the stream {stream} refused an event: {e}"));
            }
        }
    }
    let sent = acked.len();
    if sent > 0 {
        let now = clock.now_ms();
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.mark_sent(&acked, now))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot mark events sent: {e}"))?;
        status.forwarded.fetch_add(sent as u64, Ordering::Relaxed);
        status.connected.store(true, Ordering::Relaxed);
    }
    error.map_or(Ok(sent), Err)
}

/// Publishes the box's health every `every` until `shutdown`. `health` may block (it reads the
/// store); it runs off the async threads.
pub async fn heartbeat(
    client: async_nats::Client,
    device: String,
    every: Duration,
    health: Arc<dyn Fn() -> v1::Health + Send + Sync>,
    shutdown: Shutdown,
) {
    let subject = subject::health(&device);
    loop {
        let h = health.clone();
        if let Ok(report) = tokio::task::spawn_blocking(move || h()).await {
            let payload = serde_json::to_vec(&report).expect("health always serialises");
            if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
        if shutdown.sleep(every).await {
            return;
        }
    }
}
