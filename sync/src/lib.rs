//! The edge↔core sync over NATS leaf nodes and JetStream (ADR 0007).
//!
//! A box runs its own nats-server as a leaf node with JetStream in the device's domain; the
//! outbox forwarder (`client`) hands its events to the box's `EVENTS` stream. The core runs the
//! hub; its ingest (`server`) pulls each device's stream through the hub and applies the events
//! idempotently. Subjects are in `aegis_proto::subject`.

#[cfg(feature = "client")]
pub mod blobs;
#[cfg(feature = "client")]
pub mod desired;
#[cfg(feature = "client")]
pub mod enrol;
#[cfg(feature = "client")]
pub mod forward;
#[cfg(feature = "server")]
pub mod ingest;
pub mod nats;

/// A box's stream, in its own JetStream domain: its events until the core has applied them.
/// The name carries the device id so that nothing about it (acknowledgement subjects
/// included) is the same on two boxes.
pub fn stream_name(device: &str) -> String {
    format!("EVENTS-{device}")
}

pub use nats::{
    box_inbox, core_inbox, default_binary, DeviceKey, NatsServer, NatsServerError, Role, ServerSpec,
};
