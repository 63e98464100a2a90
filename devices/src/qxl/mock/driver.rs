//! A mock guest that plays the Linux `drm/qxl` driver against a [`QxlDevice`].
//!
//! # Primer
//!
//! [`MockQxlDriver`] owns a device built over a fresh `GuestMemoryMmap` device
//! memory, a [`RecordingIrq`] and a [`RecordingSink`]. It first plays the
//! firmware — a BAR sizing probe and address assignment through config space,
//! then enabling decoding — and then, on request, the driver:
//!
//! - [`MockQxlDriver::probe`]: check the ROM magic, `RESET`, set
//!   `int_mask = DISPLAY | CURSOR | IO_CMD | CLIENT_MONITORS_CONFIG`, register
//!   memslot 1 (BAR0 up to the RAM header) and memslot 2 (BAR4 if present,
//!   else BAR1) with `MEMSLOT_ADD_ASYNC`, waiting for `IO_CMD` each time.
//! - [`MockQxlDriver::create_primary`]: `CREATE_PRIMARY_ASYNC` with
//!   `KEEP_DATA`, memory in slot 2.
//! - [`MockQxlDriver::push_command`]: encode a [`Command`] with
//!   [`super::encode`] and push it with the real producer protocol (ring full ⇒
//!   arm `notify_on_cons` and let the device run; notify when
//!   `prod == notify_on_prod`).
//! - the interrupt handler ([`MockQxlDriver::service_irq`]): exchange
//!   `int_pending` with 0, count the bits, rewrite `int_mask`, `UPDATE_IRQ`.
//! - release GC ([`MockQxlDriver::drain_releases`]): pop ids, follow each
//!   `next` chain, and check that every id comes back exactly once.
//!
//! Notifications normally reach the device as port writes (processed at
//! once). With [`NotifyMode::Eventfd`] the mock only counts them, as if an
//! ioeventfd had swallowed them, and the test runs the device's ring
//! processing itself ([`MockQxlDriver::run_worker`]), so rings can fill up.
//! Raw accessors let adversarial tests write ring entries and memory directly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spice_server::command::{
    AreaPixels, Command, DisplaySink, MonitorsConfig, Rect, SurfaceCmd, SurfaceCreate,
    SurfaceFormat,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};
use crate::qxl::abi::{self, interrupt, io, ram as ram_off, ring as ring_off, rom as rom_off};
use crate::qxl::device::{IrqLine, QxlConfig, QxlDevice};
use crate::qxl::guest::{GuestView, le};
use crate::qxl::mock::encode::{self, EncodeOptions, GuestHeap};
use crate::qxl::pci;
use crate::qxl::ram::{RamHeader, SurfaceCreateRaw};
use crate::qxl::replay::{Record, Recorder, ReplayConfig, RingId};
use crate::qxl::ring::RingDesc;

/// The device type the mock drives.
pub type MockDevice<S = RecordingSink> = QxlDevice<GuestMemoryMmap, RecordingIrq, S>;

/// An [`IrqLine`] that records what the device did with it.
#[derive(Debug, Default)]
pub struct RecordingIrq {
    level: AtomicBool,
    asserts: AtomicU64,
    deasserts: AtomicU64,
}

impl RecordingIrq {
    /// The current level.
    pub fn level(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }

    /// Number of `set_level(true)` calls.
    pub fn asserts(&self) -> u64 {
        self.asserts.load(Ordering::SeqCst)
    }

