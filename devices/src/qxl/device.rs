//! The QXL device state machine: config space, ROM, ports, rings, interrupts.
//!
//! # Primer
//!
//! [`QxlDevice`] ties the pieces of this module together the way QEMU's
//! `hw/display/qxl.c` does (behaviour only; this is an independent
//! implementation):
//!
//! - **Memory.** The device sees one *device memory* `M`: BAR0 (the RAM BAR) at
//!   device address 0, then the VRAM at [`QxlConfig::vram_local_base`]. BAR1
//!   shows the first `vram_size` bytes of the VRAM, BAR4 (when configured) all
//!   of it. Guest-physical BAR addresses only matter to `MEMSLOT_ADD` and the
//!   compat `SET_MODE`, which turn them into device addresses using the bases
//!   programmed in config space. The ROM (BAR2) is host memory owned here.
//! - **Ports.** [`QxlDevice::io_write`] applies QEMU's filters in order: a
//!   latched guest bug ignores everything but `RESET`; a port newer than the
//!   revision is a guest bug; in VGA mode only a few ports work (the other
//!   async ports just get their `IO_CMD`); only one async port may be in
//!   flight. Async ports complete with `QXL_INTERRUPT_IO_CMD` — on success, on
//!   the cancel paths, and (as the spec's checklist asks) on guest-bug paths.
//! - **Rings.** [`QxlDevice::process_cmd_ring`] and
//!   [`QxlDevice::process_cursor_ring`] pop a bounded number of commands per
//!   call, read each command's release id once, decode it with
//!   [`crate::qxl::decode`], hand the owned result to the [`DisplaySink`], and
//!   release it at once (copy-then-release, see [`crate::qxl::release`]).
//! - **Interrupts.** Bits are OR-ed atomically into `int_pending` whether or
//!   not they are masked; the line level is then `(int_pending & int_mask) != 0`
//!   (and INTx not disabled). [`IrqLine::set_level`] is called with `true` on
//!   every evaluation that finds the line asserted — a level-triggered irqfd
//!   with resample needs the re-trigger — and with `false` on each transition
//!   to deasserted.
//! - **Async completion.** By default an async port's work is done inside
//!   `io_write` and its `IO_CMD` raised before `io_write` returns. A VMM that
//!   runs async work elsewhere can call
//!   [`QxlDevice::set_deferred_async_completion`]; the interrupt is then raised
//!   by [`QxlDevice::complete_async`], and a second async port written before
//!   that is a guest bug, as in QEMU.
//!
//! Deliberate differences from QEMU, all on paths no known driver takes:
//! `MEMSLOT_DEL` really removes the slot (QEMU leaves spice-server translating
//! through it); an empty `UPDATE_AREA` rectangle is cancelled without raising
//! `ERROR` (QEMU raises and immediately clears the bug); `FLUSH_RELEASE` with
//! nothing pending publishes nothing (QEMU publishes an empty id 0); the client
//! monitors configuration survives a reset (it lives in the shadow ROM); a ring
//! whose `prod - cons` exceeds its size is a guest bug.

use std::collections::BTreeMap;

use spice_server::command::{AreaPixels, Command, DisplaySink, Rect, SurfaceCmd, SurfaceCreate};
use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::qxl::abi::{self, interrupt, io, rom as rom_off, surface_create as sc};
use crate::qxl::decode::{self, Limits, SurfaceMem};
use crate::qxl::guest::GuestView;
use crate::qxl::memslot::{MemSlot, MemSlots, NUM_MEMSLOTS, make_phys};
use crate::qxl::metrics::{Metrics, inc};
use crate::qxl::pci::{BarDesc, BarKind, PciConfig, PciIdentity};
use crate::qxl::ram::{RamHeader, SurfaceCreateRaw};
use crate::qxl::release::{Published, Queued, ReleaseBatch};
use crate::qxl::ring::{RawCommand, RingDesc};
use crate::qxl::rom::{self, ClientHead, QxlMode, RamLayout, RomParams};

/// The device's legacy INTx line (INTA#, level-triggered).
pub trait IrqLine {
    /// Drive the line. Called with `true` on every evaluation that finds an
    /// unmasked pending interrupt (even if the line is already asserted), and
    /// with `false` when the line goes from asserted to deasserted.
    fn set_level(&self, asserted: bool);
}

impl<T: IrqLine + ?Sized> IrqLine for &T {
    fn set_level(&self, asserted: bool) {
        (**self).set_level(asserted);
    }
}

impl<T: IrqLine + ?Sized> IrqLine for std::sync::Arc<T> {
    fn set_level(&self, asserted: bool) {
        (**self).set_level(asserted);
    }
}

/// The device mode (`QXL_MODE_*` in QEMU's `qxl.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Mode {
    /// No primary surface; command rings are consumed.
    Undefined = 0,
    /// Legacy VGA/VBE framebuffer; command rings are not consumed.
    Vga = 1,
    /// qxl-1 compat mode set with `SET_MODE`.
    Compat = 2,
    /// Native mode: a primary created with `CREATE_PRIMARY`.
    Native = 3,
}

/// Device parameters (QEMU's `qxl` / `qxl-vga` properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QxlConfig {
    /// QXL revision = PCI revision id, 1..=5 (default 5; Linux needs 4+).
    pub revision: u8,
    /// `true`: `qxl-vga` (class 0x030000, resets into VGA mode); `false`: secondary
    /// `qxl` (class 0x038000, resets into undefined mode).
    pub vga: bool,
    /// BAR0 size (power of two, default 64 MiB).
    pub ram_size: u64,
    /// BAR1 size (power of two, at least 4 KiB, default 64 MiB; forced to 4 KiB for revision 1).
    pub vram_size: u64,
    /// Full VRAM size behind BAR4; 0 (default) or anything not above
    /// `vram_size` means no BAR4.
    pub vram64_size: u64,
    /// Surface-0 / VGA framebuffer size (power of two, at most `ram_size / 2`, default 16 MiB).
    pub vgamem_size: u64,
    /// Number of surface ids (ROM `n_surfaces`, default 1024).
    pub n_surfaces: u32,
    /// Device id (ROM `id`, display channel id).
    pub id: u32,
    /// Maximum heads written into the ROM client monitors config (0 = 64).
    pub max_outputs: u16,
}

