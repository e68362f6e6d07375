//! The appliance binary as a user runs it.
#![cfg(feature = "edge")]

mod common;

use aegis_testkit::{ffmpeg, fill_disk, SmallDisk};
use common::{aegis, free_port, http, login, run, stop, wait_healthy};

use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn validate_lists_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cameras:\n  - {name: Door, url: 'rtsp://u:${NO_SUCH_VAR}@cam/', detect_fps: -1}\ndetector: {nms_iou: 3}\nhttp: {listen: nowhere}\n").unwrap();
    let out = aegis().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "cameras[0].name",
        "cameras[0].url: environment variable NO_SUCH_VAR is not set",
        "cameras[0].detect_fps",
        "detector.nms_iou",
        "http.listen",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "cameras:\n  - {name: door, url: 'rtsp://cam/live'}\n",
    )
    .unwrap();
    let out = aegis().arg("validate").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 camera(s))"));

    // The rules file it names is checked too, every error listed.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - {name: r, kind: zone_enter, zone: nowhere}\n",
    )
    .unwrap();
    std::fs::write(
        &good,
        "cameras:\n  - {name: door, url: 'rtsp://cam/live'}\nrules: rules.yaml\n",
    )
    .unwrap();
    let out = aegis().arg("validate").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules[0].zone: no zone named"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cameras: []\nstorage: {dir: data}\nunknown: 1\n").unwrap();
    let out = aegis()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        !dir.path().join("data").exists(),
        "nothing created for a config that failed"
    );
}

/// A config for the looped demo clip with the person model; `camera` adds camera options,
/// `extra` top-level sections.
fn run_config(dir: &Path, port: u16, camera: &str, extra: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cameras: [{{name: plaza, url: '{}/hil-tests/fixtures/vtest_h264.mp4', loop: true{camera}}}]\ndetector: {{model: '{}/models/ssdlite_mbv2_person.yaml'}}\nhttp: {{listen: '127.0.0.1:{port}'}}\n{extra}",
            repo.display(),
            repo.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn run_serves_the_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = run_config(dir.path(), port, "", "");
    let child = run(&cfg);
    wait_healthy(port);
    // The store is the running appliance's: `check` refuses rather than race it.
    let out = aegis()
        .args(["check", "--repair", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    stop(child);
    assert!(dir.path().join("data/aegis.db").exists());
}

/// Run as `aegis run … 2>&1 | head`: once the reader is gone, log lines fail to write. That
/// must not stop SIGTERM from stopping it (it once did: the failure report panicked).
#[test]
fn sigterm_stops_it_even_when_its_log_pipe_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = run_config(dir.path(), port, "", "");
    let mut child = common::KillOnDrop(
        aegis()
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port);
    drop(child.0.stderr.take());
    stop(child);
}

#[test]
fn track_reads_mot_detections_and_writes_mot_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det.txt");
    let lines: String = (1..=10)
        .map(|f| {
            format!(
                "{f},-1,{},100,40,90,0.9,-1,-1,-1\n{f},-1,500,{},40,90,0.8,-1,-1,-1\n",
                10 * f,
                20 + 5 * f
            )
        })
        .collect();
    std::fs::write(&det, lines).unwrap();
    let res = dir.path().join("res.txt");
    let out = track(&det, &res);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&res).unwrap();
    let ids: std::collections::BTreeSet<&str> =
        text.lines().map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(text.lines().count(), 20);
    assert_eq!(ids.len(), 2, "two objects, two stable ids");

    std::fs::write(&det, "1,-1,oops\n").unwrap();
    let out = track(&det, &res);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

fn track(det: &std::path::Path, res: &std::path::Path) -> std::process::Output {
    aegis()
        .args(["track", "--mot-det"])
        .arg(det)
        .arg("--out")
        .arg(res)
        .output()
        .unwrap()
}

fn committed_ids(db: &Path) -> Vec<String> {
    common::sqlite_strings(db, "SELECT id FROM events ORDER BY seq")
}

