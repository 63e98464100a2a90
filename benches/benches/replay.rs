//! End to end: the real Linux `drm/qxl` recording (`shared/recordings/`)
//! replayed as fast as possible through the QXL device → display worker →
//! encoders → a real spice-gtk client on loopback.
//!
//! A bench binary (not criterion: one run is seconds of multi-threaded work,
//! and the figures are totals). The recording's events are parsed into memory
//! first, so parsing and zstd are not counted. Four configurations, each run
//! [`RUNS`] times, medians printed:
//!
//! - **as fast as possible, no client**: device + worker throughput;
//! - **as fast as possible, client**: `spicy-stats` (spice-gtk) connected
//!   through a byte-counting proxy in this process for the whole replay. The
//!   server merges what the client has not taken yet, so bytes drop with speed;
//! - **recorded pace** (events at their recorded times, 6.6 s), without and
//!   with the client: how the reference figures in
//!   `shared/recordings/README.md` were taken (QEMU 7.2 + libspice-server
//!   0.15.1 under a live guest: 31.4 MB sent for 232 MB of raw damage), so
//!   these bytes compare with it.
//!
//! Reported: draws ("frames" of damage: one DIRTYFB rectangle each) per
//! second of wall time until the client has received the last byte; process
//! CPU seconds (minus the proxy's threads) per frame; bytes to the client per
//! frame; the CPU the client costs the server (client run − no-client run,
//! the reference's "server work beyond the run without a client"); and a
//! memcpy of the same raw damage measured in the same run, for scale.
//! Last, the demo desktop's steady-state bytes per frame to the same client.
//!
//! Run: `cargo bench -p qxl-benches --bench replay` (needs `spicy-stats`
//! from Debian's `spice-client-gtk`, which `scripts/install-test-deps.sh`
//! installs; without it only the no-client figures are printed).

#![allow(clippy::cast_precision_loss)] // Seconds, megabytes and rates for humans.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devices::qxl::spice_record::RecordEvent;
use spice_server::{NoInput, ServerConfig, SpiceServer};
use vmm_glue::demo::{Demo, DemoOptions};
use vmm_glue::record_replay::{RecordReplayer, open_recording};
use vmm_glue::scene::DesktopScene;

/// Runs per configuration (medians are reported).
const RUNS: usize = 3;

fn recording() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/recordings/linux-drm-qxl-workload.record.zst")
}

/// This process's user + system CPU time.
fn process_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; getrusage only writes it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: getrusage succeeded and filled the struct (it was zeroed anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::from_secs(u64::try_from(ts.tv_sec).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// A loopback proxy that counts the bytes the server sends and the CPU its
/// own threads use (to subtract from the process's).
struct CountingProxy {
    port: u16,
    to_client: Arc<AtomicU64>,
    last_byte: Arc<std::sync::Mutex<Instant>>,
    cpu_ns: Arc<AtomicU64>,
    live: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let p = Self {
            port,
            to_client: Arc::new(AtomicU64::new(0)),
            last_byte: Arc::new(std::sync::Mutex::new(Instant::now())),
            cpu_ns: Arc::new(AtomicU64::new(0)),
            live: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (count, last, cpu, live, stop) = (
            Arc::clone(&p.to_client),
            Arc::clone(&p.last_byte),
            Arc::clone(&p.cpu_ns),
            Arc::clone(&p.live),
            Arc::clone(&p.stop),
        );
        std::thread::spawn(move || {
            let add_cpu = |cpu: &AtomicU64| {
                let ns = u64::try_from(thread_cpu().as_nanos()).unwrap_or(u64::MAX);
                cpu.fetch_add(ns, Ordering::Relaxed);
            };
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).expect("blocking");
                client.set_nodelay(true).expect("nodelay");
                let server = TcpStream::connect(("127.0.0.1", upstream)).expect("upstream");
                server.set_nodelay(true).expect("nodelay");
                let (mut c2, mut s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut c1, mut s1) = (client, server);
                live.fetch_add(2, Ordering::SeqCst);
                let (cpu1, live1) = (Arc::clone(&cpu), Arc::clone(&live));
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                    add_cpu(&cpu1);
                    live1.fetch_sub(1, Ordering::SeqCst);
                });
                let (count, last, cpu2, live2) = (
                    Arc::clone(&count),
                    Arc::clone(&last),
                    Arc::clone(&cpu),
                    Arc::clone(&live),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match s2.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                count.fetch_add(n as u64, Ordering::Relaxed);
                                if let Ok(mut l) = last.lock() {
                                    *l = Instant::now();
                                }
                                if c2.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                    add_cpu(&cpu2);
                    live2.fetch_sub(1, Ordering::SeqCst);
                });
            }
            add_cpu(&cpu);
        });
        p
    }

    fn bytes(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }

    fn last_byte(&self) -> Instant {
        *self.last_byte.lock().expect("lock")
    }

    /// Stops accepting and waits until every relay thread has ended.
    fn finish(&self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }
}

