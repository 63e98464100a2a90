//! Memslots: how a `QXLPHYSICAL` becomes a device memory address.
//!
//! # Primer
//!
//! Guest QXL structures never hold plain guest-physical addresses. A
//! `QXLPHYSICAL` is a 64-bit value split, with the ROM's `slot_id_bits = 8` and
//! `slot_gen_bits = 8`, into
//!
//! ```text
//!  63      56 55      48 47                                  0
//! +----------+----------+-------------------------------------+
//! | slot id  |generation|        offset inside the slot       |
//! +----------+----------+-------------------------------------+
//! ```
//!
//! The guest registers up to [`NUM_MEMSLOTS`] slots with `MEMSLOT_ADD`, each a
//! guest-physical range that must lie inside the RAM (BAR0) or VRAM (BAR1/BAR4)
//! BAR. The offset is relative to the slot start. Slot 0 is reserved for compat
//! (qxl-1) mode, where the "offset" is a guest-physical address inside BAR0.
//!
//! This module is the single translator every guest pointer goes through. It
//! takes `(address, length)` and checks, with checked arithmetic, the slot id
//! (`id < NUM_MEMSLOTS`, the CVE-2019-3813 off-by-one), that the slot is active,
//! the generation, and that `offset + length` stays inside the slot
//! (CVE-2022-4144). The result is an address in the *device memory* given to
//! [`crate::qxl::QxlDevice`], where BAR0 starts at 0 and the VRAM follows it.

use vm_memory::GuestAddress;

use crate::error::{Error, Result};

/// Number of memslots (`NUM_MEMSLOTS` in QEMU).
pub const NUM_MEMSLOTS: usize = 8;
/// Bits of a `QXLPHYSICAL` that hold the slot id (ROM `slot_id_bits`).
pub const SLOT_ID_BITS: u32 = 8;
/// Bits of a `QXLPHYSICAL` that hold the generation (ROM `slot_gen_bits`).
pub const SLOT_GEN_BITS: u32 = 8;
/// Mask of the offset part of a `QXLPHYSICAL`.
pub const OFFSET_MASK: u64 = u64::MAX >> (SLOT_ID_BITS + SLOT_GEN_BITS);

/// One active memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSlot {
    /// The smallest valid offset (0 for native slots; BAR0's guest-physical base
    /// for the compat slot, whose offsets are guest-physical addresses).
    pub virt_start: u64,
    /// Size of the slot in bytes.
    pub size: u64,
    /// Device-memory address that `virt_start` maps to.
    pub local_start: u64,
    /// Generation the slot's addresses must carry.
    pub generation: u8,
}

/// A `QXLPHYSICAL` split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitAddr {
    /// Slot id.
    pub slot: u8,
    /// Generation.
    pub generation: u8,
    /// Offset.
    pub offset: u64,
}

/// Split a `QXLPHYSICAL` into slot id, generation and offset.
pub const fn split(phys: u64) -> SplitAddr {
    let [slot, generation, ..] = phys.to_be_bytes();
    SplitAddr {
        slot,
        generation,
        offset: phys & OFFSET_MASK,
    }
}

/// Build a `QXLPHYSICAL` the way guest drivers do (`setup_slot` in Linux).
pub const fn make_phys(slot: u8, generation: u8, offset: u64) -> u64 {
    ((slot as u64) << (64 - SLOT_ID_BITS))
        | ((generation as u64) << (64 - SLOT_ID_BITS - SLOT_GEN_BITS))
        | (offset & OFFSET_MASK)
}

/// The memslot table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemSlots {
    slots: [Option<MemSlot>; NUM_MEMSLOTS],
}

impl MemSlots {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Activate slot `id`. Fails if the id is out of range or the slot is active.
    pub fn add(&mut self, id: u8, slot: MemSlot) -> Result<()> {
        let entry = self
            .slots
            .get_mut(usize::from(id))
            .ok_or(Error::SlotAdd(id))?;
        if entry.is_some() {
            return Err(Error::SlotAdd(id));
        }
        *entry = Some(slot);
        Ok(())
    }

    /// Deactivate slot `id` (no-op if inactive). Fails if the id is out of range.
    pub fn del(&mut self, id: u8) -> Result<()> {
        let entry = self
            .slots
            .get_mut(usize::from(id))
            .ok_or(Error::SlotIdOutOfRange {
                slot: id,
                count: NUM_MEMSLOTS,
            })?;
        *entry = None;
        Ok(())
    }

    /// Deactivate every slot (device reset).
    pub fn clear(&mut self) {
        self.slots = [None; NUM_MEMSLOTS];
    }

