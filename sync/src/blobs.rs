//! Snapshots on demand: the core asks over the bus (a small request), the box answers over
//! HTTP with the bytes, straight from its blob store. Bytes never travel on the bus.

use std::sync::Arc;

use aegis_base::Shutdown;
use aegis_domain::BlobUrn;
use aegis_proto::{subject, v1};
use aegis_store::Store;
use futures::StreamExt;

/// Answers the core's snapshot requests until `shutdown`, uploading to the core's API at
/// `core` (its base URL).
pub async fn serve(
    client: async_nats::Client,
    device: String,
    store: Arc<Store>,
    core: String,
    shutdown: Shutdown,
) {
    let mut requests = match client.subscribe(subject::blob_requests(&device)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot take snapshot requests");
            return;
        }
    };
    let http = reqwest::Client::new();
    loop {
        let message = tokio::select! {
            m = requests.next() => match m { Some(m) => m, None => return },
            _ = shutdown.triggered() => return,
        };
        let Ok(request) = serde_json::from_slice::<v1::BlobRequest>(&message.payload) else {
            tracing::warn!("ignored a malformed snapshot request");
            continue;
        };
        if let Err(e) = upload(&http, &core, &device, &store, &request).await {
            tracing::warn!(urn = %request.urn, error = %e, "snapshot not sent to the core");
        }
    }
}

async fn upload(
    http: &reqwest::Client,
    core: &str,
    device: &str,
    store: &Arc<Store>,
    request: &v1::BlobRequest,
) -> Result<(), String> {
    let urn = BlobUrn::parse(&request.urn).map_err(|e| e.to_string())?;
    let s = store.clone();
    let info = tokio::task::spawn_blocking(move || s.blob(&urn))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/api/devices/{device}/blobs/{}",
        core.trim_end_matches('/'),
        request.urn
    );
    let put = http.put(&url).bearer_auth(&request.token);
    // A snapshot that was lost or deleted is said so, so the core need not wait for it.
    let put = match info {
        Some(info) => put.header("Content-Type", info.content_type).body(
            tokio::fs::read(&info.path)
                .await
                .map_err(|e| format!("{}: {e}", info.path.display()))?,
        ),
        None => put.header(v1::BLOB_MISSING_HEADER, "true"),
    };
    let response = put.send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    Ok(())
}
