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
/// a client logged in as the first-run admin (cookie and CSRF token on every request) and the
/// session cookie alone.
async fn serve(
    appliance: &Arc<Appliance>,
    config_file: &Path,
) -> (String, reqwest::Client, String) {
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
    (base, http, cookie)
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
    aegis_testkit::ffmpeg(&[], clip(), &["-t", "20", "-c", "copy"], &trimmed);
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
    let (base, http, _) = serve(&appliance, &file).await;
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
    // Each family's samples come together, right after its own TYPE line (two cameras here).
    let mut family = "";
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
                .unwrap_or(name);
            assert_eq!(base, family, "{line} is not under its family's TYPE line");
        }
    }
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

/// Starts the appliance on `cameras` (rules as in [`config`]) and serves it: the handle, the
/// config file, and what [`serve`] returns.
async fn start(
    dir: &Path,
    cameras: &str,
) -> (Arc<Appliance>, PathBuf, String, reqwest::Client, String) {
    let (file, cfg) = config(dir, cameras);
    let appliance = Arc::new(
        Appliance::start(
            &cfg,
            &aegis_detect::default_ort_library(),
            Arc::new(aegis_base::SystemClock),
        )
        .unwrap(),
    );
    let (base, http, cookie) = serve(&appliance, &file).await;
    (appliance, file, base, http, cookie)
}

