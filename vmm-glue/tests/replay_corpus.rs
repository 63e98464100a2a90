//! Generates the replay corpus from the mock Linux driver, replays every file
//! through a fresh device, and runs the `qxl-replay` tool on it.
//!
//! The corpus lands in `target/qxl-replay-corpus/`; the fuzz smoke run of
//! `scripts/test-all.sh` uses it as seeds for the `ring_replay` target.

// Test helpers panic on any unexpected failure; that is the point.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use devices::qxl::QxlConfig;
use devices::qxl::mock::driver::{MockQxlDriver, NotifyMode, RecordingSink, SinkEvent};
use devices::qxl::replay;
use spice_server::command::{
    Command, Head, MonitorsConfig, Rect, SurfaceCmd, SurfaceCreate, SurfaceFormat,
};
use vmm_glue::scene::{DesktopScene, Scene};

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/qxl-replay-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_config() -> QxlConfig {
    QxlConfig {
        ram_size: 8 << 20,
        vram_size: 4 << 20,
        vgamem_size: 2 << 20,
        ..QxlConfig::default()
    }
}

/// Record a scenario, write it to the corpus, replay it, and check that the
/// replayed device made exactly the same calls on its sink.
fn record_and_check(name: &str, scenario: impl FnOnce(&mut MockQxlDriver<RecordingSink>)) {
    let mut drv =
        MockQxlDriver::with_sink_recording(small_config(), RecordingSink::default()).unwrap();
    scenario(&mut drv);
    let file = drv.take_recording().unwrap();
    let path = corpus_dir().join(format!("{name}.qxlr"));
    std::fs::write(&path, &file).unwrap();

    let (report, dev) = replay::play(&file, RecordingSink::default()).unwrap();
    assert!(report.failures.is_empty(), "{name}: {:?}", report.failures);
    assert!(report.expectations > 0, "{name}: nothing was checked");
    assert_eq!(report.rejected, 0, "{name}");
    assert_eq!(
        dev.sink().events,
        drv.sink().events,
        "{name}: the replayed device decoded something else"
    );
    assert_eq!(dev.metrics().snapshot(), drv.device().metrics().snapshot());
}

fn desktop_frames(drv: &mut MockQxlDriver<RecordingSink>, frames: u64) {
    let mut scene = DesktopScene::new(640, 480);
    for n in 0..frames {
        let f = scene.frame(n);
        for c in f.draws.iter().chain(&f.cursor) {
            drv.push_command(c).unwrap();
        }
        drv.drain_releases().unwrap();
    }
}

#[test]
fn replay_corpus_linux_probe_and_desktop() {
    record_and_check("linux-desktop", |drv| {
        drv.probe().unwrap();
        drv.create_primary(640, 480, None).unwrap();
        desktop_frames(drv, 6);
        drv.update_area(0, Rect::new(0, 0, 640, 480)).unwrap();
        drv.notify_oom();
        drv.drain_releases().unwrap();
        assert_eq!(drv.outstanding(), 0);
    });
}

#[test]
fn replay_corpus_surfaces_and_monitors() {
    record_and_check("surfaces-monitors", |drv| {
        drv.probe().unwrap();
        drv.create_primary(320, 240, None).unwrap();
        let create = SurfaceCreate {
            surface_id: 1,
            format: SurfaceFormat::Xrgb32,
            width: 64,
            height: 32,
            stride: -256,
            flags: 0,
            position: 0,
            initial: None,
        };
        drv.push_command(&Command::Surface(SurfaceCmd::Create(create)))
            .unwrap();
        drv.update_area(1, Rect::new(0, 0, 64, 32)).unwrap();
        drv.push_command(&Command::Surface(SurfaceCmd::Destroy { surface_id: 1 }))
            .unwrap();
        drv.monitors_config(&MonitorsConfig {
            max_allowed: 4,
            heads: vec![Head {
                id: 0,
                surface_id: 0,
                width: 320,
                height: 240,
                x: 0,
                y: 0,
                flags: 0,
            }],
        })
        .unwrap();
        drv.destroy_primary().unwrap();
        drv.drain_releases().unwrap();
        assert!(
            drv.sink()
                .events
                .iter()
                .any(|e| matches!(e, SinkEvent::MonitorsConfig(_)))
        );
    });
}

#[test]
fn replay_corpus_eventfd_worker_and_full_ring() {
    record_and_check("eventfd-full-ring", |drv| {
        drv.probe().unwrap();
        drv.create_primary(640, 480, None).unwrap();
        drv.set_notify_mode(NotifyMode::Eventfd);
        desktop_frames(drv, 3);
        while drv.run_worker() {}
        drv.drain_releases().unwrap();
    });
}

#[test]
fn replay_corpus_guest_bug_and_reset() {
    record_and_check("guest-bug-reset", |drv| {
        drv.probe().unwrap();
        // CREATE_PRIMARY with a non-zero value is a guest bug; then RESET.
        drv.out(devices::qxl::abi::io::CREATE_PRIMARY, 1);
        assert!(drv.device().guest_bug());
        drv.out(devices::qxl::abi::io::RESET, 0);
        assert!(!drv.device().guest_bug());
    });
}

#[test]
fn replay_tool_replays_the_corpus() {
    // Make sure the corpus exists even when this test runs first.
    record_and_check("tool-smoke", |drv| {
        drv.probe().unwrap();
        drv.create_primary(640, 480, None).unwrap();
        desktop_frames(drv, 2);
    });
    let files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qxlr"))
        .collect();
    assert!(!files.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qxl-replay"))
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qxl-replay failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("draw copy"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");

    // A corrupted file is refused with a non-zero exit.
    let bad = corpus_dir().join("corrupt.bin");
    std::fs::write(&bad, b"QXLREPLAY\0\x01\x00\x7f").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qxl-replay"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_file(bad).unwrap();
}
