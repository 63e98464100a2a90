//! The QXL function's PCI configuration space (type 0 header, 256 bytes).
//!
//! # Primer
//!
//! Firmware and the guest OS find the device by vendor/device id and class,
//! then size each BAR by writing all-ones to it and reading back: the bits
//! that stay 0 give the size, the low bits give the type (memory/I/O, 32/64-bit,
//! prefetchable). They then program the base addresses and enable decoding in
//! the command register. QXL has a 32-bit RAM BAR (0), a 32-bit VRAM BAR (1), a
//! 32-bit ROM BAR (2, an ordinary memory BAR, not the expansion ROM), an I/O BAR
//! (3, 8/16/32 bytes by revision), and, only when configured larger than the
//! 32-bit VRAM, a 64-bit prefetchable VRAM BAR (4+5). The interrupt is INTA#,
//! level-triggered; there is no MSI and no capability list.
//!
//! The model is a byte array plus a per-byte write mask, as in QEMU: a write
//! changes only the writable bits of each byte, so sizing probes and unaligned
//! or partial writes behave like hardware without special cases.

use crate::qxl::abi;

/// Size of the configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// `PCI_COMMAND` offset.
pub const COMMAND: usize = 0x04;
/// `PCI_STATUS` offset.
pub const STATUS: usize = 0x06;
/// `PCI_BASE_ADDRESS_0` offset.
pub const BAR0: usize = 0x10;
/// `PCI_INTERRUPT_LINE` offset.
pub const INTERRUPT_LINE: usize = 0x3c;
/// `PCI_INTERRUPT_PIN` offset.
pub const INTERRUPT_PIN: usize = 0x3d;

/// Command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master.
pub const COMMAND_MASTER: u16 = 1 << 2;
/// Command register: parity error response.
pub const COMMAND_PARITY: u16 = 1 << 6;
/// Command register: SERR# enable.
pub const COMMAND_SERR: u16 = 1 << 8;
/// Command register: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: INTx is asserted (read-only).
pub const STATUS_INTERRUPT: u16 = 1 << 3;

/// The writable command bits (QEMU's default `wmask`).
const COMMAND_WMASK: u16 = COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_MASTER
    | COMMAND_PARITY
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE;

/// BAR type bits: I/O space.
const BAR_IO: u32 = 0x1;
/// BAR type bits: 64-bit memory.
const BAR_MEM64: u32 = 0x4;
/// BAR type bits: prefetchable memory.
const BAR_PREFETCH: u32 = 0x8;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory, not prefetchable.
    Mem32,
    /// I/O ports.
    Io,
    /// 64-bit prefetchable memory (occupies this BAR and the next).
    Mem64Prefetch,
}

/// One implemented BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarDesc {
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Type.
    pub kind: BarKind,
}

/// Identity and BAR sizes of a QXL function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdentity {
    /// PCI revision id (= QXL revision).
    pub revision: u8,
    /// 24-bit class code.
    pub class: u32,
    /// BAR descriptions, `None` for unimplemented BARs (and BAR5, the upper half of BAR4).
    pub bars: [Option<BarDesc>; 6],
}

/// The configuration space.
#[derive(Debug, Clone)]
pub struct PciConfig {
    bytes: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<BarDesc>; 6],
}

