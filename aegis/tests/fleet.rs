//! The appliance and the core as operators run them, synced over their own nats-servers (the
//! box's leaf, the core's hub), killed with SIGKILL again and again.
#![cfg(all(feature = "edge", feature = "core"))]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{aegis, free_port, run, stop, wait_healthy, KillOnDrop};

struct Ports {
    core: u16,
    hub: u16,
    hub_leaf: u16,
    appliance: u16,
    leaf: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            core: free_port(),
            hub: free_port(),
            hub_leaf: free_port(),
            appliance: free_port(),
            leaf: free_port(),
        }
    }
}

fn core_config(dir: &Path, p: &Ports) -> PathBuf {
    let path = dir.join("core.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: '127.0.0.1:{}'\ndata: '{}'\nhub: {{listen: '127.0.0.1:{}', leaf_listen: '127.0.0.1:{}'}}\n",
            p.core,
            dir.join("core").display(),
            p.hub,
            p.hub_leaf
        ),
    )
    .unwrap();
    path
}

/// A join token for box-1 from the core's API.
fn join_token(p: &Ports) -> String {
    let (status, response) = common::http(p.core, "POST", "/api/devices/box-1/token", &[], "");
    assert_eq!(status, 200, "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// The box: the demo clip as fast as it decodes (events all the time), or a camera that never
/// answers (no new events), syncing to the hub, enrolling with `token`.
fn box_config(dir: &Path, p: &Ports, busy: bool, token: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let camera = if busy {
        format!(
            "{{name: plaza, url: '{}/hil-tests/fixtures/vtest_h264.mp4', loop: true, realtime: false}}",
            repo.display()
        )
    } else {
        "{name: plaza, url: 'rtsp://127.0.0.1:9/none'}".to_string()
    };
    let path = dir.join(if busy { "busy.yaml" } else { "idle.yaml" });
    std::fs::write(
        &path,
        format!(
            "cameras: [{camera}]\ndetector: {{model: '{}/models/ssdlite_mbv2_person.yaml'}}\nhttp: {{listen: '127.0.0.1:{}'}}\nstorage: {{dir: '{}'}}\nsync: {{device: box-1, hub: 'nats-leaf://127.0.0.1:{}', listen: '127.0.0.1:{}', heartbeat_s: 0.5, core: 'http://127.0.0.1:{}', token: '{token}'}}\n",
            repo.display(),
            p.appliance,
            dir.join("box").display(),
            p.hub_leaf,
            p.leaf,
            p.core
        ),
    )
    .unwrap();
    path
}

fn start_core(config: &Path, port: u16) -> KillOnDrop {
    let child = KillOnDrop(
        aegis()
            .args(["core", "--config"])
            .arg(config)
            .spawn()
            .unwrap(),
    );
    wait_healthy(port);
    child
}

fn box_ids(dir: &Path) -> Vec<String> {
    common::sqlite_strings(&dir.join("box/aegis.db"), "SELECT id FROM events")
}

fn core_ids(dir: &Path) -> Vec<String> {
    common::sqlite_strings(
        &dir.join("core/core.db"),
        "SELECT id FROM events WHERE device = 'box-1'",
    )
}

fn sigkill(mut child: KillOnDrop) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

#[test]
fn kill_9_of_the_appliance_and_the_core_loses_no_event_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Ports::new();
    let core_cfg = core_config(d, &p);
    let mut core = start_core(&core_cfg, p.core);
    let token = join_token(&p);
    let busy = box_config(d, &p, true, &token);
    let mut appliance = run(&busy);
    wait_healthy(p.appliance);

    // Kill each side at different points while events flow: the box mid-write and
    // mid-forward, the core mid-ingest.
    for pause_ms in [1_500, 900, 2_100] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        sigkill(appliance);
        appliance = run(&busy);
        wait_healthy(p.appliance);
        std::thread::sleep(Duration::from_millis(pause_ms / 2));
        sigkill(core);
        core = start_core(&core_cfg, p.core);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop(appliance);
    let made = box_ids(d);
    assert!(made.len() > 50, "the box made events: {}", made.len());

    // The box comes back with nothing to watch; its backlog still reaches the core.
    let idle = run(&box_config(d, &p, false, &token));
    wait_healthy(p.appliance);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = core_ids(d);
        if got.len() >= made.len() {
            let made: BTreeSet<&String> = made.iter().collect();
            let unique: BTreeSet<&String> = got.iter().collect();
            assert_eq!(got.len(), unique.len(), "no event twice");
            assert_eq!(unique, made, "every event of the box, and nothing else");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the core has {} of {} events",
            got.len(),
            made.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The registry shows the box online, with the version it runs.
    let (status, body) = common::http(p.core, "GET", "/api/devices", &[], "");
    assert_eq!(status, 200, "{body}");
    let devices: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(devices[0]["id"], "box-1");
    assert_eq!(devices[0]["online"], true);
    assert_eq!(devices[0]["version"], env!("CARGO_PKG_VERSION"));
    stop(idle);
    stop(core);
}

#[test]
fn a_box_whose_leaf_node_cannot_start_goes_on_detecting_and_syncs_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Ports::new();
    let core = start_core(&core_config(d, &p), p.core);
    let token = join_token(&p);
    // Something else holds the port the box's leaf node should listen on.
    let taken = std::net::TcpListener::bind(("127.0.0.1", p.leaf)).unwrap();
    let appliance = run(&box_config(d, &p, true, &token));
    let started = Instant::now();
    wait_healthy(p.appliance);

    let deadline = started + Duration::from_secs(60);
    while box_ids(d).len() < 30 {
        assert!(
            Instant::now() < deadline,
            "the box makes events without its sync"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cookie = common::login(p.appliance, &d.join("box"));
    let (_, metrics) = common::http(p.appliance, "GET", "/metrics", &[("Cookie", &cookie)], "");
    assert!(metrics.contains("\naegis_sync_connected 0\n"), "{metrics}");
    assert!(core_ids(d).is_empty());

    // Held past the first attempt's wait for the port (15 s), so a retry is what starts it.
    std::thread::sleep(
        (started + Duration::from_secs(18)).saturating_duration_since(Instant::now()),
    );
    assert!(core_ids(d).is_empty());

    // The port is free again: the leaf starts, and what waited in the outbox reaches the core.
    drop(taken);
    let waited: BTreeSet<String> = box_ids(d).into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: BTreeSet<String> = core_ids(d).into_iter().collect();
        if got.is_superset(&waited) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the core has {} of the {} events that waited",
            waited.intersection(&got).count(),
            waited.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    stop(appliance);
    let got = core_ids(d);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "no event twice");
    stop(core);
}

/// `GET path` on `port`: the JSON body.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, response) = common::http(port, "GET", path, &[], "");
    assert_eq!(status, 200, "{response}");
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Pushes a desired config to box-1 through the core's API, with the model manifest `model`;
/// returns its version.
fn push_config(port: u16, rule_labels: &str, model: &str) -> u64 {
    let body = format!(
        r#"{{"cameras": [{{"name": "yard", "url": "rtsp://127.0.0.1:9/yard"}}],
            "rules": {{"zones": [{{"name": "gate", "camera": "yard", "points": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]}}],
                       "rules": [{{"name": "at-gate", "kind": "zone_enter", "zone": "gate", "labels": {rule_labels}}}]}},
            "model": "{model}"}}"#
    );
    let (status, response) = common::http(
        port,
        "PUT",
        "/api/devices/box-1/config",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(status, 200, "{response}");
    let desired: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    desired["version"].as_u64().unwrap()
}