/// The track ids of a stream's `kind` events.
fn tracks_with(db: &Path, stream: &str, kind: &str) -> std::collections::BTreeSet<String> {
    common::sqlite_strings(
        db,
        &format!("SELECT DISTINCT CAST(track_id AS TEXT) FROM events WHERE stream = '{stream}' AND kind = '{kind}'"),
    )
    .into_iter()
    .collect()
}

#[test]
fn every_object_ends_when_its_file_ends_and_when_the_appliance_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = repo.join("hil-tests/fixtures/vtest_h264.mp4");
    let (short, still, slow) = (
        dir.path().join("short.mp4"),
        dir.path().join("still.png"),
        dir.path().join("slow.mp4"),
    );
    ffmpeg(&[], &demo, &["-t", "6", "-c", "copy"], &short);
    // A time-lapse: one picture every 2 s, the same one three times.
    ffmpeg(
        &[],
        &demo,
        &["-vf", "select=eq(n\\,5)", "-frames:v", "1"],
        &still,
    );
    ffmpeg(
        &["-loop", "1", "-framerate", "0.5"],
        &still,
        &[
            "-t", "6", "-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p",
        ],
        &slow,
    );
    // One camera plays 6 s of the clip once, at its pace, another the time-lapse; the third
    // loops the whole clip. The tracker remembers a lost object for 1 s, less than the
    // time-lapse's 2 s between pictures.
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cameras:\n  - {{name: once, url: '{}'}}\n  - {{name: slow, url: '{}'}}\n  - {{name: plaza, url: '{}', loop: true}}\ndetector: {{model: '{}/models/ssdlite_mbv2_person.yaml'}}\ntracker: {{buffer_s: 1}}\nhttp: {{listen: '127.0.0.1:{port}'}}\n",
            short.display(),
            slow.display(),
            demo.display(),
            repo.display()
        ),
    )
    .unwrap();
    let db = dir.path().join("data/aegis.db");
    let child = run(&cfg);
    wait_healthy(port);
    // The people in the short clip and the time-lapse end once their file has ended (and the
    // tracker's second of memory has passed), not when the appliance stops.
    let ended = |stream| {
        let new = tracks_with(&db, stream, "new");
        !new.is_empty() && new == tracks_with(&db, stream, "end")
    };
    for _ in 0..200 {
        if ended("once") && ended("slow") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for stream in ["once", "slow"] {
        let (new, end) = (
            tracks_with(&db, stream, "new"),
            tracks_with(&db, stream, "end"),
        );
        assert!(ended(stream), "{stream}: new {new:?}, end {end:?}");
    }
    // The time-lapse's people lasted from its first picture (at 0 s) past its last (at 4 s):
    // none ended in a gap between pictures.
    let lasted = common::sqlite_strings(
        &db,
        "SELECT CAST(MIN(at_ms) - (SELECT MIN(at_ms) FROM events WHERE stream = 'slow') AS TEXT)
         FROM events WHERE stream = 'slow' AND kind = 'end'",
    );
    let lasted_ms: i64 = lasted[0].parse().unwrap();
    assert!(lasted_ms >= 3_500, "the first ended after {lasted_ms} ms");
    // The looping camera still has people in view, and they end when the appliance stops.
    let open = tracks_with(&db, "plaza", "new");
    assert!(
        open.len() > tracks_with(&db, "plaza", "end").len(),
        "{open:?}"
    );
    stop(child);
    assert_eq!(
        tracks_with(&db, "plaza", "new"),
        tracks_with(&db, "plaza", "end")
    );
}