impl Default for QxlConfig {
    fn default() -> Self {
        Self {
            revision: abi::MAX_REVISION,
            vga: true,
            ram_size: 64 << 20,
            vram_size: 64 << 20,
            vram64_size: 0,
            vgamem_size: 16 << 20,
            n_surfaces: 1024,
            id: 0,
            max_outputs: 0,
        }
    }
}

impl QxlConfig {
    /// The configuration as the device uses it: revision 1 forces the VRAM to
    /// 4 KiB, and a `vram64_size` below `vram_size` is raised to it (as QEMU does).
    pub fn normalized(&self) -> Self {
        self.clone().into_normalized()
    }

    /// [`Self::normalized`], consuming `self`.
    pub fn into_normalized(self) -> Self {
        let mut c = self;
        if c.revision == 1 {
            c.vram_size = abi::PAGE_SIZE;
            c.vram64_size = abi::PAGE_SIZE;
        }
        c.vram64_size = c.vram64_size.max(c.vram_size);
        c
    }

    /// True when BAR4 (64-bit VRAM) exists.
    pub fn has_vram64_bar(&self) -> bool {
        let c = self.normalized();
        c.vram64_size > c.vram_size
    }

    /// Bytes of VRAM in device memory (`max(vram_size, vram64_size)` after normalisation).
    pub fn vram_total_size(&self) -> u64 {
        self.normalized().vram64_size
    }

    /// Size of the device memory the device must be given: BAR0 then the VRAM.
    pub fn device_memory_size(&self) -> u64 {
        self.ram_size.saturating_add(self.vram_total_size())
    }

    /// Device address of the first VRAM byte (= `ram_size`).
    pub fn vram_local_base(&self) -> u64 {
        self.ram_size
    }

    /// Size of the ROM BAR (8 KiB).
    pub fn rom_size(&self) -> u64 {
        rom::ROM_SIZE
    }

    /// Size of the I/O BAR: 8, 16 or 32 bytes for revision 1, 2, 3+.
    pub fn io_size(&self) -> u64 {
        match self.revision {
            0 | 1 => 8,
            2 => 16,
            _ => 32,
        }
    }

    /// Check the parameters (a VMM error, not a guest one).
    pub fn validate(&self) -> Result<()> {
        let bad = |what| Err(Error::InvalidConfig(what));
        if !(1..=abi::MAX_REVISION).contains(&self.revision) {
            return bad("revision must be 1..=5");
        }
        if !self.ram_size.is_power_of_two() || self.ram_size > 1 << 31 {
            return bad("ram_size must be a power of two of at most 2 GiB");
        }
        if !self.vgamem_size.is_power_of_two()
            || self.vgamem_size < abi::PAGE_SIZE
            || self.vgamem_size > 256 << 20
        {
            return bad("vgamem_size must be a power of two in 4 KiB..=256 MiB");
        }
        if self.vgamem_size > self.ram_size / 2 {
            return bad("vgamem_size must be at most ram_size / 2");
        }
        if RamLayout::new(self.ram_size, self.vgamem_size).is_none() {
            return bad("ram_size too small for vgamem and the RAM header");
        }
        let c = self.normalized();
        if !c.vram_size.is_power_of_two() || c.vram_size < abi::PAGE_SIZE || c.vram_size > 1 << 31 {
            return bad("vram_size must be a power of two in 4 KiB..=2 GiB");
        }
        if !c.vram64_size.is_power_of_two() || c.vram64_size > 1 << 40 {
            return bad("vram64_size must be 0 or a power of two of at most 1 TiB");
        }
        if self.n_surfaces == 0 || self.n_surfaces > 1 << 16 {
            return bad("n_surfaces must be 1..=65536");
        }
        Ok(())
    }

    fn pci_identity(&self) -> PciIdentity {
        let c = self.normalized();
        let mut bars = [None; 6];
        bars[abi::RAM_RANGE_INDEX] = Some(BarDesc {
            size: c.ram_size,
            kind: BarKind::Mem32,
        });
        bars[abi::VRAM_RANGE_INDEX] = Some(BarDesc {
            size: c.vram_size,
            kind: BarKind::Mem32,
        });
        bars[abi::ROM_RANGE_INDEX] = Some(BarDesc {
            size: c.rom_size(),
            kind: BarKind::Mem32,
        });
        bars[abi::IO_RANGE_INDEX] = Some(BarDesc {
            size: c.io_size(),
            kind: BarKind::Io,
        });
        if c.has_vram64_bar() {
            bars[abi::VRAM64_RANGE_INDEX] = Some(BarDesc {
                size: c.vram64_size,
                kind: BarKind::Mem64Prefetch,
            });
        }
        PciIdentity {
            revision: c.revision,
            class: if c.vga {
                abi::PCI_CLASS_DISPLAY_VGA
            } else {
                abi::PCI_CLASS_DISPLAY_OTHER
            },
            bars,
        }
    }
}

/// Which guest-produced ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RingKind {
    Command,
    Cursor,
}

/// What a port handler asks `io_write` to do afterwards.
#[derive(Debug)]
enum Outcome {
    /// Done: complete the async op (if any) normally.
    Done,
    /// Cancelled: raise `IO_CMD` now for an async op (QEMU `cancel_async`).
    Cancel,
    /// A guest bug: latch it (and still complete an async op).
    Bug(Error),
}

/// The QXL device.
pub struct QxlDevice<M: GuestView, I: IrqLine, S: DisplaySink> {
    config: QxlConfig,
    mem: M,
    irq: I,
    sink: S,
    pci: PciConfig,
    rom: Vec<u8>,
    shadow_rom: Vec<u8>,
    modes: Vec<QxlMode>,
    ram: RamHeader,
    slots: MemSlots,
    mode: Mode,
    cmdflags: u32,
    guest_bug: bool,
    current_async: Option<u64>,
    defer_async: bool,
    primary: Option<SurfaceMem>,
    surfaces: BTreeMap<u32, SurfaceMem>,
    release: ReleaseBatch,
    line: bool,
    limits: Limits,
    metrics: Metrics,
}

