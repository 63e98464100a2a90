//! Replaying a real guest driver's `SPICE_REPLAY` recording through the QXL
//! device (`qxl-vmm replay`, `qxl-replay` on recordings).
//!
//! # How it fits together
//!
//! A recording made by libspice-server (see [`devices::qxl::spice_record`])
//! holds every QXL command a real guest driver queued and every message QEMU
//! sent to spice-server's display worker. [`RecordReplayer`] plays it back
//! the way the guest did, through the real device over real guest memory:
//!
//! - each QXL command is laid out in guest memory in the packed QXL layouts by
//!   the mock driver's encoder (`devices::qxl::mock::encode`), in the mock
//!   driver's memslots, and pushed on the command or cursor ring with the
//!   Linux producer protocol; the device pops it, decodes it from guest
//!   memory through its memslot table, releases it, and hands the owned
//!   command to the display sink (the SPICE server's display worker);
//! - each worker message becomes the guest port action that produced it:
//!
//! | recorded message | port action |
//! | --- | --- |
//! | `CREATE_PRIMARY_SURFACE[_ASYNC]` | the recorded surface memory written to freshly allocated surface memory (memory order, so a bottom-up VGA primary stays bottom-up), `ram.create_surface` filled from the record, `CREATE_PRIMARY[_ASYNC]` |
//! | `DESTROY_PRIMARY_SURFACE[_ASYNC]` | `DESTROY_PRIMARY[_ASYNC]` (skipped when no primary exists) |
//! | `RESET_MEMSLOTS` | releases flushed and drained, then `RESET` and the driver's memslot set-up again (the mock's two memslots) |
//! | `DESTROY_SURFACES[_ASYNC]` | `DESTROY_ALL_SURFACES[_ASYNC]` |
//! | `WAKEUP` | `NOTIFY_CMD` |
//! | `OOM` | `NOTIFY_OOM` |
//! | `UPDATE[_ASYNC]` | `UPDATE_AREA_ASYNC` over the whole primary (the area is not recorded) |
//! | `FLUSH_SURFACES_ASYNC` | `FLUSH_SURFACES_ASYNC` |
//! | everything else | nothing: memslot additions (their ranges are not recorded; the mock's slots stay registered), monitors config (its body is not recorded), VM start/stop, cursor and image-cache resets, driver unload, ... — counted in [`ReplayStats::messages_without_port`] |
//!
//! [`ReplayServer`] runs a replay into a [`SpiceServer`] and keeps serving the
//! last frame afterwards.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use devices::qxl::QxlConfig;
use devices::qxl::abi::{io, ram as ram_off};
use devices::qxl::mock::driver::{MockQxlDriver, MockRing};
use devices::qxl::ram::SurfaceCreateRaw;
use devices::qxl::spice_record::{
    MAGIC_LINE, RecordBody, RecordEvent, RecordReader, RecordedPrimary, WorkerMessage,
};
use spice_server::command::{Command, DisplaySink, DrawOp, ImageData, Rect, SurfaceCmd};
use spice_server::{DisplayHandle, NoInput, ServerConfig, SpiceServer};

use crate::error::{Error, Result};

/// The zstd frame magic (`28 b5 2f fd`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A boxed byte stream (a file, or its zstd decompression).
pub type RecordStream = Box<dyn BufRead + Send>;

/// Open `path`, decompressing it on the fly when it is zstd-compressed.
pub fn open_stream(path: &Path) -> Result<RecordStream> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let zstd = file.fill_buf()?.starts_with(&ZSTD_MAGIC);
    if zstd {
        let dec = ruzstd::decoding::StreamingDecoder::new(file).map_err(|e| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: zstd: {e}", path.display()),
            ))
        })?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, dec)))
    } else {
        Ok(Box::new(file))
    }
}

/// Open a `SPICE_REPLAY` recording (plain or zstd-compressed).
pub fn open_recording(path: &Path) -> Result<RecordReader<RecordStream>> {
    Ok(RecordReader::new(open_stream(path)?)?)
}

