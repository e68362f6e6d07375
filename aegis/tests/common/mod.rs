//! What the binary's tests share: starting it, probing its API, stopping it like a service
//! manager would, and using its API as a logged-in user. Each test binary uses a subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

pub use aegis_testkit::{free_port, KillOnDrop};

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

/// `aegis run --config CONFIG`, killed if the test ends without stopping it.
pub fn run(config: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        aegis()
            .args(["run", "--config"])
            .arg(config)
            .spawn()
            .unwrap(),
    )
}

/// SIGTERM, and the process must exit cleanly.
pub fn stop(mut child: KillOnDrop) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the appliance cleanly: {status:?}"
    );
}

/// One HTTP/1.0 exchange on loopback: (status, headers and body as text).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    (status, response)
}

/// The password the first start generated for `admin`, from the storage directory.
pub fn admin_password(data: &std::path::Path) -> String {
    let file = data.join("initial-admin-password");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

/// Logs in as `admin`; returns the `Cookie` header value for later requests.
pub fn login(port: u16, data: &std::path::Path) -> String {
    let body = format!(
        r#"{{"username": "admin", "password": "{}"}}"#,
        admin_password(data)
    );
    let (status, response) = http(
        port,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(status, 200, "{response}");
    response
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// The first column of `sql`'s rows in the SQLite database `db` (none if it does not exist yet).
pub fn sqlite_strings(db: &std::path::Path, sql: &str) -> Vec<String> {
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}
