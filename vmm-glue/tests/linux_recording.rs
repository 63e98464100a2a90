//! The real Linux `drm/qxl` driver's command stream, replayed through our
//! device into our SPICE server, must leave exactly the frame the real QEMU +
//! libspice-server showed.
//!
//! The recording lives in `shared/recordings/` next to the repository
//! checkout (`../shared` from the repo root); when it is missing these tests
//! fail: they are never skipped.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    missing_docs
)]

#[path = "../../spice-server/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devices::qxl::spice_record::{RecordBody, WorkerMessage};
use spice_server::ServerConfig;
use spice_server::command::{Command, CursorCmd, DrawOp, ImageData};
use vmm_glue::record_replay::{
    ReplayOptions, ReplayServer, ServeOptions, fnv1a64, is_spice_record, open_recording,
};

/// The guest's own FNV-1a 64 of its 1024×768 BGRX framebuffer at the end.
const GUEST_FB_HASH: u64 = 0xf0dc_e305_e901_7ce9;

fn recordings() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/recordings");
    assert!(
        dir.join("linux-drm-qxl-workload.record.zst").exists(),
        "{} is missing: the shared recordings must sit beside the checkout (this test is never skipped)",
        dir.display()
    );
    dir
}

fn recording() -> PathBuf {
    recordings().join("linux-drm-qxl-workload.record.zst")
}

/// The reference frame as RGB rows.
fn reference_rgb() -> (u32, u32, Vec<u8>) {
    let f = std::fs::File::open(recordings().join("linux-drm-qxl-workload.final.png")).unwrap();
    let mut dec = png::Decoder::new(f);
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, rgb)
}

