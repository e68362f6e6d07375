//! The appliance end to end on the real demo clip, the real model and the real HTTP API:
//! what a user sees after starting it.
#![cfg(feature = "edge")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aegis_config::Config;
use aegis_pipeline::Appliance;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A config file for `cameras`, with the plaza's rules: arrivals on the whole frame, and a head
/// count. Returns the file and the config.
fn config(dir: &Path, cameras: &str) -> (PathBuf, Config) {
    std::fs::write(
        dir.join("rules.yaml"),
        "zones:\n  - {name: floor, camera: plaza, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}\nrules:\n  - {name: arrivals, kind: zone_enter, zone: floor, labels: [person], inertia: 2}\n  - {name: headcount, kind: occupancy, zone: floor, labels: [person]}\n",
    )
    .unwrap();
    let text = format!(
        "cameras:\n{cameras}\ndetector:\n  model: {}/models/centernet_mbv3_coco80.yaml\nstorage:\n  dir: {}\nrules: rules.yaml\n",
        repo().display(),
        dir.join("data").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    (path, config)
}

fn clip() -> String {
    repo()
        .join("hil-tests/fixtures/vtest_h264.mp4")
        .display()
        .to_string()
}

/// Serves the API for `appliance`, with changes written to `config_file`; returns its base URL
/// and a client logged in as the first-run admin (cookie and CSRF token on every request).
async fn serve(appliance: &Arc<Appliance>, config_file: &Path) -> (String, reqwest::Client) {
    let settings = Arc::new(aegis_pipeline::Settings::new(
        config_file,
        appliance.clone(),
    ));
    let state = aegis_web::WebState::new(appliance.clone(), Some(settings), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(aegis_web::serve(listener, state));
    let base = format!("http://{addr}");
    let file = aegis_web::ensure_admin(&appliance.store, appliance.store.dir())
        .unwrap()
        .expect("a new store gets an admin");
    let password = std::fs::read_to_string(file).unwrap();
    let login = reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password.trim()}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let session: serde_json::Value = login.json().await.unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", cookie.parse().unwrap());
    headers.insert(
        "x-csrf-token",
        session["csrf_token"].as_str().unwrap().parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    (base, http)
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 60 s");
}

/// GETs `url` until it is there (a snapshot lands a few milliseconds after its event).
async fn fetch_landed(http: &reqwest::Client, url: &str) -> reqwest::Response {
    for _ in 0..100 {
        let r = http.get(url).send().await.unwrap();
        if r.status() != reqwest::StatusCode::NOT_FOUND {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never landed");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_clip_gives_tracked_people_with_snapshots_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // The first 20 s of the clip as fast as possible, so the test does not wait for real time.
    let trimmed = dir.path().join("first20s.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-i",
            &clip(),
            "-t",
            "20",
            "-c",
            "copy",
        ])
        .arg(&trimmed)
        .status()
        .unwrap();
    assert!(status.success());
    let (file, cfg) = config(
        dir.path(),
        &format!("  - {{name: plaza, url: '{}', realtime: false, detect_fps: 5}}\n  - {{name: broken, url: '{}/missing.mp4', reconnect_initial_s: 0.1, reconnect_max_s: 0.2}}", trimmed.display(), dir.path().display()),
    );
    let appliance = Arc::new(
        Appliance::start(
            &cfg,
            &aegis_detect::default_ort_library(),
            Arc::new(aegis_base::SystemClock),
        )
        .unwrap(),
    );
    let (base, http) = serve(&appliance, &file).await;
    // From the first event: logging in (argon2) takes longer than the first detections.
    let mut sse = http
        .get(format!("{base}/api/events/stream?after=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");

    let plaza = appliance.streams()[0].clone();
    wait_for(|| {
        let v = plaza.view();
        v.state == aegis_ingest::StreamState::Finished && v.frames_detected == v.frames_sampled
    })
    .await;
    let view = plaza.view();
    assert_eq!(view.frames_decoded, 200, "20 s at 10 fps");
    // 5 of every 10 frames go to the detector (the stream-copied cut shifts a frame or two).
    assert!((95..=100).contains(&view.frames_sampled), "{view:?}");
    assert_eq!(view.frames_detected, view.frames_sampled);
    assert_eq!(
        view.frames_dropped, 0,
        "a file read as fast as possible waits, it never drops"
    );

    // The other camera's file is missing: it is offline with a clear error, plaza was unaffected.
    let streams = get_json(&http, &format!("{base}/api/streams")).await;
    assert_eq!(streams[1]["state"], "offline");
    assert!(
        streams[1]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot open"),
        "{streams}"
    );
    assert!(streams[1]["reconnects"].as_u64().unwrap() >= 1);

    // Every new object has a snapshot we can fetch; people are found in the plaza.
    let page = get_json(&http, &format!("{base}/api/events?limit=500")).await;
    let events = page["events"].as_array().unwrap();
    let new: Vec<_> = events.iter().filter(|e| e["kind"] == "new").collect();
    let people = new.iter().filter(|e| e["label"] == "person").count();
    assert!(
        people >= 5,
        "expected several people in 20 s of the plaza, got {people}"
    );
    // Snapshots land just after their events (ADR 0003); a file read as fast as possible
    // waits for them, so none is lost.
    assert_eq!(view.snapshots_lost, 0);
    for e in &new {
        let urn = e["snapshot"]
            .as_str()
            .expect("new events carry a snapshot URN");
        let jpeg = fetch_landed(&http, &format!("{base}/api/blobs/{urn}")).await;
        assert_eq!(jpeg.headers()["content-type"], "image/jpeg");
        assert_eq!(&jpeg.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
    }

    // Prometheus sees the same counters, the detector's latency and the outbox.
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let metrics = metrics.text().await.unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(value("aegis_frames_decoded_total{camera=\"plaza\"}"), 200.0);
    assert_eq!(
        value("aegis_detect_latency_seconds_count{camera=\"plaza\"}"),
        view.frames_detected as f64
    );
    assert_eq!(
        value("aegis_detect_latency_seconds_bucket{camera=\"plaza\",le=\"+Inf\"}"),
        view.frames_detected as f64
    );
    assert_eq!(value("aegis_stream_up{camera=\"broken\"}"), 0.0);
    assert_eq!(value("aegis_outbox_backlog"), events.len() as f64);
    assert!(value("aegis_disk_free_bytes") > 0.0);

    // The rules ran on the same frames: arrivals carry the person and a snapshot, the head
    // count carries the count, and both can be listed by rule.
    let arrivals = get_json(&http, &format!("{base}/api/events?limit=500&rule=arrivals")).await;
    let arrivals = arrivals["events"].as_array().unwrap();
    assert!(arrivals.len() >= 5, "{arrivals:?}");
    for a in arrivals {
        assert_eq!(a["kind"], "rule");
        assert_eq!(a["rule"]["name"], "arrivals");
        assert_eq!(a["rule"]["detail"]["kind"], "zone_enter");
        assert_eq!(a["label"], "person");
        let urn = a["snapshot"].as_str().expect("an arrival has a snapshot");
        let jpeg = fetch_landed(&http, &format!("{base}/api/blobs/{urn}")).await;
        assert_eq!(jpeg.headers()["content-type"], "image/jpeg");
    }
    let counts: Vec<u64> = events
        .iter()
        .filter(|e| e["rule"]["name"] == "headcount")
        .map(|e| e["rule"]["detail"]["count"].as_u64().unwrap())
        .collect();
    assert!(counts.iter().any(|&c| c >= 3), "{counts:?}");

    // Track ids are stable: each has exactly one `new`.
    let mut ids: Vec<_> = new
        .iter()
        .map(|e| e["track_id"].as_u64().unwrap())
        .collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n);

    // The live stream delivered the same events, in order, with seq ids.
    let live_ids = sse_ids(&mut sse).await;
    let mut stored: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    stored.sort();
    assert_eq!(live_ids, stored);

    // Resume: a client that saw up to the 3rd event gets exactly the rest.
    let resumed = http
        .get(format!("{base}/api/events/stream"))
        .header("Last-Event-ID", stored[2].to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = resumed;
    let again = sse_ids(&mut resumed).await;
    assert_eq!(again, stored[3..]);

    // Errors are problem documents.
    for (path, status) in [
        ("/api/events?limit=0", 400),
        ("/api/events?cursor=abc", 400),
        ("/api/events?colour=red", 400),
        ("/api/blobs/urn:aegis:blob:..%2F..%2Fetc%2Fpasswd", 400),
        (
            "/api/blobs/urn:aegis:blob:01a20d9b-c127-764e-99a2-022f0aec4881",
            404,
        ),
        ("/api/nope", 404),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], status);
    }

    let store = appliance.store.clone();
    appliance.stop();
    assert!(store.check(false).unwrap().is_clean());
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `id:` of every SSE event received until the stream is quiet for half a second.
async fn sse_ids(resp: &mut reqwest::Response) -> Vec<i64> {
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect()
}
