//! OpenStack's browser console against the demo VMM: Debian's spice-html5, served and
//! bridged by websockify (what nova-spicehtml5proxy is built on), in headless Chromium,
//! driven by `tests/clients/html5/html5_probe.py` over the DevTools pipe.
//!
//! The browser's canvas must equal, pixel for pixel, both the display worker's
//! `screenshot(0)` and the framebuffer of the same deterministic scene played by a
//! second `DesktopScene` (R,G,B compared; the canvas is RGBA, the worker BGRX).
//!
//! These tests fail, never skip, when chromium, websockify or spice-html5 are not
//! installed: run `scripts/install-test-deps.sh` first.
#![allow(clippy::unwrap_used, clippy::tests_outside_test_module, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spice_server::ServerConfig;
use vmm_glue::demo::{Demo, DemoOptions};
use vmm_glue::scene::{DesktopScene, Scene};

const PROBE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/html5/html5_probe.py"
);
const SPICE_HTML5: &str = "/usr/share/spice-html5/spice_auto.html";
const W: u32 = 1024;
const H: u32 = 768;

/// One browser at a time: the machine has two cores.
static BROWSER: Mutex<()> = Mutex::new(());

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(name);
            f.is_file()
        })
    })
}

/// Panics (never skips) when a piece of the browser console is missing.
fn require_browser_console() {
    let mut missing = Vec::new();
    for tool in ["chromium", "websockify", "python3"] {
        if !on_path(tool) {
            missing.push(tool.to_owned());
        }
    }
    if !Path::new(SPICE_HTML5).is_file() {
        missing.push(format!("spice-html5 ({SPICE_HTML5})"));
    }
    assert!(
        missing.is_empty(),
        "missing: {} — run scripts/install-test-deps.sh (real-client tests must not be skipped)",
        missing.join(", ")
    );
}