fn bgrx_to_rgb(bgrx: &[u8]) -> Vec<u8> {
    bgrx.chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

fn count_diff(a: &[u8], b: &[u8], width: u32) -> (usize, Option<(usize, usize)>) {
    let mut n = 0;
    let mut first = None;
    for (i, (x, y)) in a.chunks_exact(3).zip(b.chunks_exact(3)).enumerate() {
        if x != y {
            n += 1;
            let w = width as usize;
            first.get_or_insert((i % w, i / w));
        }
    }
    (n, first)
}

#[test]
fn recording_parses_completely_with_the_documented_contents() {
    assert!(is_spice_record(&recording()));
    let mut reader = open_recording(&recording()).unwrap();
    let (mut events, mut draws, mut vga_draws, mut sets, mut moves) = (0u64, 0, 0, 0, 0);
    let mut pixels = 0u64;
    let mut primaries = Vec::new();
    while let Some(ev) = reader.next_event().unwrap() {
        assert_eq!(u64::from(ev.counter), events, "event counter");
        events += 1;
        match &ev.body {
            RecordBody::Command {
                command: Command::Draw(d),
                compat,
            } => {
                assert!(!compat);
                draws += 1;
                let DrawOp::Copy(c) = &d.op else {
                    panic!("event {}: not a COPY", ev.counter)
                };
                let ImageData::Bitmap(b) = &c.src.data else {
                    panic!("not a bitmap")
                };
                assert!(b.is_top_down());
                pixels += u64::from(b.width) * u64::from(b.height);
                if c.src.id & 0xffff_ffff == 1 && c.src.id >> 32 != 0 {
                    vga_draws += 1;
                    assert_eq!(b.stride, b.width * 4, "VGA draws have a tight stride");
                }
            }
            RecordBody::Command {
                command: Command::Cursor(CursorCmd::Set { shape, .. }),
                ..
            } => {
                sets += 1;
                assert_eq!(
                    (shape.width, shape.height, shape.data.len()),
                    (64, 64, 16384)
                );
            }
            RecordBody::Command {
                command: Command::Cursor(CursorCmd::Move { .. }),
                ..
            } => moves += 1,
            RecordBody::Worker {
                message:
                    WorkerMessage::CreatePrimarySurface | WorkerMessage::CreatePrimarySurfaceAsync,
                primary: Some(p),
            } => primaries.push((p.width, p.height, p.stride)),
            _ => {}
        }
    }
    assert_eq!(events, 1331);
    assert_eq!((draws, vga_draws), (394, 37));
    assert_eq!((sets, moves), (2, 340));
    assert_eq!(primaries.last(), Some(&(1024, 768, 4096)));
    assert!(primaries.contains(&(64, 64, 256)));
    assert!(primaries.contains(&(640, 480, -2560)));
    // "bitmap payload 62.8 Mpixel"
    assert_eq!(pixels / 100_000, 628, "{pixels} pixels");
}

/// Counts the bytes the server sends through a loopback proxy.
struct CountingProxy {
    port: u16,
    to_client: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let to_client = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, st) = (Arc::clone(&to_client), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                let count = Arc::clone(&count);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match std::io::Read::read(&mut s2, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                count.fetch_add(n as u64, Ordering::Relaxed);
                                if c2.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            port,
            to_client,
            stop,
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One spicy-screenshot run against `127.0.0.1:port` (the shared real-client
/// harness): the primary surface as RGB.
fn spicy_screenshot(port: u16) -> (u32, u32, Vec<u8>) {
    let s = common::spicy_screenshot(port, None, Duration::from_secs(60));
    s.ppm
        .unwrap_or_else(|| panic!("no screenshot ({:?})\n{}", s.status, s.stderr))
}

#[test]
fn replay_through_device_and_server_gives_the_reference_frame() {
    let (rw, rh, reference) = reference_rgb();
    assert_eq!((rw, rh), (1024, 768));
    let server = ServerConfig {
        port: 0,
        disable_ticketing: true,
        ..ServerConfig::default()
    };
    let mut srv = ReplayServer::start(
        &recording(),
        ServeOptions {
            server,
            replay: ReplayOptions::default(),
        },
    )
    .unwrap();
    let stats = srv.wait_replayed().unwrap();
    eprintln!(
        "replay: {} events ({:.0}/s), {} draws ({:.0}/s), {} cursor commands, {} worker messages \
         ({} without a port action), {:.1} MB raw damage, {:.1} MB image payload, {:.2} s wall \
         for {:.2} s recorded, {} decode errors, {} guest bugs",
        stats.events,
        stats.events_per_sec(),
        stats.draws,
        stats.draws_per_sec(),
        stats.cursor_commands,
        stats.worker_messages,
        stats.messages_without_port,
        stats.damage_bytes as f64 / 1e6,
        stats.image_bytes as f64 / 1e6,
        stats.elapsed.as_secs_f64(),
        stats.recorded_ns as f64 / 1e9,
        stats.decode_errors,
        stats.guest_bugs,
    );
    assert_eq!(stats.events, 1331);
    assert_eq!(stats.draws, 394);
    assert_eq!(stats.cursor_commands, 342);
    assert_eq!(
        stats.guest_bugs, 0,
        "the replay must not trip the device's guest-bug latch"
    );

    // The worker's primary, pixel for pixel.
    let (w, h, bgrx) = srv.display().screenshot(0).expect("a primary surface");
    assert_eq!((w, h), (1024, 768));
    let (n, first) = count_diff(&bgrx_to_rgb(&bgrx), &reference, w);
    assert_eq!(
        n, 0,
        "{n} pixels differ from the reference frame, first at {first:?}"
    );

    // The guest's own framebuffer hash: BGRX with the X byte as the guest wrote it.
    let raw = fnv1a64(&bgrx);
    let x0: Vec<u8> = bgrx
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2], 0])
        .collect();
    let xff: Vec<u8> = bgrx
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2], 0xff])
        .collect();
    eprintln!(
        "fnv1a64: as rendered {raw:016x}, X=0 {:016x}, X=ff {:016x}",
        fnv1a64(&x0),
        fnv1a64(&xff)
    );
    assert_eq!(fnv1a64(&x0), GUEST_FB_HASH, "BGRX (X = 0) framebuffer hash");

    // What a real client sees of the served last frame, through a byte-counting proxy.
    let port = srv.local_addr().unwrap().port();
    let proxy = CountingProxy::start(port);
    let t = Instant::now();
    let (sw, sh, shot) = spicy_screenshot(proxy.port);
    eprintln!(
        "spicy-screenshot: {:.2} s, {} bytes sent by the server",
        t.elapsed().as_secs_f64(),
        proxy.to_client.load(Ordering::Relaxed)
    );
    assert_eq!((sw, sh), (1024, 768));
    let (n, first) = count_diff(&shot, &reference, sw);
    assert_eq!(
        n, 0,
        "spicy-screenshot: {n} pixels differ, first at {first:?}"
    );
    srv.shutdown();
}