/// True when the (decompressed) file starts with the `SPICE_REPLAY 1` line.
pub fn is_spice_record(path: &Path) -> bool {
    let Ok(s) = open_stream(path) else {
        return false;
    };
    let mut head = Vec::new();
    if s.take(u64::try_from(MAGIC_LINE.len() + 1).unwrap_or(16))
        .read_to_end(&mut head)
        .is_err()
    {
        return false;
    }
    head.strip_suffix(b"\n") == Some(MAGIC_LINE)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Events applied.
    pub events: u64,
    /// Worker messages applied (or skipped).
    pub worker_messages: u64,
    /// Worker messages by type.
    pub messages_by_type: BTreeMap<WorkerMessage, u64>,
    /// Worker messages that have no guest port equivalent (see the module docs).
    pub messages_without_port: u64,
    /// QXL commands pushed on the rings.
    pub commands: u64,
    /// Draw commands.
    pub draws: u64,
    /// Cursor commands.
    pub cursor_commands: u64,
    /// Surface commands.
    pub surface_commands: u64,
    /// Update and message commands.
    pub other_commands: u64,
    /// Primary surfaces created.
    pub primaries_created: u64,
    /// Primary surfaces destroyed (by `DESTROY_PRIMARY` or `DESTROY_ALL_SURFACES`).
    pub primaries_destroyed: u64,
    /// Device resets.
    pub resets: u64,
    /// Raw damage: the sum over draws of `bbox` width × height × 4 bytes.
    pub damage_bytes: u64,
    /// Bytes of bitmap payload laid out in guest memory (including stride padding).
    pub image_bytes: u64,
    /// Recorded time from the first to the last event.
    pub recorded_ns: u64,
    /// Guest bugs the device latched during the replay (should be 0).
    pub guest_bugs: u64,
    /// Draw commands the device dropped as undecodable (its decode-error counters).
    pub decode_errors: u64,
    /// Wall time the replay took.
    pub elapsed: Duration,
}

impl ReplayStats {
    /// Events per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    /// Draw commands ("frames" of damage) per second of wall time.
    pub fn draws_per_sec(&self) -> f64 {
        per_sec(self.draws, self.elapsed)
    }

    /// A one-paragraph summary for humans.
    #[allow(clippy::cast_precision_loss)] // Megabytes and seconds for humans.
    pub fn summary(&self) -> String {
        format!(
            "{} events ({:.0}/s), {} draws ({:.0}/s), {} cursor, {} surface and {} other commands, \
             {} worker messages ({} without a port action), {} primaries created, {} resets, \
             {:.1} MB raw damage, {:.1} MB image payload, {:.2} s wall for {:.2} s recorded, \
             {} commands the device dropped, {} guest bugs",
            self.events,
            self.events_per_sec(),
            self.draws,
            self.draws_per_sec(),
            self.cursor_commands,
            self.surface_commands,
            self.other_commands,
            self.worker_messages,
            self.messages_without_port,
            self.primaries_created,
            self.resets,
            self.damage_bytes as f64 / 1e6,
            self.image_bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.recorded_ns as f64 / 1e9,
            self.decode_errors,
            self.guest_bugs,
        )
    }
}

#[allow(clippy::cast_precision_loss)] // Rates for humans.
fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// Plays recording events into a real QXL device through the mock Linux driver.
#[derive(Debug)]
pub struct RecordReplayer<S: DisplaySink> {
    drv: MockQxlDriver<S>,
    stats: ReplayStats,
    primary: Option<(u32, u32)>,
    surface_heap_start: u64,
    first_ts: Option<u64>,
}

/// The device configuration replays use: QEMU's defaults grown for primaries
/// up to 1920×1200.
pub fn replay_device_config() -> QxlConfig {
    crate::demo::device_config(1920, 1200)
}

impl<S: DisplaySink> RecordReplayer<S> {
    /// A fresh device (see [`replay_device_config`]) feeding `sink`, probed by
    /// the mock Linux driver (reset, interrupt mask, memslots).
    pub fn new(sink: S) -> Result<Self> {
        Self::with_config(replay_device_config(), sink)
    }