fn python() -> &'static str {
    // The probe needs only the standard library; prefer the system interpreter.
    if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qxl-html5-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bgrx_to_rgb(bgrx: &[u8]) -> Vec<u8> {
    bgrx.chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

/// What the probe reported.
struct Probe {
    code: Option<i32>,
    report: String,
    rgb: Option<Vec<u8>>,
    elapsed: Duration,
}

impl Probe {
    /// A number from the one-line JSON report (`"key": 12.5`).
    fn number(&self, key: &str) -> Option<f64> {
        let at = self.report.find(&format!("\"{key}\": "))? + key.len() + 4;
        let rest = &self.report[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    }

    /// The `warnings` array of the report, as raw JSON.
    fn warnings(&self) -> &str {
        let Some(at) = self.report.find("\"warnings\": [") else {
            return "";
        };
        let rest = &self.report[at + 13..];
        &rest[..rest.find(']').unwrap_or(0)]
    }
}

/// Runs the probe against the SPICE server on `port`.
fn run_probe(
    port: u16,
    password: Option<&str>,
    expect_rgb: Option<&[u8]>,
    dir: &Path,
    timeout_s: u32,
) -> Probe {
    require_browser_console();
    let out = dir.join("canvas.rgb");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(python());
    cmd.arg(PROBE)
        .args(["--spice-port", &port.to_string()])
        .args(["--size", &format!("{W}x{H}")])
        .args(["--timeout", &timeout_s.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(dir);
    if let Some(pw) = password {
        cmd.args(["--password", pw]);
    }
    if let Some(rgb) = expect_rgb {
        let f = dir.join("expected.rgb");
        std::fs::write(&f, rgb).unwrap();
        cmd.arg("--expect").arg(f);
    }
    let t = Instant::now();
    let res = cmd.output().expect("python3 runs the probe");
    let elapsed = t.elapsed();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let report = stdout.lines().last().unwrap_or("").to_owned();
    let stderr = String::from_utf8_lossy(&res.stderr);
    if !stderr.trim().is_empty() {
        eprintln!("probe stderr:\n{stderr}");
    }
    eprintln!("probe report: {report}");
    Probe {
        code: res.status.code(),
        report,
        rgb: std::fs::read(&out).ok(),
        elapsed,
    }
}

fn start_demo(password: Option<&str>, frames: u64, fps: u32) -> Demo {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = ServerConfig {
        port: 0,
        disable_ticketing: password.is_none(),
        password: password.map(str::to_owned),
        ..ServerConfig::default()
    };
    Demo::start(
        DemoOptions {
            server,
            fps,
            frames: Some(frames),
        },
        Box::new(DesktopScene::new(W, H)),
    )
    .expect("demo starts")
}

/// Waits until the demo's guest drew `frames` frames and the worker rendered them.
fn wait_frames(demo: &Demo, frames: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while demo
        .stats()
        .frames
        .load(std::sync::atomic::Ordering::SeqCst)
        < frames
    {
        assert!(
            Instant::now() < deadline,
            "the demo did not draw {frames} frames"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    demo.display().sync().unwrap();
}

/// The scene's own picture after `frames` frames, as R,G,B.
fn reference_rgb(frames: u64) -> Vec<u8> {
    let mut scene = DesktopScene::new(W, H);
    for n in 0..frames {
        let _ = scene.frame(n);
    }
    bgrx_to_rgb(scene.framebuffer())
}

fn count_diff(a: &[u8], b: &[u8]) -> usize {
    a.chunks_exact(3)
        .zip(b.chunks_exact(3))
        .filter(|(x, y)| x != y)
        .count()
}

/// spice-html5 warnings our server may cause: it implements neither DISPLAY_MARK
/// (QEMU sends one too), MAIN_MULTI_MEDIA_TIME (it has no use for the clock) nor
/// CURSOR_MOVE (in server mouse mode the guest moves the cursor; spice-html5 only
/// sets the CSS cursor shape), and ignores them. Anything else means we sent
/// something it cannot handle.
fn assert_only_known_warnings(p: &Probe) {
    const HARMLESS: [&str; 3] = ["(Display Mark)", "(Main Multi Media Time)", "(Cursor Move)"];
    let unknown: Vec<&str> = p
        .warnings()
        .split("\", \"")
        .map(|w| w.trim_matches('"'))
        .filter(|w| !w.is_empty() && !HARMLESS.iter().any(|h| w.contains(h)))
        .collect();
    assert!(
        unknown.is_empty(),
        "spice-html5 could not handle what the server sent: {unknown:?}"
    );
}

fn assert_canvas_is(p: &Probe, want: &[u8], what: &str) {
    let got = p.rgb.as_ref().expect("the probe dumped the canvas");
    assert_eq!(got.len(), want.len(), "canvas size vs {what}");
    let diff = count_diff(got, want);
    assert_eq!(
        diff, 0,
        "browser canvas differs from {what} in {diff} pixels"
    );
}

fn print_timings(label: &str, p: &Probe) {
    eprintln!(
        "spice-html5 {label}: page load (navigate) to first complete frame {} ms, \
         load event to frame {} ms, whole probe (websockify + chromium start) {:?}",
        p.number("navigate_to_match_ms")
            .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
        p.number("load_to_match_ms")
            .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
        p.elapsed
    );
}

/// The static picture: the guest finished drawing before the browser connects.
fn static_frame(password: Option<&str>, label: &str) {
    const FRAMES: u64 = 10;
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut demo = start_demo(password, FRAMES, 60);
    wait_frames(&demo, FRAMES);
    let (w, h, bgrx) = demo.display().screenshot(0).expect("primary exists");
    assert_eq!((w, h), (W, H));
    let worker = bgrx_to_rgb(&bgrx);
    let scene = reference_rgb(FRAMES);
    assert_eq!(
        count_diff(&worker, &scene),
        0,
        "worker screenshot vs the scene's framebuffer"
    );
    let port = demo.local_addr().unwrap().port();
    let dir = scratch(label);
    let p = run_probe(port, password, Some(&worker), &dir, 40);
    assert_eq!(p.code, Some(0), "probe failed: {}", p.report);
    assert_canvas_is(&p, &worker, "the worker's screenshot");
    assert_canvas_is(&p, &scene, "the scene's framebuffer");
    assert_only_known_warnings(&p);
    print_timings(label, &p);
    demo.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn browser_console_shows_the_demo_frame_pixel_exact() {
    static_frame(None, "no-ticketing");
}

#[test]
fn browser_console_with_a_password() {
    static_frame(Some("s3cret pass"), "password");
}

#[test]
fn browser_console_refuses_a_wrong_password() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let demo = start_demo(Some("right"), 1, 60);
    wait_frames(&demo, 1);
    let dir = scratch("wrong-password");
    let p = run_probe(
        demo.local_addr().unwrap().port(),
        Some("wrong"),
        None,
        &dir,
        20,
    );
    assert_eq!(p.code, Some(3), "expected an auth failure: {}", p.report);
    assert!(
        p.report.contains("Permission denied"),
        "spice-html5 should say Permission denied: {}",
        p.report
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The browser connects while the guest animates: it must follow every update
/// (scrolls, fills, copies) and end on exactly the last frame.
#[test]
fn browser_console_follows_the_animation_to_the_last_frame() {
    const FRAMES: u64 = 48;
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let scene = reference_rgb(FRAMES);
    let mut demo = start_demo(None, FRAMES, 12);
    let dir = scratch("animation");
    let p = run_probe(
        demo.local_addr().unwrap().port(),
        None,
        Some(&scene),
        &dir,
        40,
    );
    assert_eq!(p.code, Some(0), "probe failed: {}", p.report);
    wait_frames(&demo, FRAMES);
    let (_, _, bgrx) = demo.display().screenshot(0).expect("primary exists");
    assert_canvas_is(&p, &bgrx_to_rgb(&bgrx), "the worker's screenshot");
    assert_canvas_is(&p, &scene, "the scene's framebuffer");
    assert_only_known_warnings(&p);
    demo.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
