//! The `QXLDataChunk` chain walker.
//!
//! # Primer
//!
//! Variable-sized QXL data (bitmap pixels, QUIC streams, clip rectangles,
//! paths, glyph strings, cursor shapes) is stored as a singly linked list of
//! chunks, so a driver can split a large buffer over scattered pages:
//!
//! ```text
//! QXLDataChunk (packed, 20 bytes + data)
//!   @0  data_size  u32          bytes of data in this chunk
//!   @4  prev_chunk QXLPHYSICAL  ignored by the device
//!   @12 next_chunk QXLPHYSICAL  next chunk, 0 ends the chain
//!   @20 data[data_size]
//! ```
//!
//! The first chunk is either pointed at (`QXLBitmap.data`) or embedded at the
//! end of its parent structure (`QXLImage` QUIC, `QXLClipRects`, `QXLPath`,
//! `QXLString`, `QXLCursor`); [`ChunkStart`] covers both.
//!
//! The whole list is guest-controlled, so the walker:
//! - copies every chunk header exactly once into host memory and uses only
//!   that copy (QEMU #1628 read `data_size` twice);
//! - translates every chunk's data with its exact length through the memslot
//!   table before reading it;
//! - bounds the walk by [`Limits::max_chunks`] (a self-loop, a 2-cycle, or a
//!   loop of empty chunks ends with [`Error::TooManyChunks`], like the `ttl` of
//!   virtio-queue's descriptor chains);
//! - caps the total with checked `u64` arithmetic *before* growing the host
//!   buffer (spice 7d691840, 547f9f43), and, when the parent structure says
//!   how many bytes the chain holds, requires exactly that many.

use vm_memory::GuestAddress;

use super::decode::Limits;
use super::guest::{GuestView, le};
use super::memslot::{MemSlots, OFFSET_MASK};
use crate::error::{Error, Result};

/// Size of a `QXLDataChunk` header.
pub const CHUNK_HEADER_SIZE: u64 = 20;
/// Offset of `data_size` in `QXLDataChunk`.
pub const CHUNK_DATA_SIZE: usize = 0;
/// Offset of `prev_chunk` in `QXLDataChunk`.
pub const CHUNK_PREV: usize = 4;
/// Offset of `next_chunk` in `QXLDataChunk`.
pub const CHUNK_NEXT: usize = 12;

/// A host copy of a `QXLDataChunk` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Bytes of data in this chunk.
    pub data_size: u32,
    /// `prev_chunk` (never followed).
    pub prev_chunk: u64,
    /// `next_chunk` (0 ends the chain).
    pub next_chunk: u64,
}

impl ChunkHeader {
    /// Parse a header from the first 20 bytes of `b` (a host copy).
    pub fn parse(b: &[u8]) -> Self {
        Self {
            data_size: le::u32_at(b, CHUNK_DATA_SIZE),
            prev_chunk: le::u64_at(b, CHUNK_PREV),
            next_chunk: le::u64_at(b, CHUNK_NEXT),
        }
    }
}

/// Where a chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStart {
    /// A `QXLPHYSICAL` pointing at a `QXLDataChunk` header (`QXLBitmap.data`).
    Pointer(u64),
    /// The first header is embedded in a parent structure that the caller has
    /// already copied (together with this header, in the same single read).
    Embedded {
        /// The host copy of the embedded header.
        header: ChunkHeader,
        /// `QXLPHYSICAL` of the embedded chunk's data (parent address + offset
        /// of the chunk + 20; see [`phys_add`]).
        data: u64,
    },
}

/// `phys + add` inside the 48-bit offset field of a `QXLPHYSICAL`, keeping the
/// slot id and generation. Fails instead of carrying into the generation bits.
pub fn phys_add(phys: u64, add: u64) -> Result<u64> {
    let offset = phys & OFFSET_MASK;
    let sum = offset
        .checked_add(add)
        .filter(|s| *s <= OFFSET_MASK)
        .ok_or(Error::PhysOverflow { phys, add })?;
    Ok((phys & !OFFSET_MASK) | sum)
}