    /// [`Self::new`] with an explicit device configuration.
    pub fn with_config(config: QxlConfig, sink: S) -> Result<Self> {
        let mut drv = MockQxlDriver::with_sink(config, sink)?;
        drv.probe()?;
        let surface_heap_start = drv.surface_heap_mut().next;
        Ok(Self {
            drv,
            stats: ReplayStats::default(),
            primary: None,
            surface_heap_start,
            first_ts: None,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }

    /// The mock driver (and through it the device and the sink).
    pub fn driver(&self) -> &MockQxlDriver<S> {
        &self.drv
    }

    /// The mock driver, mutably.
    pub fn driver_mut(&mut self) -> &mut MockQxlDriver<S> {
        &mut self.drv
    }

    /// The size of the current primary surface, if any.
    pub fn primary(&self) -> Option<(u32, u32)> {
        self.primary
    }

    /// Apply one event.
    pub fn apply(&mut self, ev: &RecordEvent) -> Result<()> {
        let first = *self.first_ts.get_or_insert(ev.timestamp_ns);
        self.stats.recorded_ns = ev.timestamp_ns.saturating_sub(first);
        self.stats.events += 1;
        match &ev.body {
            RecordBody::Worker { message, primary } => self.message(*message, primary.as_ref())?,
            RecordBody::Command { command, .. } => self.command(command)?,
        }
        self.drv.drain_releases()?;
        let m = self.drv.device().metrics().snapshot();
        self.stats.guest_bugs = m.guest_bugs;
        self.stats.decode_errors = m.decode_errors_memslot
            + m.decode_errors_guest_memory
            + m.decode_errors_chunks
            + m.decode_errors_size
            + m.decode_errors_invalid_value
            + m.decode_errors_surface
            + m.decode_errors_other;
        Ok(())
    }

    /// Let the device finish: flush its release batch and drain the release ring.
    pub fn finish(&mut self) -> Result<()> {
        self.drv.out(io::FLUSH_RELEASE, 0);
        self.drv.drain_releases()?;
        Ok(())
    }

    fn command(&mut self, cmd: &Command) -> Result<()> {
        self.stats.commands += 1;
        match cmd {
            Command::Draw(d) => {
                self.stats.draws += 1;
                let area = u64::from(d.bbox.width()).saturating_mul(u64::from(d.bbox.height()));
                self.stats.damage_bytes = self
                    .stats
                    .damage_bytes
                    .saturating_add(area.saturating_mul(4));
                self.stats.image_bytes = self
                    .stats
                    .image_bytes
                    .saturating_add(draw_image_bytes(&d.op));
            }
            Command::Cursor(_) => self.stats.cursor_commands += 1,
            Command::Surface(_) => self.stats.surface_commands += 1,
            Command::Update(_) | Command::Message(_) => self.stats.other_commands += 1,
        }
        self.drv.push_command(cmd)?;
        if let Command::Surface(SurfaceCmd::Destroy { surface_id: 0 }) = cmd {
            self.primary = None;
        }
        Ok(())
    }

    fn message(&mut self, m: WorkerMessage, primary: Option<&RecordedPrimary>) -> Result<()> {
        use WorkerMessage as W;
        self.stats.worker_messages += 1;
        *self.stats.messages_by_type.entry(m).or_default() += 1;
        match (m, primary) {
            (W::CreatePrimarySurface, Some(p)) => self.create_primary(p, false)?,
            (W::CreatePrimarySurfaceAsync, Some(p)) => self.create_primary(p, true)?,
            (W::DestroyPrimarySurface, _) => self.destroy_primary(false)?,
            (W::DestroyPrimarySurfaceAsync, _) => self.destroy_primary(true)?,
            (W::ResetMemslots, _) => self.reset()?,
            (W::DestroySurfaces | W::DestroySurfacesAsync, _) => {
                if m == W::DestroySurfacesAsync {
                    self.drv.async_io(io::DESTROY_ALL_SURFACES_ASYNC, 0)?;
                } else {
                    self.drv.out(io::DESTROY_ALL_SURFACES, 0);
                }
                if self.primary.take().is_some() {
                    self.stats.primaries_destroyed += 1;
                }
            }
            (W::Wakeup, _) => self.drv.notify(MockRing::Command),
            (W::Oom, _) => self.drv.notify_oom(),
            (W::Update | W::UpdateAsync, _) => {
                if let Some((w, h)) = self.primary {
                    let area = Rect::new(
                        0,
                        0,
                        i32::try_from(w).unwrap_or(i32::MAX),
                        i32::try_from(h).unwrap_or(i32::MAX),
                    );
                    self.drv.update_area(0, area)?;
                } else {
                    self.stats.messages_without_port += 1;
                }
            }
            (W::FlushSurfacesAsync, _) => self.drv.async_io(io::FLUSH_SURFACES_ASYNC, 0)?,
            _ => self.stats.messages_without_port += 1,
        }
        Ok(())
    }

    /// Flush and drain releases, then `RESET` and set the memslots up again.
    fn reset(&mut self) -> Result<()> {
        self.drv.notify_oom();
        self.finish()?;
        self.drv.probe()?;
        self.drv.surface_heap_mut().next = self.surface_heap_start;
        if self.primary.take().is_some() {
            self.stats.primaries_destroyed += 1;
        }
        self.stats.resets += 1;
        Ok(())
    }

    fn destroy_primary(&mut self, is_async: bool) -> Result<()> {
        if self.primary.is_none() {
            self.stats.messages_without_port += 1;
            return Ok(());
        }
        if is_async {
            self.drv.destroy_primary()?;
        } else {
            self.drv.out(io::DESTROY_PRIMARY, 0);
        }
        self.primary = None;
        self.stats.primaries_destroyed += 1;
        Ok(())
    }

    fn create_primary(&mut self, p: &RecordedPrimary, is_async: bool) -> Result<()> {
        if self.primary.is_some() {
            // QEMU flags a second CREATE_PRIMARY; the recorded guest never sent one.
            self.destroy_primary(is_async)?;
        }
        let size = u64::from(p.stride.unsigned_abs()) * u64::from(p.height);
        let (addr, mem) = match self.drv.surface_heap_mut().alloc(size, 4096) {
            Ok(v) => v,
            Err(devices::Error::TooLarge { .. }) => {
                // Primaries come and go one at a time: start the window over.
                let start = self.surface_heap_start;
                let heap = self.drv.surface_heap_mut();
                heap.next = start;
                heap.alloc(size, 4096)?
            }
            Err(e) => return Err(e.into()),
        };
        if !p.data.is_empty() {
            self.drv.write_raw(addr, &p.data)?;
        }
        let raw = SurfaceCreateRaw {
            width: p.width,
            height: p.height,
            stride: p.stride,
            format: p.format,
            position: p.position,
            mouse_mode: p.mouse_mode,
            flags: p.flags,
            kind: p.kind,
            mem,
        };
        if is_async {
            self.drv.create_primary_raw(&raw)?;
        } else {
            let at = self.drv.ram_header().addr(ram_off::CREATE_SURFACE);
            self.drv.write_raw(at, &raw.to_bytes())?;
            self.drv.out(io::CREATE_PRIMARY, 0);
        }
        self.primary = Some((p.width, p.height));
        self.stats.primaries_created += 1;
        Ok(())
    }
}

fn image_bytes(img: &spice_server::command::Image) -> u64 {
    match &img.data {
        ImageData::Bitmap(b) => u64::try_from(b.data.len()).unwrap_or(0),
        ImageData::Quic(q) => u64::try_from(q.len()).unwrap_or(0),
        ImageData::Surface(_) => 0,
    }
}

fn draw_image_bytes(op: &DrawOp) -> u64 {
    match op {
        DrawOp::Copy(c) | DrawOp::Blend(c) => image_bytes(&c.src),
        DrawOp::Opaque { src, .. }
        | DrawOp::Rop3 { src, .. }
        | DrawOp::Transparent { src, .. }
        | DrawOp::AlphaBlend { src, .. }
        | DrawOp::Composite { src, .. } => image_bytes(src),
        _ => 0,
    }
}

/// How a replay is paced and bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Replay at this multiple of the recorded speed; `None` = as fast as possible.
    pub speed: Option<f64>,
    /// Stop after this many draw commands (the rest of the recording is not applied).
    pub max_draws: Option<u64>,
}

impl Default for ReplayOptions {
    /// As fast as possible, every event.
    fn default() -> Self {
        Self {
            speed: None,
            max_draws: None,
        }
    }
}

/// Apply every event of `reader` to `replayer` (paced and bounded by `opts`;
/// stops early when `stop` is set). Returns the statistics, `elapsed` included.
pub fn replay_events<R: BufRead, S: DisplaySink>(
    reader: &mut RecordReader<R>,
    replayer: &mut RecordReplayer<S>,
    opts: &ReplayOptions,
    stop: &AtomicBool,
) -> Result<ReplayStats> {
    let start = Instant::now();
    let mut first_ts = None;
    while let Some(ev) = reader.next_event()? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let is_draw = matches!(
            ev.body,
            RecordBody::Command {
                command: Command::Draw(_),
                ..
            }
        );
        if is_draw && opts.max_draws.is_some_and(|m| replayer.stats().draws >= m) {
            break;
        }
        if let Some(speed) = opts.speed.filter(|s| *s > 0.0) {
            let t0 = *first_ts.get_or_insert(ev.timestamp_ns);
            #[allow(clippy::cast_precision_loss)] // Nanoseconds as seconds.
            let at = Duration::from_secs_f64(
                (ev.timestamp_ns.saturating_sub(t0) as f64 / 1e9 / speed).min(1e6),
            );
            if let Some(wait) = at.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        replayer.apply(&ev)?;
    }
    replayer.finish()?;
    let mut stats = replayer.stats().clone();
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// How [`ReplayServer`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The SPICE server configuration.
    pub server: ServerConfig,
    /// Pacing and bounds of the replay.
    pub replay: ReplayOptions,
}

/// A SPICE server showing a replayed recording: it replays the recording
/// into the device in a thread, then keeps serving the last frame until stopped.
pub struct ReplayServer {
    server: Option<SpiceServer>,
    display: DisplayHandle,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<Result<ReplayStats>>,
    result: Option<Result<ReplayStats>>,
    guest: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ReplayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayServer").finish_non_exhaustive()
    }
}