    /// Number of `set_level(false)` calls.
    pub fn deasserts(&self) -> u64 {
        self.deasserts.load(Ordering::SeqCst)
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, asserted: bool) {
        self.level.store(asserted, Ordering::SeqCst);
        if asserted {
            self.asserts.fetch_add(1, Ordering::SeqCst);
        } else {
            self.deasserts.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One call the device made on the [`RecordingSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    /// [`DisplaySink::command`].
    Command(Command),
    /// [`DisplaySink::create_primary`].
    CreatePrimary(SurfaceCreate),
    /// [`DisplaySink::destroy_primary`].
    DestroyPrimary,
    /// [`DisplaySink::destroy_surface_wait`].
    DestroySurfaceWait(u32),
    /// [`DisplaySink::destroy_all_surfaces`].
    DestroyAllSurfaces,
    /// [`DisplaySink::update_area`].
    UpdateArea {
        /// Surface.
        surface_id: u32,
        /// Requested area.
        area: Rect,
    },
    /// [`DisplaySink::flush_surfaces`].
    FlushSurfaces,
    /// [`DisplaySink::monitors_config`].
    MonitorsConfig(MonitorsConfig),
    /// [`DisplaySink::reset`].
    Reset,
}

/// A [`DisplaySink`] that records every call and answers `update_area` with
/// deterministic pixels ([`RecordingSink::pattern_pixel`]) for the surfaces it
/// knows (the primary, and surfaces created by `QXL_CMD_SURFACE`).
#[derive(Debug, Default)]
pub struct RecordingSink {
    /// Every call, in order.
    pub events: Vec<SinkEvent>,
    /// Known surfaces: id → (format, width, height).
    pub surfaces: BTreeMap<u32, (SurfaceFormat, u32, u32)>,
}

impl RecordingSink {
    /// The 32-bit pattern value the sink renders at `(x, y)` of `surface_id`.
    pub fn pattern_pixel(surface_id: u32, x: u32, y: u32) -> u32 {
        0x8000_0000 ^ surface_id.wrapping_mul(0x0101_0101) ^ (y << 12) ^ x
    }

    /// The commands received, in order.
    pub fn commands(&self) -> Vec<&Command> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SinkEvent::Command(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

impl DisplaySink for RecordingSink {
    fn command(&mut self, cmd: Command) {
        match &cmd {
            Command::Surface(SurfaceCmd::Create(c)) => {
                self.surfaces
                    .insert(c.surface_id, (c.format, c.width, c.height));
            }
            Command::Surface(SurfaceCmd::Destroy { surface_id }) => {
                self.surfaces.remove(surface_id);
            }
            _ => {}
        }
        self.events.push(SinkEvent::Command(cmd));
    }

    fn create_primary(&mut self, surface: SurfaceCreate) {
        self.surfaces
            .insert(0, (surface.format, surface.width, surface.height));
        self.events.push(SinkEvent::CreatePrimary(surface));
    }

    fn destroy_primary(&mut self) {
        self.surfaces.remove(&0);
        self.events.push(SinkEvent::DestroyPrimary);
    }

    fn destroy_surface_wait(&mut self, surface_id: u32) {
        self.events.push(SinkEvent::DestroySurfaceWait(surface_id));
    }

    fn destroy_all_surfaces(&mut self) {
        self.surfaces.clear();
        self.events.push(SinkEvent::DestroyAllSurfaces);
    }

    fn update_area(&mut self, surface_id: u32, area: Rect) -> Option<AreaPixels> {
        self.events.push(SinkEvent::UpdateArea { surface_id, area });
        let &(format, width, height) = self.surfaces.get(&surface_id)?;
        let bounds = Rect::new(
            0,
            0,
            i32::try_from(width).ok()?,
            i32::try_from(height).ok()?,
        );
        let area = area.intersect(&bounds)?;
        let bytes_pp = usize::try_from(format.bpp() / 8).ok()?.max(1);
        let stride = usize::try_from(area.width()).ok()?.checked_mul(bytes_pp)?;
        let mut data =
            Vec::with_capacity(stride.checked_mul(usize::try_from(area.height()).ok()?)?);
        for y in area.top..area.bottom {
            for x in area.left..area.right {
                let v =
                    Self::pattern_pixel(surface_id, u32::try_from(x).ok()?, u32::try_from(y).ok()?);
                data.extend_from_slice(v.to_le_bytes().get(..bytes_pp)?);
            }
        }
        Some(AreaPixels { area, stride, data })
    }

    fn flush_surfaces(&mut self) {
        self.events.push(SinkEvent::FlushSurfaces);
    }

    fn monitors_config(&mut self, config: MonitorsConfig) {
        self.events.push(SinkEvent::MonitorsConfig(config));
    }

    fn reset(&mut self) {
        self.surfaces.clear();
        self.events.push(SinkEvent::Reset);
    }
}

/// Guest-physical BAR bases the mock firmware assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockBars {
    /// BAR0 (RAM).
    pub ram: u64,
    /// BAR1 (VRAM, 32-bit).
    pub vram: u64,
    /// BAR2 (ROM).
    pub rom: u64,
    /// BAR3 (I/O ports).
    pub io: u64,
    /// BAR4 (64-bit VRAM), when present.
    pub vram64: Option<u64>,
}

/// How the mock's ring notifications reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyMode {
    /// `NOTIFY_CMD` / `NOTIFY_CURSOR` are port writes the device handles at once.
    #[default]
    Port,
    /// Notifications are swallowed (counted) as by an ioeventfd; call
    /// [`MockQxlDriver::run_worker`] to let the device consume.
    Eventfd,
}

/// Which guest-produced ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockRing {
    /// The command ring.
    Command,
    /// The cursor ring.
    Cursor,
}

/// Counts of interrupt bits the mock's handler saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqCounts {
    /// Handler runs that found a non-zero `int_pending`.
    pub handled: u64,
    /// `QXL_INTERRUPT_DISPLAY`.
    pub display: u64,
    /// `QXL_INTERRUPT_CURSOR`.
    pub cursor: u64,
    /// `QXL_INTERRUPT_IO_CMD`.
    pub io_cmd: u64,
    /// `QXL_INTERRUPT_ERROR`.
    pub error: u64,
    /// `QXL_INTERRUPT_CLIENT`.
    pub client: u64,
    /// `QXL_INTERRUPT_CLIENT_MONITORS_CONFIG`.
    pub client_monitors_config: u64,
}

/// Where the mock's own structures live (slot offsets are inside these).
const SLOT_MAIN: u8 = 1;
const SLOT_SURFACES: u8 = 2;

/// The mock Linux driver.
#[derive(Debug)]
pub struct MockQxlDriver<S: DisplaySink = RecordingSink> {
    dev: MockDevice<S>,
    bars: MockBars,
    ram: RamHeader,
    heap: GuestHeap,
    surface_heap: GuestHeap,
    heap_window: (u64, u64),
    next_id: u64,
    outstanding: BTreeMap<u64, GuestAddress>,
    released: Vec<u64>,
    irq: IrqCounts,
    irq_log: Vec<u32>,
    notify_mode: NotifyMode,
    notifications: u64,
    int_mask: u32,
    encode_options: EncodeOptions,
    recorder: Option<Recorder>,
}

fn mock_err(what: &'static str) -> Error {
    Error::InvalidState(what)
}

impl MockQxlDriver<RecordingSink> {
    /// Build device memory and the device for `config` with a [`RecordingSink`],
    /// and play the firmware (BAR sizing probe, address assignment, decoding
    /// enabled). The driver is not probed yet: see [`Self::probe`].
    pub fn new(config: QxlConfig) -> Result<Self> {
        Self::with_sink(config, RecordingSink::default())
    }

    /// [`Self::new`] followed by [`Self::probe`].
    pub fn with_linux_probe(config: QxlConfig) -> Result<Self> {
        let mut d = Self::new(config)?;
        d.probe()?;
        Ok(d)
    }
}

impl<S: DisplaySink> MockQxlDriver<S> {
    /// [`MockQxlDriver::new`] with any display sink (e.g. the SPICE server's
    /// display worker, for the demo VMM).
    pub fn with_sink(config: QxlConfig, sink: S) -> Result<Self> {
        Self::build(config, sink, false)
    }

    /// [`Self::with_sink`], recording every guest action from the start into
    /// a replay (see [`crate::qxl::replay`]; take it with [`Self::take_recording`]).
    pub fn with_sink_recording(config: QxlConfig, sink: S) -> Result<Self> {
        Self::build(config, sink, true)
    }

    fn build(config: QxlConfig, sink: S, record: bool) -> Result<Self> {
        config.validate()?;
        let size = usize::try_from(config.device_memory_size())
            .map_err(|_| Error::InvalidConfig("device memory too large"))?;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
            .map_err(|_| Error::InvalidConfig("cannot allocate mock device memory"))?;
        let dev = QxlDevice::new(config, mem, RecordingIrq::default(), sink)?;
        let ram = dev.ram_header();
        let cfg = dev.config().clone();
        let surface0 = u64::from(rom_u32(&dev, rom_off::SURFACE0_AREA_SIZE));
        let header = ram.base();
        let mut drv = Self {
            dev,
            bars: MockBars {
                ram: 0,
                vram: 0,
                rom: 0,
                io: 0,
                vram64: None,
            },
            ram,
            heap: GuestHeap::new(SLOT_MAIN, 0, 0, surface0, header),
            surface_heap: GuestHeap::new(SLOT_SURFACES, 0, cfg.vram_local_base(), 0, cfg.vram_size),
            heap_window: (surface0, header),
            next_id: 1,
            outstanding: BTreeMap::new(),
            released: Vec::new(),
            irq: IrqCounts::default(),
            irq_log: Vec::new(),
            notify_mode: NotifyMode::Port,
            notifications: 0,
            int_mask: 0,
            encode_options: EncodeOptions::default(),
            recorder: None,
        };
        if record {
            let snapshot = drv.snapshot()?;
            drv.recorder = Some(Recorder::new(ReplayConfig::from(&cfg), &snapshot));
        }
        drv.bars = drv.firmware_program_bars()?;
        if drv.bars.vram64.is_some() {
            drv.surface_heap = GuestHeap::new(
                SLOT_SURFACES,
                0,
                cfg.vram_local_base(),
                0,
                cfg.vram_total_size(),
            );
        }
        Ok(drv)
    }

    /// Size BAR `bar` the way firmware does: write all-ones, read back, restore.
    /// Returns `(size, type bits)`; a 64-bit BAR is probed with its upper half.
    pub fn size_bar(&mut self, bar: usize) -> (u64, u32) {
        let at = u16::try_from(pci::BAR0 + 4 * bar).unwrap_or(0x10);
        let read = |d: &MockDevice<S>, at: u16| {
            let mut b = [0u8; 4];
            d.pci_config_read(at, &mut b);
            u32::from_le_bytes(b)
        };
        let orig = read(&self.dev, at);
        self.pci_write(at, &u32::MAX.to_le_bytes());
        let lo = read(&self.dev, at);
        self.pci_write(at, &orig.to_le_bytes());
        if lo == 0 {
            return (0, 0);
        }
        if lo & 1 == 1 {
            let mask = lo & !0x3;
            return (u64::from((!mask).wrapping_add(1)), lo & 0x3);
        }
        let kind = lo & 0xf;
        if kind & 0x6 == 0x4 {
            let hi_at = at + 4;
            let orig_hi = read(&self.dev, hi_at);
            self.pci_write(hi_at, &u32::MAX.to_le_bytes());
            let hi = read(&self.dev, hi_at);
            self.pci_write(hi_at, &orig_hi.to_le_bytes());
            let mask = (u64::from(hi) << 32) | u64::from(lo & !0xf);
            return ((!mask).wrapping_add(1), kind);
        }
        let mask = lo & !0xf;
        (u64::from((!mask).wrapping_add(1)), kind)
    }

    /// Play the firmware: size every BAR, place 32-bit memory BARs from
    /// 0x8000_0000 (largest first, naturally aligned), the I/O BAR at 0xc000,
    /// a 64-bit BAR at 1 TiB, then enable I/O, memory and bus mastering.
    pub fn firmware_program_bars(&mut self) -> Result<MockBars> {
        let mut sizes = [(0u64, 0u32); 6];
        for (bar, s) in sizes.iter_mut().enumerate() {
            *s = self.size_bar(bar);
        }
        let mut mem32: Vec<usize> = [0usize, 1, 2]
            .into_iter()
            .filter(|&b| sizes[b].0 != 0)
            .collect();
        mem32.sort_by_key(|&b| std::cmp::Reverse(sizes[b].0));
        let mut cursor = 0x8000_0000u64;
        let mut bases = [0u64; 6];
        for b in mem32 {
            let size = sizes[b].0;
            let base = cursor.next_multiple_of(size);
            bases[b] = base;
            cursor = base + size;
            self.write_bar32(b, base)?;
        }
        bases[3] = 0xc000;
        self.write_bar32(3, 0xc000)?;
        let vram64 = if sizes[4].0 != 0 {
            let base = 1u64 << 40;
            let [lo, hi] = [base & 0xffff_ffff, base >> 32];
            self.write_bar32(4, lo)?;
            self.write_bar32(5, hi)?;
            Some(base)
        } else {
            None
        };
        let cmd = pci::COMMAND_IO | pci::COMMAND_MEMORY | pci::COMMAND_MASTER;
        self.pci_write(u16::try_from(pci::COMMAND).unwrap_or(4), &cmd.to_le_bytes());
        Ok(MockBars {
            ram: bases[0],
            vram: bases[1],
            rom: bases[2],
            io: bases[3],
            vram64,
        })
    }

    fn write_bar32(&mut self, bar: usize, value: u64) -> Result<()> {
        let v = u32::try_from(value).map_err(|_| mock_err("mock: BAR value above 4 GiB"))?;
        let at = u16::try_from(pci::BAR0 + 4 * bar).map_err(|_| mock_err("mock: BAR index"))?;
        self.pci_write(at, &v.to_le_bytes());
        Ok(())
    }

    /// Play Linux `qxl_device_init`: ROM magic check, `RESET`, `int_mask`, and
    /// memslots 1 (BAR0 up to the RAM header) and 2 (BAR4, else BAR1) with
    /// `MEMSLOT_ADD_ASYNC`, each waiting for `IO_CMD`.
    pub fn probe(&mut self) -> Result<()> {
        if self.dev.config().revision < abi::REVISION_V12 {
            return Err(mock_err("mock: Linux refuses QXL revisions below 4"));
        }
        if rom_u32(&self.dev, rom_off::MAGIC) != abi::ROM_MAGIC {
            return Err(mock_err("mock: bad ROM magic"));
        }
        self.out(io::RESET, 0);
        if self.mem().read_u32(self.ram.addr(ram_off::MAGIC))? != abi::RAM_MAGIC {
            return Err(mock_err("mock: bad RAM magic"));
        }
        self.int_mask = interrupt::LINUX_MASK;
        self.mem()
            .write_u32(self.ram.addr(ram_off::INT_MASK), self.int_mask)?;
        let slots_start = rom_u8(&self.dev, rom_off::SLOTS_START);
        let header = u64::from(rom_u32(&self.dev, rom_off::RAM_HEADER_OFFSET));
        self.memslot_add(slots_start, self.bars.ram, header)?;
        let (base, size) = match self.bars.vram64 {
            Some(b) => (b, self.dev.config().vram_total_size()),
            None => (self.bars.vram, self.dev.config().vram_size),
        };
        self.memslot_add(slots_start + 1, base, size)?;
        Ok(())
    }

    /// Register memslot `id` over guest-physical `[start, start + size)` with `MEMSLOT_ADD_ASYNC`.
    pub fn memslot_add(&mut self, id: u8, start: u64, size: u64) -> Result<()> {
        let end = start
            .checked_add(size)
            .ok_or(Error::Overflow("mock memslot"))?;
        let mut b = [0u8; 16];
        le::put_u64(&mut b, 0, start);
        le::put_u64(&mut b, 8, end);
        self.mem()
            .write_bytes(self.ram.addr(ram_off::MEM_SLOT), &b)?;
        self.async_io(io::MEMSLOT_ADD_ASYNC, id)
    }

    // ------------------------------------------------------------------
    // Guest actions (every one goes through here, so it can be recorded).

    /// The whole device memory, copied.
    fn snapshot(&self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.dev.config().device_memory_size())
            .map_err(|_| Error::Overflow("mock snapshot"))?;
        let mut buf = vec![0u8; len];
        self.mem().read_bytes(GuestAddress(0), &mut buf)?;
        Ok(buf)
    }

    /// Record the guest's memory writes since the last action (recording only).
    fn record_guest_writes(&mut self) {
        if self.recorder.is_none() {
            return;
        }
        if let Ok(now) = self.snapshot()
            && let Some(r) = self.recorder.as_mut()
        {
            r.sync_guest_writes(&now);
        }
    }

    /// After the device acted: absorb its memory writes and record what the
    /// guest can observe (interrupt line, `int_pending`, ring indices).
    fn record_device_state(&mut self) {
        if self.recorder.is_none() {
            return;
        }
        let Ok(now) = self.snapshot() else { return };
        let level = self.dev.irq_level();
        let int_pending = self
            .mem()
            .read_u32(self.ram.addr(ram_off::INT_PENDING))
            .unwrap_or(0);
        let rings: Vec<_> = [
            (RingId::Command, RingDesc::command(&self.ram)),
            (RingId::Cursor, RingDesc::cursor(&self.ram)),
            (RingId::Release, RingDesc::release(&self.ram)),
        ]
        .into_iter()
        .filter_map(|(id, d)| d.read_header(self.mem()).ok().map(|h| (id, h)))
        .collect();
        if let Some(r) = self.recorder.as_mut() {
            r.sync_device_writes(&now);
            r.push(Record::ExpectIrq { level, int_pending });
            for (ring, h) in rings {
                r.push(Record::ExpectRing {
                    ring,
                    prod: h.prod,
                    cons: h.cons,
                });
            }
        }
    }

    /// A guest `outb` to the device's I/O BAR.
    fn port(&mut self, port: u64, value: u8) {
        self.record_guest_writes();
        if let (Some(r), Ok(p)) = (self.recorder.as_mut(), u8::try_from(port)) {
            r.push(Record::IoWrite { port: p, value });
        }
        self.dev.io_write(port, value);
        self.record_device_state();
    }

    /// A PCI config space write (firmware or driver).
    fn pci_write(&mut self, offset: u16, data: &[u8]) {
        if let Some(r) = self.recorder.as_mut() {
            r.push(Record::PciWrite {
                offset,
                data: data.to_vec(),
            });
        }
        self.dev.pci_config_write(offset, data);
    }

    /// The device's worker consuming a ring after an ioeventfd kick.
    fn process(&mut self, ring: RingId) -> bool {
        self.record_guest_writes();
        if let Some(r) = self.recorder.as_mut() {
            r.push(Record::Process(ring));
        }
        let more = match ring {
            RingId::Cursor => self.dev.process_cursor_ring(),
            _ => self.dev.process_cmd_ring(),
        };
        self.record_device_state();
        more
    }

    /// Stop recording and return the replay file recorded so far (`None` if the
    /// driver was not built with [`Self::with_sink_recording`]).
    pub fn take_recording(&mut self) -> Option<Vec<u8>> {
        self.record_guest_writes();
        self.recorder.take().map(Recorder::finish)
    }

    // ------------------------------------------------------------------
    // Accessors.

    /// The device.
    pub fn device(&self) -> &MockDevice<S> {
        &self.dev
    }

    /// The device, mutably (raw port writes, ring processing, ...).
    pub fn device_mut(&mut self) -> &mut MockDevice<S> {
        &mut self.dev
    }

    /// The device memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        self.dev.mem()
    }

    /// The display sink.
    pub fn sink(&self) -> &S {
        self.dev.sink()
    }

    /// The BAR bases the firmware assigned.
    pub fn bars(&self) -> MockBars {
        self.bars
    }

    /// The RAM header.
    pub fn ram_header(&self) -> RamHeader {
        self.ram
    }

    /// The heap in memslot 1 where commands and their data are written.
    pub fn heap_mut(&mut self) -> &mut GuestHeap {
        &mut self.heap
    }

    /// The heap in memslot 2 where surfaces are allocated.
    pub fn surface_heap_mut(&mut self) -> &mut GuestHeap {
        &mut self.surface_heap
    }

    /// Interrupt bits seen by the handler so far.
    pub fn irq_counts(&self) -> IrqCounts {
        self.irq
    }

    /// The `int_pending` value of every handler run, in order.
    pub fn irq_log(&self) -> &[u32] {
        &self.irq_log
    }

    /// Ids pushed and not yet released.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Every id released so far, in release order.
    pub fn released(&self) -> &[u64] {
        &self.released
    }

    /// Notifications swallowed in [`NotifyMode::Eventfd`].
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Choose how notifications reach the device.
    pub fn set_notify_mode(&mut self, mode: NotifyMode) {
        self.notify_mode = mode;
    }

    /// Choose how commands are encoded.
    pub fn set_encode_options(&mut self, opts: EncodeOptions) {
        self.encode_options = opts;
    }

    /// Read a ring header.
    pub fn ring_header(&self, ring: MockRing) -> Result<crate::qxl::ring::RingHeader> {
        let desc = self.ring_desc(ring);
        let mut b = [0u8; ring_off::HEADER_SIZE];
        self.mem().read_bytes(desc.header, &mut b)?;
        Ok(crate::qxl::ring::RingHeader::parse(&b))
    }

    /// Read the release ring header.
    pub fn release_ring_header(&self) -> Result<crate::qxl::ring::RingHeader> {
        let desc = RingDesc::release(&self.ram);
        let mut b = [0u8; ring_off::HEADER_SIZE];
        self.mem().read_bytes(desc.header, &mut b)?;
        Ok(crate::qxl::ring::RingHeader::parse(&b))
    }

    fn ring_desc(&self, ring: MockRing) -> RingDesc {
        match ring {
            MockRing::Command => RingDesc::command(&self.ram),
            MockRing::Cursor => RingDesc::cursor(&self.ram),
        }
    }

    // ------------------------------------------------------------------
    // Ports and interrupts.

    /// `outb(value, port)`, then run the interrupt handler if the line is up.
    pub fn out(&mut self, port: u64, value: u8) {
        self.port(port, value);
        self.service_irq();
    }

    /// An async port write that must complete with `IO_CMD`
    /// (Linux `wait_for_io_cmd`).
    pub fn async_io(&mut self, port: u64, value: u8) -> Result<()> {
        let before = self.irq.io_cmd;
        self.out(port, value);
        if self.irq.io_cmd > before {
            Ok(())
        } else {
            Err(mock_err("mock: async port did not complete with IO_CMD"))
        }
    }

    /// The interrupt handler (Linux `qxl_irq_handler`), run while the device
    /// drives the line high: exchange `int_pending` with 0, account the bits,
    /// rewrite `int_mask` and write `UPDATE_IRQ`. Returns the bits handled.
    pub fn service_irq(&mut self) -> u32 {
        let mut all = 0;
        // The device may re-raise while we handle; bounded.
        for _ in 0..8 {
            if !self.dev.irq().level() {
                break;
            }
            let addr = self.ram.addr(ram_off::INT_PENDING);
            let pending = self.mem().read_u32(addr).unwrap_or(0);
            let _ = self.mem().write_u32(addr, 0);
            if pending != 0 {
                self.account(pending);
                all |= pending;
            }
            let _ = self
                .mem()
                .write_u32(self.ram.addr(ram_off::INT_MASK), self.int_mask);
            self.port(io::UPDATE_IRQ, 0);
        }
        all
    }

    /// Poll `int_pending` without interrupts (xf86-video-qxl UMS style):
    /// clear and account the given bits if set. Returns the bits found.
    pub fn poll_int_pending(&mut self, bits: u32) -> u32 {
        let addr = self.ram.addr(ram_off::INT_PENDING);
        let pending = self.mem().read_u32(addr).unwrap_or(0);
        let found = pending & bits;
        if found != 0 {
            let _ = self.mem().write_u32(addr, pending & !found);
            self.account(found);
        }
        found
    }

    fn account(&mut self, pending: u32) {
        self.irq.handled += 1;
        self.irq_log.push(pending);
        let count = |bit: u32, c: &mut u64| {
            if pending & bit != 0 {
                *c += 1;
            }
        };
        count(interrupt::DISPLAY, &mut self.irq.display);
        count(interrupt::CURSOR, &mut self.irq.cursor);
        count(interrupt::IO_CMD, &mut self.irq.io_cmd);
        count(interrupt::ERROR, &mut self.irq.error);
        count(interrupt::CLIENT, &mut self.irq.client);
        count(
            interrupt::CLIENT_MONITORS_CONFIG,
            &mut self.irq.client_monitors_config,
        );
    }

    /// Set the mask the handler writes back (and write it now).
    pub fn set_int_mask(&mut self, mask: u32) -> Result<()> {
        self.int_mask = mask;
        self.mem().write_u32(self.ram.addr(ram_off::INT_MASK), mask)
    }

    /// Let the device consume both rings (as its worker thread would after an
    /// ioeventfd), then handle interrupts. Returns true if work was left.
    pub fn run_worker(&mut self) -> bool {
        let more_cmd = self.process(RingId::Command);
        let more_cursor = self.process(RingId::Cursor);
        self.service_irq();
        more_cmd || more_cursor
    }

    // ------------------------------------------------------------------
    // Surfaces.

    /// Create a `width × height` 32-bit xRGB primary in slot 2 with
    /// `CREATE_PRIMARY_ASYNC` and `KEEP_DATA`, as Linux does. `initial` (top row
    /// first, `width * 4` bytes per row) is written into it first. Returns the
    /// `QXLPHYSICAL` of its memory.
    pub fn create_primary(
        &mut self,
        width: u32,
        height: u32,
        initial: Option<&[u8]>,
    ) -> Result<u64> {
        let stride = width
            .checked_mul(4)
            .and_then(|s| i32::try_from(s).ok())
            .ok_or(Error::Overflow("mock primary stride"))?;
        let s = SurfaceCreate {
            surface_id: 0,
            format: SurfaceFormat::Xrgb32,
            width,
            height,
            stride,
            flags: abi::surface_create::FLAG_KEEP_DATA,
            position: 0,
            initial: initial.map(<[u8]>::to_vec),
        };
        let mem = encode::alloc_surface(self.dev.mem(), &mut self.surface_heap, &s)?;
        self.create_primary_raw(&SurfaceCreateRaw {
            width,
            height,
            stride,
            format: abi::surface_create::FMT_32_XRGB,
            position: 0,
            mouse_mode: 0,
            flags: abi::surface_create::FLAG_KEEP_DATA,
            kind: abi::surface_create::TYPE_PRIMARY,
            mem,
        })?;
        Ok(mem)
    }

    /// Write `ram.create_surface` and issue `CREATE_PRIMARY_ASYNC`.
    pub fn create_primary_raw(&mut self, raw: &SurfaceCreateRaw) -> Result<()> {
        self.mem()
            .write_bytes(self.ram.addr(ram_off::CREATE_SURFACE), &raw.to_bytes())?;
        self.async_io(io::CREATE_PRIMARY_ASYNC, 0)
    }

    /// `DESTROY_PRIMARY_ASYNC`.
    pub fn destroy_primary(&mut self) -> Result<()> {
        self.async_io(io::DESTROY_PRIMARY_ASYNC, 0)
    }

    /// `UPDATE_AREA_ASYNC` of `area` on `surface_id`.
    pub fn update_area(&mut self, surface_id: u32, area: Rect) -> Result<()> {
        let mut b = [0u8; 20];
        for (i, v) in [area.top, area.left, area.bottom, area.right]
            .iter()
            .enumerate()
        {
            le::put_u32(&mut b, i * 4, u32::from_le_bytes(v.to_le_bytes()));
        }
        le::put_u32(&mut b, 16, surface_id);
        self.mem()
            .write_bytes(self.ram.addr(ram_off::UPDATE_AREA), &b)?;
        self.async_io(io::UPDATE_AREA_ASYNC, 0)
    }

    /// Store `config` in slot 1, point `ram.monitors_config` at it and issue
    /// `MONITORS_CONFIG_ASYNC`. Returns the config's `QXLPHYSICAL`.
    pub fn monitors_config(&mut self, config: &MonitorsConfig) -> Result<u64> {
        let phys = encode::encode_monitors_config(self.dev.mem(), &mut self.heap, config)?;
        self.monitors_config_at(phys)?;
        Ok(phys)
    }

    /// Point `ram.monitors_config` at `phys` and issue `MONITORS_CONFIG_ASYNC`.
    pub fn monitors_config_at(&mut self, phys: u64) -> Result<()> {
        self.mem()
            .write_u64(self.ram.addr(ram_off::MONITORS_CONFIG), phys)?;
        self.async_io(io::MONITORS_CONFIG_ASYNC, 0)
    }

    /// `NOTIFY_OOM`.
    pub fn notify_oom(&mut self) {
        self.out(io::NOTIFY_OOM, 0);
    }

    // ------------------------------------------------------------------
    // Commands.

    /// Encode `cmd` (surface commands into slot 2, everything else into slot 1)
    /// with a fresh release id and push it onto its ring. Returns the id.
    pub fn push_command(&mut self, cmd: &Command) -> Result<u64> {
        let id = self.next_id;
        let (phys, kind) = match self.encode(cmd, id) {
            Ok(v) => v,
            Err(Error::TooLarge { .. }) => {
                // The heap is full: get releases back and start over. OOM only
                // acts on an empty release ring, so drain before and after.
                self.drain_releases()?;
                self.notify_oom();
                self.drain_releases()?;
                if !self.outstanding.is_empty() {
                    return Err(mock_err("mock: heap exhausted with commands outstanding"));
                }
                self.heap.next = self.heap_window.0;
                self.encode(cmd, id)?
            }
            Err(e) => return Err(e),
        };
        self.next_id += 1;
        let info = self.translate_for_mock(phys)?;
        self.outstanding.insert(id, info);
        let ring = if matches!(cmd, Command::Cursor(_)) {
            MockRing::Cursor
        } else {
            MockRing::Command
        };
        self.push_raw(ring, phys, kind)?;
        Ok(id)
    }

    /// Encode `cmd` with `release_id` into the mock's heaps without pushing it
    /// (for raw pushes). Returns the `QXLPHYSICAL` and the `QXL_CMD_*` type.
    pub fn encode_command(&mut self, cmd: &Command, release_id: u64) -> Result<(u64, u32)> {
        self.encode(cmd, release_id)
    }

    /// Device address of a `QXLPHYSICAL` in one of the mock's slots (1 or 2).
    pub fn addr_of(&self, phys: u64) -> Result<GuestAddress> {
        self.translate_for_mock(phys)
    }

    fn encode(&mut self, cmd: &Command, id: u64) -> Result<(u64, u32)> {
        let heap = if matches!(cmd, Command::Surface(SurfaceCmd::Create(_))) {
            &mut self.surface_heap
        } else {
            &mut self.heap
        };
        encode::encode_command_with(self.dev.mem(), heap, cmd, id, &self.encode_options)
    }

    /// Device address of a `QXLPHYSICAL` in the mock's slots.
    fn translate_for_mock(&self, phys: u64) -> Result<GuestAddress> {
        let a = crate::qxl::memslot::split(phys);
        let heap = match a.slot {
            SLOT_MAIN => &self.heap,
            SLOT_SURFACES => &self.surface_heap,
            _ => return Err(mock_err("mock: address outside the mock's slots")),
        };
        heap.addr_of(a.offset)
    }

    /// Push a raw `QXLCommand {data, type}` with the Linux producer protocol
    /// (`qxl_ring_push`). The mock does not track a release id for it.
    pub fn push_raw(&mut self, ring: MockRing, data: u64, kind: u32) -> Result<()> {
        let desc = self.ring_desc(ring);
        // Wait while full: arm notify_on_cons and let the device run.
        let mut tries = 0;
        loop {
            let h = self.ring_header(ring)?;
            if h.prod.wrapping_sub(h.cons) < h.num_items {
                break;
            }
            tries += 1;
            if tries > 4 {
                return Err(mock_err("mock: ring stays full"));
            }
            self.mem()
                .write_u32(desc.field(ring_off::NOTIFY_ON_CONS), h.cons.wrapping_add(1))?;
            let before = match ring {
                MockRing::Command => self.irq.display,
                MockRing::Cursor => self.irq.cursor,
            };
            self.run_worker();
            let after = match ring {
                MockRing::Command => self.irq.display,
                MockRing::Cursor => self.irq.cursor,
            };
            if after == before {
                return Err(mock_err(
                    "mock: no DISPLAY/CURSOR interrupt after a full ring drained",
                ));
            }
        }
        let h = self.ring_header(ring)?;
        let mut item = [0u8; 16];
        le::put_u64(&mut item, 0, data);
        le::put_u32(&mut item, 8, kind);
        self.mem().write_bytes(desc.item_addr(h.prod)?, &item)?;
        let prod = h.prod.wrapping_add(1);
        self.mem().write_u32(desc.field(ring_off::PROD), prod)?;
        let notify_on_prod = self.mem().read_u32(desc.field(ring_off::NOTIFY_ON_PROD))?;
        if prod == notify_on_prod {
            self.notify(ring);
        }
        Ok(())
    }

    /// Kick the device for `ring` (`NOTIFY_CMD` / `NOTIFY_CURSOR`).
    pub fn notify(&mut self, ring: MockRing) {
        match self.notify_mode {
            NotifyMode::Port => self.out(
                match ring {
                    MockRing::Command => io::NOTIFY_CMD,
                    MockRing::Cursor => io::NOTIFY_CURSOR,
                },
                0,
            ),
            NotifyMode::Eventfd => self.notifications += 1,
        }
    }

    /// Write a raw ring header field (adversarial tests).
    pub fn write_ring_field(&self, ring: MockRing, offset: u64, value: u32) -> Result<()> {
        self.mem()
            .write_u32(self.ring_desc(ring).field(offset), value)
    }

    /// Write raw bytes at a device address (adversarial tests).
    pub fn write_raw(&self, addr: GuestAddress, bytes: &[u8]) -> Result<()> {
        self.mem().write_bytes(addr, bytes)
    }

    /// Allocate and write raw bytes in slot 1; returns the `QXLPHYSICAL`.
    pub fn alloc_raw(&mut self, bytes: &[u8]) -> Result<u64> {
        encode::write_raw(self.dev.mem(), &mut self.heap, bytes)
    }

    /// Track `id` as outstanding with its `release_info` at the command
    /// `phys` (for raw pushes whose release the test wants verified).
    pub fn track_release(&mut self, id: u64, phys: u64) -> Result<()> {
        let info = self.translate_for_mock(phys)?;
        self.outstanding.insert(id, info);
        Ok(())
    }

    // ------------------------------------------------------------------
    // Releases.

    /// Pop every published release (Linux `qxl_garbage_collect`): follow each
    /// chain through `release_info.next`, check every id is outstanding (so
    /// each pushed id comes back exactly once), and arm `notify_on_prod` when
    /// the ring is empty. Returns the ids in release order.
    pub fn drain_releases(&mut self) -> Result<Vec<u64>> {
        let desc = RingDesc::release(&self.ram);
        let mut out = Vec::new();
        for _ in 0..1024 {
            let h = self.release_ring_header()?;
            if h.cons == h.prod {
                self.mem()
                    .write_u32(desc.field(ring_off::NOTIFY_ON_PROD), h.cons.wrapping_add(1))?;
                return Ok(out);
            }
            let mut id = self.mem().read_u64(desc.item_addr(h.cons)?)?;
            self.mem()
                .write_u32(desc.field(ring_off::CONS), h.cons.wrapping_add(1))?;
            let mut hops = 0usize;
            while id != 0 {
                hops += 1;
                if hops > 1 << 20 {
                    return Err(mock_err("mock: release chain does not end"));
                }
                let info = self
                    .outstanding
                    .remove(&id)
                    .ok_or(mock_err("mock: released an unknown or already released id"))?;
                out.push(id);
                self.released.push(id);
                id = self.mem().read_u64(info)?;
            }
        }
        Err(mock_err("mock: release ring never empties"))
    }
}

fn rom_u32<S: DisplaySink>(dev: &MockDevice<S>, off: usize) -> u32 {
    let mut b = [0u8; 4];
    dev.rom_read(u64::try_from(off).unwrap_or(0), &mut b);
    u32::from_le_bytes(b)
}

fn rom_u8<S: DisplaySink>(dev: &MockDevice<S>, off: usize) -> u8 {
    let mut b = [0u8; 1];
    dev.rom_read(u64::try_from(off).unwrap_or(0), &mut b);
    b[0]
}
