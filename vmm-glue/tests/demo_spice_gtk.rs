//! End to end: `qxl-vmm demo` (real QXL device, mock Linux driver playing the
//! desktop scene, SPICE server) against the real spice-gtk client.

// Test code: panics are the failure reports; the shared client harness has
// helpers this file does not use.
#![allow(clippy::unwrap_used, dead_code, missing_docs)]

#[path = "../../spice-server/tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spice_server::ServerConfig;
use vmm_glue::demo::{Demo, DemoOptions};
use vmm_glue::scene::{DesktopScene, Scene};

const W: u32 = 1024;
const H: u32 = 768;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(frames: Option<u64>, fps: u32) -> (Demo, u16) {
    let port = free_port();
    let demo = Demo::start(
        DemoOptions {
            server: ServerConfig {
                port,
                disable_ticketing: true,
                ..ServerConfig::default()
            },
            fps,
            frames,
        },
        Box::new(DesktopScene::new(W, H)),
    )
    .unwrap();
    (demo, port)
}

fn wait_frames(demo: &Demo, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while demo.stats().frames.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the demo guest stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    demo.display().sync().unwrap();
}

/// The scene's own framebuffer after `n` frames (an independent copy).
fn reference(n: u64) -> Vec<u8> {
    let mut s = DesktopScene::new(W, H);
    for i in 0..n {
        s.frame(i);
    }
    s.framebuffer().to_vec()
}

fn rgb(bgrx: &[u8]) -> Vec<u8> {
    common::bgrx_to_rgb(bgrx)
}

fn save_png(path: &std::path::Path, w: u32, h: u32, rgb: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    e.set_color(png::ColorType::Rgb);
    e.write_header().unwrap().write_image_data(rgb).unwrap();
}

#[test]
fn demo_frames_arrive_pixel_exact_in_spice_gtk() {
    let frames = 12;
    let (demo, port) = start(Some(frames), 60);
    wait_frames(&demo, frames);
    let (w, h, shot) = demo.display().screenshot(0).unwrap();
    assert_eq!((w, h), (W, H));
    let want = reference(frames);
    assert!(
        rgb(&shot) == rgb(&want),
        "the worker's canvas differs from the scene's framebuffer"
    );

    let t = Instant::now();
    let s = common::spicy_screenshot(port, None, Duration::from_secs(30));
    let (pw, ph, ppm) = s
        .ppm
        .unwrap_or_else(|| panic!("no screenshot: {}", s.stderr));
    assert_eq!((pw, ph), (W, H));
    let diff = ppm
        .chunks_exact(3)
        .zip(rgb(&shot).chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(diff, 0, "spice-gtk's picture differs in {diff} pixels");
    println!(
        "spicy-screenshot: connect to complete frame in {:?} (whole process)",
        t.elapsed()
    );
    // The README's picture comes from here.
    let out =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/demo-screenshot.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    save_png(&out, pw, ph, &ppm);
}

#[test]
fn demo_cursor_and_inputs_reach_their_ends() {
    let frames = 10;
    let (demo, port) = start(Some(frames), 60);
    wait_frames(&demo, frames);
    let mut p = common::Probe::start(port, None, "main,display,cursor,inputs");
    let timing = p.wait_for("TIMING", Duration::from_secs(20), |l| {
        l.starts_with("TIMING ")
    });
    println!("gobject probe: {timing}");
    // The cursor INIT may arrive before or after the first frame.
    let set = match p.log.iter().find(|l| l.starts_with("CURSOR_SET ")) {
        Some(l) => l.clone(),
        None => p.wait_for("CURSOR_SET", Duration::from_secs(20), |l| {
            l.starts_with("CURSOR_SET ")
        }),
    };
    assert!(set.starts_with("CURSOR_SET 32 32 0 0 "), "{set}");
    // The scene's arrow shape arrives intact (BGRA bytes in hex).
    let hex: String = vmm_glue::scene::arrow_cursor()
        .data
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(set.ends_with(&hex), "cursor pixels differ: {set:.80}");
    // Inputs: a key press and release reach the demo's input sink.
    p.wait_seen("OPENED inputs:0", Duration::from_secs(20));
    let before = demo.stats().input_events.load(Ordering::Relaxed);
    for cmd in ["key_press 0x1e", "key_release 0x1e"] {
        p.send(cmd);
        let r = p.wait_for("SENT", Duration::from_secs(10), |l| {
            l == "SENT" || l.starts_with("ERROR")
        });
        assert_eq!(r, "SENT");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while demo.stats().input_events.load(Ordering::Relaxed) < before + 2 {
        assert!(
            Instant::now() < deadline,
            "input events never reached the sink"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn demo_stalled_client_does_not_stall_the_guest() {
    let (demo, port) = start(None, 120);
    wait_frames(&demo, 5);
    let mut p = common::Probe::start(port, None, "main,display,cursor");
    p.wait_for("MARK", Duration::from_secs(20), |l| l == "MARK");
    // Freeze the client: it stops reading its sockets.
    let pid = p.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let f0 = demo.stats().frames.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let f1 = demo.stats().frames.load(Ordering::Relaxed);
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    // At 120 frames/s the guest must have kept drawing (and the device kept
    // releasing: every frame drains the release ring) while the client slept.
    assert!(f1 - f0 > 100, "guest stalled: {f0} -> {f1} frames in 3 s");
    // And the client catches up afterwards.
    p.wait_for("INVALIDATE", Duration::from_secs(20), |l| {
        l.starts_with("INVALIDATE")
    });
}