impl ReplayServer {
    /// Start the SPICE server, open `path` and start replaying it.
    pub fn start(path: &Path, opts: ServeOptions) -> Result<Self> {
        let mut reader = open_recording(path)?;
        let (server, display) = SpiceServer::start(opts.server, Box::new(NoInput))?;
        let mut replayer = RecordReplayer::new(display.clone())?;
        let replay = opts.replay;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let guest_stop = Arc::clone(&stop);
        let guest_display = display.clone();
        let guest = std::thread::Builder::new()
            .name("record-replay".into())
            .spawn(move || {
                let start = Instant::now();
                let res = replay_events(&mut reader, &mut replayer, &replay, &guest_stop).and_then(
                    |mut stats| {
                        // Count the worker's rendering in the replay's time.
                        guest_display.sync()?;
                        stats.elapsed = start.elapsed();
                        Ok(stats)
                    },
                );
                let _ = tx.send(res);
                // Keep the device (and its surfaces) alive until stopped.
                while !guest_stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(replayer);
            })
            .map_err(Error::Io)?;
        Ok(Self {
            server: Some(server),
            display,
            stop,
            done,
            result: None,
            guest: Some(guest),
        })
    }

    /// The display worker (for screenshots).
    pub fn display(&self) -> &DisplayHandle {
        &self.display
    }

