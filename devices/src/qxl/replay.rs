//! The QXL replay format: what a guest driver did to the device, as a file.
//!
//! # Primer
//!
//! A guest drives a QXL device with only three kinds of action: it writes PCI
//! config space (firmware programming the BARs), it writes memory inside the
//! device's BARs (the RAM header, rings, commands, images), and it writes the
//! byte-wide I/O ports. Everything else the device does follows from those. A
//! replay file records exactly these actions, in order, plus *expectations*
//! about what the device must have done by then (the interrupt line and
//! `int_pending`, ring indices). Replaying a file drives a fresh device through
//! the same sequence and checks every expectation.
//!
//! Files are produced by [`Recorder`] (from the mock guest driver in `devices`,
//! by diffing device memory between port writes) and consumed by the
//! `qxl-replay` tool, the `ring_replay` fuzz target, and the tests.
//!
//! # Layout
//!
//! All integers little-endian. A file is the 12-byte header `b"QXLREPLAY\0"`
//! followed by the version `u16` (= 1), then records, each one tag byte and a
//! fixed or length-prefixed payload:
//!
//! | tag | record | payload |
//! |---|---|---|
//! | 0x01 | `Config` | revision u8, vga u8, ram_size u64, vram_size u64, vram64_size u64, vgamem_size u64, n_surfaces u32 — must be the first record, once |
//! | 0x02 | `PciWrite` | offset u16, len u8 (1, 2 or 4), data\[len] |
//! | 0x03 | `MemWrite` | device-memory address u64, len u32, data\[len] (BAR0 at 0, VRAM after it) |
//! | 0x04 | `IoWrite` | port u8, value u8 |
//! | 0x05 | `ExpectIrq` | line level u8 (0/1), int_pending u32 |
//! | 0x06 | `ExpectRing` | ring u8 (0 command, 1 cursor, 2 release), prod u32, cons u32 |
//! | 0x07 | `AckIrq` | — (the guest ISR: exchange `int_pending` with 0, then write `UPDATE_IRQ`) |
//! | 0x08 | `ClientMonitors` | count u8, then count × (x i32, y i32, width u32, height u32) — a host-side event |
//! | 0x09 | `Process` | ring u8 (0 command, 1 cursor) — the host consumed that ring (ioeventfd) |
//!
//! A reader never trusts a length: `MemWrite` payloads are capped at
//! [`MAX_MEM_WRITE`] and must fit the file, and unknown tags end parsing with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spice_server::command::DisplaySink;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::{Error, ReplayFault, Result};
use crate::qxl::device::{IrqLine, QxlConfig, QxlDevice};
use crate::qxl::guest::GuestView;
use crate::qxl::ring::RingDesc;

/// The file magic.
pub const MAGIC: &[u8; 10] = b"QXLREPLAY\0";
/// The only version this module reads and writes.
pub const VERSION: u16 = 1;
/// The largest single memory write a replay file may carry (64 MiB).
pub const MAX_MEM_WRITE: u32 = 64 << 20;
/// The most heads a `ClientMonitors` record may carry.
pub const MAX_CLIENT_HEADS: u8 = 16;

/// Which ring an [`Record::ExpectRing`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingId {
    /// The command ring.
    Command = 0,
    /// The cursor ring.
    Cursor = 1,
    /// The release ring.
    Release = 2,
}

/// Device parameters a replay was recorded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// QXL revision (PCI revision id).
    pub revision: u8,
    /// True for `qxl-vga`, false for the secondary `qxl`.
    pub vga: bool,
    /// RAM BAR size.
    pub ram_size: u64,
    /// VRAM BAR size.
    pub vram_size: u64,
    /// 64-bit VRAM BAR size (0 = none).
    pub vram64_size: u64,
    /// Size of the surface-0 / VGA area.
    pub vgamem_size: u64,
    /// Number of surfaces.
    pub n_surfaces: u32,
}

