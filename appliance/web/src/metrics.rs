//! `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand; the format is a
//! few lines and needs no client library.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use aegis_ingest::{StreamState, StreamStatusView};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::{ApiError, WebState};

/// A per-camera family: name, type, help, and how to read it from the camera's status.
type PerCamera = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StreamStatusView) -> f64,
);

/// Writes `# HELP` and `# TYPE` for a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) async fn metrics(State(s): State<WebState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::with_capacity(4096);
    let streams = s.appliance.streams();
    let views: Vec<_> = streams.iter().map(|st| st.view()).collect();
    let per_camera: [PerCamera; 12] = [
        ("aegis_frames_decoded_total", "counter", "Frames decoded.", |v| {
            v.frames_decoded as f64
        }),
        (
            "aegis_frames_sampled_total",
            "counter",
            "Frames kept for the detector at its detect rate.",
            |v| v.frames_sampled as f64,
        ),
        (
            "aegis_frames_skipped_total",
            "counter",
            "Frames decoded but not sampled for the detector.",
            |v| v.frames_decoded.saturating_sub(v.frames_sampled) as f64,
        ),
        (
            "aegis_frames_detected_total",
            "counter",
            "Frames the detector processed.",
            |v| v.frames_detected as f64,
        ),
        (
            "aegis_frames_dropped_total",
            "counter",
            "Sampled frames dropped because the detector was behind.",
            |v| v.frames_dropped as f64,
        ),
        (
            "aegis_reconnects_total",
            "counter",
            "Times the stream was reconnected.",
            |v| v.reconnects as f64,
        ),
        (
            "aegis_snapshots_lost_total",
            "counter",
            "Snapshots events named that could not be stored.",
            |v| v.snapshots_lost as f64,
        ),
        (
            "aegis_events_lost_total",
            "counter",
            "Events dropped because the store refused them for longer than memory holds.",
            |v| v.events_lost as f64,
        ),
        (
            "aegis_stream_up",
            "gauge",
            "1 while the stream is online.",
            |v| f64::from(u8::from(v.state == StreamState::Online)),
        ),
        (
            "aegis_stream_fps",
            "gauge",
            "Decoded frames per second, last second.",
            |v| v.fps,
        ),
        (
            "aegis_detector_queue_frames",
            "gauge",
            "Sampled frames waiting for or in the detector.",
            |v| {
                v.frames_sampled
                    .saturating_sub(v.frames_detected + v.frames_dropped) as f64
            },
        ),
        (
            "aegis_events_waiting",
            "gauge",
            "Events held in memory because the store refused them (a full disk); stored once it takes them again.",
            |v| v.events_waiting as f64,
        ),
    ];
    // Each family's samples follow its own HELP and TYPE lines, as the format requires.
    for (name, kind, help, value) in per_camera {
        family(&mut out, name, kind, help);
        for v in &views {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", v.name, value(v));
        }
    }
    let name = "aegis_detect_latency_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Detector time per frame: preprocess, inference, decoding, NMS.",
    );
    for st in &streams {
        let h = st.detect_latency.snapshot();
        let cam = st.name();
        for (le, n) in &h.buckets {
            let _ = writeln!(out, "{name}_bucket{{camera=\"{cam}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{camera=\"{cam}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{camera=\"{cam}\"}} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{{camera=\"{cam}\"}} {}", h.count);
    }
    // Single-valued families: the store's, then the MQTT publisher's and the sync's when they run.
    let mut singles: Vec<(&str, &str, &str, u64)> = vec![
        (
            "aegis_outbox_backlog",
            "gauge",
            "Events not yet acknowledged by the core.",
            s.store.outbox_backlog()?,
        ),
        (
            "aegis_events_dropped_unsynced_total",
            "counter",
            "Events retention deleted before the core received them.",
            s.store.dropped_unsynced()?,
        ),
        (
            "aegis_store_bytes",
            "gauge",
            "Database pages in use plus snapshot bytes.",
            s.store.size()?,
        ),
        (
            "aegis_disk_free_bytes",
            "gauge",
            "Free space on the store's file system.",
            s.store.disk_free()?,
        ),
    ];
    if let Some(m) = &s.mqtt {
        singles.extend([
            (
                "aegis_mqtt_connected",
                "gauge",
                "1 while connected to the MQTT broker.",
                u64::from(m.connected.load(Relaxed)),
            ),
            (
                "aegis_mqtt_published_total",
                "counter",
                "MQTT messages queued for the broker.",
                m.published.load(Relaxed),
            ),
            (
                "aegis_mqtt_dropped_total",
                "counter",
                "MQTT messages dropped because the broker was away too long.",
                m.dropped.load(Relaxed),
            ),
        ]);
    }
    if let Some(f) = &s.sync {
        singles.extend([
            (
                "aegis_sync_connected",
                "gauge",
                "1 while the box's stream takes events (its leaf node is up and has room).",
                u64::from(f.connected.load(Relaxed)),
            ),
            (
                "aegis_sync_forwarded_total",
                "counter",
                "Events handed to the box's stream for the core.",
                f.forwarded.load(Relaxed),
            ),
        ]);
    }
    for (name, kind, help, value) in singles {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
