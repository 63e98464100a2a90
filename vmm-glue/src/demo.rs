//! `qxl-vmm demo`: a VMM without a kernel, serving a synthetic desktop over SPICE.
//!
//! # How it fits together
//!
//! The demo builds the real QXL device over real device memory (a
//! `GuestMemoryMmap`), and plays the guest with the `devices` mock Linux
//! driver: PCI BAR programming, `RESET`, memslots, `CREATE_PRIMARY_ASYNC`, then
//! for every frame of a [`Scene`] it encodes the frame's commands into guest
//! memory, pushes them on the command and cursor rings with the real producer
//! protocol, kicks the device, services its interrupts and drains the release
//! ring — exactly what a guest kernel does, minus the kernel. The device decodes
//! each command and hands it to the SPICE server's display worker, which
//! renders it and sends it to the connected clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devices::qxl::QxlConfig;
use devices::qxl::mock::driver::MockQxlDriver;
use spice_server::{DisplayHandle, InputSink, ServerConfig, SpiceServer};

use crate::error::{Error, Result};
use crate::scene::Scene;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The SPICE server configuration.
    pub server: ServerConfig,
    /// Frames per second of the animation.
    pub fps: u32,
    /// Stop animating after this many frames and keep serving the last one.
    pub frames: Option<u64>,
}

/// Counters a running demo exposes.
#[derive(Debug, Default)]
pub struct DemoStats {
    /// Frames drawn so far.
    pub frames: AtomicU64,
    /// Commands pushed on the rings so far.
    pub commands: AtomicU64,
    /// Input events received from clients.
    pub input_events: AtomicU64,
}

/// The demo's input sink: there is no guest to type into, so it logs what
/// clients send and counts it.
#[derive(Debug)]
pub struct DemoInput {
    stats: Arc<DemoStats>,
}

impl DemoInput {
    fn event(&self, what: std::fmt::Arguments<'_>) {
        self.stats.input_events.fetch_add(1, Ordering::Relaxed);
        log::debug!("input: {what}");
    }
}

impl InputSink for DemoInput {
    fn key_down(&mut self, scancode: u32) {
        self.event(format_args!("key down {scancode:#x}"));
    }
    fn key_up(&mut self, scancode: u32) {
        self.event(format_args!("key up {scancode:#x}"));
    }
    fn pointer_absolute(&mut self, x: u32, y: u32, buttons: u16, display: u8) {
        self.event(format_args!(
            "pointer {x},{y} buttons {buttons:#x} display {display}"
        ));
    }
    fn pointer_relative(&mut self, dx: i32, dy: i32, buttons: u16) {
        self.event(format_args!("motion {dx},{dy} buttons {buttons:#x}"));
    }
    fn buttons(&mut self, mask: u16) {
        self.event(format_args!("buttons {mask:#x}"));
    }
    fn modifiers(&mut self, modifiers: u16) {
        self.event(format_args!("modifiers {modifiers:#x}"));
    }
}

/// The device configuration for a primary surface of `width` × `height`:
/// QEMU's defaults, with the surface-0 area and the RAM BAR grown when the
/// surface needs it.
pub fn device_config(width: u32, height: u32) -> QxlConfig {
    let bytes = u64::from(width) * u64::from(height) * 4;
    let vgamem = bytes.next_power_of_two().max(16 << 20);
    let ram = (vgamem * 2).max(64 << 20);
    QxlConfig {
        ram_size: ram,
        vgamem_size: vgamem,
        vram_size: (bytes.next_power_of_two() * 2).max(64 << 20),
        ..QxlConfig::default()
    }
}

/// A running demo: the SPICE server and the synthetic guest's thread.
pub struct Demo {
    server: Option<SpiceServer>,
    display: DisplayHandle,
    stop: Arc<AtomicBool>,
    guest: Option<std::thread::JoinHandle<Result<()>>>,
    stats: Arc<DemoStats>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo").field("stats", &self.stats).finish()
    }
}

impl Demo {
    /// Start the SPICE server and the guest thread playing `scene`.
    pub fn start(opts: DemoOptions, mut scene: Box<dyn Scene>) -> Result<Self> {
        let stats = Arc::new(DemoStats::default());
        let input = DemoInput {
            stats: Arc::clone(&stats),
        };
        let (server, display) = SpiceServer::start(opts.server.clone(), Box::new(input))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (w, h) = scene.size();
        let mut drv = MockQxlDriver::with_sink(device_config(w, h), display.clone())?;
        drv.probe()?;
        drv.create_primary(w, h, None)?;
        let guest_stop = Arc::clone(&stop);
        let guest_stats = Arc::clone(&stats);
        let guest = std::thread::Builder::new()
            .name("demo-guest".into())
            .spawn(move || run_guest(&mut drv, scene.as_mut(), &opts, &guest_stop, &guest_stats))
            .map_err(Error::Io)?;
        Ok(Self {
            server: Some(server),
            display,
            stop,
            guest: Some(guest),
            stats,
        })
    }

    /// The address the SPICE server listens on (`None` once shut down); with
    /// port 0 in the options this is where the picked port can be read.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(SpiceServer::local_addr)
    }

    /// The display worker (for screenshots).
    pub fn display(&self) -> &DisplayHandle {
        &self.display
    }

    /// Counters.
    pub fn stats(&self) -> &DemoStats {
        &self.stats
    }

    /// A flag that stops the demo when set (e.g. from a Ctrl-C handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Wait until the stop flag is set, then shut everything down.
    pub fn wait(mut self) -> Result<()> {
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if self
                .guest
                .as_ref()
                .is_some_and(std::thread::JoinHandle::is_finished)
            {
                break;
            }
        }
        self.shutdown()
    }

    /// Stop the guest and the server.
    pub fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let res = match self.guest.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Scene("the guest thread panicked".into())),
            None => Ok(()),
        };
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        res
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn run_guest<S: spice_server::command::DisplaySink>(
    drv: &mut MockQxlDriver<S>,
    scene: &mut dyn Scene,
    opts: &DemoOptions,
    stop: &AtomicBool,
    stats: &DemoStats,
) -> Result<()> {
    let period = Duration::from_secs(1) / opts.fps.max(1);
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if opts.frames.is_none_or(|limit| n < limit) {
            let frame = scene.frame(n);
            for cmd in frame.draws.iter().chain(&frame.cursor) {
                drv.push_command(cmd)?;
                stats.commands.fetch_add(1, Ordering::Relaxed);
            }
            drv.drain_releases()?;
            n += 1;
            stats.frames.store(n, Ordering::Relaxed);
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(())
}
