//! The core build of the binary as an operator runs it.
#![cfg(feature = "core")]

mod common;

use common::{aegis, free_port, stop, wait_healthy, KillOnDrop};

#[test]
fn core_serves_its_health_runs_its_hub_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hub) = (free_port(), free_port());
    let config = dir.path().join("core.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: '127.0.0.1:{port}'\ndata: '{}'\nhub: {{listen: '127.0.0.1:{hub}', leaf_listen: '127.0.0.1:{}'}}\n",
            dir.path().join("data").display(),
            free_port()
        ),
    )
    .unwrap();
    let child = KillOnDrop(
        aegis()
            .args(["core", "--config"])
            .arg(&config)
            .spawn()
            .unwrap(),
    );
    let body = wait_healthy(port);
    assert!(body.contains("\"role\":\"core\""), "{body}");
    // Enrolment refuses what is not a live token for that device, or not a user key.
    let enrol = |body: &str| {
        common::http(
            port,
            "POST",
            "/api/enrol",
            &[("Content-Type", "application/json")],
            body,
        )
    };
    let key = "UASCKTNFQD2CKKHBBFRQAZKK2SQ6XK53ZBZU3332VSXMRLRZ75WJ2LAD";
    let (status, response) = enrol(&format!(
        r#"{{"device": "box-1", "token": "guess", "public_key": "{key}"}}"#
    ));
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    let (status, _) = enrol(r#"{"device": "box-1", "token": "guess", "public_key": "not a key"}"#);
    assert_eq!(status, 422);
    let (status, _) = enrol(r#"{"device": "box-1"}"#);
    assert_eq!(status, 422);
    // Its hub takes NATS clients.
    let mut nats = std::net::TcpStream::connect(("127.0.0.1", hub)).unwrap();
    let mut info = [0u8; 4];
    std::io::Read::read_exact(&mut nats, &mut info).unwrap();
    assert_eq!(&info, b"INFO");
    stop(child);
    // The hub went with it.
    assert!(std::net::TcpStream::connect(("127.0.0.1", hub)).is_err());
}

#[test]
fn core_refuses_a_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("core.yaml");
    std::fs::write(&config, "data: /tmp/x\nhub: {listen: 'not an address'}\n").unwrap();
    let out = aegis()
        .args(["core", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hub.listen"), "{err}");
}
