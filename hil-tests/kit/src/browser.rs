//! Headless Chromium driven over the DevTools protocol (a WebSocket carrying JSON), enough to
//! use a page as a person would: navigate, type, click at a point, read the DOM and pixels,
//! take screenshots. The browser is Debian's `chromium` (or `AEGIS_CHROMIUM`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::KillOnDrop;

pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    _process: KillOnDrop,
    _profile: tempfile::TempDir,
}

/// A GET on the DevTools HTTP endpoint, which keeps connections open: the body is read by its
/// Content-Length.
fn http_get(host_port: &str, path: &str) -> String {
    let s = TcpStream::connect(host_port).expect("DevTools HTTP endpoint");
    let mut reader = BufReader::new(s);
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\n\r\n"
    )
    .unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

impl Browser {
    /// Starts a headless browser with a fresh profile and a 1280×900 window.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let bin = std::env::var("AEGIS_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let mut child = Command::new(&bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (scripts/setup.sh installs it): {e}"));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("DevTools listening on ws://")
                    .map(str::to_owned)
            })
            .expect("chromium did not announce its DevTools endpoint");
        // Keep draining stderr so the browser never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let host_port = endpoint.split('/').next().unwrap().to_owned();
        let list: Value = serde_json::from_str(&http_get(&host_port, "/json/list")).unwrap();
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let ws_url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let stream = TcpStream::connect(&host_port).unwrap();
        let (ws, _) = tungstenite::client(ws_url, stream).expect("DevTools WebSocket");
        let mut browser = Browser {
            ws,
            next_id: 0,
            _process: KillOnDrop(child),
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a command and waits for its result; a protocol error panics with its message.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(10),
        );
    }

    /// Evaluates JavaScript in the page (promises are awaited); returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// Evaluates JavaScript in the page; an exception it throws is the error.
    fn try_eval(&mut self, js: &str) -> Result<Value, Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates `js` until it is truthy; returns that value, or panics after `within`. An
    /// exception counts as not yet (the page may be between documents, mid-navigation).
    pub fn wait_for(&mut self, js: &str, within: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (v, thrown) = match self.try_eval(js) {
                Ok(v) => (v, None),
                Err(e) => (Value::Null, Some(e)),
            };
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if started.elapsed() > within {
                let last = thrown.map_or_else(String::new, |e| format!(" (last it threw: {e})"));
                panic!("not true within {within:?}: {js}{last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A left click at a point of the viewport, in CSS pixels.
    pub fn click_at(&mut self, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Clicks the middle of the element `selector` matches.
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView(); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = json!(selector)
        );
        let at = self.eval(&js);
        let at = at.as_array().unwrap_or_else(|| panic!("no {selector}"));
        self.click_at(at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
    }

    /// Focuses `selector` by clicking it and types `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}