/// One head of a host-side client monitors configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHead {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// One record of a replay file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Device parameters (first record).
    Config(ReplayConfig),
    /// A PCI config space write.
    PciWrite {
        /// Offset in config space.
        offset: u16,
        /// 1, 2 or 4 bytes.
        data: Vec<u8>,
    },
    /// A guest write into device memory.
    MemWrite {
        /// Device-memory address.
        addr: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A guest `outb` to the I/O BAR.
    IoWrite {
        /// Port offset.
        port: u8,
        /// Value.
        value: u8,
    },
    /// The interrupt line level and `int_pending` expected at this point.
    ExpectIrq {
        /// Line level.
        level: bool,
        /// `int_pending` value.
        int_pending: u32,
    },
    /// Ring indices expected at this point.
    ExpectRing {
        /// Which ring.
        ring: RingId,
        /// Producer index.
        prod: u32,
        /// Consumer index.
        cons: u32,
    },
    /// The guest interrupt handler: exchange `int_pending` with 0, write `UPDATE_IRQ`.
    AckIrq,
    /// A client monitors configuration arriving from the SPICE side.
    ClientMonitors(Vec<ClientHead>),
    /// The host consumed a ring after an ioeventfd swallowed the guest's notify
    /// (the device's worker running on its own).
    Process(RingId),
}

const TAG_CONFIG: u8 = 0x01;
const TAG_PCI: u8 = 0x02;
const TAG_MEM: u8 = 0x03;
const TAG_IO: u8 = 0x04;
const TAG_EXPECT_IRQ: u8 = 0x05;
const TAG_EXPECT_RING: u8 = 0x06;
const TAG_ACK: u8 = 0x07;
const TAG_CLIENT_MONITORS: u8 = 0x08;
const TAG_PROCESS: u8 = 0x09;

/// A cursor over a byte buffer that fails instead of reading past the end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::Replay {
                offset: self.pos,
                fault: ReplayFault::Truncated,
            })?;
        let s = self.buf.get(self.pos..end).ok_or(Error::Replay {
            offset: self.pos,
            fault: ReplayFault::Truncated,
        })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Parse a whole replay file. Fails on the first malformed record.
pub fn parse(buf: &[u8]) -> Result<Vec<Record>> {
    let (records, err) = parse_prefix(buf);
    match err {
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// Parse as many records as are well formed: the records before the first
/// malformed one, and the error that stopped parsing (if any). Fuzzers use this
/// so that a mutation late in a file still exercises the device.
pub fn parse_prefix(buf: &[u8]) -> (Vec<Record>, Option<Error>) {
    let mut out = Vec::new();
    let err = parse_into(buf, &mut out).err();
    (out, err)
}

fn parse_into(buf: &[u8], out: &mut Vec<Record>) -> Result<()> {
    let mut c = Cursor { buf, pos: 0 };
    if c.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
        return Err(Error::Replay {
            offset: 0,
            fault: ReplayFault::BadMagic,
        });
    }
    let version = c.u16()?;
    if version != VERSION {
        return Err(Error::Replay {
            offset: MAGIC.len(),
            fault: ReplayFault::BadVersion(version),
        });
    }
    while c.pos < buf.len() {
        let at = c.pos;
        let tag = c.u8()?;
        let rec = match tag {
            TAG_CONFIG => {
                if !out.is_empty() {
                    return Err(Error::Replay {
                        offset: at,
                        fault: ReplayFault::Misplaced,
                    });
                }
                Record::Config(ReplayConfig {
                    revision: c.u8()?,
                    vga: c.u8()? != 0,
                    ram_size: c.u64()?,
                    vram_size: c.u64()?,
                    vram64_size: c.u64()?,
                    vgamem_size: c.u64()?,
                    n_surfaces: c.u32()?,
                })
            }
            _ if out.is_empty() => {
                return Err(Error::Replay {
                    offset: at,
                    fault: ReplayFault::Misplaced,
                });
            }
            TAG_PCI => {
                let offset = c.u16()?;
                let len = c.u8()?;
                if !matches!(len, 1 | 2 | 4) {
                    return Err(Error::Replay {
                        offset: at,
                        fault: ReplayFault::BadLength(u32::from(len)),
                    });
                }
                Record::PciWrite {
                    offset,
                    data: c.take(usize::from(len))?.to_vec(),
                }
            }
            TAG_MEM => {
                let addr = c.u64()?;
                let len = c.u32()?;
                if len > MAX_MEM_WRITE {
                    return Err(Error::Replay {
                        offset: at,
                        fault: ReplayFault::BadLength(len),
                    });
                }
                let n = usize::try_from(len).map_err(|_| Error::Replay {
                    offset: at,
                    fault: ReplayFault::BadLength(len),
                })?;
                Record::MemWrite {
                    addr,
                    data: c.take(n)?.to_vec(),
                }
            }
            TAG_IO => Record::IoWrite {
                port: c.u8()?,
                value: c.u8()?,
            },
            TAG_EXPECT_IRQ => Record::ExpectIrq {
                level: c.u8()? != 0,
                int_pending: c.u32()?,
            },
            TAG_EXPECT_RING => {
                let ring = match c.u8()? {
                    0 => RingId::Command,
                    1 => RingId::Cursor,
                    2 => RingId::Release,
                    _ => {
                        return Err(Error::Replay {
                            offset: at,
                            fault: ReplayFault::BadTag(tag),
                        });
                    }
                };
                Record::ExpectRing {
                    ring,
                    prod: c.u32()?,
                    cons: c.u32()?,
                }
            }
            TAG_ACK => Record::AckIrq,
            TAG_CLIENT_MONITORS => {
                let count = c.u8()?;
                if count > MAX_CLIENT_HEADS {
                    return Err(Error::Replay {
                        offset: at,
                        fault: ReplayFault::BadLength(u32::from(count)),
                    });
                }
                let mut heads = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    heads.push(ClientHead {
                        x: c.i32()?,
                        y: c.i32()?,
                        width: c.u32()?,
                        height: c.u32()?,
                    });
                }
                Record::ClientMonitors(heads)
            }
            TAG_PROCESS => match c.u8()? {
                0 => Record::Process(RingId::Command),
                1 => Record::Process(RingId::Cursor),
                _ => {
                    return Err(Error::Replay {
                        offset: at,
                        fault: ReplayFault::BadTag(tag),
                    });
                }
            },
            _ => {
                return Err(Error::Replay {
                    offset: at,
                    fault: ReplayFault::BadTag(tag),
                });
            }
        };
        out.push(rec);
    }
    Ok(())
}

