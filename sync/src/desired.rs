//! The box's side of desired and reported config. The core puts each device's desired config
//! in that device's own key-value bucket on the hub; the box watches it through its leaf, so a change made while it was offline arrives when it reconnects. Each new version is
//! applied as one transaction (pending → applied, or rolled back to the last known good), and
//! the outcome, kept on disk, rides on every heartbeat.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_base::{Backoff, Shutdown};
use aegis_proto::subject::{desired_bucket, DESIRED_KEY};
use aegis_proto::v1::{self, ConfigReport, ConfigState};
use async_nats::jetstream;
use futures::StreamExt;

use crate::nats::HUB_DOMAIN;

/// Applies a desired config, or says why it could not (having left the old one in force).
pub type Apply = Arc<dyn Fn(&v1::Desired) -> Result<(), String> + Send + Sync>;

/// The outcome of the last desired config, kept in a file so a restart neither re-applies nor
/// forgets it.
pub struct ConfigTracker {
    path: PathBuf,
    last: Mutex<Option<ConfigReport>>,
}

impl ConfigTracker {
    /// Reads `path` if it exists (a missing or unreadable file means nothing applied yet).
    pub fn load(path: PathBuf) -> ConfigTracker {
        let last = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        ConfigTracker {
            path,
            last: Mutex::new(last),
        }
    }

    pub fn report(&self) -> Option<ConfigReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, report: ConfigReport) {
        let bytes = serde_json::to_vec(&report).expect("reports always serialise");
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        if let Err(e) = aegis_base::write_durably(std::path::Path::new(&tmp), &self.path, &bytes) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot record the config outcome");
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }
}

/// Follows this device's desired config until `shutdown`, re-watching whenever the hub is away.
pub async fn follow(
    client: async_nats::Client,
    device: String,
    tracker: Arc<ConfigTracker>,
    apply: Apply,
    shutdown: Shutdown,
) {
    let js = jetstream::with_domain(client, HUB_DOMAIN);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    while !shutdown.is_triggered() {
        let result = tokio::select! {
            r = watch(&js, &device, &tracker, &apply, &mut backoff) => r,
            _ = shutdown.triggered() => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "desired config: hub unreachable; retrying");
        }
        shutdown.sleep(backoff.next_delay()).await;
    }
}

async fn watch(
    js: &jetstream::Context,
    device: &str,
    tracker: &Arc<ConfigTracker>,
    apply: &Apply,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let kv = js
        .get_key_value(desired_bucket(device))
        .await
        .map_err(|e| e.to_string())?;
    let mut entries = kv
        .watch_with_history(DESIRED_KEY)
        .await
        .map_err(|e| e.to_string())?;
    backoff.reset();
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.operation != jetstream::kv::Operation::Put {
            continue;
        }
        let desired: v1::Desired = match serde_json::from_slice(&entry.value) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed desired config");
                continue;
            }
        };
        // A version already dealt with is not applied again; one left pending by a crash is.
        let done = tracker.report().is_some_and(|last| {
            last.version > desired.version
                || (last.version == desired.version && last.state != ConfigState::Pending)
        });
        if desired.device != device || done {
            continue;
        }
        tracker.set(ConfigReport {
            version: desired.version,
            state: ConfigState::Pending,
            error: None,
        });
        let (a, d) = (apply.clone(), desired.clone());
        let outcome = tokio::task::spawn_blocking(move || a(&d))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let report = match outcome {
            Ok(()) => {
                tracing::info!(version = desired.version, "desired config applied");
                ConfigReport {
                    version: desired.version,
                    state: ConfigState::Applied,
                    error: None,
                }
            }
            Err(error) => {
                tracing::warn!(version = desired.version, %error, "desired config rolled back");
                ConfigReport {
                    version: desired.version,
                    state: ConfigState::RolledBack,
                    error: Some(error),
                }
            }
        };
        tracker.set(report);
    }
    Err("the watch ended".into())
}