/// Waits until box-1 reports `version` in `state`; returns the report.
fn wait_reported(port: u16, version: u64, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let config = get_json(port, "/api/devices/box-1/config");
        let reported = &config["reported"];
        if reported["version"] == version && reported["state"] == state {
            return reported.clone();
        }
        assert!(Instant::now() < deadline, "box-1 reports {reported}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_config_pushed_while_the_box_is_away_is_applied_on_return_and_a_bad_one_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Ports::new();
    let core = start_core(&core_config(d, &p), p.core);
    let box_cfg = box_config(d, &p, false, &join_token(&p));

    // The box registers with its heartbeats, then goes away.
    let b = run(&box_cfg);
    wait_healthy(p.appliance);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(p.core, "/api/devices")
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "box-1 never registered");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(b);

    // Changed while it is away (cameras, rules, and the model: from the person-only SSD to the
    // COCO CenterNet, whose "car" the rules now name); applied when it is back.
    let v1 = push_config(p.core, r#"["car"]"#, "centernet_mbv3_coco80.yaml");
    let b = run(&box_cfg);
    wait_healthy(p.appliance);
    wait_reported(p.core, v1, "applied");
    let config_file = std::fs::read_to_string(&box_cfg).unwrap();
    assert!(
        config_file.contains("yard") && !config_file.contains("plaza"),
        "{config_file}"
    );
    assert!(
        config_file.contains("centernet_mbv3_coco80.yaml"),
        "{config_file}"
    );
    let rules_file = std::fs::read_to_string(d.join("rules.yaml")).unwrap();
    assert!(rules_file.contains("at-gate"), "{rules_file}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(p.core, "/api/devices")[0]["health"]["model"] != "centernet_mbv3_coco80.yaml" {
        assert!(
            Instant::now() < deadline,
            "box-1 never reported its new model"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A config the box cannot run (a label its model does not detect): rolled back, reported
    // with the reason, and the files and cameras stay as they were.
    let v2 = push_config(p.core, r#"["unicorn"]"#, "centernet_mbv3_coco80.yaml");
    assert_eq!(v2, v1 + 1);
    let report = wait_reported(p.core, v2, "rolled_back");
    assert!(
        report["error"].as_str().unwrap().contains("unicorn"),
        "{report}"
    );
    assert_eq!(std::fs::read_to_string(&box_cfg).unwrap(), config_file);
    assert_eq!(
        std::fs::read_to_string(d.join("rules.yaml")).unwrap(),
        rules_file
    );
    // A model the box does not have: the same.
    let v3 = push_config(p.core, r#"["car"]"#, "no-such-model.yaml");
    let report = wait_reported(p.core, v3, "rolled_back");
    assert!(
        report["error"].as_str().unwrap().contains("no-such-model"),
        "{report}"
    );
    assert_eq!(std::fs::read_to_string(&box_cfg).unwrap(), config_file);

    // A restart neither re-applies nor forgets what happened: the first heartbeats after it
    // report the same.
    stop(b);
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let b = run(&box_cfg);
    wait_healthy(p.appliance);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let devices = get_json(p.core, "/api/devices");
        let health = devices[0]["health"].clone();
        if health["at_ms"].as_i64().unwrap() > restarted_ms {
            break health;
        }
        assert!(Instant::now() < deadline, "no heartbeat since the restart");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["config"]["version"], v3);
    assert_eq!(health["config"]["state"], "rolled_back");
    assert_eq!(std::fs::read_to_string(&box_cfg).unwrap(), config_file);
    stop(b);
    stop(core);
}

#[test]
fn the_console_shows_the_box_its_events_with_snapshots_and_a_pushed_config_being_applied() {
    const WAIT: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Ports::new();
    let core = start_core(&core_config(d, &p), p.core);
    let box_cfg = box_config(d, &p, true, &join_token(&p));
    let b = run(&box_cfg);
    wait_healthy(p.appliance);

    let mut browser = aegis_testkit::Browser::launch();
    browser.goto(&format!("http://127.0.0.1:{}/", p.core));
    browser.wait_for(
        "document.querySelector('tr.device td.online')?.textContent === 'online'",
        WAIT,
    );
    browser.click("tr.device");
    // The box's events, with their snapshots fetched from the box on demand and drawn.
    let drawn = browser.wait_for(
        "[...document.querySelectorAll('#events img')].filter(i => i.complete && i.naturalWidth > 0).length",
        WAIT,
    );
    assert!(drawn.as_u64().unwrap() >= 1);
    let png = browser.screenshot();
    assert!(png.len() > 10_000, "a screenshot with content");
    if let Some(out) = std::env::var_os("AEGIS_TEST_ARTIFACTS") {
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(Path::new(&out).join("console.png"), &png).unwrap();
    }

    // The box's own metrics show its side of the sync.
    let cookie = common::login(p.appliance, &d.join("box"));
    let (_, metrics) = common::http(p.appliance, "GET", "/metrics", &[("Cookie", &cookie)], "");
    assert!(metrics.contains("\naegis_sync_connected 1\n"), "{metrics}");
    let forwarded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aegis_sync_forwarded_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(forwarded.is_some_and(|n| n > 0), "{metrics}");

    // Push a config from the form and watch the box report it applied.
    let camera = std::fs::read_to_string(&box_cfg).unwrap();
    let url = camera
        .split("url: '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let config = serde_json::json!({
        "cameras": [{"name": "plaza", "url": url, "loop": true, "realtime": false}],
        "rules": {"zones": [{"name": "floor", "camera": "plaza",
                             "points": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]}],
                  "lines": [], "rules": []}
    });
    browser.eval(&format!(
        "document.getElementById('config').value = {}",
        serde_json::to_string(&config.to_string()).unwrap()
    ));
    browser.click("#push");
    browser.wait_for(
        "document.getElementById('config-state').textContent.includes('v1 applied')",
        WAIT,
    );
    assert!(std::fs::read_to_string(d.join("rules.yaml"))
        .unwrap()
        .contains("floor"));
    stop(b);
    stop(core);
}