    /// The address the SPICE server listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(SpiceServer::local_addr)
    }

    /// A flag that stops the replay and the server when set (e.g. from Ctrl-C).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Wait until the replay has been applied (or failed, or was stopped) and
    /// the display worker has rendered it. The server keeps serving.
    pub fn wait_replayed(&mut self) -> Result<ReplayStats> {
        if self.result.is_none() {
            let r = self
                .done
                .recv()
                .unwrap_or_else(|_| Err(Error::Scene("the replay thread ended early".into())));
            self.result = Some(r);
        }
        match &self.result {
            Some(Ok(s)) => Ok(s.clone()),
            Some(Err(e)) => Err(Error::Scene(format!("replay failed: {e}"))),
            None => Err(Error::Scene("no replay result".into())),
        }
    }

    /// Serve until the stop flag is set, then shut down.
    pub fn wait(mut self) -> Result<()> {
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shutdown();
        Ok(())
    }

    /// Stop the replay thread and the server.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(g) = self.guest.take() {
            let _ = g.join();
        }
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// FNV-1a 64 of a byte buffer (the recordings' framebuffer hash).
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Usage of `qxl-vmm replay`.
pub const REPLAY_USAGE: &str = "usage: qxl-vmm replay FILE[.zst] [--spice key=value,...] [--port N] \
[--addr IP] [--password P] [--disable-ticketing] [--image-compression MODE] \
[--streaming-video MODE] [--speed X|--fast] [--frames N]";

