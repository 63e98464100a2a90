//! The QXL rings (`SPICE_RING_DECLARE`) as the device sees them.
//!
//! # Primer
//!
//! A ring is a 20-byte header — `num_items`, `prod`, `notify_on_prod`, `cons`,
//! `notify_on_cons` — followed by `num_items` fixed-size slots. `prod` and
//! `cons` are free-running `u32` counters; a slot index is
//! `counter & (num_items - 1)`. The ring is empty when `prod == cons` and full
//! when `prod - cons == num_items`.
//!
//! The command and cursor rings are produced by the guest and consumed by the
//! device: after each pop the device raises `DISPLAY` (command ring) or
//! `CURSOR` (cursor ring) if the new `cons` equals `notify_on_cons` (a guest
//! waiting on a full ring arms it). When the device finds a ring empty it arms
//! `notify_on_prod = prod + 1` so that the guest's next push writes the
//! `NOTIFY_CMD` / `NOTIFY_CURSOR` port. The release ring runs the other way
//! (see [`super::release`]).
//!
//! The whole header is guest memory, so the device reads it with one copy per
//! operation, checks that `num_items` still holds the value the device wrote
//! (a power of two, so the mask is safe) and that `prod - cons` is possible,
//! and flags a guest bug otherwise. Counters the device re-reads after writing
//! (`notify_on_cons`, `prod` after arming) are fresh reads of a single value,
//! never a re-validation of an earlier copy.

use std::sync::atomic::{Ordering, fence};

use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::qxl::abi::{cmd, ram, ring as off};
use crate::qxl::guest::{GuestView, le};
use crate::qxl::ram::RamHeader;

/// Where a ring lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingDesc {
    /// Name for logs and errors.
    pub name: &'static str,
    /// Device address of the ring header.
    pub header: GuestAddress,
    /// The number of slots (a power of two) the device initialised it with.
    pub num_items: u32,
    /// Size of one slot in bytes.
    pub item_size: u64,
}

impl RingDesc {
    /// The command ring of a RAM header.
    pub const fn command(ram_header: &RamHeader) -> Self {
        Self {
            name: "command",
            header: ram_header.addr(ram::CMD_RING),
            num_items: off::CMD_RING_SIZE,
            item_size: cmd::SIZE,
        }
    }

    /// The cursor ring of a RAM header.
    pub const fn cursor(ram_header: &RamHeader) -> Self {
        Self {
            name: "cursor",
            header: ram_header.addr(ram::CURSOR_RING),
            num_items: off::CURSOR_RING_SIZE,
            item_size: cmd::SIZE,
        }
    }

    /// The release ring of a RAM header.
    pub const fn release(ram_header: &RamHeader) -> Self {
        Self {
            name: "release",
            header: ram_header.addr(ram::RELEASE_RING),
            num_items: off::RELEASE_RING_SIZE,
            item_size: off::RELEASE_ITEM_SIZE,
        }
    }

    /// Device address of the header field at `offset`.
    pub fn field(&self, offset: u64) -> GuestAddress {
        GuestAddress(self.header.0.saturating_add(offset))
    }

    /// Device address of the slot that counter value `counter` designates.
    pub fn item_addr(&self, counter: u32) -> Result<GuestAddress> {
        let mask = self.num_items.checked_sub(1).ok_or(Error::BadRing {
            ring: self.name,
            what: "zero-sized ring",
        })?;
        let index = u64::from(counter & mask);
        index
            .checked_mul(self.item_size)
            .and_then(|o| o.checked_add(off::ITEMS))
            .and_then(|o| self.header.0.checked_add(o))
            .map(GuestAddress)
            .ok_or(Error::Overflow("ring item address"))
    }

    /// Read the header with one copy and validate it.
    pub fn read_header<V: GuestView + ?Sized>(&self, mem: &V) -> Result<RingHeader> {
        let mut b = [0u8; off::HEADER_SIZE];
        mem.read_bytes(self.header, &mut b)?;
        let h = RingHeader::parse(&b);
        self.validate(&h)?;
        Ok(h)
    }

    /// Check a header copy: `num_items` must be the (power-of-two) value the
    /// device set, and `prod - cons` at most `num_items`.
    pub fn validate(&self, h: &RingHeader) -> Result<()> {
        if h.num_items != self.num_items || !self.num_items.is_power_of_two() {
            return Err(Error::BadRing {
                ring: self.name,
                what: "num_items changed by the guest",
            });
        }
        if h.used() > self.num_items {
            return Err(Error::BadRing {
                ring: self.name,
                what: "prod and cons further apart than the ring size",
            });
        }
        Ok(())
    }

    /// Pop one `QXLCommand` from a guest-produced ring.
    ///
    /// Returns `None` when the ring is empty. Otherwise returns the command and
    /// whether the guest asked to be notified of this pop (`cons` reached
    /// `notify_on_cons`), in which case the caller raises the ring's interrupt.
    pub fn pop_command<V: GuestView + ?Sized>(
        &self,
        mem: &V,
    ) -> Result<Option<(RawCommand, bool)>> {
        let h = self.read_header(mem)?;
        if h.prod == h.cons {
            return Ok(None);
        }
        let mut item = [0u8; 16];
        mem.read_bytes(self.item_addr(h.cons)?, &mut item)?;
        let raw = RawCommand {
            data: le::u64_at(&item, cmd::DATA),
            kind: le::u32_at(&item, cmd::TYPE),
        };
        // The slot was copied before `cons` moves, so the guest may reuse it.
        fence(Ordering::SeqCst);
        let cons = h.cons.wrapping_add(1);
        mem.write_u32(self.field(off::CONS), cons)?;
        fence(Ordering::SeqCst);
        let notify_on_cons = mem.read_u32(self.field(off::NOTIFY_ON_CONS))?;
        Ok(Some((raw, cons == notify_on_cons)))
    }

    /// The consumer found the ring empty: arm `notify_on_prod = prod + 1` and
    /// re-check. Returns true when the ring is still empty (the device may
    /// sleep until the guest's notification), false when the guest produced
    /// meanwhile.
    pub fn arm_notify_on_prod<V: GuestView + ?Sized>(&self, mem: &V) -> Result<bool> {
        let h = self.read_header(mem)?;
        mem.write_u32(self.field(off::NOTIFY_ON_PROD), h.prod.wrapping_add(1))?;
        fence(Ordering::SeqCst);
        let h = self.read_header(mem)?;
        Ok(h.prod == h.cons)
    }
}

/// A copy of a ring header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingHeader {
    /// `num_items`.
    pub num_items: u32,
    /// `prod`.
    pub prod: u32,
    /// `notify_on_prod`.
    pub notify_on_prod: u32,
    /// `cons`.
    pub cons: u32,
    /// `notify_on_cons`.
    pub notify_on_cons: u32,
}

impl RingHeader {
    /// Parse the 20-byte header.
    pub fn parse(b: &[u8]) -> Self {
        Self {
            num_items: le::u32_at(b, 0),
            prod: le::u32_at(b, 4),
            notify_on_prod: le::u32_at(b, 8),
            cons: le::u32_at(b, 12),
            notify_on_cons: le::u32_at(b, 16),
        }
    }

    /// Number of produced, unconsumed slots (`prod - cons`, wrapping).
    pub const fn used(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }
}

/// A `QXLCommand` ring element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCommand {
    /// `QXLPHYSICAL` of the command structure.
    pub data: u64,
    /// `QXL_CMD_*` type.
    pub kind: u32,
}
