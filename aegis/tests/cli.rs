//! The binary as a user runs it.

use std::process::Command;

fn aegis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
}

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

#[test]
fn run_serves_the_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cameras: [{{name: plaza, url: '{}/hil-tests/fixtures/vtest_h264.mp4', loop: true}}]\ndetector: {{model: '{}/models/ssdlite_mbv2_person.yaml'}}\nhttp: {{listen: '127.0.0.1:{port}'}}\n",
            repo.display(),
            repo.display()
        ),
    )
    .unwrap();
    let mut child = aegis().args(["run", "--config"]).arg(&cfg).spawn().unwrap();
    let mut healthy = false;
    for _ in 0..300 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            healthy = body.contains("\"version\"");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(healthy, "the API did not come up");
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the appliance cleanly: {status:?}"
    );
    assert!(dir.path().join("data/aegis.db").exists());
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