/// `qxl-vmm replay FILE [...]`: replay a `SPICE_REPLAY` recording (plain or
/// zstd-compressed) through the device into a SPICE server, print what it
/// did, and keep serving the last frame until Ctrl-C.
///
/// `--speed X` replays at X times the recorded pace (default 1; `--fast` or
/// `--speed 0`: as fast as possible); `--frames N` stops after N draw
/// commands. The SPICE options are those of `qxl-vmm demo`.
pub fn replay_command(args: &[String]) -> Result<()> {
    use crate::cli::{SpiceOptions, flag_number, flag_value, stop_on_ctrl_c};
    let mut spice = SpiceOptions::default();
    let mut file = None;
    let mut replay = ReplayOptions {
        speed: Some(1.0),
        max_draws: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if spice.take_flag(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--fast" => replay.speed = None,
            "--speed" => {
                let s: f64 = flag_number(flag_value(&mut it, a)?, a)?;
                if !(0.0..=1000.0).contains(&s) {
                    return Err(Error::Usage(
                        "--speed: 0 (as fast as possible) to 1000".into(),
                    ));
                }
                replay.speed = (s > 0.0).then_some(s);
            }
            "--frames" => replay.max_draws = Some(flag_number(flag_value(&mut it, a)?, a)?),
            "-h" | "--help" => {
                println!("{REPLAY_USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => {
                return Err(Error::Usage(format!(
                    "unknown option {other}\n{REPLAY_USAGE}"
                )));
            }
            other if file.is_none() => file = Some(std::path::PathBuf::from(other)),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument {other}\n{REPLAY_USAGE}"
                )));
            }
        }
    }
    let file = file.ok_or_else(|| Error::Usage(REPLAY_USAGE.into()))?;
    let server = spice.local_server_config()?;
    let mut srv = ReplayServer::start(&file, ServeOptions { server, replay })?;
    stop_on_ctrl_c(srv.stop_flag())?;
    if let Some(a) = srv.local_addr() {
        eprintln!(
            "qxl-vmm replay: serving SPICE on {a} — connect with `remote-viewer spice://{}:{}`; Ctrl-C stops",
            a.ip(),
            a.port()
        );
    }
    match srv.wait_replayed() {
        Ok(s) => eprintln!("qxl-vmm replay: {}", s.summary()),
        Err(e) => eprintln!("qxl-vmm replay: {e} (serving what was replayed)"),
    }
    srv.wait()?;
    eprintln!("qxl-vmm replay: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use devices::qxl::mock::driver::{RecordingSink, SinkEvent};

    use super::*;

    fn blob(prefix: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!("binary 0 {prefix} {}:", data.len()).into_bytes();
        v.extend_from_slice(data);
        v.push(b'\n');
        v
    }

    /// A small recording: a bottom-up VGA-style primary, a reset, a KMS
    /// primary with KEEP_DATA, one padded-stride COPY and a cursor move.
    fn recording() -> Vec<u8> {
        let mut v = b"SPICE_REPLAY 1\nevent 0 1 20 100\n4 2 -16 32\n0 1 0 0\n".to_vec();
        v.extend(blob("data", &[7u8; 32]));
        v.extend_from_slice(b"event 1 1 19 101\nevent 2 1 18 102\nevent 3 1 16 103\n");
        v.extend_from_slice(b"event 4 1 29 104\n8 4 64 32\n0 1 1 0\n");
        let fb: Vec<u8> = (0..256u32).map(|i| u8::try_from(i).unwrap()).collect();
        v.extend(blob("data", &fb));
        v.extend_from_slice(
            b"event 5 1 2 105\nevent 6 0 1 106\ndrawable\nrect bbox 1 2 3 4\ntype 1\nnum_rects 1\n\
data_chunks 0 16\n",
        );
        let clip: Vec<u8> = [1i32, 2, 3, 4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        v.extend(blob("clip_rects", &clip));
        v.extend_from_slice(
            b"effect 1\nmm_time 0\nself_bitmap 0\nrect self_bitmap_area 0 0 0 0\nsurface_id 0\n\
surfaces_dest -1\nrect surfaces_rects 0 0 0 0\nsurfaces_dest -1\nrect surfaces_rects 0 0 0 0\n\
surfaces_dest -1\nrect surfaces_rects 0 0 0 0\ntype 3\nimage 1\ndescriptor.id 0\ndescriptor.type 0\n\
descriptor.flags 0\ndescriptor.width 2\ndescriptor.height 2\nbitmap.format 8\nbitmap.flags 4\n\
bitmap.x 2\nbitmap.y 2\nbitmap.stride 64\nhas_palette 0\ndata_chunks 0 128\n",
        );
        v.extend(blob("bitmap.data", &[0x5a; 128]));
        v.extend_from_slice(
            b"rect src_area 0 0 2 2\nrop_descriptor 8\nscale_mode 0\nflags 0\npoint 0 0\nimage 0\n\
event 7 0 3 107\ncursor_cmd\ntype 1\npoint16 5 6\n",
        );
        v
    }

    #[test]
    fn the_device_decodes_what_the_recording_holds() {
        let data = recording();
        let parsed: Vec<RecordEvent> = RecordReader::new(&data[..])
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let mut reader = RecordReader::new(&data[..]).unwrap();
        let mut rep = RecordReplayer::new(RecordingSink::default()).unwrap();
        let stats = replay_events(
            &mut reader,
            &mut rep,
            &ReplayOptions::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(
            (stats.events, stats.draws, stats.cursor_commands),
            (8, 1, 1)
        );
        assert_eq!(
            (stats.primaries_created, stats.resets, stats.guest_bugs),
            (2, 1, 0)
        );
        assert_eq!(stats.damage_bytes, 2 * 2 * 4);
        assert_eq!(stats.image_bytes, 128);
        assert_eq!(rep.primary(), Some((8, 4)));
        assert_eq!(rep.driver().outstanding(), 0, "every command came back");
        let sink = &rep.driver().sink().events;
        // The KMS primary arrives with its recorded pixels (KEEP_DATA).
        let kms = sink
            .iter()
            .rev()
            .find_map(|e| match e {
                SinkEvent::CreatePrimary(s) => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!((kms.width, kms.height, kms.stride), (8, 4, 64));
        let fb: Vec<u8> = (0..256u32).map(|i| u8::try_from(i).unwrap()).collect();
        assert_eq!(kms.initial.as_deref(), Some(&fb[..]));
        // The commands the device decoded from guest memory are the recorded ones.
        let recorded: Vec<&Command> = parsed
            .iter()
            .filter_map(|e| match &e.body {
                RecordBody::Command { command, .. } => Some(command),
                RecordBody::Worker { .. } => None,
            })
            .collect();
        let decoded = rep.driver().sink().commands();
        assert_eq!(decoded, recorded);
    }

    #[test]
    fn a_hostile_primary_is_an_error_not_a_panic() {
        let mut v =
            b"SPICE_REPLAY 1\nevent 0 1 29 1\n4294967295 4294967295 -2147483644 32\n0 1 1 0\n"
                .to_vec();
        v.extend(blob("data", &[]));
        v.extend_from_slice(b"event 1 0 1 2\n");
        let mut reader = RecordReader::new(&v[..]).unwrap();
        let mut rep = RecordReplayer::new(RecordingSink::default()).unwrap();
        let res = replay_events(
            &mut reader,
            &mut rep,
            &ReplayOptions::default(),
            &AtomicBool::new(false),
        );
        let err = res.unwrap_err();
        assert!(matches!(err, Error::Device(_)), "{err}");
    }
}
