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

/// The box: the demo clip as fast as it decodes (events all the time), or a camera that never
/// answers (no new events), syncing to the hub.
fn box_config(dir: &Path, p: &Ports, busy: bool) -> PathBuf {
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
            "cameras: [{camera}]\ndetector: {{model: '{}/models/ssdlite_mbv2_person.yaml'}}\nhttp: {{listen: '127.0.0.1:{}'}}\nstorage: {{dir: '{}'}}\nsync: {{device: box-1, hub: 'nats-leaf://127.0.0.1:{}', listen: '127.0.0.1:{}', heartbeat_s: 0.5}}\n",
            repo.display(),
            p.appliance,
            dir.join("box").display(),
            p.hub_leaf,
            p.leaf
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

fn ids(db: &Path, sql: &str) -> Vec<String> {
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    ids
}

fn box_ids(dir: &Path) -> Vec<String> {
    ids(&dir.join("box/aegis.db"), "SELECT id FROM events")
}

fn core_ids(dir: &Path) -> Vec<String> {
    ids(
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
    let p = Ports {
        core: free_port(),
        hub: free_port(),
        hub_leaf: free_port(),
        appliance: free_port(),
        leaf: free_port(),
    };
    let core_cfg = core_config(d, &p);
    let busy = box_config(d, &p, true);
    let mut core = start_core(&core_cfg, p.core);
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
    let idle = run(&box_config(d, &p, false));
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