#[test]
fn kill_9_while_events_are_written_loses_nothing_committed_and_check_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // As fast as possible: the appliance writes events and snapshots all the time.
    let cfg = run_config(dir.path(), port, ", realtime: false", "");
    let db = dir.path().join("data/aegis.db");
    let mut seen: Vec<String> = Vec::new();
    // Kill at different moments after writing resumes, so the kills land at different points
    // of the commit / snapshot cycle.
    for delay_ms in [0, 70, 190, 330] {
        let mut child = run(&cfg);
        wait_healthy(port);
        let before = seen.len();
        for _ in 0..600 {
            if db.exists() && committed_ids(&db).len() >= before + 10 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let ids = committed_ids(&db);
        assert!(ids.len() >= before + 10, "the appliance is writing events");
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        // Everything committed before the kill is still there, in the same order.
        let after = committed_ids(&db);
        assert_eq!(after[..ids.len()], ids[..]);
        seen = after;
    }
    // Objects in view at the kills never got an end event.
    let open_objects = || {
        common::sqlite_strings(
            &db,
            "SELECT CAST(COUNT(*) AS TEXT) FROM (SELECT 1 FROM events WHERE kind IN ('new', 'update', 'end')
             GROUP BY stream, track_id, started_ms HAVING SUM(kind = 'end') = 0)",
        )[0]
        .clone()
    };
    assert_ne!(open_objects(), "0");
    // Restart: recovery runs (the objects the kills left open end), the appliance works, and
    // stops cleanly (the objects then in view end).
    let child = run(&cfg);
    wait_healthy(port);
    stop(child);
    assert_eq!(committed_ids(&db)[..seen.len()], seen[..]);
    assert_eq!(open_objects(), "0");

    // No event without its outbox row, no torn or missing snapshot, no orphan file.
    let out = aegis()
        .args(["check", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["events_without_outbox"], 0);
    assert!(report["blobs_checked"].as_u64().unwrap() > 0, "{report:#}");
}

#[test]
fn a_full_disk_holds_events_until_space_returns_then_stores_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _disk = SmallDisk::mount(&disk, 32);
    let port = free_port();
    // Retention's free-space floor is off: this is about what happens when nothing can be freed.
    let cfg = run_config(
        &disk,
        port,
        ", realtime: false",
        "storage: {min_free_mb: 0}\n",
    );
    let db = disk.join("data/aegis.db");
    let mut child = run(&cfg);
    wait_healthy(port);
    let cookie = login(port, &disk.join("data"));
    let wait = |what: &str, done: &mut dyn FnMut() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("events are written", &mut || committed_ids(&db).len() >= 10);

    // The disk fills up: the events the store refuses wait in memory, and detection goes on.
    let ballast = disk.join("ballast");
    fill_disk(&ballast, 0);
    let waiting = || metric(port, &cookie, "aegis_events_waiting{camera=\"plaza\"}");
    wait("events wait for the store", &mut || waiting() >= 20.0);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the appliance runs on"
    );
    wait_healthy(port);
    let stored = committed_ids(&db);
    let held = waiting() as usize;

    // Space comes back: the held events are stored, after everything stored before.
    std::fs::remove_file(&ballast).unwrap();
    wait("the held events are stored", &mut || {
        committed_ids(&db).len() >= stored.len() + held
    });
    assert_eq!(committed_ids(&db)[..stored.len()], stored[..]);
    assert_eq!(waiting(), 0.0);
    assert_eq!(
        metric(port, &cookie, "aegis_events_lost_total{camera=\"plaza\"}"),
        0.0
    );
    stop(child);

    // What was stored is whole: every event with its outbox row, no torn snapshot.
    let out = aegis()
        .args(["check", "--data"])
        .arg(disk.join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["events_without_outbox"], 0);
}

