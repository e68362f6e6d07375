//! `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand; the format is a
//! few lines and needs no client library.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use aegis_ingest::{StreamState, StreamStatus, StreamStatusView};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::{ApiError, WebState};

/// A per-camera counter: name, help, and how to read it.
type Counter = (&'static str, &'static str, fn(&StreamStatus) -> u64);

/// A per-camera gauge, read from the camera's status.
type Gauge = (&'static str, &'static str, fn(&StreamStatusView) -> f64);

/// Writes `# HELP` and `# TYPE` for a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) async fn metrics(State(s): State<WebState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::with_capacity(4096);
    let streams = s.appliance.streams();
    let counters: [Counter; 8] = [
        ("aegis_frames_decoded_total", "Frames decoded.", |s| {
            s.decoded.load(Relaxed)
        }),
        (
            "aegis_frames_sampled_total",
            "Frames kept for the detector at its detect rate.",
            |s| s.sampled.load(Relaxed),
        ),
        (
            "aegis_frames_skipped_total",
            "Frames decoded but not sampled for the detector.",
            |s| {
                s.decoded
                    .load(Relaxed)
                    .saturating_sub(s.sampled.load(Relaxed))
            },
        ),
        (
            "aegis_frames_detected_total",
            "Frames the detector processed.",
            |s| s.detected.load(Relaxed),
        ),
        (
            "aegis_frames_dropped_total",
            "Sampled frames dropped because the detector was behind.",
            |s| s.dropped.load(Relaxed),
        ),
        (
            "aegis_reconnects_total",
            "Times the stream was reconnected.",
            |s| s.reconnects.load(Relaxed),
        ),
        (
            "aegis_snapshots_lost_total",
            "Snapshots events named that could not be stored.",
            |s| s.snapshots_lost.load(Relaxed),
        ),
        (
            "aegis_events_lost_total",
            "Events dropped because the store refused them for longer than memory holds.",
            |s| s.events_lost.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for st in &streams {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", st.name(), value(st));
        }
    }
    // Each family's samples follow its own HELP and TYPE lines, as the format requires.
    let views: Vec<_> = streams.iter().map(|st| st.view()).collect();
    let gauges: [Gauge; 4] = [
        ("aegis_stream_up", "1 while the stream is online.", |v| {
            f64::from(u8::from(v.state == StreamState::Online))
        }),
        (
            "aegis_stream_fps",
            "Decoded frames per second, last second.",
            |v| v.fps,
        ),
        (
            "aegis_detector_queue_frames",
            "Sampled frames waiting for or in the detector.",
            |v| {
                v.frames_sampled
                    .saturating_sub(v.frames_detected + v.frames_dropped) as f64
            },
        ),
        (
            "aegis_events_waiting",
            "Events held in memory because the store refused them (a full disk); stored once it takes them again.",
            |v| v.events_waiting as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
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
    // Single-valued families: the store's, then the MQTT publisher's when one runs.
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
