//! The web UI in headless Chromium, against the real binary on the demo clip: what an installer
//! does on the first day. Checks look at the page as drawn (DOM, canvas pixels, screenshots).
#![cfg(feature = "edge")]

mod common;

use std::path::Path;
use std::time::Duration;

use aegis_testkit::Browser;
use common::{admin_password, free_port, run, stop, wait_healthy};

const WAIT: Duration = Duration::from_secs(60);

/// Pixels of the canvas `id` close to the colour the UI draws boxes in (#ff4000).
const BOX_PIXELS: &str = "(() => { const c = document.getElementById(ID); \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    for (let i = 0; i < d.length; i += 4) if (d[i] > 230 && d[i+1] > 40 && d[i+1] < 90 && d[i+2] < 30) n++; \
    return n; })()";

/// Where screenshots go: `AEGIS_TEST_ARTIFACTS` to keep them, else the test's directory.
fn artifacts(dir: &Path) -> std::path::PathBuf {
    let out = std::env::var_os("AEGIS_TEST_ARTIFACTS").map_or_else(|| dir.to_owned(), Into::into);
    std::fs::create_dir_all(&out).unwrap();
    out
}

#[test]
fn log_in_draw_a_zone_and_see_its_event_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cameras: [{{name: plaza, url: '{}/hil-tests/fixtures/vtest_h264.mp4', loop: true, detect_fps: 5}}]\n\
             detector: {{model: '{}/models/centernet_mbv3_coco80.yaml', labels: [person, car]}}\n\
             http: {{listen: '127.0.0.1:{port}'}}\n",
            repo.display(),
            repo.display()
        ),
    )
    .unwrap();
    let child = run(&cfg);
    wait_healthy(port);
    let password = admin_password(&dir.path().join("data"));
    let base = format!("http://127.0.0.1:{port}");
    let mut b = Browser::launch();

    // Without a session the UI sends us to log in; a wrong password says so.
    b.goto(&format!("{base}/"));
    assert_eq!(b.eval("location.pathname"), "/login");
    b.type_into("#password", "not-the-password");
    b.click("#submit");
    b.wait_for("document.getElementById('error').textContent", WAIT);
    b.eval("document.getElementById('password').value = ''");
    b.type_into("#password", &password);
    b.click("#submit");
    b.wait_for(
        "location.pathname === '/' && document.getElementById('user').textContent === 'admin'",
        WAIT,
    );

    // Live view: the camera's frame with its tracked people boxed, refreshed.
    b.wait_for(
        "document.getElementById('live-info').textContent.includes('object')",
        WAIT,
    );
    let first = b.eval("document.getElementById('live-info').textContent");
    b.wait_for(&BOX_PIXELS.replace("ID", "'live-canvas'"), WAIT);
    b.wait_for(
        &format!("document.getElementById('live-info').textContent !== {first}"),
        Duration::from_secs(5),
    );
    let png = b.screenshot();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::write(artifacts(dir.path()).join("live.png"), &png).unwrap();

    // Draw a zone over the lower two thirds of the image by clicking its corners, and ask for
    // an alert when someone enters it.
    b.eval("location.hash = '#zones'");
    b.wait_for("document.getElementById('z-canvas').width === 768", WAIT);
    b.type_into("#z-name", "walkway");
    let rect = b.eval(
        "(() => { const r = document.getElementById('z-canvas').getBoundingClientRect(); \
         return [r.x, r.y, r.width, r.height]; })()",
    );
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (fx, fy) in [(0.02, 0.3), (0.98, 0.3), (0.98, 0.98), (0.02, 0.98)] {
        b.click_at(r[0] + fx * r[2], r[1] + fy * r[3]);
    }
    b.click("#z-save");
    b.wait_for(
        "document.getElementById('z-list').textContent.includes('walkway-enter')",
        WAIT,
    );
    assert_eq!(b.eval("document.getElementById('z-error').textContent"), "");
    let saved = std::fs::read_to_string(dir.path().join("rules.yaml")).unwrap();
    assert!(saved.contains("walkway"), "{saved}");

    // The timeline shows the zone's event from the clip, with its snapshot loaded.
    b.eval("location.hash = '#events'");
    let shown = b.wait_for(
        "(() => { const img = document.querySelector('.ev[data-rule=\"walkway-enter\"] img'); \
         return img && img.complete && img.naturalWidth; })()",
        WAIT,
    );
    assert_eq!(shown, 768, "the snapshot is the full frame");
    // Filtering by the rule leaves only its events.
    b.eval("document.getElementById('f-rule').value = 'walkway-enter'");
    b.click("#event-filters button");
    b.wait_for(
        "(() => { const cards = [...document.querySelectorAll('.ev')]; \
         return cards.length > 0 && cards.every(c => c.dataset.rule === 'walkway-enter'); })()",
        WAIT,
    );
    std::fs::write(artifacts(dir.path()).join("events.png"), b.screenshot()).unwrap();

    // The system page shows the stream's figures.
    b.eval("location.hash = '#system'");
    b.wait_for(
        "document.getElementById('sys-streams').textContent.includes('plaza')",
        WAIT,
    );
    stop(child);
}