/// Serialise records into a replay file.
pub fn write(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for r in records {
        write_record(&mut out, r);
    }
    out
}

fn write_record(out: &mut Vec<u8>, r: &Record) {
    match r {
        Record::Config(c) => {
            out.push(TAG_CONFIG);
            out.push(c.revision);
            out.push(u8::from(c.vga));
            for v in [c.ram_size, c.vram_size, c.vram64_size, c.vgamem_size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&c.n_surfaces.to_le_bytes());
        }
        Record::PciWrite { offset, data } => {
            out.push(TAG_PCI);
            out.extend_from_slice(&offset.to_le_bytes());
            // Writers only produce 1-, 2- and 4-byte config writes.
            out.push(u8::try_from(data.len()).unwrap_or(0));
            out.extend_from_slice(data);
        }
        Record::MemWrite { addr, data } => {
            out.push(TAG_MEM);
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(data);
        }
        Record::IoWrite { port, value } => {
            out.extend_from_slice(&[TAG_IO, *port, *value]);
        }
        Record::ExpectIrq { level, int_pending } => {
            out.push(TAG_EXPECT_IRQ);
            out.push(u8::from(*level));
            out.extend_from_slice(&int_pending.to_le_bytes());
        }
        Record::ExpectRing { ring, prod, cons } => {
            out.push(TAG_EXPECT_RING);
            out.push(*ring as u8);
            out.extend_from_slice(&prod.to_le_bytes());
            out.extend_from_slice(&cons.to_le_bytes());
        }
        Record::AckIrq => out.push(TAG_ACK),
        Record::Process(ring) => out.extend_from_slice(&[TAG_PROCESS, *ring as u8]),
        Record::ClientMonitors(heads) => {
            out.push(TAG_CLIENT_MONITORS);
            out.push(u8::try_from(heads.len()).unwrap_or(0));
            for h in heads {
                out.extend_from_slice(&h.x.to_le_bytes());
                out.extend_from_slice(&h.y.to_le_bytes());
                out.extend_from_slice(&h.width.to_le_bytes());
                out.extend_from_slice(&h.height.to_le_bytes());
            }
        }
    }
}