#[test]
fn rules_replay_prints_rule_events_and_names_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "lines:\n  - {name: gate, camera: door, from: [0.0, 0.5], to: [1.0, 0.5]}\nrules:\n  - {name: in, kind: line_cross, line: gate, direction: a_to_b, labels: [person]}\n",
    )
    .unwrap();
    // A person walks down across the line; a car does the same and is not counted.
    let frames: String = [0.3, 0.45, 0.55, 0.7]
        .iter()
        .enumerate()
        .map(|(i, y)| {
            let py = y * 720.0;
            format!(
                "{{\"stream\":\"door\",\"t_ms\":{},\"frame\":[1280,720],\"tracks\":[{{\"id\":1,\"label\":\"person\",\"score\":0.9,\"bbox\":[600,{},640,{py}]}},{{\"id\":2,\"label\":\"car\",\"score\":0.9,\"bbox\":[100,{},300,{py}]}}]}}\n",
                i * 200,
                py - 100.0,
                py - 80.0
            )
        })
        .collect();
    let tracks = dir.path().join("tracks.jsonl");
    std::fs::write(&tracks, &frames).unwrap();
    let replay = |tracks: &Path| {
        aegis()
            .args(["rules", "replay", "--config"])
            .arg(&rules)
            .arg("--tracks")
            .arg(tracks)
            .output()
            .unwrap()
    };
    let out = replay(&tracks);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "line_cross");
    assert_eq!(events[0]["direction"], "a_to_b");
    assert_eq!(events[0]["object"]["track_id"], 1);
    assert_eq!(events[0]["at_ms"], 400);

    std::fs::write(&tracks, format!("{frames}{{\"stream\": \"door\"}}\n")).unwrap();
    let out = replay(&tracks);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 5"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /metrics` on `port` in the session `cookie`: the value of `series`.
fn metric(port: u16, cookie: &str, series: &str) -> f64 {
    let (status, body) = http(port, "GET", "/metrics", &[("Cookie", cookie)], "");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {body}"))
}

#[test]
fn retention_keeps_the_store_under_its_budget_and_reports_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Fill the store past 1 MB, as fast as the clip decodes.
    let cfg = run_config(dir.path(), port, ", realtime: false", "");
    let child = run(&cfg);
    wait_healthy(port);
    let cookie = login(port, &dir.path().join("data"));
    for _ in 0..600 {
        if metric(port, &cookie, "aegis_store_bytes") > 1.5e6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(port, &cookie, "aegis_store_bytes") > 1.5e6);
    stop(child);

    // Restart with a 1 MB budget (and no camera writing): retention runs at start-up.
    let cfg = run_config(
        dir.path(),
        port,
        ", enabled: false",
        "storage: {max_size_mb: 1}\n",
    );
    let child = run(&cfg);
    wait_healthy(port);
    let cookie = login(port, &dir.path().join("data"));
    let mut size = f64::MAX;
    for _ in 0..100 {
        size = metric(port, &cookie, "aegis_store_bytes");
        if size <= 1e6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(size <= 1e6, "store still {size} bytes");
    assert!(metric(port, &cookie, "aegis_events_dropped_unsynced_total") > 0.0);
    stop(child);
    let out = aegis()
        .args(["check", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn mqtt_subscribers_see_the_appliance_come_online_publish_and_die() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt_port) = (free_port(), free_port());
    let _broker = aegis_testkit::mosquitto(dir.path(), mqtt_port);
    let (_sub, rx) = aegis_testkit::mosquitto_sub(mqtt_port, "shop/#");
    std::fs::write(
        dir.path().join("rules.yaml"),
        "zones: [{name: lawn, camera: plaza, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}]\n",
    )
    .unwrap();
    let cfg = run_config(
        dir.path(),
        port,
        ", realtime: false",
        &format!("mqtt: {{host: 127.0.0.1, port: {mqtt_port}, prefix: shop}}\nrules: rules.yaml\n"),
    );
    let mut child = run(&cfg);
    let wait_for = |want: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).expect("MQTT message not received");
            if want(&line) {
                return line;
            }
        }
    };
    wait_for(&|l| l == "shop/available online");
    let event = wait_for(&|l| l.starts_with("shop/events "));
    let event: serde_json::Value =
        serde_json::from_str(event.strip_prefix("shop/events ").unwrap()).unwrap();
    assert_eq!(event["after"]["stream"], "plaza");
    wait_for(&|l| l.starts_with("shop/plaza/person "));
    // Zone occupancy, and the new object's snapshot (a JPEG; the MQTT crate's tests compare
    // its bytes).
    wait_for(&|l| l.starts_with("shop/lawn/person "));
    wait_for(&|l| l.starts_with("shop/plaza/person/snapshot "));
    // Killed without a goodbye: the broker publishes the last will.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    wait_for(&|l| l == "shop/available offline");
}
