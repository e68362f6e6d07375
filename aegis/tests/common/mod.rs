//! What the binary's tests share: starting it, probing its API, stopping it like a service
//! manager would.

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::Duration;

pub use aegis_testkit::free_port;

pub fn aegis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
}

/// Waits for `GET /api/health` to answer on `port`; returns its body.
pub fn wait_healthy(port: u16) -> String {
    for _ in 0..300 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            assert!(body.contains("\"version\""), "{body}");
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the API did not come up");
}

/// SIGTERM, and the appliance must exit cleanly.
pub fn stop(mut child: Child) {
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
}
