//! Helpers shared by the spice-server integration tests: a recording input
//! sink, a test scene, and drivers for the real spice-gtk clients.
#![allow(
    dead_code,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::missing_panics_doc
)]

/// Prints a `SKIP:` line past libtest's output capture (which only catches the
/// `print!` family), so that CI logs show why a test did not run for real.
/// (Include this module with `#[macro_use]`.)
#[allow(unused_macros)]
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command as Proc, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spice_server::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, Clip, Command, CopyOp, DisplaySink, DrawOp,
    Drawable, Image, ImageData, Palette, Point, Rect, Ropd, ScaleMode, SurfaceCreate,
    SurfaceFormat,
};
use spice_server::{DisplayHandle, InputSink, ServerConfig, SpiceServer};

/// One input call as the VMM saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    KeyDown(u32),
    KeyUp(u32),
    Abs(u32, u32, u16, u8),
    Rel(i32, i32, u16),
    Buttons(u16),
    Modifiers(u16),
}

/// An [`InputSink`] that records every call.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Ev>>>);

impl Recorder {
    pub fn events(&self) -> Vec<Ev> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn push(&self, e: Ev) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
}

impl InputSink for Recorder {
    fn key_down(&mut self, c: u32) {
        self.push(Ev::KeyDown(c));
    }
    fn key_up(&mut self, c: u32) {
        self.push(Ev::KeyUp(c));
    }
    fn pointer_absolute(&mut self, x: u32, y: u32, b: u16, d: u8) {
        self.push(Ev::Abs(x, y, b, d));
    }
    fn pointer_relative(&mut self, dx: i32, dy: i32, b: u16) {
        self.push(Ev::Rel(dx, dy, b));
    }
    fn buttons(&mut self, m: u16) {
        self.push(Ev::Buttons(m));
    }
    fn modifiers(&mut self, m: u16) {
        self.push(Ev::Modifiers(m));
    }
}

pub struct Harness {
    pub server: SpiceServer,
    pub display: DisplayHandle,
    pub inputs: Recorder,
}

impl Harness {
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }
}

pub fn init_log() {
    let _ = env_logger_lite();
}

fn env_logger_lite() -> Result<(), log::SetLoggerError> {
    struct L;
    impl log::Log for L {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("[{}] {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: L = L;
    log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info))
}

/// Starts a server on 127.0.0.1 with a free port.
pub fn start(mut config: ServerConfig) -> Harness {
    init_log();
    config.addr = std::net::Ipv4Addr::LOCALHOST.into();
    config.port = 0;
    let inputs = Recorder::default();
    let (server, display) =
        SpiceServer::start(config, Box::new(inputs.clone())).expect("server starts");
    Harness {
        server,
        display,
        inputs,
    }
}

pub fn open_config() -> ServerConfig {
    ServerConfig {
        disable_ticketing: true,
        ..ServerConfig::default()
    }
}