impl PciConfig {
    /// A freshly reset configuration space for `id`.
    pub fn new(id: &PciIdentity) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: id.bars,
        };
        c.put_u16(0x00, abi::PCI_VENDOR_ID);
        c.put_u16(0x02, abi::PCI_DEVICE_ID);
        c.bytes[0x08] = id.revision;
        let [_, base, sub, prog_if] = id.class.to_be_bytes();
        c.bytes[0x09] = prog_if;
        c.bytes[0x0a] = sub;
        c.bytes[0x0b] = base;
        c.put_u16(0x2c, abi::PCI_SUBSYSTEM_VENDOR_ID);
        c.put_u16(0x2e, abi::PCI_SUBSYSTEM_ID);
        c.bytes[INTERRUPT_PIN] = 1;
        // Writable: command bits, cache line size, interrupt line.
        let [lo, hi] = COMMAND_WMASK.to_le_bytes();
        c.wmask[COMMAND] = lo;
        c.wmask[COMMAND + 1] = hi;
        c.wmask[0x0c] = 0xff;
        c.wmask[INTERRUPT_LINE] = 0xff;
        for (i, bar) in id.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let at = BAR0 + 4 * i;
            let addr_mask = !(bar.size.saturating_sub(1));
            match bar.kind {
                BarKind::Mem32 => {
                    let m = u32::try_from(addr_mask & 0xffff_fff0).unwrap_or(0);
                    c.put_mask(at, m);
                }
                BarKind::Io => {
                    c.put_u32(at, BAR_IO);
                    let m = u32::try_from(addr_mask & 0xffff_fffc).unwrap_or(0);
                    c.put_mask(at, m);
                }
                BarKind::Mem64Prefetch => {
                    c.put_u32(at, BAR_MEM64 | BAR_PREFETCH);
                    let lo_mask = u32::try_from(addr_mask & 0xffff_fff0).unwrap_or(0);
                    let hi_mask = u32::try_from(addr_mask >> 32).unwrap_or(0);
                    c.put_mask(at, lo_mask);
                    c.put_mask(at + 4, hi_mask);
                }
            }
        }
        c
    }

    fn put_u16(&mut self, at: usize, v: u16) {
        if let Some(s) = self.bytes.get_mut(at..at + 2) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        if let Some(s) = self.bytes.get_mut(at..at + 4) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn put_mask(&mut self, at: usize, v: u32) {
        if let Some(s) = self.wmask.get_mut(at..at + 4) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = self.bytes.get(at..at + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    }

    /// Read `data.len()` bytes at `offset`. Bytes beyond the 256-byte space read as 0.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = usize::from(offset)
                .checked_add(i)
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Write `data` at `offset`: each byte changes only its writable bits.
    /// Returns true when the command register changed.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> bool {
        let before = self.command();
        for (i, v) in data.iter().enumerate() {
            let Some(o) = usize::from(offset).checked_add(i) else {
                break;
            };
            let (Some(b), Some(m)) = (self.bytes.get_mut(o), self.wmask.get(o)) else {
                break;
            };
            *b = (*b & !m) | (v & m);
        }
        before != self.command()
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// True when INTx is disabled by the command register.
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    /// Reflect the interrupt line in the status register's INTERRUPT bit.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let mut s = self.u16_at(STATUS);
        if asserted {
            s |= STATUS_INTERRUPT;
        } else {
            s &= !STATUS_INTERRUPT;
        }
        self.put_u16(STATUS, s);
    }

    /// Description of BAR `bar`, if implemented.
    pub fn bar(&self, bar: usize) -> Option<BarDesc> {
        self.bars.get(bar).copied().flatten()
    }

    /// The currently programmed base of BAR `bar`, or `None` when the BAR is not
    /// implemented, its decoding is disabled in the command register, or its
    /// address is unprogrammed (0, or a range that wraps or reaches the top of
    /// its address space, as after a sizing probe) — QEMU's `pci_bar_address` rules.
    pub fn bar_address(&self, bar: usize) -> Option<u64> {
        let desc = self.bar(bar)?;
        let at = BAR0 + 4 * bar;
        let cmd = self.command();
        let (addr, limit) = match desc.kind {
            BarKind::Io => {
                if cmd & COMMAND_IO == 0 {
                    return None;
                }
                (u64::from(self.u32_at(at) & !0x3), u64::from(u32::MAX))
            }
            BarKind::Mem32 => {
                if cmd & COMMAND_MEMORY == 0 {
                    return None;
                }
                (u64::from(self.u32_at(at) & !0xf), u64::from(u32::MAX))
            }
            BarKind::Mem64Prefetch => {
                if cmd & COMMAND_MEMORY == 0 {
                    return None;
                }
                let lo = u64::from(self.u32_at(at) & !0xf);
                let hi = u64::from(self.u32_at(at + 4));
                (lo | (hi << 32), u64::MAX)
            }
        };
        let addr = addr & !(desc.size.saturating_sub(1));
        if addr == 0 {
            return None;
        }
        let last = addr.checked_add(desc.size.checked_sub(1)?)?;
        if last >= limit {
            return None;
        }
        Some(addr)
    }

    /// The whole configuration space (for snapshots and tests).
    pub fn bytes(&self) -> &[u8; CONFIG_SPACE_SIZE] {
        &self.bytes
    }
}