    /// The slot `id`, if active.
    pub fn get(&self, id: u8) -> Option<&MemSlot> {
        self.slots.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// Translate `len` bytes at `phys` into a device-memory address.
    ///
    /// Checks the slot id, that the slot is active, the generation, and that the
    /// whole range `[offset, offset + len)` lies inside the slot.
    pub fn translate(&self, phys: u64, len: u64) -> Result<GuestAddress> {
        let a = split(phys);
        let slot = self
            .slots
            .get(usize::from(a.slot))
            .ok_or(Error::SlotIdOutOfRange {
                slot: a.slot,
                count: NUM_MEMSLOTS,
            })?
            .as_ref()
            .ok_or(Error::SlotInactive(a.slot))?;
        if a.generation != slot.generation {
            return Err(Error::SlotGeneration {
                slot: a.slot,
                got: a.generation,
                expected: slot.generation,
            });
        }
        let outside = || Error::OutsideSlot {
            slot: a.slot,
            offset: a.offset,
            len,
            size: slot.size,
        };
        let rel = a.offset.checked_sub(slot.virt_start).ok_or_else(outside)?;
        let end = rel.checked_add(len).ok_or_else(outside)?;
        if end > slot.size {
            return Err(outside());
        }
        let local = slot.local_start.checked_add(rel).ok_or_else(outside)?;
        Ok(GuestAddress(local))
    }

    /// The number of bytes from `phys` to the end of its slot (after the same
    /// checks as [`Self::translate`] with a length of 0). Used to bound scans for
    /// NUL-terminated data.
    pub fn remaining(&self, phys: u64) -> Result<u64> {
        self.translate(phys, 0)?;
        let a = split(phys);
        let slot = self.get(a.slot).ok_or(Error::SlotInactive(a.slot))?;
        let rel = a
            .offset
            .checked_sub(slot.virt_start)
            .ok_or(Error::Overflow("memslot remaining"))?;
        slot.size
            .checked_sub(rel)
            .ok_or(Error::Overflow("memslot remaining"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table() -> MemSlots {
        let mut t = MemSlots::new();
        t.add(
            1,
            MemSlot {
                virt_start: 0,
                size: 0x10000,
                local_start: 0x1000,
                generation: 0,
            },
        )
        .unwrap();
        t.add(
            2,
            MemSlot {
                virt_start: 0,
                size: 0x4000,
                local_start: 0x100000,
                generation: 3,
            },
        )
        .unwrap();
        t
    }

    #[test]
    fn memslot_translate_basic() {
        let t = table();
        assert_eq!(
            t.translate(make_phys(1, 0, 0x10), 4).unwrap(),
            GuestAddress(0x1010)
        );
        assert_eq!(
            t.translate(make_phys(2, 3, 0x3ffc), 4).unwrap(),
            GuestAddress(0x103ffc)
        );
    }

    #[test]
    fn memslot_translate_slot_id_off_by_one() {
        // CVE-2019-3813: slot id == number of slots must be rejected.
        let t = table();
        let id = u8::try_from(NUM_MEMSLOTS).unwrap();
        assert_eq!(
            t.translate(make_phys(id, 0, 0), 1),
            Err(Error::SlotIdOutOfRange {
                slot: id,
                count: NUM_MEMSLOTS
            })
        );
        assert_eq!(
            t.translate(make_phys(0xff, 0, 0), 1).unwrap_err(),
            Error::SlotIdOutOfRange {
                slot: 0xff,
                count: NUM_MEMSLOTS
            }
        );
        assert_eq!(
            t.translate(make_phys(3, 0, 0), 1),
            Err(Error::SlotInactive(3))
        );
    }

    #[test]
    fn memslot_translate_generation_mismatch() {
        let t = table();
        assert_eq!(
            t.translate(make_phys(2, 0, 0), 1),
            Err(Error::SlotGeneration {
                slot: 2,
                got: 0,
                expected: 3
            })
        );
    }

    #[test]
    fn memslot_translate_end_of_slot() {
        // CVE-2022-4144: the length must be checked, not only the start.
        let t = table();
        t.translate(make_phys(1, 0, 0xffff), 1).unwrap();
        t.translate(make_phys(1, 0, 0x10000), 0).unwrap();
        t.translate(make_phys(1, 0, 0xffff), 2).unwrap_err();
        t.translate(make_phys(1, 0, 0x10000), 1).unwrap_err();
        t.translate(make_phys(1, 0, 0xfff0), 0x11).unwrap_err();
        t.translate(make_phys(1, 0, 1), u64::MAX).unwrap_err();
        assert_eq!(t.remaining(make_phys(1, 0, 0xfff0)).unwrap(), 0x10);
    }

    #[test]
    fn memslot_compat_slot_uses_guest_physical_offsets() {
        let mut t = MemSlots::new();
        t.add(
            0,
            MemSlot {
                virt_start: 0xe000_0000,
                size: 0x100_0000,
                local_start: 0,
                generation: 0,
            },
        )
        .unwrap();
        assert_eq!(
            t.translate(make_phys(0, 0, 0xe000_0010), 4).unwrap(),
            GuestAddress(0x10)
        );
        t.translate(make_phys(0, 0, 0xdfff_fff0), 4).unwrap_err();
    }

    #[test]
    fn memslot_add_twice_and_delete() {
        let mut t = table();
        let s = *t.get(1).unwrap();
        assert_eq!(t.add(1, s), Err(Error::SlotAdd(1)));
        assert_eq!(
            t.add(u8::try_from(NUM_MEMSLOTS).unwrap(), s),
            Err(Error::SlotAdd(8))
        );
        t.del(1).unwrap();
        t.translate(make_phys(1, 0, 0), 1).unwrap_err();
        t.add(1, s).unwrap();
        t.clear();
        assert!(t.get(2).is_none());
    }

    proptest! {
        #[test]
        fn memslot_translate_never_escapes_slot(slot in 0u8..=255, generation in 0u8..=255,
                                  offset in 0u64..0x20000, len in 0u64..0x20000) {
            let t = table();
            if let Ok(addr) = t.translate(make_phys(slot, generation, offset), len) {
                let s = t.get(slot).unwrap();
                prop_assert_eq!(generation, s.generation);
                prop_assert!(offset + len <= s.size);
                prop_assert!(addr.0 >= s.local_start);
                prop_assert!(addr.0 + len <= s.local_start + s.size);
            } else {
                let ok = t.get(slot).is_some_and(|s| s.generation == generation && offset + len <= s.size);
                prop_assert!(!ok);
            }
        }
    }
}
