//! The `QXLRam` header at the end of BAR0.
//!
//! # Primer
//!
//! The last 8 KiB of BAR0 hold the `QXLRam` header (5348 bytes used): the
//! interrupt registers (`int_pending`, `int_mask`), a log buffer, the three
//! rings, and parameter blocks that the guest fills before writing a port
//! (`update_area`/`update_surface` for `UPDATE_AREA`, `mem_slot` for
//! `MEMSLOT_ADD`, `create_surface` for `CREATE_PRIMARY`, `monitors_config` for
//! `MONITORS_CONFIG_ASYNC`). It is guest memory: everything read from it is
//! read once into a host value and validated before use.

use spice_server::command::Rect;
use vm_memory::GuestAddress;

use crate::error::Result;
use crate::qxl::abi::{self, ram as off, rect, ring, surface_create as sc};
use crate::qxl::guest::{GuestView, le};

/// A copy of `QXLSurfaceCreate` (from `ram.create_surface`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SurfaceCreateRaw {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stride in bytes; negative = bottom-up.
    pub stride: i32,
    /// `SpiceSurfaceFmt`.
    pub format: u32,
    /// `position`.
    pub position: u32,
    /// `mouse_mode` (ignored: forced on, as in QEMU).
    pub mouse_mode: u32,
    /// `QXL_SURF_FLAG_*`.
    pub flags: u32,
    /// `type` (0 = primary).
    pub kind: u32,
    /// `mem`: `QXLPHYSICAL` of the lowest byte of the surface.
    pub mem: u64,
}

impl SurfaceCreateRaw {
    /// Parse the 40-byte structure.
    pub fn parse(b: &[u8]) -> Self {
        Self {
            width: le::u32_at(b, sc::WIDTH),
            height: le::u32_at(b, sc::HEIGHT),
            stride: le::i32_at(b, sc::STRIDE),
            format: le::u32_at(b, sc::FORMAT),
            position: le::u32_at(b, sc::POSITION),
            mouse_mode: le::u32_at(b, sc::MOUSE_MODE),
            flags: le::u32_at(b, sc::FLAGS),
            kind: le::u32_at(b, sc::TYPE),
            mem: le::u64_at(b, sc::MEM),
        }
    }

    /// Serialise into the 40-byte structure (used by the mock driver).
    pub fn to_bytes(&self) -> [u8; sc::SIZE] {
        let mut b = [0u8; sc::SIZE];
        le::put_u32(&mut b, sc::WIDTH, self.width);
        le::put_u32(&mut b, sc::HEIGHT, self.height);
        le::put_u32(
            &mut b,
            sc::STRIDE,
            u32::from_le_bytes(self.stride.to_le_bytes()),
        );
        le::put_u32(&mut b, sc::FORMAT, self.format);
        le::put_u32(&mut b, sc::POSITION, self.position);
        le::put_u32(&mut b, sc::MOUSE_MODE, self.mouse_mode);
        le::put_u32(&mut b, sc::FLAGS, self.flags);
        le::put_u32(&mut b, sc::TYPE, self.kind);
        le::put_u64(&mut b, sc::MEM, self.mem);
        b
    }
}

/// Parse a 16-byte `QXLRect`.
pub fn parse_rect(b: &[u8]) -> Rect {
    Rect {
        top: le::i32_at(b, rect::TOP),
        left: le::i32_at(b, rect::LEFT),
        bottom: le::i32_at(b, rect::BOTTOM),
        right: le::i32_at(b, rect::RIGHT),
    }
}

/// The `QXLRam` header at a device-memory address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamHeader {
    base: u64,
}

impl RamHeader {
    /// The header at device address `base` (BAR0 offset `ram_header_offset`).
    pub const fn new(base: u64) -> Self {
        Self { base }
    }

    /// Device address of the header.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Device address of the field at `offset` in the header.
    pub const fn addr(&self, offset: u64) -> GuestAddress {
        GuestAddress(self.base.saturating_add(offset))
    }

