//! The core build of the binary as an operator runs it.
#![cfg(feature = "core")]

mod common;

use common::{aegis, free_port, stop, wait_healthy, KillOnDrop};

#[test]
fn core_serves_its_health_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let child = KillOnDrop(
        aegis()
            .args(["core", "--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .unwrap(),
    );
    let body = wait_healthy(port);
    assert!(body.contains("\"role\":\"core\""), "{body}");
    stop(child);
}
