//! Decoder tests, one group per `THREATS.md` row.
//!
//! The fixture is a `GuestMemoryMmap` with two native memslots and a
//! [`GuestHeap`] over slot 1; commands are laid out by the mock encoder (the
//! same one other crates use) or by hand for adversarial layouts.

#![allow(clippy::unwrap_used)]

mod chunks;
mod cursor;
mod draw;
mod image;
mod misc;
mod prop;
mod racing;
mod surface;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use spice_server::command::{
    Bitmap, BitmapFormat, Clip, Command, CopyOp, DrawOp, Drawable, Image, ImageData, Palette, Rect,
    Ropd, ScaleMode,
};

use super::{Decoded, Limits, decode_command};
use crate::error::Result;
use crate::qxl::guest::GuestView;
use crate::qxl::memslot::{MemSlot, MemSlots, make_phys};
use crate::qxl::mock::encode::{EncodeOptions, GuestHeap, encode_command_with};

/// Total guest memory of the fixture.
pub(super) const MEM_SIZE: usize = 4 << 20;
/// The slot the heap allocates from.
pub(super) const SLOT: u8 = 1;
/// Its generation (non-zero so that a zero generation is wrong).
pub(super) const GEN: u8 = 3;
/// Device address of slot 1's first byte.
pub(super) const SLOT1_BASE: u64 = 0x1_0000;
/// Size of slot 1.
pub(super) const SLOT1_SIZE: u64 = 2 << 20;
/// A second slot (generation 0) for cross-slot pointers.
pub(super) const SLOT2: u8 = 2;
/// Device address of slot 2's first byte.
pub(super) const SLOT2_BASE: u64 = 0x30_0000;
/// Size of slot 2.
pub(super) const SLOT2_SIZE: u64 = 0x10_0000;

/// Guest memory, memslots, a heap and limits.
pub(super) struct Fx {
    pub mem: GuestMemoryMmap,
    pub slots: MemSlots,
    pub heap: GuestHeap,
    pub limits: Limits,
}

pub(super) fn slots() -> MemSlots {
    let mut slots = MemSlots::new();
    slots
        .add(
            SLOT,
            MemSlot {
                virt_start: 0,
                size: SLOT1_SIZE,
                local_start: SLOT1_BASE,
                generation: GEN,
            },
        )
        .unwrap();
    slots
        .add(
            SLOT2,
            MemSlot {
                virt_start: 0,
                size: SLOT2_SIZE,
                local_start: SLOT2_BASE,
                generation: 0,
            },
        )
        .unwrap();
    slots
}

impl Fx {
    pub fn new() -> Self {
        Self {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
            slots: slots(),
            heap: GuestHeap::new(SLOT, GEN, SLOT1_BASE, 0x1000, SLOT1_SIZE),
            limits: Limits::default(),
        }
    }

    /// `QXLPHYSICAL` of slot-1 offset `off`.
    pub fn phys(off: u64) -> u64 {
        make_phys(SLOT, GEN, off)
    }

    /// Write `bytes` at the slot-1 `QXLPHYSICAL` `phys`.
    pub fn write(&self, phys: u64, bytes: &[u8]) {
        let addr = self.slots.translate(phys, 0).unwrap();
        self.mem.write_bytes(addr, bytes).unwrap();
    }

    /// Allocate and write raw bytes; returns the `QXLPHYSICAL`.
    pub fn raw(&mut self, bytes: &[u8]) -> u64 {
        crate::qxl::mock::encode::write_raw(&self.mem, &mut self.heap, bytes).unwrap()
    }

    pub fn encode(&mut self, cmd: &Command, opts: &EncodeOptions) -> (u64, u32) {
        encode_command_with(&self.mem, &mut self.heap, cmd, 0x77, opts).unwrap()
    }

    pub fn decode(&self, ty: u32, phys: u64, flags: u32) -> Result<Decoded> {
        decode_command(&self.mem, &self.slots, ty, phys, flags, &self.limits)
    }

    /// Encode `cmd`, decode it, return the decoded command.
    pub fn roundtrip_with(&mut self, cmd: &Command, opts: &EncodeOptions) -> Result<Command> {
        let (phys, ty) = self.encode(cmd, opts);
        let flags = if opts.compat {
            super::QXL_COMMAND_FLAG_COMPAT
        } else {
            0
        };
        self.decode(ty, phys, flags).map(|d| d.command)
    }

    /// Encode and decode `cmd` and assert it comes back unchanged.
    pub fn assert_roundtrip(&mut self, cmd: &Command) {
        for opts in [
            EncodeOptions::default(),
            EncodeOptions {
                chunk_size: Some(3),
                ..EncodeOptions::default()
            },
        ] {
            assert_eq!(&self.roundtrip_with(cmd, &opts).unwrap(), cmd, "{opts:?}");
        }
    }
}

/// A 32-bit bitmap image `w`×`h` with distinct pixel bytes.
pub(super) fn bitmap_image(w: u32, h: u32) -> Image {
    let stride = w * 4;
    Image {
        id: 0x1234_0000_0001,
        flags: 0,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format: BitmapFormat::Rgb32,
            flags: spice_server::command::BITMAP_TOP_DOWN,
            width: w,
            height: h,
            stride,
            palette: None,
            data: pattern(usize::try_from(stride * h).unwrap()),
        }),
    }
}

/// An 8-bit palette bitmap image.
pub(super) fn palette_image(w: u32, h: u32) -> Image {
    let stride = w.div_ceil(4) * 4;
    Image {
        id: 9,
        flags: 1,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format: BitmapFormat::EightBit,
            flags: 0,
            width: w,
            height: h,
            stride,
            palette: Some(Palette {
                unique: 5,
                entries: (0..16).map(|i| i * 0x10101).collect(),
            }),
            data: pattern(usize::try_from(stride * h).unwrap())
                .iter()
                .map(|b| b % 16)
                .collect(),
        }),
    }
}

/// A drawable shell around `op`.
pub(super) fn drawable(op: DrawOp) -> Drawable {
    Drawable {
        surface_id: 0,
        effect: 1,
        self_bitmap: None,
        bbox: Rect::new(0, 0, 4, 4),
        clip: Clip::None,
        mm_time: 42,
        surfaces_dest: [-1; 3],
        surfaces_rects: [Rect::default(); 3],
        op,
    }
}

/// A plain COPY of `src` (whole image).
pub(super) fn copy_of(src: Image) -> DrawOp {
    let area = Rect::new(
        0,
        0,
        i32::try_from(src.width).unwrap(),
        i32::try_from(src.height).unwrap(),
    );
    DrawOp::Copy(CopyOp {
        src: Box::new(src),
        src_area: area,
        rop: Ropd(Ropd::OP_PUT),
        scale_mode: ScaleMode::Nearest,
        mask: None,
    })
}

/// `n` bytes of a non-repeating-looking pattern.
pub(super) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect()
}