/// Copy the `QXLDataChunk` header at `phys` (one translated 20-byte read).
pub fn read_chunk_header<V: GuestView + ?Sized>(
    mem: &V,
    slots: &MemSlots,
    phys: u64,
) -> Result<ChunkHeader> {
    let addr = slots.translate(phys, CHUNK_HEADER_SIZE)?;
    let mut b = [0u8; 20];
    mem.read_bytes(addr, &mut b)?;
    Ok(ChunkHeader::parse(&b))
}

/// Read a whole chunk chain into one host buffer.
///
/// With `expected_len = Some(n)` the chain must hold exactly `n` bytes (more or
/// fewer is [`Error::ChunkSizeMismatch`]) and `n` must not exceed
/// [`Limits::max_chunk_data`]; with `None` the chain may hold up to
/// `max_chunk_data` bytes. Empty chunks are skipped but counted against
/// [`Limits::max_chunks`] (the first chunk counts too).
pub fn read_chunks<V: GuestView + ?Sized>(
    mem: &V,
    slots: &MemSlots,
    first: ChunkStart,
    expected_len: Option<u64>,
    limits: &Limits,
) -> Result<Vec<u8>> {
    let cap = match expected_len {
        Some(n) if n > limits.max_chunk_data => {
            return Err(Error::TooLarge {
                what: "chunk chain",
                size: n,
                cap: limits.max_chunk_data,
            });
        }
        Some(n) => n,
        None => limits.max_chunk_data,
    };
    let (mut header, mut data_phys) = match first {
        ChunkStart::Pointer(phys) => {
            let h = read_chunk_header(mem, slots, phys)?;
            (h, phys_add(phys, CHUNK_HEADER_SIZE)?)
        }
        ChunkStart::Embedded { header, data } => (header, data),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut chunks: u32 = 0;
    loop {
        chunks = chunks.saturating_add(1);
        if chunks > limits.max_chunks {
            return Err(Error::TooManyChunks(limits.max_chunks));
        }
        let size = u64::from(header.data_size);
        let new_total = total
            .checked_add(size)
            .ok_or(Error::Overflow("chunk chain"))?;
        if new_total > cap {
            // Check before reading or allocating anything for this chunk.
            return Err(match expected_len {
                Some(expected) => Error::ChunkSizeMismatch {
                    got: new_total,
                    expected,
                },
                None => Error::TooLarge {
                    what: "chunk chain",
                    size: new_total,
                    cap,
                },
            });
        }
        if size > 0 {
            let addr = slots.translate(data_phys, size)?;
            let start = usize::try_from(total).map_err(|_| Error::Overflow("chunk chain"))?;
            let end = usize::try_from(new_total).map_err(|_| Error::Overflow("chunk chain"))?;
            out.try_reserve_exact(end.saturating_sub(start))
                .map_err(|_| Error::TooLarge {
                    what: "chunk chain allocation",
                    size: new_total,
                    cap,
                })?;
            out.resize(end, 0);
            let dst = out
                .get_mut(start..end)
                .ok_or(Error::Overflow("chunk chain"))?;
            mem.read_bytes(addr, dst)?;
        }
        total = new_total;
        if header.next_chunk == 0 {
            break;
        }
        let next = header.next_chunk;
        header = read_chunk_header(mem, slots, next)?;
        data_phys = phys_add(next, CHUNK_HEADER_SIZE)?;
    }
    if let Some(expected) = expected_len
        && total != expected
    {
        return Err(Error::ChunkSizeMismatch {
            got: total,
            expected,
        });
    }
    Ok(out)
}

/// A `GuestAddress` helper for tests and callers: the device address `addr + off`.
pub fn addr_add(addr: GuestAddress, off: u64) -> Result<GuestAddress> {
    addr.0
        .checked_add(off)
        .map(GuestAddress)
        .ok_or(Error::Overflow("device address"))
}
