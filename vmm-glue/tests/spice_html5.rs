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

/// A per-test directory in cargo's scratch space (inside `target/`); a test
/// that passes removes it, one that fails leaves its logs there.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("html5-{}-{name}", std::process::id()));
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

/// Starts the probe against the SPICE server on `port`, for a canvas of `size`.
fn spawn_probe(
    port: u16,
    password: Option<&str>,
    expect_rgb: Option<&[u8]>,
    dir: &Path,
    timeout_s: u32,
    size: (u32, u32),
) -> (std::process::Child, PathBuf, Instant) {
    require_browser_console();
    let out = dir.join("canvas.rgb");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(python());
    cmd.arg(PROBE)
        .args(["--spice-port", &port.to_string()])
        .args(["--size", &format!("{}x{}", size.0, size.1)])
        .args(["--timeout", &timeout_s.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(pw) = password {
        cmd.args(["--password", pw]);
    }
    if let Some(rgb) = expect_rgb {
        let f = dir.join("expected.rgb");
        std::fs::write(&f, rgb).unwrap();
        cmd.arg("--expect").arg(f);
    }
    (
        cmd.spawn().expect("python3 runs the probe"),
        out,
        Instant::now(),
    )
}

/// Waits for a probe started by [`spawn_probe`].
fn finish_probe((child, out, t): (std::process::Child, PathBuf, Instant)) -> Probe {
    let res = child.wait_with_output().expect("the probe ends");
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

/// Runs the probe against the demo's SPICE server on `port` (a `W`×`H` desktop).
fn run_probe(
    port: u16,
    password: Option<&str>,
    expect_rgb: Option<&[u8]>,
    dir: &Path,
    timeout_s: u32,
) -> Probe {
    finish_probe(spawn_probe(
        port,
        password,
        expect_rgb,
        dir,
        timeout_s,
        (W, H),
    ))
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
    assert_only_html5_messages(demo.display());
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
    assert_only_html5_messages(demo.display());
    // The terminal scrolls with COPY_BITS, which spice-html5 renders natively.
    assert!(demo.display().messages_sent(MSG_COPY_BITS) > 0);
    print_timings("mid-animation", &p);
    demo.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ every draw type

mod draws {
    //! Draws of every kind straight into the server's display worker: spice-html5
    //! must get what it renders natively (solid fills, plain copies, COPY_BITS) and
    //! images of the result for the rest, so its canvas equals the worker's.
    #![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

    use spice_server::command::{
        BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, Clip, Command, CopyOp, DisplaySink, DrawOp,
        Drawable, Image, ImageData, Palette, Point, Rect, Ropd, ScaleMode, SurfaceCmd,
        SurfaceCreate, SurfaceFormat,
    };

    pub const W: u32 = 320;
    pub const H: u32 = 240;

    fn cmd(surface_id: u32, bbox: Rect, clip: Clip, op: DrawOp) -> Command {
        Command::Draw(Drawable {
            surface_id,
            effect: 0,
            self_bitmap: None,
            bbox,
            clip,
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op,
        })
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            })
            .collect()
    }

    fn bitmap(format: BitmapFormat, w: u32, h: u32, seed: u32, f: impl Fn(&mut [u8])) -> Image {
        let stride = (w * format.bpp()).div_ceil(8).next_multiple_of(4);
        let mut data = bytes((stride * h) as usize, seed);
        f(&mut data);
        let palette = format.has_palette().then(|| Palette {
            unique: 0,
            entries: bytes(4 << format.bpp(), seed ^ 0x55)
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]))
                .collect(),
        });
        Image {
            id: 0,
            flags: 0,
            width: w,
            height: h,
            data: ImageData::Bitmap(Bitmap {
                format,
                flags: BITMAP_TOP_DOWN,
                width: w,
                height: h,
                stride,
                palette,
                data,
            }),
        }
    }

    fn rgb32(w: u32, h: u32, seed: u32) -> Image {
        bitmap(BitmapFormat::Rgb32, w, h, seed, |d| {
            for p in d.chunks_exact_mut(4) {
                p[3] = 0;
            }
        })
    }

    fn copy(src: Image, src_area: Rect, rop: u16, scale_mode: ScaleMode) -> DrawOp {
        DrawOp::Copy(CopyOp {
            src: Box::new(src),
            src_area,
            rop: Ropd(rop),
            scale_mode,
            mask: None,
        })
    }

    fn fill(color: u32, rop: u16) -> DrawOp {
        DrawOp::Fill {
            brush: Brush::Solid(color),
            rop: Ropd(rop),
            mask: None,
        }
    }

    fn surface(id: u32, format: SurfaceFormat, w: u32, h: u32) -> SurfaceCreate {
        SurfaceCreate {
            surface_id: id,
            format,
            width: w,
            height: h,
            stride: -((w * 4) as i32),
            flags: 0,
            position: 0,
            initial: None,
        }
    }

    /// Draws the test picture; returns what each step was, for messages.
    pub fn play(d: &mut dyn DisplaySink) -> Vec<&'static str> {
        let r = Rect::new;
        let put = Ropd::OP_PUT;
        let mut steps = Vec::new();
        let mut go = |name: &'static str, c: Command| {
            steps.push(name);
            d.command(c);
        };
        let bg = rgb32(W, H, 1);
        go(
            "background copy",
            cmd(
                0,
                r(0, 0, 320, 240),
                Clip::None,
                copy(bg, r(0, 0, 320, 240), put, ScaleMode::Nearest),
            ),
        );
        go(
            "solid fill",
            cmd(0, r(4, 4, 60, 40), Clip::None, fill(0x0012_3456, put)),
        );
        go(
            "clipped fill",
            cmd(
                0,
                r(64, 4, 150, 60),
                Clip::Rects(vec![r(64, 4, 90, 30), r(100, 20, 150, 60)]),
                fill(0x00ff_8800, put),
            ),
        );
        go(
            "xor fill",
            cmd(
                0,
                r(154, 4, 220, 60),
                Clip::None,
                fill(0x00f0_0f5a, Ropd::OP_XOR),
            ),
        );
        go(
            "invers",
            cmd(
                0,
                r(224, 4, 300, 60),
                Clip::None,
                DrawOp::Invers { mask: None },
            ),
        );
        go(
            "plain copy",
            cmd(
                0,
                r(4, 64, 68, 112),
                Clip::None,
                copy(rgb32(64, 48, 2), r(0, 0, 64, 48), put, ScaleMode::Nearest),
            ),
        );
        go(
            "clipped copy",
            cmd(
                0,
                r(72, 64, 136, 112),
                Clip::Rects(vec![r(72, 64, 100, 90), r(110, 80, 136, 112)]),
                copy(rgb32(64, 48, 3), r(0, 0, 64, 48), put, ScaleMode::Nearest),
            ),
        );
        go(
            "scaled copy",
            cmd(
                0,
                r(140, 64, 204, 112),
                Clip::None,
                copy(rgb32(32, 24, 4), r(0, 0, 32, 24), put, ScaleMode::Nearest),
            ),
        );
        go(
            "8-bit palette copy",
            cmd(
                0,
                r(208, 64, 272, 112),
                Clip::None,
                copy(
                    bitmap(BitmapFormat::EightBit, 64, 48, 5, |_| {}),
                    r(0, 0, 64, 48),
                    put,
                    ScaleMode::Nearest,
                ),
            ),
        );
        go(
            "rgba copy (alpha)",
            cmd(
                0,
                r(4, 116, 68, 164),
                Clip::None,
                copy(
                    bitmap(BitmapFormat::Rgba, 64, 48, 6, |d| {
                        for p in d.chunks_exact_mut(4) {
                            let a = p[3];
                            for c in &mut p[..3] {
                                *c = ((u16::from(*c) * u16::from(a)) / 255) as u8;
                            }
                        }
                    }),
                    r(0, 0, 64, 48),
                    put,
                    ScaleMode::Nearest,
                ),
            ),
        );
        go(
            "blend",
            cmd(
                0,
                r(72, 116, 136, 164),
                Clip::None,
                DrawOp::Blend(CopyOp {
                    src: Box::new(rgb32(64, 48, 7)),
                    src_area: r(0, 0, 64, 48),
                    rop: Ropd(Ropd::OP_OR),
                    scale_mode: ScaleMode::Nearest,
                    mask: None,
                }),
            ),
        );
        go(
            "rop3",
            cmd(
                0,
                r(140, 116, 204, 164),
                Clip::None,
                DrawOp::Rop3 {
                    src: Box::new(rgb32(64, 48, 8)),
                    src_area: r(0, 0, 64, 48),
                    brush: Brush::Solid(0x0033_cc99),
                    rop3: 0xe2,
                    scale_mode: ScaleMode::Nearest,
                    mask: None,
                },
            ),
        );
        go(
            "alpha blend",
            cmd(
                0,
                r(208, 116, 272, 164),
                Clip::None,
                DrawOp::AlphaBlend {
                    alpha_flags: 0,
                    alpha: 100,
                    src: Box::new(rgb32(64, 48, 9)),
                    src_area: r(0, 0, 64, 48),
                },
            ),
        );
        go(
            "copy bits",
            cmd(
                0,
                r(276, 64, 316, 164),
                Clip::None,
                DrawOp::CopyBits {
                    src_pos: Point { x: 4, y: 4 },
                },
            ),
        );
        // Off-screen surfaces, then copies from them to the primary.
        go(
            "xrgb surface",
            Command::Surface(SurfaceCmd::Create(surface(
                1,
                SurfaceFormat::Xrgb32,
                64,
                48,
            ))),
        );
        go(
            "fill on surface 1",
            cmd(1, r(0, 0, 64, 48), Clip::None, fill(0x0000_80ff, put)),
        );
        go(
            "copy on surface 1",
            cmd(
                1,
                r(8, 8, 40, 32),
                Clip::None,
                copy(rgb32(32, 24, 10), r(0, 0, 32, 24), put, ScaleMode::Nearest),
            ),
        );
        go(
            "argb surface",
            Command::Surface(SurfaceCmd::Create(surface(
                2,
                SurfaceFormat::Argb32,
                64,
                48,
            ))),
        );
        go(
            "half-transparent copy on surface 2",
            cmd(
                2,
                r(0, 0, 64, 48),
                Clip::None,
                copy(
                    bitmap(BitmapFormat::Rgba, 64, 48, 11, |d| {
                        for p in d.chunks_exact_mut(4) {
                            p[3] = 0x80;
                            for c in &mut p[..3] {
                                *c >>= 1;
                            }
                        }
                    }),
                    r(0, 0, 64, 48),
                    put,
                    ScaleMode::Nearest,
                ),
            ),
        );
        let from = |id: u32| Image {
            id: 0,
            flags: 0,
            width: 64,
            height: 48,
            data: ImageData::Surface(id),
        };
        go(
            "copy from surface 1",
            cmd(
                0,
                r(4, 170, 68, 218),
                Clip::None,
                copy(from(1), r(0, 0, 64, 48), put, ScaleMode::Nearest),
            ),
        );
        go(
            "copy from surface 2",
            cmd(
                0,
                r(72, 170, 136, 218),
                Clip::None,
                copy(from(2), r(0, 0, 64, 48), put, ScaleMode::Nearest),
            ),
        );
        go(
            "destroy surface 2",
            Command::Surface(SurfaceCmd::Destroy { surface_id: 2 }),
        );
        go(
            "last fill",
            cmd(0, r(316, 236, 320, 240), Clip::None, fill(0x00ab_cdef, put)),
        );
        steps
    }
}