/// Turns a sequence of guest memory states into `MemWrite` records.
///
/// The recorder keeps a shadow copy of device memory as the device last left
/// it. Before each guest action that the device observes (a port write), call
/// [`Recorder::sync_guest_writes`] with the current memory: every 4 KiB page
/// that differs from the shadow becomes `MemWrite` records covering the changed
/// byte runs. After the device has acted, call [`Recorder::sync_device_writes`]
/// so that the device's own writes (release ring, `int_pending`) are not
/// mistaken for guest writes.
#[derive(Debug, Clone)]
pub struct Recorder {
    shadow: Vec<u8>,
    records: Vec<Record>,
}

/// Changed runs closer than this are merged into one write.
const MERGE_GAP: usize = 16;
const PAGE: usize = 4096;

impl Recorder {
    /// A recorder for a device with `config`, whose memory currently holds `initial`.
    pub fn new(config: ReplayConfig, initial: &[u8]) -> Self {
        Self {
            shadow: initial.to_vec(),
            records: vec![Record::Config(config)],
        }
    }

    /// Append a record verbatim.
    pub fn push(&mut self, r: Record) {
        self.records.push(r);
    }

    /// Emit `MemWrite`s for everything in `now` that differs from the shadow.
    pub fn sync_guest_writes(&mut self, now: &[u8]) {
        let n = now.len().min(self.shadow.len());
        let mut page = 0;
        while page < n {
            let end = page.saturating_add(PAGE).min(n);
            let (Some(a), Some(b)) = (now.get(page..end), self.shadow.get(page..end)) else {
                break;
            };
            if a != b {
                let mut i = 0;
                while i < a.len() {
                    if a.get(i) == b.get(i) {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    let mut last = i;
                    while i < a.len() && i <= last.saturating_add(MERGE_GAP) {
                        if a.get(i) != b.get(i) {
                            last = i;
                        }
                        i += 1;
                    }
                    if let Some(data) = a.get(start..=last) {
                        let addr = u64::try_from(page.saturating_add(start)).unwrap_or(u64::MAX);
                        self.records.push(Record::MemWrite {
                            addr,
                            data: data.to_vec(),
                        });
                    }
                    i = last.saturating_add(1);
                }
            }
            page = end;
        }
        self.sync_device_writes(now);
    }

    /// Take `now` as the new shadow without emitting records.
    pub fn sync_device_writes(&mut self, now: &[u8]) {
        self.shadow.clear();
        self.shadow.extend_from_slice(now);
    }

    /// The records so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Finish and serialise.
    pub fn finish(self) -> Vec<u8> {
        write(&self.records)
    }
}

/// An interrupt line that only remembers its level (the player reads the
/// device's own view, [`QxlDevice::irq_level`], for expectations).
#[derive(Debug, Default)]
pub struct LevelIrq(AtomicBool);

impl LevelIrq {
    /// The current level.
    pub fn level(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl IrqLine for LevelIrq {
    fn set_level(&self, asserted: bool) {
        self.0.store(asserted, Ordering::SeqCst);
    }
}

impl From<&ReplayConfig> for QxlConfig {
    fn from(c: &ReplayConfig) -> Self {
        QxlConfig {
            revision: c.revision,
            vga: c.vga,
            ram_size: c.ram_size,
            vram_size: c.vram_size,
            vram64_size: c.vram64_size,
            vgamem_size: c.vgamem_size,
            n_surfaces: c.n_surfaces,
            ..QxlConfig::default()
        }
    }
}

impl From<&QxlConfig> for ReplayConfig {
    fn from(c: &QxlConfig) -> Self {
        ReplayConfig {
            revision: c.revision,
            vga: c.vga,
            ram_size: c.ram_size,
            vram_size: c.vram_size,
            vram64_size: c.vram64_size,
            vgamem_size: c.vgamem_size,
            n_surfaces: c.n_surfaces,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayReport {
    /// Records played.
    pub records: usize,
    /// PCI config writes.
    pub pci_writes: usize,
    /// Memory writes.
    pub mem_writes: usize,
    /// Bytes written into device memory.
    pub mem_bytes: u64,
    /// Port writes.
    pub io_writes: usize,
    /// Expectations checked.
    pub expectations: usize,
    /// Expectations that did not hold, one line each.
    pub failures: Vec<String>,
    /// Records that could not be applied (memory writes outside device memory).
    pub rejected: usize,
}

/// The device type a [`Player`] drives.
pub type PlayerDevice<S> = QxlDevice<GuestMemoryMmap, Arc<LevelIrq>, S>;

/// Drives a fresh device through replay records.
#[derive(Debug)]
pub struct Player<S: DisplaySink> {
    dev: PlayerDevice<S>,
    report: PlayReport,
}

/// The largest device memory a replay may ask for (4 GiB): a replay file is
/// input too, and must not make the player map unbounded memory.
pub const MAX_REPLAY_MEMORY: u64 = 4 << 30;

impl<S: DisplaySink> Player<S> {
    /// A player over a fresh device built from `config`, drawing into `sink`.
    pub fn new(config: &ReplayConfig, sink: S) -> Result<Self> {
        let qc = QxlConfig::from(config);
        qc.validate()?;
        let size = qc.normalized().device_memory_size();
        if size > MAX_REPLAY_MEMORY {
            return Err(Error::TooLarge {
                what: "replay device memory",
                size,
                cap: MAX_REPLAY_MEMORY,
            });
        }
        let len = usize::try_from(size).map_err(|_| Error::Overflow("replay memory"))?;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)])
            .map_err(|_| Error::guest_memory(GuestAddress(0), len))?;
        let dev = QxlDevice::new(qc, mem, Arc::new(LevelIrq::default()), sink)?;
        Ok(Self {
            dev,
            report: PlayReport::default(),
        })
    }

    /// The device.
    pub fn device(&self) -> &PlayerDevice<S> {
        &self.dev
    }

    /// The device, mutably (e.g. to drain its sink).
    pub fn device_mut(&mut self) -> &mut PlayerDevice<S> {
        &mut self.dev
    }

    /// The report so far.
    pub fn report(&self) -> &PlayReport {
        &self.report
    }

    /// Finish: the report and the device.
    pub fn finish(self) -> (PlayReport, PlayerDevice<S>) {
        (self.report, self.dev)
    }

    fn fail(&mut self, what: String) {
        log::warn!("replay record {}: {what}", self.report.records);
        self.report.failures.push(what);
    }

    /// Apply one record. A `Config` record is ignored (it chose the device).
    pub fn step(&mut self, r: &Record) {
        self.report.records = self.report.records.saturating_add(1);
        match r {
            Record::Config(_) => {}
            Record::PciWrite { offset, data } => {
                self.report.pci_writes += 1;
                self.dev.pci_config_write(*offset, data);
            }
            Record::MemWrite { addr, data } => {
                if self
                    .dev
                    .mem()
                    .write_bytes(GuestAddress(*addr), data)
                    .is_ok()
                {
                    self.report.mem_writes += 1;
                    self.report.mem_bytes = self
                        .report
                        .mem_bytes
                        .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                } else {
                    self.report.rejected += 1;
                }
            }
            Record::IoWrite { port, value } => {
                self.report.io_writes += 1;
                self.dev.io_write(u64::from(*port), *value);
            }
            Record::ExpectIrq { level, int_pending } => {
                self.report.expectations += 1;
                let got_level = self.dev.irq_level();
                let got = self.dev.ram_header().int_pending(self.dev.mem()).ok();
                if got_level != *level || got != Some(*int_pending) {
                    self.fail(format!(
                        "irq: expected level {level} int_pending {int_pending:#x}, got level {got_level} int_pending {got:x?}"
                    ));
                }
            }
            Record::ExpectRing { ring, prod, cons } => {
                self.report.expectations += 1;
                let ram = self.dev.ram_header();
                let desc = match ring {
                    RingId::Command => RingDesc::command(&ram),
                    RingId::Cursor => RingDesc::cursor(&ram),
                    RingId::Release => RingDesc::release(&ram),
                };
                match desc.read_header(self.dev.mem()) {
                    Ok(h) if h.prod == *prod && h.cons == *cons => {}
                    Ok(h) => self.fail(format!(
                        "{ring:?} ring: expected prod {prod} cons {cons}, got prod {} cons {}",
                        h.prod, h.cons
                    )),
                    Err(e) => self.fail(format!("{ring:?} ring unreadable: {e}")),
                }
            }
            Record::AckIrq => {
                let ram = self.dev.ram_header();
                let addr = ram.addr(crate::qxl::abi::ram::INT_PENDING);
                // The guest ISR: exchange int_pending with 0, then UPDATE_IRQ.
                if self.dev.mem().write_u32(addr, 0).is_err() {
                    self.report.rejected += 1;
                }
                self.dev.io_write(crate::qxl::abi::io::UPDATE_IRQ, 0);
            }
            Record::Process(ring) => {
                if *ring == RingId::Cursor {
                    self.dev.process_cursor_ring();
                } else {
                    self.dev.process_cmd_ring();
                }
            }
            Record::ClientMonitors(heads) => {
                let h: Vec<_> = heads
                    .iter()
                    .map(|h| (h.x, h.y, h.width, h.height))
                    .collect();
                self.dev.set_client_monitors_config(&h);
            }
        }
    }
}

/// Play a whole file: parse it, build the device its config record names, and
/// apply every record.
pub fn play<S: DisplaySink>(file: &[u8], sink: S) -> Result<(PlayReport, PlayerDevice<S>)> {
    let records = parse(file)?;
    let Some(Record::Config(config)) = records.first() else {
        return Err(Error::Replay {
            offset: MAGIC.len(),
            fault: ReplayFault::Misplaced,
        });
    };
    let mut p = Player::new(config, sink)?;
    for r in &records {
        p.step(r);
    }
    Ok(p.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReplayConfig {
        ReplayConfig {
            revision: 5,
            vga: true,
            ram_size: 64 << 20,
            vram_size: 64 << 20,
            vram64_size: 0,
            vgamem_size: 16 << 20,
            n_surfaces: 1024,
        }
    }

    #[test]
    fn replay_format_round_trip() {
        let recs = vec![
            Record::Config(config()),
            Record::PciWrite {
                offset: 0x10,
                data: vec![0xff; 4],
            },
            Record::MemWrite {
                addr: 0x1234,
                data: vec![1, 2, 3],
            },
            Record::IoWrite { port: 5, value: 0 },
            Record::ExpectIrq {
                level: true,
                int_pending: 4,
            },
            Record::ExpectRing {
                ring: RingId::Release,
                prod: 1,
                cons: 0,
            },
            Record::AckIrq,
            Record::ClientMonitors(vec![ClientHead {
                x: 0,
                y: 0,
                width: 1024,
                height: 768,
            }]),
        ];
        assert_eq!(parse(&write(&recs)).unwrap(), recs);
    }

    #[test]
    fn replay_format_rejects_garbage() {
        assert!(matches!(
            parse(b"nope"),
            Err(Error::Replay {
                fault: ReplayFault::BadMagic,
                ..
            })
        ));
        let mut f = write(&[Record::Config(config())]);
        f.extend_from_slice(&[TAG_MEM, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            parse(&f),
            Err(Error::Replay {
                fault: ReplayFault::BadLength(_),
                ..
            })
        ));
        let mut f = write(&[Record::Config(config())]);
        f.extend_from_slice(&[TAG_MEM, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1]);
        assert!(matches!(
            parse(&f),
            Err(Error::Replay {
                fault: ReplayFault::Truncated,
                ..
            })
        ));
        let mut f = write(&[Record::Config(config())]);
        f.push(0x7f);
        assert!(matches!(
            parse(&f),
            Err(Error::Replay {
                fault: ReplayFault::BadTag(0x7f),
                ..
            })
        ));
        let f = write(&[Record::AckIrq]);
        assert!(matches!(
            parse(&f),
            Err(Error::Replay {
                fault: ReplayFault::Misplaced,
                ..
            })
        ));
    }

    #[test]
    fn recorder_emits_changed_runs_only() {
        let mut mem = vec![0u8; 3 * PAGE];
        let mut r = Recorder::new(config(), &mem);
        mem[10] = 1;
        mem[12] = 2;
        mem[PAGE + 100] = 3;
        r.sync_guest_writes(&mem);
        // The device's own write is not recorded.
        mem[2 * PAGE] = 9;
        r.sync_device_writes(&mem);
        r.sync_guest_writes(&mem);
        assert_eq!(
            &r.records()[1..],
            &[
                Record::MemWrite {
                    addr: 10,
                    data: vec![1, 0, 2]
                },
                Record::MemWrite {
                    addr: u64::try_from(PAGE + 100).unwrap(),
                    data: vec![3]
                },
            ]
        );
    }
}
