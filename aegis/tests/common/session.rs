//! Talking to a running appliance's API as a logged-in user, over plain HTTP/1.0 (edge tests).

use std::io::{Read, Write};

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