/// Every draw type through the server straight into spice-html5, once connected
/// before the draws (native messages for what it renders, images for the rest)
/// and once after them (the resync): the canvas must equal the worker's.
#[test]
fn browser_console_renders_every_draw_type_exactly() {
    use spice_server::command::{DisplaySink, SurfaceCreate, SurfaceFormat};
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = env_logger::builder().is_test(true).try_init();
    let start = || {
        let config = ServerConfig {
            port: 0,
            disable_ticketing: true,
            ..ServerConfig::default()
        };
        let (server, mut display) =
            spice_server::SpiceServer::start(config, Box::new(spice_server::NoInput)).unwrap();
        display.create_primary(SurfaceCreate {
            surface_id: 0,
            format: SurfaceFormat::Xrgb32,
            width: draws::W,
            height: draws::H,
            stride: -i32::try_from(draws::W * 4).unwrap(),
            flags: 0,
            position: 0,
            initial: None,
        });
        (server, display)
    };
    // The expected picture, from a server nobody watches.
    let want = {
        let (server, mut display) = start();
        draws::play(&mut display);
        display.sync().unwrap();
        let (w, h, bgrx) = display.screenshot(0).expect("primary exists");
        assert_eq!((w, h), (draws::W, draws::H));
        server.shutdown();
        bgrx_to_rgb(&bgrx)
    };
    let size = (draws::W, draws::H);
    let dir = scratch("draws");

    // Connected first: the draws reach the browser as they happen.
    let (server, mut display) = start();
    let port = server.local_addr().port();
    let probe = spawn_probe(port, None, Some(&want), &dir, 40, size);
    let deadline = Instant::now() + Duration::from_secs(40);
    while display.messages_sent(MSG_MARK) == 0 {
        assert!(
            Instant::now() < deadline,
            "spice-html5 never got the primary"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let steps = draws::play(&mut display);
    display.sync().unwrap();
    let p = finish_probe(probe);
    assert_eq!(
        p.code,
        Some(0),
        "probe failed after {steps:?}: {}",
        p.report
    );
    let (_, _, bgrx) = display.screenshot(0).expect("primary exists");
    assert_canvas_is(&p, &bgrx_to_rgb(&bgrx), "the worker's screenshot");
    assert_only_known_warnings(&p);
    assert_only_html5_messages(&display);
    for ty in [MSG_DRAW_FILL, MSG_DRAW_COPY] {
        assert!(
            display.messages_sent(ty) > 0,
            "no native message of type {ty}"
        );
    }

    // Connected afterwards: the resync brings the same picture.
    let p = finish_probe(spawn_probe(port, None, Some(&want), &dir, 40, size));
    assert_eq!(p.code, Some(0), "resync probe failed: {}", p.report);
    assert_canvas_is(&p, &want, "the expected picture");
    assert_only_known_warnings(&p);
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts that the server sent spice-html5 only display messages it renders.
fn assert_only_html5_messages(display: &spice_server::DisplayHandle) {
    let sent: Vec<(u16, u64)> = (101..=330)
        .map(|t| (t, display.messages_sent(t)))
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!("display messages sent to spice-html5 (type, count): {sent:?}");
    for (ty, n) in &sent {
        assert!(
            SPICE_HTML5_DRAWS.contains(ty),
            "sent {n} display messages of type {ty}, which spice-html5 does not render"
        );
    }
}

/// `SPICE_MSG_DISPLAY_MARK`.
const MSG_MARK: u16 = 102;
/// `SPICE_MSG_DISPLAY_COPY_BITS`.
const MSG_COPY_BITS: u16 = 104;
/// `SPICE_MSG_DISPLAY_DRAW_FILL`.
const MSG_DRAW_FILL: u16 = 302;
/// `SPICE_MSG_DISPLAY_DRAW_COPY`.
const MSG_DRAW_COPY: u16 = 304;
/// Display messages spice-html5 handles (or harmlessly ignores: MARK,
/// INVAL_ALL_PALETTES): display.js.
const SPICE_HTML5_DRAWS: [u16; 10] = [
    101, // MODE (ignored)
    102, // MARK (ignored)
    103, // RESET
    MSG_COPY_BITS,
    105, // INVAL_LIST
    108, // INVAL_ALL_PALETTES (ignored)
    MSG_DRAW_FILL,
    MSG_DRAW_COPY,
    314, // SURFACE_CREATE
    315, // SURFACE_DESTROY
];