impl<M: GuestView, I: IrqLine, S: DisplaySink> std::fmt::Debug for QxlDevice<M, I, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QxlDevice")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .field("guest_bug", &self.guest_bug)
            .field("current_async", &self.current_async)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl<M: GuestView, I: IrqLine, S: DisplaySink> QxlDevice<M, I, S> {
    /// Create the device over `mem` (device memory of at least
    /// [`QxlConfig::device_memory_size`] bytes: BAR0 at 0, VRAM after it) and
    /// reset it, as a machine reset does (`qxl-vga` starts in VGA mode).
    pub fn new(config: QxlConfig, mem: M, irq: I, sink: S) -> Result<Self> {
        config.validate()?;
        let config = config.into_normalized();
        let layout = RamLayout::new(config.ram_size, config.vgamem_size)
            .ok_or(Error::InvalidConfig("RAM layout"))?;
        // The device memory must back both ends of BAR0 and of the VRAM.
        let mut probe = [0u8; 1];
        for addr in [
            0,
            config.ram_size - 1,
            config.vram_local_base(),
            config.device_memory_size() - 1,
        ] {
            mem.read_bytes(GuestAddress(addr), &mut probe)
                .map_err(|_| {
                    Error::InvalidConfig("device memory smaller than device_memory_size()")
                })?;
        }
        let rom = rom::build_rom(&RomParams {
            id: config.id,
            n_surfaces: config.n_surfaces,
            vgamem: config.vgamem_size,
            layout,
        });
        let limits = Limits {
            n_surfaces: config.n_surfaces,
            ..Limits::default()
        };
        let mut dev = Self {
            pci: PciConfig::new(&config.pci_identity()),
            modes: rom::read_modes(&rom),
            shadow_rom: rom.clone(),
            rom,
            ram: RamHeader::new(u64::from(layout.ram_header_offset)),
            slots: MemSlots::new(),
            mode: Mode::Undefined,
            cmdflags: 0,
            guest_bug: false,
            current_async: None,
            defer_async: false,
            primary: None,
            surfaces: BTreeMap::new(),
            release: ReleaseBatch::new(),
            line: false,
            limits,
            metrics: Metrics::default(),
            config,
            mem,
            irq,
            sink,
        };
        dev.hard_reset();
        Ok(dev)
    }

    // ----------------------------------------------------------------------
    // Accessors.

    /// The (normalised) configuration.
    pub fn config(&self) -> &QxlConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The display sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The display sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The device memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The interrupt line.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True while a guest bug is latched (cleared by `RESET`).
    pub fn guest_bug(&self) -> bool {
        self.guest_bug
    }

    /// The memslot table.
    pub fn slots(&self) -> &MemSlots {
        &self.slots
    }

    /// The RAM header location.
    pub fn ram_header(&self) -> RamHeader {
        self.ram
    }

    /// The primary surface's memory, when one exists.
    pub fn primary_surface(&self) -> Option<&SurfaceMem> {
        self.primary.as_ref()
    }

    /// The memory of off-screen surface `id`, when it exists.
    pub fn surface(&self, id: u32) -> Option<&SurfaceMem> {
        self.surfaces.get(&id)
    }

    /// The async port in flight, if any.
    pub fn async_in_flight(&self) -> Option<u64> {
        self.current_async
    }

    /// Resources chained into the unpublished release batch.
    pub fn pending_releases(&self) -> usize {
        self.release.len()
    }

    /// The current INTx level as last driven.
    pub fn irq_level(&self) -> bool {
        self.line
    }

    /// The decoder limits in use.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replace the decoder limits (`n_surfaces` is kept from the configuration).
    pub fn set_limits(&mut self, mut limits: Limits) {
        limits.n_surfaces = self.config.n_surfaces;
        self.limits = limits;
    }

    /// The compat mode list as stored in the ROM.
    pub fn modes(&self) -> &[QxlMode] {
        &self.modes
    }

    // ----------------------------------------------------------------------
    // PCI configuration space and BARs.

    /// Read the configuration space.
    pub fn pci_config_read(&self, offset: u16, data: &mut [u8]) {
        self.pci.read(offset, data);
    }

    /// Write the configuration space (only writable bits change; BAR sizing
    /// probes read back the size mask).
    pub fn pci_config_write(&mut self, offset: u16, data: &[u8]) {
        if self.pci.write(offset, data) {
            // INTx disable may have changed.
            self.update_irq();
        }
    }

    /// The programmed guest-physical base of BAR `bar` (`None` when
    /// unimplemented, unprogrammed or its decoding is disabled). BAR4 is the
    /// 64-bit VRAM BAR; BAR5 (its upper half) is always `None`.
    pub fn bar_address(&self, bar: usize) -> Option<u64> {
        self.pci.bar_address(bar)
    }

    /// Read the ROM (BAR2). Bytes beyond the ROM read as 0.
    pub fn rom_read(&self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = u64::try_from(i)
                .ok()
                .and_then(|i| offset.checked_add(i))
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.rom.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// The ROM contents (for glue that maps BAR2 read-only).
    pub fn rom(&self) -> &[u8] {
        &self.rom
    }

    // ----------------------------------------------------------------------
    // Interrupts.

    fn send_events(&mut self, bits: u32) {
        inc(&self.metrics.interrupts_raised);
        let addr = self.ram.addr(abi::ram::INT_PENDING);
        if let Err(e) = self.mem.fetch_or_u32(addr, bits) {
            inc(&self.metrics.ram_access_errors);
            log::warn!("qxl{}: cannot set int_pending: {e}", self.config.id);
        }
        self.update_irq();
    }

    /// Re-evaluate the line (`QXL_IO_UPDATE_IRQ`, and after every event).
    fn update_irq(&mut self) {
        let pending = self.ram.int_pending(&self.mem);
        let mask = self.ram.int_mask(&self.mem);
        let active = match (pending, mask) {
            (Ok(p), Ok(m)) => p & m != 0,
            (Err(e), _) | (_, Err(e)) => {
                inc(&self.metrics.ram_access_errors);
                log::warn!(
                    "qxl{}: cannot read interrupt registers: {e}",
                    self.config.id
                );
                false
            }
        };
        self.pci.set_interrupt_status(active);
        let level = active && !self.pci.intx_disabled();
        if level {
            inc(&self.metrics.irq_asserts);
            self.irq.set_level(true);
        } else if self.line {
            inc(&self.metrics.irq_deasserts);
            self.irq.set_level(false);
        }
        self.line = level;
    }

    fn set_guest_bug(&mut self, err: &Error) {
        inc(&self.metrics.guest_bugs);
        log::warn!("qxl{}: guest bug: {err}", self.config.id);
        self.send_events(interrupt::ERROR);
        self.guest_bug = true;
    }

    // ----------------------------------------------------------------------
    // Reset.

    /// Hard reset (`QXL_IO_RESET`, machine reset): forget surfaces, memslots
    /// and the unpublished release batch, restore the ROM, re-initialise the
    /// RAM header and rings, clear the guest bug and async state, and enter
    /// VGA mode (`qxl-vga`) or undefined mode (`qxl`).
    pub fn hard_reset(&mut self) {
        self.sink.reset();
        self.surfaces.clear();
        self.primary = None;
        self.mode = Mode::Undefined;
        self.slots.clear();
        // Reset state: ROM from its shadow, RAM header, release batch, IRQ.
        if let Some(b) = self
            .shadow_rom
            .get_mut(rom_off::UPDATE_ID..rom_off::UPDATE_ID + 4)
        {
            b.fill(0);
        }
        self.rom.clone_from(&self.shadow_rom);
        if let Err(e) = self.ram.init(&self.mem) {
            inc(&self.metrics.ram_access_errors);
            log::warn!(
                "qxl{}: cannot initialise the RAM header: {e}",
                self.config.id
            );
        }
        self.release.reset();
        self.update_irq();
        self.soft_reset();
    }

    fn soft_reset(&mut self) {
        self.guest_bug = false;
        self.current_async = None;
        self.cmdflags = 0;
        self.mode = if self.config.vga {
            Mode::Vga
        } else {
            Mode::Undefined
        };
    }

    /// A guest wrote a legacy VGA register (0x3b4/5, 0x3ba, 0x3c0–0x3cf,
    /// 0x3d4/5, 0x3da). For `qxl-vga` up to revision 4 this drops the device
    /// back into VGA mode (destroying the primary), as QEMU does; revision 5
    /// ignores it. The VGA emulation itself is the glue's business.
    pub fn legacy_vga_write(&mut self) {
        if !self.config.vga || self.config.revision > abi::REVISION_V12 || self.mode == Mode::Vga {
            return;
        }
        self.destroy_primary();
        self.soft_reset();
    }

    // ----------------------------------------------------------------------
    // I/O ports.

    /// Read an I/O port: QXL ports are write-only and read as 0xff.
    pub fn io_read(&mut self, port: u64) -> u8 {
        let _ = port;
        inc(&self.metrics.io_reads);
        0xff
    }

    /// Write `value` to I/O port `port` (offset in BAR3).
    pub fn io_write(&mut self, port: u64, value: u8) {
        inc(&self.metrics.io_writes);
        if self.guest_bug && port != io::RESET {
            inc(&self.metrics.io_ignored_guest_bug);
            return;
        }
        let too_new = match io::min_revision(port) {
            Some(r) => r > self.config.revision,
            None => self.config.revision <= abi::REVISION_V10,
        };
        if too_new {
            self.set_guest_bug(&Error::UnexpectedPort { port, value });
            return;
        }
        if self.mode == Mode::Vga && !io::allowed_in_vga_mode(port) {
            inc(&self.metrics.io_ignored_vga_mode);
            // Be nice to buggy drivers, as QEMU is: async-range ports still get IO_CMD.
            if (io::UPDATE_AREA_ASYNC..io::RANGE_SIZE).contains(&port) {
                self.send_events(interrupt::IO_CMD);
            }
            return;
        }
        let is_async = io::is_async(port);
        if is_async {
            if let Some(pending) = self.current_async {
                self.set_guest_bug(&Error::AsyncBusy { port, pending });
                return;
            }
            self.current_async = Some(port);
            inc(&self.metrics.async_started);
        }
        let outcome = self.dispatch(io::sync_equivalent(port), port, value);
        match outcome {
            Outcome::Done => {
                if is_async && !self.defer_async {
                    self.complete_async();
                }
            }
            Outcome::Cancel => {
                if is_async {
                    self.complete_async();
                }
            }
            Outcome::Bug(e) => {
                self.set_guest_bug(&e);
                if is_async {
                    self.complete_async();
                }
            }
        }
    }

    /// Choose whether async ports complete inside `io_write` (the default) or
    /// only when [`Self::complete_async`] is called.
    pub fn set_deferred_async_completion(&mut self, deferred: bool) {
        self.defer_async = deferred;
    }

    /// Complete the async operation in flight: raise `QXL_INTERRUPT_IO_CMD`.
    /// Returns false when none was in flight.
    pub fn complete_async(&mut self) -> bool {
        if self.current_async.take().is_none() {
            return false;
        }
        inc(&self.metrics.async_completed);
        self.send_events(interrupt::IO_CMD);
        true
    }

    fn dispatch(&mut self, port: u64, orig_port: u64, value: u8) -> Outcome {
        match port {
            io::NOTIFY_CMD | io::NOTIFY_CURSOR => {
                // QEMU wakes the worker, which serves both rings (old Linux used
                // NOTIFY_CMD for the cursor ring too).
                self.process_cmd_ring();
                self.process_cursor_ring();
                Outcome::Done
            }
            io::UPDATE_AREA => self.io_update_area(),
            io::UPDATE_IRQ => {
                self.update_irq();
                Outcome::Done
            }
            io::NOTIFY_OOM => self.io_notify_oom(),
            io::RESET => {
                self.hard_reset();
                Outcome::Done
            }
            io::SET_MODE => self.io_set_mode(value),
            io::LOG => self.io_log(),
            io::MEMSLOT_ADD => self.io_memslot_add(value),
            io::MEMSLOT_DEL => {
                if usize::from(value) >= NUM_MEMSLOTS {
                    return Outcome::Bug(Error::SlotIdOutOfRange {
                        slot: value,
                        count: NUM_MEMSLOTS,
                    });
                }
                match self.slots.del(value) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Bug(e),
                }
            }
            io::CREATE_PRIMARY => {
                if value != 0 {
                    return Outcome::Bug(Error::UnexpectedPort {
                        port: orig_port,
                        value,
                    });
                }
                match self.ram.read_create_surface(&self.mem) {
                    Ok(raw) => self.create_primary(&raw),
                    Err(e) => Outcome::Bug(e),
                }
            }
            io::DESTROY_PRIMARY => {
                if value != 0 {
                    return Outcome::Bug(Error::UnexpectedPort {
                        port: orig_port,
                        value,
                    });
                }
                if self.destroy_primary() {
                    Outcome::Done
                } else {
                    Outcome::Cancel
                }
            }
            io::DESTROY_SURFACE_WAIT => {
                let id = u32::from(value);
                if id >= self.config.n_surfaces {
                    return Outcome::Bug(Error::SurfaceIdOutOfRange {
                        id,
                        max: self.config.n_surfaces,
                    });
                }
                self.process_cmd_ring();
                self.sink.destroy_surface_wait(id);
                Outcome::Done
            }
            io::DESTROY_ALL_SURFACES => {
                self.process_cmd_ring();
                self.mode = Mode::Undefined;
                self.primary = None;
                self.surfaces.clear();
                self.sink.destroy_all_surfaces();
                Outcome::Done
            }
            io::FLUSH_SURFACES_ASYNC => {
                self.process_cmd_ring();
                self.sink.flush_surfaces();
                Outcome::Done
            }
            io::FLUSH_RELEASE => {
                self.flush_releases();
                Outcome::Done
            }
            io::MONITORS_CONFIG_ASYNC => {
                self.io_monitors_config();
                Outcome::Done
            }
            _ => Outcome::Bug(Error::UnexpectedPort {
                port: orig_port,
                value,
            }),
        }
    }

    fn io_update_area(&mut self) -> Outcome {
        let (area, surface_id) = match self.ram.read_update_area(&self.mem) {
            Ok(v) => v,
            Err(e) => return Outcome::Bug(e),
        };
        // QEMU compares with `>`: id == n_surfaces reaches the renderer, which
        // does not know it.
        if surface_id > self.config.n_surfaces {
            return Outcome::Bug(Error::SurfaceIdOutOfRange {
                id: surface_id,
                max: self.config.n_surfaces,
            });
        }
        if area.left >= area.right || area.top >= area.bottom || area.left < 0 || area.top < 0 {
            if area.left == area.right || area.top == area.bottom {
                // Old drivers send empty areas: tolerated.
                return Outcome::Cancel;
            }
            return Outcome::Bug(Error::InvalidValue {
                field: "update_area",
                value: u64::from(area.width()) << 32 | u64::from(area.height()),
            });
        }
        // The renderer first consumes everything the guest queued.
        self.process_cmd_ring();
        inc(&self.metrics.update_area_requests);
        if let Some(px) = self.sink.update_area(surface_id, area)
            && let Err(e) = self.write_area(surface_id, &px)
        {
            inc(&self.metrics.update_area_write_errors);
            log::warn!(
                "qxl{}: cannot write rendered area of surface {surface_id}: {e}",
                self.config.id
            );
        }
        Outcome::Done
    }

    /// Write rendered pixels into the guest memory of `surface_id`, clipped to
    /// the surface, honouring a negative (bottom-up) stride.
    fn write_area(&self, surface_id: u32, px: &AreaPixels) -> Result<()> {
        let sm = if surface_id == 0 {
            self.primary
        } else {
            self.surfaces.get(&surface_id).copied()
        };
        let Some(sm) = sm else {
            return Ok(());
        };
        let bpp = sm.format.bpp();
        if bpp % 8 != 0 {
            return Err(Error::InvalidSurface(
                "cannot write back a sub-byte surface format",
            ));
        }
        let bytes_pp = u64::from(bpp / 8);
        let bounds = Rect::new(
            0,
            0,
            i32::try_from(sm.width).unwrap_or(i32::MAX),
            i32::try_from(sm.height).unwrap_or(i32::MAX),
        );
        let Some(area) = px.area.intersect(&bounds) else {
            return Ok(());
        };
        let ovf = || Error::Overflow("update area");
        let to_u64 = |v: i64| u64::try_from(v).map_err(|_| ovf());
        let row_bytes = u64::from(area.width())
            .checked_mul(bytes_pp)
            .ok_or_else(ovf)?;
        let row_len = usize::try_from(row_bytes).map_err(|_| ovf())?;
        let src_x = to_u64(i64::from(area.left) - i64::from(px.area.left))?
            .checked_mul(bytes_pp)
            .ok_or_else(ovf)?;
        let src_y0 = to_u64(i64::from(area.top) - i64::from(px.area.top))?;
        let src_stride = u64::try_from(px.stride).map_err(|_| ovf())?;
        let abs_stride = u64::from(sm.stride.unsigned_abs());
        let dst_x = to_u64(i64::from(area.left))?
            .checked_mul(bytes_pp)
            .ok_or_else(ovf)?;
        let top = to_u64(i64::from(area.top))?;
        for r in 0..u64::from(area.height()) {
            let src_off = src_y0
                .checked_add(r)
                .and_then(|y| y.checked_mul(src_stride))
                .and_then(|o| o.checked_add(src_x))
                .ok_or_else(ovf)?;
            let src_off = usize::try_from(src_off).map_err(|_| ovf())?;
            let src = px
                .data
                .get(src_off..src_off.checked_add(row_len).ok_or_else(ovf)?)
                .ok_or(Error::Malformed(
                    "update_area pixels shorter than their area",
                ))?;
            let y = top.checked_add(r).ok_or_else(ovf)?;
            let line = if sm.stride >= 0 {
                y
            } else {
                u64::from(sm.height)
                    .checked_sub(1)
                    .and_then(|h| h.checked_sub(y))
                    .ok_or_else(ovf)?
            };
            let dst = line
                .checked_mul(abs_stride)
                .and_then(|o| o.checked_add(dst_x))
                .and_then(|o| o.checked_add(sm.addr.0))
                .ok_or_else(ovf)?;
            self.mem.write_bytes(GuestAddress(dst), src)?;
        }
        Ok(())
    }

    fn io_notify_oom(&mut self) -> Outcome {
        let ring = RingDesc::release(&self.ram);
        match ring.read_header(&self.mem) {
            Ok(h) if h.prod != h.cons => return Outcome::Done,
            Ok(_) => {}
            Err(e) => {
                inc(&self.metrics.ring_errors);
                return Outcome::Bug(e);
            }
        }
        inc(&self.metrics.oom_runs);
        self.release.set_oom_running(true);
        self.process_cmd_ring();
        self.release.set_oom_running(false);
        self.flush_releases();
        Outcome::Done
    }

    fn io_set_mode(&mut self, value: u8) -> Outcome {
        let Some(mode) = self.modes.get(usize::from(value)).copied() else {
            return Outcome::Bug(Error::InvalidValue {
                field: "SET_MODE mode index",
                value: u64::from(value),
            });
        };
        let Some(bar0) = self.pci.bar_address(abi::RAM_RANGE_INDEX) else {
            return Outcome::Bug(Error::InvalidState("SET_MODE while BAR0 is not mapped"));
        };
        self.hard_reset();
        let slot = MemSlot {
            virt_start: bar0,
            size: self.config.ram_size,
            local_start: 0,
            generation: 0,
        };
        if let Err(e) = self.slots.add(0, slot) {
            return Outcome::Bug(e);
        }
        let Some(stride) = i32::try_from(mode.x_res)
            .ok()
            .and_then(|x| x.checked_mul(-4))
        else {
            return Outcome::Bug(Error::Overflow("compat stride"));
        };
        let raw = SurfaceCreateRaw {
            width: mode.x_res,
            height: mode.y_res,
            stride,
            format: sc::FMT_32_XRGB,
            position: 0,
            mouse_mode: 1,
            flags: 0,
            kind: sc::TYPE_PRIMARY,
            mem: make_phys(0, 0, bar0),
        };
        match self.create_primary(&raw) {
            Outcome::Done => {}
            other => return other,
        }
        self.mode = Mode::Compat;
        self.cmdflags = abi::cmd::FLAG_COMPAT;
        if mode.bits == 16 {
            self.cmdflags |= abi::cmd::FLAG_COMPAT_16BPP;
        }
        let index = u32::from(value);
        for rom in [&mut self.rom, &mut self.shadow_rom] {
            crate::qxl::guest::le::put_u32(rom, rom_off::MODE, index);
        }
        Outcome::Done
    }

    fn io_log(&mut self) -> Outcome {
        match self.ram.read_log(&self.mem) {
            Ok(text) => {
                inc(&self.metrics.log_messages);
                let text = String::from_utf8_lossy(&text);
                log::info!(
                    "qxl{}: guest: {}",
                    self.config.id,
                    text.trim_end().escape_debug()
                );
                Outcome::Done
            }
            Err(e) => Outcome::Bug(e),
        }
    }

    fn io_memslot_add(&mut self, value: u8) -> Outcome {
        if usize::from(value) >= NUM_MEMSLOTS || self.slots.get(value).is_some() {
            return Outcome::Bug(Error::SlotAdd(value));
        }
        let (start, end) = match self.ram.read_mem_slot(&self.mem) {
            Ok(v) => v,
            Err(e) => return Outcome::Bug(e),
        };
        let not_in_bar = Error::SlotRangeNotInBar { start, end };
        if start > end {
            return Outcome::Bug(not_in_bar);
        }
        let vram = self.config.vram_local_base();
        let regions = [
            (abi::RAM_RANGE_INDEX, 0, self.config.ram_size),
            (abi::VRAM_RANGE_INDEX, vram, self.config.vram_size),
            (abi::VRAM64_RANGE_INDEX, vram, self.config.vram64_size),
        ];
        let found = regions.iter().find_map(|&(bar, local, size)| {
            let base = self.pci.bar_address(bar)?;
            let bar_end = base.checked_add(size)?;
            if start < base || start > bar_end || end > bar_end {
                return None;
            }
            Some(MemSlot {
                virt_start: 0,
                size: end - start,
                local_start: local.checked_add(start - base)?,
                generation: 0,
            })
        });
        let Some(slot) = found else {
            return Outcome::Bug(not_in_bar);
        };
        if let Err(e) = self.slots.add(value, slot) {
            return Outcome::Bug(e);
        }
        for rom in [&mut self.rom, &mut self.shadow_rom] {
            if let Some(b) = rom.get_mut(rom_off::SLOT_GENERATION) {
                *b = 0;
            }
        }
        Outcome::Done
    }

    /// `CREATE_PRIMARY` (and the compat mode set).
    fn create_primary(&mut self, raw: &SurfaceCreateRaw) -> Outcome {
        let size = u64::from(raw.stride.unsigned_abs()).saturating_mul(u64::from(raw.height));
        if raw.stride == i32::MIN || size > self.config.vgamem_size {
            return Outcome::Bug(Error::InvalidSurface("primary larger than the framebuffer"));
        }
        if self.mode == Mode::Native {
            // QEMU flags it and carries on.
            self.set_guest_bug(&Error::InvalidState(
                "CREATE_PRIMARY while a primary exists",
            ));
        }
        if self.mode == Mode::Vga {
            self.mode = Mode::Undefined;
        }
        if raw.stride % 4 != 0 {
            return Outcome::Bug(Error::InvalidSurface("primary stride not a multiple of 4"));
        }
        if self.primary.take().is_some() {
            self.sink.destroy_primary();
        }
        let sm = match decode::map_surface(
            &self.mem,
            &self.slots,
            raw.mem,
            raw.width,
            raw.height,
            raw.stride,
            raw.format,
            &self.limits,
        ) {
            Ok(sm) => sm,
            Err(e) => {
                inc(&self.metrics.surface_errors);
                return Outcome::Bug(e);
            }
        };
        let initial = if raw.flags & sc::FLAG_KEEP_DATA != 0 {
            match decode::read_surface_pixels(&self.mem, &sm) {
                Ok(px) => Some(px),
                Err(e) => {
                    inc(&self.metrics.surface_errors);
                    return Outcome::Bug(e);
                }
            }
        } else {
            None
        };
        self.mode = Mode::Native;
        self.cmdflags = 0;
        self.primary = Some(sm);
        self.sink.create_primary(SurfaceCreate {
            surface_id: 0,
            format: sm.format,
            width: raw.width,
            height: raw.height,
            stride: raw.stride,
            flags: raw.flags,
            position: raw.position,
            initial,
        });
        Outcome::Done
    }

    /// Destroy the primary; false when there is none (mode undefined).
    fn destroy_primary(&mut self) -> bool {
        match self.mode {
            Mode::Undefined => false,
            Mode::Vga => {
                self.mode = Mode::Undefined;
                true
            }
            Mode::Compat | Mode::Native => {
                self.mode = Mode::Undefined;
                if self.primary.take().is_some() {
                    self.sink.destroy_primary();
                }
                true
            }
        }
    }

    fn io_monitors_config(&mut self) {
        let cfg = self.ram.read_monitors_config(&self.mem).and_then(|phys| {
            decode::decode_monitors_config(&self.mem, &self.slots, phys, &self.limits)
        });
        match cfg {
            Ok(cfg) => {
                inc(&self.metrics.monitors_config_sent);
                self.sink.monitors_config(cfg);
            }
            Err(e) => {
                inc(&self.metrics.monitors_config_ignored);
                log::warn!("qxl{}: monitors config ignored: {e}", self.config.id);
            }
        }
    }

    // ----------------------------------------------------------------------
    // Client side (called by the SPICE server glue).

    /// A SPICE client connected with display capabilities `caps` (revision 4+):
    /// set ROM `client_present` = 1 and `client_capabilities` (58 bytes, `caps`
    /// truncated or zero-padded), then raise `QXL_INTERRUPT_CLIENT`.
    pub fn set_client_present(&mut self, caps: &[u8]) {
        if self.config.revision < abi::REVISION_V12 {
            return;
        }
        let mut bytes = [0u8; rom_off::CLIENT_CAPABILITIES_LEN];
        for (d, s) in bytes.iter_mut().zip(caps) {
            *d = *s;
        }
        for rom in [&mut self.rom, &mut self.shadow_rom] {
            if let Some(b) = rom.get_mut(rom_off::CLIENT_PRESENT) {
                *b = 1;
            }
            if let Some(dst) = rom.get_mut(
                rom_off::CLIENT_CAPABILITIES
                    ..rom_off::CLIENT_CAPABILITIES + rom_off::CLIENT_CAPABILITIES_LEN,
            ) {
                dst.copy_from_slice(&bytes);
            }
        }
        self.send_events(interrupt::CLIENT);
    }

    /// The client asked for this monitor layout (`(x, y, width, height)` per
    /// head). Writes it into the ROM client monitors config (with its CRC) and
    /// raises `QXL_INTERRUPT_CLIENT_MONITORS_CONFIG` if it changed. Returns
    /// false — "not handled, send it to the guest agent instead" — when the
    /// revision is below 4 or the guest's `int_mask` is 0, all ones, or lacks
    /// the CLIENT_MONITORS_CONFIG bit (old drivers), as QEMU does.
    pub fn set_client_monitors_config(&mut self, heads: &[(i32, i32, u32, u32)]) -> bool {
        if self.config.revision < abi::REVISION_V12 {
            inc(&self.metrics.client_monitors_config_refused);
            return false;
        }
        let mask = match self.ram.int_mask(&self.mem) {
            Ok(m) => m,
            Err(e) => {
                inc(&self.metrics.ram_access_errors);
                log::warn!("qxl{}: cannot read int_mask: {e}", self.config.id);
                return false;
            }
        };
        if mask == 0 || mask == u32::MAX || mask & interrupt::CLIENT_MONITORS_CONFIG == 0 {
            inc(&self.metrics.client_monitors_config_refused);
            return false;
        }
        let max = match self.config.max_outputs {
            0 => rom_off::CLIENT_MONITORS_CONFIG_MAX_HEADS,
            n => usize::from(n).min(rom_off::CLIENT_MONITORS_CONFIG_MAX_HEADS),
        };
        let heads: Vec<ClientHead> = heads
            .iter()
            .map(|&(x, y, width, height)| ClientHead {
                x,
                y,
                width,
                height,
            })
            .collect();
        let changed = rom::write_client_monitors_config(&mut self.rom, &heads, max);
        rom::write_client_monitors_config(&mut self.shadow_rom, &heads, max);
        inc(&self.metrics.client_monitors_config_written);
        if changed {
            self.send_events(interrupt::CLIENT_MONITORS_CONFIG);
        }
        true
    }

    // ----------------------------------------------------------------------
    // Rings.

    fn rings_active(&self) -> bool {
        !self.guest_bug && self.mode != Mode::Vga
    }

    /// Consume the command ring: decode, hand to the sink, release. Pops at
    /// most 4 × the ring size per call; returns true when it stopped with work
    /// left (call again). Does nothing in VGA mode or while a guest bug is latched.
    pub fn process_cmd_ring(&mut self) -> bool {
        self.process_ring(RingKind::Command)
    }

    /// Consume the cursor ring; same contract as [`Self::process_cmd_ring`].
    pub fn process_cursor_ring(&mut self) -> bool {
        self.process_ring(RingKind::Cursor)
    }

    fn process_ring(&mut self, kind: RingKind) -> bool {
        let desc = match kind {
            RingKind::Command => RingDesc::command(&self.ram),
            RingKind::Cursor => RingDesc::cursor(&self.ram),
        };
        let budget = desc.num_items.saturating_mul(4);
        let mut popped = 0u32;
        loop {
            if !self.rings_active() {
                return false;
            }
            if popped >= budget {
                inc(&self.metrics.ring_budget_exhausted);
                // Make sure the guest's next push notifies us again.
                if let Err(e) = desc.arm_notify_on_prod(&self.mem) {
                    self.ring_error(&e);
                }
                return true;
            }
            match desc.pop_command(&self.mem) {
                Err(e) => {
                    self.ring_error(&e);
                    return false;
                }
                Ok(None) => match desc.arm_notify_on_prod(&self.mem) {
                    Ok(true) => return false,
                    Ok(false) => {}
                    Err(e) => {
                        self.ring_error(&e);
                        return false;
                    }
                },
                Ok(Some((raw, notify))) => {
                    popped += 1;
                    if notify {
                        self.send_events(match kind {
                            RingKind::Command => interrupt::DISPLAY,
                            RingKind::Cursor => interrupt::CURSOR,
                        });
                    }
                    self.handle_command(kind, raw);
                }
            }
        }
    }

    fn ring_error(&mut self, e: &Error) {
        inc(&self.metrics.ring_errors);
        self.set_guest_bug(e);
    }

    fn handle_command(&mut self, kind: RingKind, raw: RawCommand) {
        use abi::cmd;
        // The release id is read once, before decoding.
        let release = self.read_release_info(raw.data);
        let known = matches!(
            raw.kind,
            cmd::DRAW | cmd::UPDATE | cmd::MESSAGE | cmd::SURFACE | cmd::CURSOR
        );
        let right_ring = match kind {
            RingKind::Command => raw.kind != cmd::CURSOR,
            RingKind::Cursor => raw.kind == cmd::CURSOR,
        };
        if known && !right_ring {
            inc(&self.metrics.wrong_ring_commands);
            log::warn!(
                "qxl{}: command type {} on the {kind:?} ring",
                self.config.id,
                raw.kind
            );
        } else {
            match decode::decode_command(
                &self.mem,
                &self.slots,
                raw.kind,
                raw.data,
                self.cmdflags,
                &self.limits,
            ) {
                Ok(d) => {
                    inc(match kind {
                        RingKind::Command => &self.metrics.cmd_ring_commands,
                        RingKind::Cursor => &self.metrics.cursor_ring_commands,
                    });
                    match &d.command {
                        Command::Surface(SurfaceCmd::Create(c)) => {
                            if let Some(sm) = d.surface_mem {
                                self.surfaces.insert(c.surface_id, sm);
                            }
                        }
                        Command::Surface(SurfaceCmd::Destroy { surface_id }) => {
                            self.surfaces.remove(surface_id);
                        }
                        _ => {}
                    }
                    self.sink.command(d.command);
                }
                Err(e) => {
                    inc(self.decode_error_counter(&e));
                    log::warn!(
                        "qxl{}: dropping command type {} at {:#x}: {e}",
                        self.config.id,
                        raw.kind,
                        raw.data
                    );
                    if raw.kind == cmd::SURFACE && matches!(e, Error::SurfaceIdOutOfRange { .. }) {
                        // QEMU's command tracking flags this one.
                        self.set_guest_bug(&e);
                    }
                }
            }
        }
        if let Some((info, id)) = release {
            self.queue_release(info, id);
        }
    }

    fn decode_error_counter(&self, e: &Error) -> &std::sync::atomic::AtomicU64 {
        let m = &self.metrics;
        match e {
            Error::SlotIdOutOfRange { .. }
            | Error::SlotInactive(_)
            | Error::SlotGeneration { .. }
            | Error::OutsideSlot { .. }
            | Error::PhysOverflow { .. } => &m.decode_errors_memslot,
            Error::GuestMemory { .. } => &m.decode_errors_guest_memory,
            Error::TooManyChunks(_) | Error::ChunkSizeMismatch { .. } => &m.decode_errors_chunks,
            Error::TooLarge { .. } | Error::Overflow(_) => &m.decode_errors_size,
            Error::InvalidValue { .. }
            | Error::NullPointer(_)
            | Error::Malformed(_)
            | Error::Unterminated(_) => &m.decode_errors_invalid_value,
            Error::SurfaceIdOutOfRange { .. } | Error::InvalidSurface(_) => {
                &m.decode_errors_surface
            }
            _ => &m.decode_errors_other,
        }
    }

    // ----------------------------------------------------------------------
    // Releases.

    /// Translate and read a command's `release_info` once.
    fn read_release_info(&self, phys: u64) -> Option<(GuestAddress, u64)> {
        let r = self
            .slots
            .translate(phys, abi::release_info::SIZE)
            .and_then(|addr| Ok((addr, self.mem.read_u64(addr)?)));
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                inc(&self.metrics.release_untranslatable);
                log::warn!(
                    "qxl{}: release_info of command at {phys:#x} unreachable: {e}",
                    self.config.id
                );
                None
            }
        }
    }

    fn queue_release(&mut self, info: GuestAddress, id: u64) {
        let id_log = self.config.id;
        match self.release.push(&self.mem, info, id) {
            Ok(Queued::Queued) => {
                inc(&self.metrics.releases_queued);
                if self.release.wants_publish() {
                    self.flush_releases();
                }
            }
            Ok(Queued::ZeroId) => {
                inc(&self.metrics.release_zero_ids);
                log::warn!("qxl{id_log}: command at {:#x} has release id 0", info.0);
            }
            Ok(Queued::Duplicate) => {
                inc(&self.metrics.release_duplicate_ids);
                log::warn!(
                    "qxl{id_log}: release_info at {:#x} (id {id:#x}) already in the batch",
                    info.0
                );
            }
            Ok(Queued::Overflow) => {
                inc(&self.metrics.release_batch_overflow);
                log::warn!("qxl{id_log}: release batch full, id {id:#x} dropped");
            }
            Err(e) => {
                inc(&self.metrics.release_write_errors);
                log::warn!("qxl{id_log}: cannot chain release id {id:#x}: {e}");
            }
        }
    }

    /// Publish the unpublished release batch now (if the ring has room).
    fn flush_releases(&mut self) {
        let ring = RingDesc::release(&self.ram);
        match self.release.publish(&self.mem, &ring) {
            Ok(Published::Nothing) => {}
            Ok(Published::RingFull) => {
                inc(&self.metrics.release_ring_full);
            }
            Ok(Published::Done { notify }) => {
                inc(&self.metrics.release_batches_published);
                if notify {
                    self.send_events(interrupt::DISPLAY);
                }
            }
            Err(e @ Error::BadRing { .. }) => self.ring_error(&e),
            Err(e) => {
                inc(&self.metrics.release_write_errors);
                log::warn!("qxl{}: cannot publish releases: {e}", self.config.id);
            }
        }
    }
}