    /// Re-initialise the header as QEMU's `init_qxl_ram` does: magic, zeroed
    /// interrupt registers, `update_surface` and `monitors_config`, the three
    /// rings reset (`prod = cons = 0`, `notify_on_prod = 1`, `notify_on_cons = 0`)
    /// and a zero release-ring slot at `prod`.
    pub fn init<V: GuestView + ?Sized>(&self, mem: &V) -> Result<()> {
        mem.write_u32(self.addr(off::MAGIC), abi::RAM_MAGIC)?;
        mem.write_u32(self.addr(off::INT_PENDING), 0)?;
        mem.write_u32(self.addr(off::INT_MASK), 0)?;
        mem.write_u32(self.addr(off::UPDATE_SURFACE), 0)?;
        mem.write_u64(self.addr(off::MONITORS_CONFIG), 0)?;
        for (at, n) in [
            (off::CMD_RING, ring::CMD_RING_SIZE),
            (off::CURSOR_RING, ring::CURSOR_RING_SIZE),
            (off::RELEASE_RING, ring::RELEASE_RING_SIZE),
        ] {
            let mut h = [0u8; ring::HEADER_SIZE];
            le::put_u32(&mut h, 0, n);
            le::put_u32(&mut h, 8, 1);
            mem.write_bytes(self.addr(at), &h)?;
        }
        mem.write_u64(self.addr(off::RELEASE_RING + ring::ITEMS), 0)?;
        Ok(())
    }

    /// Read `update_area` and `update_surface` (one 20-byte copy).
    pub fn read_update_area<V: GuestView + ?Sized>(&self, mem: &V) -> Result<(Rect, u32)> {
        let mut b = [0u8; rect::SIZE + 4];
        mem.read_bytes(self.addr(off::UPDATE_AREA), &mut b)?;
        Ok((parse_rect(&b), le::u32_at(&b, rect::SIZE)))
    }

    /// Read `mem_slot` as `(mem_start, mem_end)` (one 16-byte copy).
    pub fn read_mem_slot<V: GuestView + ?Sized>(&self, mem: &V) -> Result<(u64, u64)> {
        let mut b = [0u8; 16];
        mem.read_bytes(self.addr(off::MEM_SLOT), &mut b)?;
        Ok((le::u64_at(&b, 0), le::u64_at(&b, 8)))
    }

    /// Read `create_surface` (one 40-byte copy).
    pub fn read_create_surface<V: GuestView + ?Sized>(&self, mem: &V) -> Result<SurfaceCreateRaw> {
        let mut b = [0u8; sc::SIZE];
        mem.read_bytes(self.addr(off::CREATE_SURFACE), &mut b)?;
        Ok(SurfaceCreateRaw::parse(&b))
    }

    /// Read `monitors_config` (a `QXLPHYSICAL`).
    pub fn read_monitors_config<V: GuestView + ?Sized>(&self, mem: &V) -> Result<u64> {
        mem.read_u64(self.addr(off::MONITORS_CONFIG))
    }

    /// Read `log_buf` once and return the bytes before the first NUL (at most 4096).
    pub fn read_log<V: GuestView + ?Sized>(&self, mem: &V) -> Result<Vec<u8>> {
        let mut b = vec![0u8; off::LOG_BUF_LEN];
        mem.read_bytes(self.addr(off::LOG_BUF), &mut b)?;
        if let Some(n) = b.iter().position(|&c| c == 0) {
            b.truncate(n);
        }
        Ok(b)
    }

    /// Read `int_pending`.
    pub fn int_pending<V: GuestView + ?Sized>(&self, mem: &V) -> Result<u32> {
        mem.read_u32(self.addr(off::INT_PENDING))
    }

    /// Read `int_mask`.
    pub fn int_mask<V: GuestView + ?Sized>(&self, mem: &V) -> Result<u32> {
        mem.read_u32(self.addr(off::INT_MASK))
    }
}