fn draw(bbox: Rect, clip: Clip, op: DrawOp) -> Command {
    Command::Draw(Drawable {
        surface_id: 0,
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

pub fn fill(r: Rect, color: u32) -> Command {
    draw(
        r,
        Clip::None,
        DrawOp::Fill {
            brush: Brush::Solid(color),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
    )
}

fn bitmap(format: BitmapFormat, w: u32, h: u32, top_down: bool, palette: Option<Palette>) -> Image {
    let bpp = format.bpp();
    let stride = (w * bpp).div_ceil(8).next_multiple_of(4);
    let mut data = vec![0u8; (stride * h) as usize];
    for (i, b) in data.iter_mut().enumerate() {
        *b = ((i * 7 + i / (stride as usize) * 13) % 251) as u8;
    }
    Image {
        id: 0,
        flags: 0,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format,
            flags: if top_down { BITMAP_TOP_DOWN } else { 0 },
            width: w,
            height: h,
            stride,
            palette,
            data,
        }),
    }
}

/// A top-down 32-bit bitmap copy of `w`x`h` pixels at `dst`'s corner.
pub fn copy_rgb32(dst: Rect, w: u32, h: u32) -> Command {
    copy(
        dst,
        bitmap(BitmapFormat::Rgb32, w, h, true, None),
        Rect::new(0, 0, w as i32, h as i32),
        Clip::None,
    )
}

pub fn copy(dst: Rect, img: Image, src_area: Rect, clip: Clip) -> Command {
    draw(
        dst,
        clip,
        DrawOp::Copy(CopyOp {
            src: Box::new(img),
            src_area,
            rop: Ropd(Ropd::OP_PUT),
            scale_mode: ScaleMode::Nearest,
            mask: None,
        }),
    )
}

pub fn primary(w: u32, h: u32) -> SurfaceCreate {
    SurfaceCreate {
        surface_id: 0,
        format: SurfaceFormat::Xrgb32,
        width: w,
        height: h,
        stride: -((w * 4) as i32),
        flags: 0,
        position: 0,
        initial: None,
    }
}

/// The test picture: a 640x480 primary with fills, clipped fills, copies of
/// 32/24/16/8-bit bitmaps (top-down and bottom-up), CopyBits and Invers.
pub fn scene(d: &mut DisplayHandle) {
    d.create_primary(primary(640, 480));
    d.command(fill(Rect::new(0, 0, 640, 480), 0x0020_3040));
    d.command(fill(Rect::new(10, 10, 200, 100), 0x00ff_0000));
    d.command(draw(
        Rect::new(220, 10, 420, 110),
        Clip::Rects(vec![
            Rect::new(220, 10, 300, 60),
            Rect::new(260, 40, 420, 110),
        ]),
        DrawOp::Fill {
            brush: Brush::Solid(0x0000_ff80),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
    ));
    d.command(copy(
        Rect::new(20, 150, 84, 198),
        bitmap(BitmapFormat::Rgb32, 64, 48, false, None),
        Rect::new(0, 0, 64, 48),
        Clip::None,
    ));
    d.command(copy(
        Rect::new(100, 150, 150, 190),
        bitmap(BitmapFormat::Rgb24, 60, 50, true, None),
        Rect::new(5, 5, 55, 45),
        Clip::None,
    ));
    d.command(copy(
        Rect::new(170, 150, 230, 200),
        bitmap(BitmapFormat::Rgb16, 60, 50, false, None),
        Rect::new(0, 0, 60, 50),
        Clip::Rects(vec![Rect::new(170, 150, 200, 200)]),
    ));
    let pal = Palette {
        unique: 0,
        entries: (0..256u32)
            .map(|i| (i * 0x0001_0307) & 0x00ff_ffff)
            .collect(),
    };
    d.command(copy(
        Rect::new(250, 150, 290, 190),
        bitmap(BitmapFormat::EightBit, 40, 40, true, Some(pal)),
        Rect::new(0, 0, 40, 40),
        Clip::None,
    ));
    d.command(draw(
        Rect::new(400, 300, 480, 360),
        Clip::None,
        DrawOp::CopyBits {
            src_pos: Point { x: 10, y: 10 },
        },
    ));
    d.command(draw(
        Rect::new(500, 400, 600, 470),
        Clip::None,
        DrawOp::Invers { mask: None },
    ));
}

/// BGRX rows to RGB (PPM order).
pub fn bgrx_to_rgb(bgrx: &[u8]) -> Vec<u8> {
    bgrx.chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

/// Parses a binary PPM (P6, maxval 255): (width, height, RGB).
pub fn parse_ppm(data: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while data.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        if *data.get(i)? == b'#' {
            while *data.get(i)? != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !data.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&data[start..i]).ok()?.to_owned());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let w: u32 = fields[1].parse().ok()?;
    let h: u32 = fields[2].parse().ok()?;
    Some((w, h, data.get(i..)?.to_vec()))
}

/// A fresh path for a client's output file (a screenshot, a surface dump).
///
/// The files live in cargo's scratch directory for integration tests (inside
/// `target/`, never `/tmp`) and every reader deletes its file once read, so a
/// test run leaves nothing behind: a full client dump is megabytes, and the
/// suites take hundreds of them.
pub fn tmp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("client-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Reads a file a client wrote for us and deletes it.
pub fn take_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let data = std::fs::read(path);
    let _ = std::fs::remove_file(path);
    data
}

/// Fails (never skips) when a real-client binary is missing.
pub fn require_binary(path: &str) {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-deps.sh (real-client tests must not be skipped)"
    );
}

/// Result of one spicy-screenshot run.
pub struct Shot {
    pub status: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
    pub ppm: Option<(u32, u32, Vec<u8>)>,
}

/// Runs spicy-screenshot against the server (killed after `timeout`).
pub fn spicy_screenshot(port: u16, password: Option<&str>, timeout: Duration) -> Shot {
    require_binary("/usr/bin/spicy-screenshot");
    let out = tmp_path(&format!("shot-{port}-{}.ppm", rand_suffix()));
    let _ = std::fs::remove_file(&out);
    let mut cmd = Proc::new("/usr/bin/spicy-screenshot");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o"])
        .arg(&out)
        .env("SPICE_DISABLE_GL_SCANOUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.args(["-w", p]);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn spicy-screenshot");
    let status = wait_timeout(&mut child, timeout);
    let elapsed = start.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let ppm = take_file(&out).ok().and_then(|d| parse_ppm(&d));
    Shot {
        status,
        stderr,
        elapsed,
        ppm,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Waits for a child; kills it (our own child, by handle) after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The GObject-introspection probe (tests/clients/spice_probe.py), driven by lines.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    lines: crossbeam_channel::Receiver<String>,
    pub log: Vec<String>,
}

pub fn probe_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/spice_probe.py")
}

impl Probe {
    pub fn start(port: u16, password: Option<&str>, channels: &str) -> Probe {
        Self::start_args(port, password, channels, &[])
    }

    /// Like [`Probe::start`], with extra probe options (`--cache-size N`…).
    pub fn start_args(port: u16, password: Option<&str>, channels: &str, extra: &[&str]) -> Probe {
        require_binary("/usr/bin/python3");
        let script = probe_script();
        assert!(script.exists(), "{} missing", script.display());
        let mut cmd = Proc::new("/usr/bin/python3");
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--channels", channels])
            .env("SPICE_DISABLE_GL_SCANOUT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(p) = password {
            cmd.args(["--password", p]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("spawn probe");
        let stdin = child.stdin.take().expect("probe stdin");
        let stdout = child.stdout.take().expect("probe stdout");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Probe {
            child,
            stdin,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a line matching `pred`; panics with the log on timeout or EOF.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.starts_with("ERROR cannot load") {
                        panic!(
                            "probe cannot load SpiceClientGLib: {l} (run scripts/install-test-deps.sh)"
                        );
                    }
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "probe: no '{what}' within {timeout:?}; log: {:#?}",
                    self.log
                ),
            }
        }
    }

    /// Waits until `line` was seen (now or earlier).
    pub fn wait_seen(&mut self, line: &str, timeout: Duration) {
        if !self.log.iter().any(|l| l == line) {
            self.wait_for(line, timeout, |l| l == line);
        }
    }

    /// Collects lines for `d` (or until EOF).
    pub fn drain(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut v = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(l.clone());
            v.push(l);
        }
        v
    }

    /// The probe's process id (to pause it with SIGSTOP in stall tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to probe");
        self.stdin.flush().expect("flush probe");
    }

    /// Dumps the client's primary surface bytes.
    pub fn dump(&mut self) -> Vec<u8> {
        let path = tmp_path(&format!("dump-{}.raw", rand_suffix()));
        self.send(&format!("dump {}", path.display()));
        self.wait_for("DUMPED", Duration::from_secs(10), |l| {
            l.starts_with("DUMPED")
        });
        take_file(&path).expect("read dump")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        if wait_timeout(&mut self.child, Duration::from_secs(3)).is_none() {
            // wait_timeout already killed our child.
        }
    }
}