/// Asserts a problem document with `status`; returns it.
async fn problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status().as_u16(), status, "{:?}", r.text().await);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_needs_a_session_changes_need_its_csrf_token_and_guessing_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let (appliance, _, base, http, cookie) = start(
        dir.path(),
        &format!("  - {{name: plaza, url: '{}'}}", missing.display()),
    )
    .await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| anonymous.get(format!("{base}{path}")).send();
    assert_eq!(get("/api/health").await.unwrap().status(), 200);
    assert_eq!(get("/login").await.unwrap().status(), 200);
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 303, "a browser is sent to log in");
    assert_eq!(page.headers()["location"], "/login");
    for path in [
        "/api/events",
        "/api/streams",
        "/metrics",
        "/api/cameras",
        "/api/openapi.json",
    ] {
        problem(get(path).await.unwrap(), 401).await;
    }
    let forged = anonymous
        .get(format!("{base}/api/events"))
        .header("cookie", "aegis_session=00ff00ff")
        .send()
        .await
        .unwrap();
    problem(forged, 401).await;

    // Every documented route answers in a session (none falls through to "no such route").
    let doc: serde_json::Value = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() || path == "/api/events/stream" {
            continue; // changes are tested below; the stream never ends
        }
        let url = path
            .replace(
                "{urn}",
                "urn:aegis:blob:01a20d9b-c127-764e-99a2-022f0aec4881",
            )
            .replace("{name}", "plaza");
        let body = http
            .get(format!("{base}{url}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains("no such route"), "{path} is not served");
    }
    let me: serde_json::Value = http
        .get(format!("{base}/api/auth/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "admin");

    // A change without the session's CSRF token, or with another, is refused.
    for token in [None, Some("forged")] {
        let mut r = anonymous
            .put(format!("{base}/api/zones/door"))
            .header("cookie", &cookie)
            .json(&serde_json::json!({"camera": "plaza", "points": [[0, 0], [1, 0], [1, 1]]}));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        problem(r.send().await.unwrap(), 403).await;
    }
    let rules: serde_json::Value = http
        .get(format!("{base}/api/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rules["zones"].as_array().unwrap().len(),
        1,
        "no zone was added: {rules}"
    );
    // Bodies: too large, not JSON, malformed, the wrong shape.
    let too_large = format!("{{\"camera\": \"{}\"}}", "x".repeat(100_000));
    for (content_type, body, status) in [
        ("application/json", too_large.as_str(), 413),
        ("text/plain", "{}", 415),
        ("application/json", "{\"camera\": ", 400),
    ] {
        let r = http
            .put(format!("{base}/api/zones/door"))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        problem(r, status).await;
    }
    let r = http
        .post(format!("{base}/api/auth/password"))
        .json(&serde_json::json!({"current": "wrong-password", "new": "long enough"}))
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
    let r = http
        .post(format!("{base}/api/auth/password"))
        .json(&serde_json::json!({"current": "x", "new": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r, 422).await["errors"][0]["path"], "new");

    // Logging out ends the session.
    let r = http
        .post(format!("{base}/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    problem(
        http.get(format!("{base}/api/events")).send().await.unwrap(),
        401,
    )
    .await;

    // Five wrong passwords from one address, then even the right one waits.
    let password = std::fs::read_to_string(dir.path().join("data/initial-admin-password")).unwrap();
    let attempt = |password: String| {
        anonymous
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
    };
    for _ in 0..5 {
        problem(attempt("guess".into()).await.unwrap(), 401).await;
    }
    let r = attempt(password.trim().into()).await.unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    problem(r, 429).await;
    appliance.stop();
}

/// Polls `GET url` until `done` holds for its JSON (60 s at most); returns that JSON.
async fn poll(
    http: &reqwest::Client,
    url: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..600 {
        let r = http.get(url).send().await.unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            if done(&v) {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url}: condition not reached in 60 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn cameras_zones_and_rules_change_without_a_restart_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let camera = |name: &str| serde_json::json!({"name": name, "url": clip(), "loop": true, "detect_fps": 2});
    let (appliance, file, base, http, _) = start(
        dir.path(),
        &format!(
            "  - {{name: plaza, url: '{}', loop: true, detect_fps: 2}}",
            clip()
        ),
    )
    .await;
    let url = |path: &str| format!("{base}{path}");
    poll(&http, &url("/api/streams"), |s| s[0]["state"] == "online").await;
    let plaza = appliance.streams()[0].clone();

    // Add a camera: it starts; plaza goes on untouched (same stream, counters not reset).
    let r = http
        .post(url("/api/cameras"))
        .json(&camera("gate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    poll(&http, &url("/api/streams"), |s| {
        s[1]["name"] == "gate" && s[1]["state"] == "online"
    })
    .await;
    assert!(Arc::ptr_eq(&appliance.streams()[0], &plaza));
    assert_eq!(plaza.view().reconnects, 0);
    let cams = poll(&http, &url("/api/cameras"), |_| true).await;
    assert_eq!(cams.as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(&file).unwrap().contains("gate"));

    // Bad cameras are refused with every error, and the file is not touched.
    let before = std::fs::read(&file).unwrap();
    let r = http
        .post(url("/api/cameras"))
        .json(&serde_json::json!({"name": "Bad Name", "url": "ftp://cam", "detect_fps": 0, "colour": 1}))
        .send()
        .await
        .unwrap();
    let body = problem(r, 422).await;
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with("cameras[2]")),
        "{paths:?}"
    );
    let r = http
        .post(url("/api/cameras"))
        .json(&serde_json::json!({"name": "bad", "url": "ftp://cam", "detect_fps": 0}))
        .send()
        .await
        .unwrap();
    let body = problem(r, 422).await;
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["cameras[2].url", "cameras[2].detect_fps"]);
    problem(
        http.post(url("/api/cameras"))
            .json(&camera("gate"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    problem(
        http.delete(url("/api/cameras/nope")).send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // Remove it: it stops, plaza still untouched.
    assert_eq!(
        http.delete(url("/api/cameras/gate"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(appliance.streams().len(), 1);
    assert!(Arc::ptr_eq(&appliance.streams()[0], &plaza));

    // Bad geometry and references are refused, each with its path.
    for (path, body, at) in [
        (
            "/api/zones/bow",
            serde_json::json!({"camera": "plaza", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}),
            "zones[1].points",
        ),
        (
            "/api/zones/out",
            serde_json::json!({"camera": "plaza", "points": [[0, 0], [1.5, 0], [1, 1]]}),
            "zones[1].points",
        ),
        (
            "/api/lines/dot",
            serde_json::json!({"camera": "plaza", "from": [0.5, 0.5], "to": [0.5, 0.5]}),
            "lines[0]",
        ),
        (
            "/api/rules/ghost",
            serde_json::json!({"kind": "zone_enter", "zone": "nowhere"}),
            "rules[2].zone",
        ),
        (
            "/api/rules/unicorns",
            serde_json::json!({"kind": "zone_enter", "zone": "floor", "labels": ["unicorn"]}),
            "rules[2].labels[0]",
        ),
    ] {
        let body = problem(http.put(url(path)).json(&body).send().await.unwrap(), 422).await;
        let first = body["errors"][0]["path"].as_str().unwrap();
        assert!(first.starts_with(at), "{path}: {body}");
    }
    let r = http.delete(url("/api/zones/floor")).send().await.unwrap();
    assert!(problem(r, 422).await["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("floor"));

    // A zone and a rule drawn now fire on the next frames, and are in the rules file.
    let r = http
        .put(url("/api/zones/everywhere"))
        .json(&serde_json::json!({"camera": "plaza", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .put(url("/api/rules/seen"))
        .json(
            &serde_json::json!({"kind": "zone_enter", "zone": "everywhere", "labels": ["person"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let seen = poll(&http, &url("/api/events?rule=seen"), |p| {
        !p["events"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(seen["events"][0]["label"], "person");
    let saved = std::fs::read_to_string(dir.path().join("rules.yaml")).unwrap();
    let labels = ["person".to_owned()];
    let rules = aegis_rules::RuleSet::parse(&saved, Some(&labels)).unwrap();
    assert!(rules.zones.iter().any(|z| z.name == "everywhere"));
    assert!(rules.rules.iter().any(|r| r.name == "seen"));

    // The live view: the latest frame and the tracks on it, in its pixels.
    let mut jpeg = None;
    for _ in 0..100 {
        let r = http
            .get(url("/api/cameras/plaza/frame.jpg"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "image/jpeg");
            jpeg = Some(r.bytes().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(&jpeg.expect("a live frame")[..2], &[0xFF, 0xD8]);
    let tracks = poll(&http, &url("/api/cameras/plaza/tracks"), |t| {
        !t["tracks"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        (tracks["width"].as_u64(), tracks["height"].as_u64()),
        (Some(768), Some(576))
    );
    problem(
        http.get(url("/api/cameras/gate/frame.jpg"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // The system page's figures.
    let sys = poll(&http, &url("/api/system"), |s| {
        s["streams"][0]["frames_detected"].as_u64() > Some(0)
    })
    .await;
    assert!(sys["disk_free_bytes"].as_u64().unwrap() > 0);
    assert!(sys["process_rss_bytes"].as_u64().unwrap() > 10_000_000);
    assert!(sys["streams"][0]["detect_mean_ms"].as_f64().unwrap() > 0.0);
    appliance.stop();
}
