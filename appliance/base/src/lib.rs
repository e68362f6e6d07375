//! Foundations shared by every AegisVision crate: clocks, shutdown, backoff, telemetry setup,
//! a latency histogram, credential redaction and durable file replacement. No business logic lives here.

mod backoff;
mod clock;
mod durable;
mod histogram;
pub mod proc;
mod redact;
mod shutdown;
mod telemetry;

pub use backoff::Backoff;
pub use clock::{Clock, SystemClock};
pub use durable::write_durably;
pub use histogram::{Histogram, HistogramSnapshot};
pub use redact::redact_url;
pub use shutdown::Shutdown;
pub use telemetry::init_tracing;
