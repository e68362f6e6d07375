//! The on-box UI's page weight and time to first paint, in headless Chromium against a running
//! appliance (docs/BENCHMARKS.md; `bash scripts/bench.sh ui` starts one and runs this).
//! Usage: ui-bench URL PASSWORD_FILE [RUNS]. Prints a JSON report.

use std::time::Duration;

use aegis_testkit::Browser;
use serde_json::{json, Value};

/// The live page's figures after a fresh load: navigation timing, paints and what was fetched
/// in its first three seconds (the document, API calls and live frames).
const MEASURE: &str = "new Promise(done => setTimeout(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
  const res = performance.getEntriesByType('resource');
  done({
    document_bytes: nav.encodedBodySize,
    document_transfer_bytes: nav.transferSize,
    first_paint_ms: paint['first-paint'],
    first_contentful_paint_ms: paint['first-contentful-paint'],
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    load_ms: nav.loadEventEnd,
    requests_3s: res.length,
    live_frames_3s: res.filter(r => r.name.includes('/frame.jpg')).length,
    transfer_bytes_3s: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
  });
}, 3000))";

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(password_file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ui-bench URL PASSWORD_FILE [RUNS]");
        std::process::exit(64);
    };
    let runs: usize = args
        .get(3)
        .map_or(10, |r| r.parse().expect("RUNS is a number"));
    let password = std::fs::read_to_string(password_file).expect("the password file");
    let mut b = Browser::launch();
    b.goto(&format!("{base}/login"));
    b.type_into("#password", password.trim());
    b.click("#submit");
    b.wait_for("location.pathname === '/'", Duration::from_secs(30));
    let samples: Vec<Value> = (0..runs)
        .map(|_| {
            b.goto(&format!("{base}/"));
            b.eval(MEASURE)
        })
        .collect();
    let stat = |key: &str| {
        let mut v: Vec<f64> = samples.iter().filter_map(|s| s[key].as_f64()).collect();
        json!({"p50": percentile(&mut v, 0.5), "p95": percentile(&mut v, 0.95)})
    };
    let version = b.call("Browser.getVersion", json!({}))["product"].clone();
    let report = json!({
        "browser": version,
        "runs": runs,
        "document_bytes": samples[0]["document_bytes"],
        "document_transfer_bytes": samples[0]["document_transfer_bytes"],
        "first_paint_ms": stat("first_paint_ms"),
        "first_contentful_paint_ms": stat("first_contentful_paint_ms"),
        "dom_content_loaded_ms": stat("dom_content_loaded_ms"),
        "load_ms": stat("load_ms"),
        "requests_first_3s": stat("requests_3s"),
        "live_frames_first_3s": stat("live_frames_3s"),
        "transfer_bytes_first_3s": stat("transfer_bytes_3s"),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