/// One replay's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// From the first event to the worker's sync (no client) or to the
    /// client's last byte.
    wall: Duration,
    /// Process CPU over the same span, without the proxy's threads.
    cpu: Duration,
    /// Bytes to the client.
    bytes: u64,
}

fn spicy_stats(port: u16) -> Child {
    Command::new("spicy-stats")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spicy-stats")
}

/// A SPICE server on a free loopback port, without ticketing.
fn start_server() -> (SpiceServer, spice_server::DisplayHandle) {
    SpiceServer::start(loopback_config(), Box::new(NoInput)).expect("server")
}

/// Loopback, a port the system picks, no ticketing.
fn loopback_config() -> ServerConfig {
    ServerConfig {
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        disable_ticketing: true,
        ..ServerConfig::default()
    }
}

fn replay_once(events: &[RecordEvent], with_client: bool, paced: bool) -> Run {
    let (server, display) = start_server();
    let mut client = None;
    let proxy = with_client.then(|| CountingProxy::start(server.local_addr().port()));
    if let Some(p) = &proxy {
        client = Some(spicy_stats(p.port));
        // main, display, cursor and inputs (at least the first three) linked.
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.connection_count() < 3 {
            assert!(Instant::now() < deadline, "spicy-stats did not connect");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut replayer = RecordReplayer::new(display.clone()).expect("replayer");
    let (cpu0, bytes0) = (
        process_cpu(),
        proxy.as_ref().map_or(0, CountingProxy::bytes),
    );
    let t0 = Instant::now();
    let first_ts = events.first().map_or(0, |e| e.timestamp_ns);
    for ev in events {
        if paced {
            let at = Duration::from_nanos(ev.timestamp_ns.saturating_sub(first_ts));
            if let Some(wait) = at.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        replayer.apply(ev).expect("apply");
    }
    replayer.finish().expect("finish");
    display.sync().expect("sync");
    let mut wall = t0.elapsed();
    let mut cpu = process_cpu().saturating_sub(cpu0);
    let mut bytes = 0;
    if let Some(p) = &proxy {
        // Delivered: no byte for 1 s.
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if p.last_byte().elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        let end = p.last_byte();
        wall = wall.max(end.saturating_duration_since(t0));
        // CPU up to now, minus 1 s of idle and the proxy's own work.
        cpu = process_cpu().saturating_sub(cpu0);
        bytes = p.bytes() - bytes0;
    }
    if let Some(mut c) = client {
        let _ = c.kill();
        let _ = c.wait();
    }
    server.shutdown();
    if let Some(p) = proxy {
        cpu = cpu.saturating_sub(p.finish());
    }
    drop(replayer);
    Run { wall, cpu, bytes }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing
    // useful either: this binary always runs the whole measurement.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let path = recording();
    let t = Instant::now();
    let events: Vec<RecordEvent> = open_recording(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.expect("event"))
        .collect();
    // The frame count and raw damage, from a device-only dry run.
    let stats = {
        let (server, display) = start_server();
        let mut r = RecordReplayer::new(display.clone()).expect("replayer");
        for ev in &events {
            r.apply(ev).expect("apply");
        }
        r.finish().expect("finish");
        display.sync().expect("sync");
        let s = r.stats().clone();
        server.shutdown();
        s
    };
    println!(
        "replay: {} events parsed in {:.2} s; {} draws, {:.1} MB raw damage",
        events.len(),
        t.elapsed().as_secs_f64(),
        stats.draws,
        mb(stats.damage_bytes)
    );
    let frames = stats.draws.max(1);

    // memcpy of the same raw damage, one 1024x768 frame at a time, from and
    // to buffers far larger than the caches (as the replay's bitmaps are).
    const FRAME: usize = 1024 * 768 * 4;
    let src = vec![0x5au8; 32 * FRAME];
    let mut dst = vec![0u8; 32 * FRAME];
    let memcpy = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut left = stats.damage_bytes;
                let mut i = 0;
                while left > 0 {
                    let n = usize::try_from(left).map_or(FRAME, |l| l.min(FRAME));
                    let at = (i % 32) * FRAME;
                    dst[at..at + n].copy_from_slice(std::hint::black_box(&src[at..at + n]));
                    std::hint::black_box(&dst);
                    left -= n as u64;
                    i += 7;
                }
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );

    let runs = |client: bool, paced: bool| -> Vec<Run> {
        (0..RUNS)
            .map(|_| replay_once(&events, client, paced))
            .collect()
    };
    let no_client = runs(false, false);
    let no_client_paced = runs(false, true);
    let have_client = Command::new("spicy-stats")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let (with_client, with_client_paced) = if have_client {
        (runs(true, false), runs(true, true))
    } else {
        println!("replay: spicy-stats not installed; client figures skipped");
        (Vec::new(), Vec::new())
    };

    let f = frames as f64;
    let report = |name: &str, runs: &[Run]| -> Option<(f64, f64, f64)> {
        if runs.is_empty() {
            return None;
        }
        let wall = median(runs.iter().map(|r| r.wall.as_secs_f64()).collect());
        let cpu = median(runs.iter().map(|r| r.cpu.as_secs_f64()).collect());
        let bytes = median(runs.iter().map(|r| r.bytes as f64).collect());
        println!(
            "replay {name}: {:.0} frames/s ({:.3} s wall), {:.3} CPU-s ({:.2} ms CPU/frame, \
             {:.1}x the memcpy of the damage), {:.2} MB to the client ({:.1} KB/frame); runs: {}",
            f / wall,
            wall,
            cpu,
            cpu / f * 1e3,
            cpu / memcpy,
            bytes / 1e6,
            bytes / f / 1e3,
            runs.iter()
                .map(|r| format!(
                    "{:.3}s/{:.3}cpu/{:.2}MB",
                    r.wall.as_secs_f64(),
                    r.cpu.as_secs_f64(),
                    r.bytes as f64 / 1e6
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Some((wall, cpu, bytes))
    };
    println!(
        "replay memcpy: {:.3} s for {:.1} MB of raw damage ({:.1} GB/s)",
        memcpy,
        mb(stats.damage_bytes),
        stats.damage_bytes as f64 / memcpy / 1e9
    );
    report("as-fast-as-possible no-client", &no_client);
    report("as-fast-as-possible spicy-stats", &with_client);
    let base = report("recorded-pace no-client", &no_client_paced);
    let client = report("recorded-pace spicy-stats", &with_client_paced);
    if have_client {
        println!(
            "demo desktop 1024x768 at 30 frames/s to spicy-stats: {:.1} KB/frame",
            demo_bytes_per_frame() / 1e3
        );
    }
    if let (Some((_, c0, _)), Some((_, c1, b))) = (base, client) {
        println!(
            "replay summary (recorded pace, as the reference was taken): {:.2} MB to the client \
             (reference QEMU 7.2 + libspice-server 0.15.1: 31.4 MB, 26.4-37.5); serving the \
             client cost {:.3} CPU-s beyond the no-client run ({:.2} ms/frame)",
            b / 1e6,
            c1 - c0,
            (c1 - c0) / f * 1e3
        );
    }
}

/// The demo desktop (`qxl-vmm demo`'s scene at 30 frames/s) to `spicy-stats`:
/// bytes per frame in the steady state (after the first full frame), median
/// of three 3-second windows.
fn demo_bytes_per_frame() -> f64 {
    let demo = Demo::start(
        DemoOptions {
            server: loopback_config(),
            fps: 30,
            frames: None,
        },
        Box::new(DesktopScene::new(1024, 768)),
    )
    .expect("demo");
    let proxy = CountingProxy::start(demo.local_addr().expect("addr").port());
    let mut client = spicy_stats(proxy.port);
    std::thread::sleep(Duration::from_secs(2));
    let mut per_frame = Vec::new();
    for _ in 0..3 {
        let (f0, b0) = (demo.stats().frames.load(Ordering::Relaxed), proxy.bytes());
        std::thread::sleep(Duration::from_secs(3));
        let (f1, b1) = (demo.stats().frames.load(Ordering::Relaxed), proxy.bytes());
        per_frame.push((b1 - b0) as f64 / (f1 - f0).max(1) as f64);
    }
    let _ = client.kill();
    let _ = client.wait();
    drop(demo);
    proxy.finish();
    median(per_frame)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}
