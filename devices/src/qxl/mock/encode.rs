//! The mock guest's encoder: owned commands → packed QXL structures in guest memory.
//!
//! # Primer
//!
//! A guest driver allocates its command structures, images, chunks and
//! palettes from memory that one of its memslots covers, and refers to them
//! by `QXLPHYSICAL` (`slot id | generation | offset in the slot`). This module
//! plays that driver for tests, benches and fuzzers:
//!
//! - [`GuestHeap`] is a bump allocator over a window of one memslot. It hands
//!   out both the device-memory address (where the mock writes) and the
//!   `QXLPHYSICAL` (what the device sees).
//! - [`encode_command`] / [`encode_command_with`] write an owned
//!   [`Command`] in exactly the packed layouts that [`crate::qxl::decode`]
//!   reads (`QXLDrawable`, `QXLCompatDrawable`, `QXLSurfaceCmd`,
//!   `QXLCursorCmd`, ...). Variable-sized data goes into `QXLDataChunk` chains,
//!   split every [`EncodeOptions::chunk_size`] bytes when asked; bitmaps can be
//!   written `QXL_BITMAP_DIRECT` instead.
//! - Raw helpers ([`write_chunk`], [`write_chunk_at`], [`write_raw`]) build
//!   adversarial layouts: chunk loops, short chains, structures at a slot end.
//!
//! Everything is written with [`GuestView::write_bytes`], so the encoder works
//! over a `GuestMemoryMmap` or any other [`GuestView`].

use vm_memory::GuestAddress;

use spice_server::command::{
    BITMAP_DIRECT, Brush, Clip, Command, CopyOp, Cursor, CursorCmd, DrawOp, Drawable, GlyphString,
    Image, ImageData, LineAttr, Mask, MonitorsConfig, Palette, Path, Point, Rect, SurfaceCmd,
    SurfaceCreate, Transform,
};

use crate::error::{Error, Result};
use crate::qxl::chunks::{CHUNK_HEADER_SIZE, phys_add};
use crate::qxl::decode::{
    COMPAT_DRAWABLE_SIZE, CURSOR_CMD_SIZE, CURSOR_HIDE, CURSOR_MOVE, CURSOR_SET, CURSOR_TRAIL,
    DRAWABLE_SIZE, QXL_CMD_CURSOR, QXL_CMD_DRAW, QXL_CMD_MESSAGE, QXL_CMD_SURFACE, QXL_CMD_UPDATE,
    SURFACE_CMD_CREATE, SURFACE_CMD_DESTROY, SURFACE_CMD_SIZE, UPDATE_CMD_SIZE,
};
use crate::qxl::guest::{GuestView, le};
use crate::qxl::memslot::make_phys;

/// A bump allocator over a window of one memslot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestHeap {
    /// The memslot id the addresses carry.
    pub slot: u8,
    /// The memslot generation the addresses carry.
    pub generation: u8,
    /// Device-memory address of the slot's first byte (`MemSlot::local_start`).
    pub local_base: u64,
    /// The slot's smallest offset (`MemSlot::virt_start`: 0 for native slots).
    pub virt_start: u64,
    /// Next free slot offset.
    pub next: u64,
    /// End (exclusive) of the allocation window, as a slot offset.
    pub end: u64,
}

impl GuestHeap {
    /// A heap handing out slot offsets `window_start..window_end` of a native
    /// slot (`virt_start` 0) whose first byte is at device address `local_base`.
    pub fn new(
        slot: u8,
        generation: u8,
        local_base: u64,
        window_start: u64,
        window_end: u64,
    ) -> Self {
        Self {
            slot,
            generation,
            local_base,
            virt_start: 0,
            next: window_start,
            end: window_end,
        }
    }

    /// Allocate `len` bytes aligned to `align` (a power of two; 0 and 1 mean
    /// unaligned). Returns the device address and the `QXLPHYSICAL`.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<(GuestAddress, u64)> {
        let exhausted = || Error::TooLarge {
            what: "mock guest heap",
            size: len,
            cap: self.end.saturating_sub(self.next),
        };
        let mask = align.max(1).wrapping_sub(1);
        let start = self
            .next
            .checked_add(mask)
            .map(|v| v & !mask)
            .ok_or_else(exhausted)?;
        let end = start.checked_add(len).ok_or_else(exhausted)?;
        if end > self.end {
            return Err(exhausted());
        }
        self.next = end;
        Ok((self.addr_of(start)?, self.phys_of(start)))
    }

    /// The `QXLPHYSICAL` of slot offset `offset`.
    pub fn phys_of(&self, offset: u64) -> u64 {
        make_phys(self.slot, self.generation, offset)
    }

    /// The device address of slot offset `offset`.
    pub fn addr_of(&self, offset: u64) -> Result<GuestAddress> {
        offset
            .checked_sub(self.virt_start)
            .and_then(|rel| self.local_base.checked_add(rel))
            .map(GuestAddress)
            .ok_or(Error::Overflow("mock heap address"))
    }

    /// Bytes left in the window.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.next)
    }
}

/// How the encoder lays data out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Split every chunk chain into chunks of at most this many bytes
    /// (`None` or `Some(0)`: one chunk).
    pub chunk_size: Option<usize>,
    /// Write bitmaps `QXL_BITMAP_DIRECT` (contiguous pixels, no chunk) even when
    /// the model's flags do not say so. A model bitmap whose flags already have
    /// [`BITMAP_DIRECT`] is always written direct.
    pub direct_bitmaps: bool,
    /// Write drawables as `QXLCompatDrawable` (qxl-1 compat mode).
    pub compat: bool,
}

/// Allocate and write `bytes` (aligned to 8); returns the `QXLPHYSICAL`.
pub fn write_raw<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    bytes: &[u8],
) -> Result<u64> {
    let len = u64::try_from(bytes.len()).map_err(|_| Error::Overflow("mock write"))?;
    let (addr, phys) = heap.alloc(len, 8)?;
    mem.write_bytes(addr, bytes)?;
    Ok(phys)
}

/// A 20-byte `QXLDataChunk` header.
pub fn chunk_header(data_size: u32, prev: u64, next: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    le::put_u32(&mut h, 0, data_size);
    le::put_u64(&mut h, 4, prev);
    le::put_u64(&mut h, 12, next);
    h
}

/// Write a chunk (header claiming `data_size`, then `data`, which may be
/// shorter or longer than `data_size`) at device address `addr`.
pub fn write_chunk_at<V: GuestView + ?Sized>(
    mem: &V,
    addr: GuestAddress,
    data_size: u32,
    next: u64,
    data: &[u8],
) -> Result<()> {
    mem.write_bytes(addr, &chunk_header(data_size, 0, next))?;
    let data_addr = addr
        .0
        .checked_add(CHUNK_HEADER_SIZE)
        .ok_or(Error::Overflow("mock chunk"))?;
    mem.write_bytes(GuestAddress(data_addr), data)
}

/// Allocate and write one chunk holding `data` whose `next_chunk` is `next`.
pub fn write_chunk<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    data: &[u8],
    next: u64,
) -> Result<u64> {
    let size = u32::try_from(data.len()).map_err(|_| Error::Overflow("mock chunk"))?;
    let mut b = chunk_header(size, 0, next).to_vec();
    b.extend_from_slice(data);
    write_raw(mem, heap, &b)
}

/// The pieces `data` is split into with a chunk size of `chunk` (at least one piece).
fn pieces(data: &[u8], chunk: Option<usize>) -> Vec<&[u8]> {
    match chunk {
        Some(n) if n > 0 && !data.is_empty() => data.chunks(n).collect(),
        _ => vec![data],
    }
}

/// Write `prefix` immediately followed by a chunk chain holding `data` (the
/// first chunk header embedded right after `prefix`, as in `QXLClipRects`,
/// `QXLPath`, `QXLString`, `QXLCursor`, QUIC images). An empty prefix gives a
/// plain chain. Returns the `QXLPHYSICAL` of the prefix.
pub fn write_embedded_chain<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    prefix: &[u8],
    data: &[u8],
    chunk_size: Option<usize>,
) -> Result<u64> {
    let parts = pieces(data, chunk_size);
    let (first, rest) = parts.split_first().ok_or(Error::Malformed("mock chain"))?;
    // Write the tail back to front so each chunk knows its successor.
    let mut next = 0u64;
    for p in rest.iter().rev() {
        next = write_chunk(mem, heap, p, next)?;
    }
    let size = u32::try_from(first.len()).map_err(|_| Error::Overflow("mock chunk"))?;
    let mut b = prefix.to_vec();
    b.extend_from_slice(&chunk_header(size, 0, next));
    b.extend_from_slice(first);
    write_raw(mem, heap, &b)
}

fn put_i32(b: &mut [u8], off: usize, v: i32) {
    le::put_u32(b, off, u32::from_le_bytes(v.to_le_bytes()));
}

fn put_rect(b: &mut [u8], off: usize, r: &Rect) {
    put_i32(b, off, r.top);
    put_i32(b, off + 4, r.left);
    put_i32(b, off + 8, r.bottom);
    put_i32(b, off + 12, r.right);
}

fn put_point(b: &mut [u8], off: usize, p: Point) {
    put_i32(b, off, p.x);
    put_i32(b, off + 4, p.y);
}

fn put_u8(b: &mut [u8], off: usize, v: u8) {
    if let Some(x) = b.get_mut(off) {
        *x = v;
    }
}

fn put_i16(b: &mut [u8], off: usize, v: i16) {
    le::put_u16(b, off, u16::from_le_bytes(v.to_le_bytes()));
}

/// The encoder's state: memory, heap and options.
struct Enc<'a, V: GuestView + ?Sized> {
    mem: &'a V,
    heap: &'a mut GuestHeap,
    opts: EncodeOptions,
}

impl<V: GuestView + ?Sized> Enc<'_, V> {
    fn raw(&mut self, bytes: &[u8]) -> Result<u64> {
        write_raw(self.mem, self.heap, bytes)
    }

    fn embedded(&mut self, prefix: &[u8], data: &[u8]) -> Result<u64> {
        write_embedded_chain(self.mem, self.heap, prefix, data, self.opts.chunk_size)
    }

    fn palette(&mut self, p: &Palette) -> Result<u64> {
        let n = u16::try_from(p.entries.len()).map_err(|_| Error::Overflow("mock palette"))?;
        let mut b = vec![0u8; 10];
        le::put_u64(&mut b, 0, p.unique);
        le::put_u16(&mut b, 8, n);
        for e in &p.entries {
            b.extend_from_slice(&e.to_le_bytes());
        }
        self.raw(&b)
    }

    fn image(&mut self, img: &Image) -> Result<u64> {
        let mut d = vec![0u8; 18];
        le::put_u64(&mut d, 0, img.id);
        put_u8(&mut d, 9, img.flags);
        le::put_u32(&mut d, 10, img.width);
        le::put_u32(&mut d, 14, img.height);
        match &img.data {
            ImageData::Bitmap(bm) => {
                put_u8(&mut d, 8, 0);
                let palette = match &bm.palette {
                    Some(p) => self.palette(p)?,
                    None => 0,
                };
                let mut flags = bm.flags;
                let direct = self.opts.direct_bitmaps || bm.flags & BITMAP_DIRECT != 0;
                let data = if direct {
                    flags |= BITMAP_DIRECT;
                    self.raw(&bm.data)?
                } else {
                    self.embedded(&[], &bm.data)?
                };
                let mut v = [0u8; 30];
                put_u8(&mut v, 0, bm.format as u8);
                put_u8(&mut v, 1, flags);
                le::put_u32(&mut v, 2, bm.width);
                le::put_u32(&mut v, 6, bm.height);
                le::put_u32(&mut v, 10, bm.stride);
                le::put_u64(&mut v, 14, palette);
                le::put_u64(&mut v, 22, data);
                d.extend_from_slice(&v);
                self.raw(&d)
            }
            ImageData::Quic(q) => {
                put_u8(&mut d, 8, 1);
                let size = u32::try_from(q.len()).map_err(|_| Error::Overflow("mock quic"))?;
                d.extend_from_slice(&size.to_le_bytes());
                self.embedded(&d, q)
            }
            ImageData::Surface(id) => {
                put_u8(&mut d, 8, 104);
                d.extend_from_slice(&id.to_le_bytes());
                self.raw(&d)
            }
        }
    }

    fn brush(&mut self, b: &mut [u8], brush: &Brush) -> Result<()> {
        match brush {
            Brush::None => le::put_u32(b, 0, 0),
            Brush::Solid(c) => {
                le::put_u32(b, 0, 1);
                le::put_u32(b, 4, *c);
            }
            Brush::Pattern { image, pos } => {
                le::put_u32(b, 0, 2);
                let p = self.image(image)?;
                le::put_u64(b, 4, p);
                put_point(b, 12, *pos);
            }
        }
        Ok(())
    }

    fn mask(&mut self, b: &mut [u8], mask: Option<&Mask>) -> Result<()> {
        if let Some(m) = mask {
            put_u8(b, 0, m.flags);
            put_point(b, 1, m.pos);
            let p = self.image(&m.bitmap)?;
            le::put_u64(b, 9, p);
        }
        Ok(())
    }

    fn clip(&mut self, clip: &Clip) -> Result<(u32, u64)> {
        match clip {
            Clip::None => Ok((0, 0)),
            Clip::Rects(rects) => {
                let n = u32::try_from(rects.len()).map_err(|_| Error::Overflow("mock clip"))?;
                let mut data = vec![0u8; rects.len() * 16];
                for (i, r) in rects.iter().enumerate() {
                    put_rect(&mut data, i * 16, r);
                }
                Ok((1, self.embedded(&n.to_le_bytes(), &data)?))
            }
        }
    }

    fn path(&mut self, path: &Path) -> Result<u64> {
        let mut data = Vec::new();
        for s in &path.segments {
            let n = u32::try_from(s.points.len()).map_err(|_| Error::Overflow("mock path"))?;
            data.extend_from_slice(&s.flags.to_le_bytes());
            data.extend_from_slice(&n.to_le_bytes());
            for p in &s.points {
                data.extend_from_slice(&p.x.to_le_bytes());
                data.extend_from_slice(&p.y.to_le_bytes());
            }
        }
        let size = u32::try_from(data.len()).map_err(|_| Error::Overflow("mock path"))?;
        self.embedded(&size.to_le_bytes(), &data)
    }

    fn line_attr(&mut self, b: &mut [u8], a: &LineAttr) -> Result<()> {
        put_u8(b, 0, a.flags);
        put_u8(b, 1, a.join_style);
        put_u8(b, 2, a.end_style);
        let n = u8::try_from(a.style.len()).map_err(|_| Error::Overflow("mock line style"))?;
        put_u8(b, 3, n);
        put_i32(b, 4, a.width);
        put_i32(b, 8, a.miter_limit);
        if !a.style.is_empty() {
            let bytes: Vec<u8> = a.style.iter().flat_map(|v| v.to_le_bytes()).collect();
            let p = self.raw(&bytes)?;
            le::put_u64(b, 12, p);
        }
        Ok(())
    }

    fn string(&mut self, s: &GlyphString) -> Result<u64> {
        let mut data = Vec::new();
        for g in &s.glyphs {
            let mut h = [0u8; 20];
            put_point(&mut h, 0, g.render_pos);
            put_point(&mut h, 8, g.glyph_origin);
            le::put_u16(&mut h, 16, g.width);
            le::put_u16(&mut h, 18, g.height);
            data.extend_from_slice(&h);
            data.extend_from_slice(&g.data);
        }
        let mut prefix = [0u8; 8];
        let size = u32::try_from(data.len()).map_err(|_| Error::Overflow("mock string"))?;
        let len = u16::try_from(s.glyphs.len()).map_err(|_| Error::Overflow("mock string"))?;
        le::put_u32(&mut prefix, 0, size);
        le::put_u16(&mut prefix, 4, len);
        le::put_u16(&mut prefix, 6, s.flags);
        self.embedded(&prefix, &data)
    }

    fn transform(&mut self, t: Option<&Transform>) -> Result<u64> {
        match t {
            None => Ok(0),
            Some(t) => {
                let b: Vec<u8> = t.0.iter().flat_map(|v| v.to_le_bytes()).collect();
                self.raw(&b)
            }
        }
    }

    fn copy(&mut self, u: &mut [u8], c: &CopyOp) -> Result<()> {
        let src = self.image(&c.src)?;
        le::put_u64(u, 0, src);
        put_rect(u, 8, &c.src_area);
        le::put_u16(u, 24, c.rop.0);
        put_u8(u, 26, c.scale_mode as u8);
        self.mask(&mut u[27..], c.mask.as_ref())
    }

    /// The 68-byte payload union of a drawable.
    fn payload(&mut self, op: &DrawOp, compat: bool) -> Result<[u8; 68]> {
        let mut u = [0u8; 68];
        match op {
            DrawOp::Nop => {}
            DrawOp::Fill { brush, rop, mask } => {
                self.brush(&mut u, brush)?;
                le::put_u16(&mut u, 20, rop.0);
                self.mask(&mut u[22..], mask.as_ref())?;
            }
            DrawOp::Opaque {
                src,
                src_area,
                brush,
                rop,
                scale_mode,
                mask,
            } => {
                let p = self.image(src)?;
                le::put_u64(&mut u, 0, p);
                put_rect(&mut u, 8, src_area);
                self.brush(&mut u[24..], brush)?;
                le::put_u16(&mut u, 44, rop.0);
                put_u8(&mut u, 46, *scale_mode as u8);
                self.mask(&mut u[47..], mask.as_ref())?;
            }
            DrawOp::Copy(c) | DrawOp::Blend(c) => self.copy(&mut u, c)?,
            DrawOp::CopyBits { src_pos } => put_point(&mut u, 0, *src_pos),
            DrawOp::Blackness { mask } | DrawOp::Whiteness { mask } | DrawOp::Invers { mask } => {
                self.mask(&mut u, mask.as_ref())?;
            }
            DrawOp::Rop3 {
                src,
                src_area,
                brush,
                rop3,
                scale_mode,
                mask,
            } => {
                let p = self.image(src)?;
                le::put_u64(&mut u, 0, p);
                put_rect(&mut u, 8, src_area);
                self.brush(&mut u[24..], brush)?;
                put_u8(&mut u, 44, *rop3);
                put_u8(&mut u, 45, *scale_mode as u8);
                self.mask(&mut u[46..], mask.as_ref())?;
            }
            DrawOp::Stroke {
                path,
                attr,
                brush,
                fore_mode,
                back_mode,
            } => {
                let p = self.path(path)?;
                le::put_u64(&mut u, 0, p);
                self.line_attr(&mut u[8..], attr)?;
                self.brush(&mut u[28..], brush)?;
                le::put_u16(&mut u, 48, *fore_mode);
                le::put_u16(&mut u, 50, *back_mode);
            }
            DrawOp::Text {
                string,
                back_area,
                fore_brush,
                back_brush,
                fore_mode,
                back_mode,
            } => {
                let p = self.string(string)?;
                le::put_u64(&mut u, 0, p);
                put_rect(&mut u, 8, back_area);
                self.brush(&mut u[24..], fore_brush)?;
                self.brush(&mut u[44..], back_brush)?;
                le::put_u16(&mut u, 64, *fore_mode);
                le::put_u16(&mut u, 66, *back_mode);
            }
            DrawOp::Transparent {
                src,
                src_area,
                src_color,
                true_color,
            } => {
                let p = self.image(src)?;
                le::put_u64(&mut u, 0, p);
                put_rect(&mut u, 8, src_area);
                le::put_u32(&mut u, 24, *src_color);
                le::put_u32(&mut u, 28, *true_color);
            }
            DrawOp::AlphaBlend {
                alpha_flags,
                alpha,
                src,
                src_area,
            } => {
                let p = self.image(src)?;
                if compat {
                    put_u8(&mut u, 0, *alpha);
                    le::put_u64(&mut u, 1, p);
                    put_rect(&mut u, 9, src_area);
                } else {
                    le::put_u16(&mut u, 0, *alpha_flags);
                    put_u8(&mut u, 2, *alpha);
                    le::put_u64(&mut u, 3, p);
                    put_rect(&mut u, 11, src_area);
                }
            }
            DrawOp::Composite {
                flags,
                src,
                src_transform,
                mask,
                mask_transform,
                src_origin,
                mask_origin,
            } => {
                le::put_u32(&mut u, 0, *flags);
                let p = self.image(src)?;
                le::put_u64(&mut u, 4, p);
                let t = self.transform(src_transform.as_ref())?;
                le::put_u64(&mut u, 12, t);
                if let Some(m) = mask {
                    let p = self.image(m)?;
                    le::put_u64(&mut u, 20, p);
                }
                let t = self.transform(mask_transform.as_ref())?;
                le::put_u64(&mut u, 28, t);
                put_i16(&mut u, 36, src_origin.x);
                put_i16(&mut u, 38, src_origin.y);
                put_i16(&mut u, 40, mask_origin.x);
                put_i16(&mut u, 42, mask_origin.y);
            }
        }
        Ok(u)
    }

    fn drawable(&mut self, d: &Drawable, release_id: u64) -> Result<u64> {
        let (clip_type, clip_data) = self.clip(&d.clip)?;
        if self.opts.compat {
            let u = self.payload(&d.op, true)?;
            let mut b = [0u8; COMPAT_DRAWABLE_SIZE];
            le::put_u64(&mut b, 0, release_id);
            put_u8(&mut b, 8, d.effect);
            put_u8(&mut b, 9, d.op.type_id());
            if let Some(r) = &d.self_bitmap {
                le::put_u16(&mut b, 10, 1);
                put_rect(&mut b, 12, r);
            }
            put_rect(&mut b, 28, &d.bbox);
            le::put_u32(&mut b, 44, clip_type);
            le::put_u64(&mut b, 48, clip_data);
            le::put_u32(&mut b, 56, d.mm_time);
            b[60..].copy_from_slice(&u);
            return self.raw(&b);
        }
        let u = self.payload(&d.op, false)?;
        let mut b = [0u8; DRAWABLE_SIZE];
        le::put_u64(&mut b, 0, release_id);
        le::put_u32(&mut b, 8, d.surface_id);
        put_u8(&mut b, 12, d.effect);
        put_u8(&mut b, 13, d.op.type_id());
        if let Some(r) = &d.self_bitmap {
            put_u8(&mut b, 14, 1);
            put_rect(&mut b, 15, r);
        }
        put_rect(&mut b, 31, &d.bbox);
        le::put_u32(&mut b, 47, clip_type);
        le::put_u64(&mut b, 51, clip_data);
        le::put_u32(&mut b, 59, d.mm_time);
        for i in 0..3 {
            put_i32(&mut b, 63 + 4 * i, d.surfaces_dest[i]);
            put_rect(&mut b, 75 + 16 * i, &d.surfaces_rects[i]);
        }
        b[123..].copy_from_slice(&u);
        self.raw(&b)
    }

    fn cursor_shape(&mut self, c: &Cursor) -> Result<u64> {
        let mut h = [0u8; 22];
        le::put_u64(&mut h, 0, c.unique);
        le::put_u16(&mut h, 8, c.kind as u16);
        le::put_u16(&mut h, 10, c.width);
        le::put_u16(&mut h, 12, c.height);
        le::put_u16(&mut h, 14, c.hot_spot_x);
        le::put_u16(&mut h, 16, c.hot_spot_y);
        let size = u32::try_from(c.data.len()).map_err(|_| Error::Overflow("mock cursor"))?;
        le::put_u32(&mut h, 18, size);
        self.embedded(&h, &c.data)
    }

    fn cursor_cmd(&mut self, c: &CursorCmd, release_id: u64) -> Result<u64> {
        let mut b = [0u8; CURSOR_CMD_SIZE];
        le::put_u64(&mut b, 0, release_id);
        match c {
            CursorCmd::Set {
                position,
                visible,
                shape,
            } => {
                put_u8(&mut b, 8, CURSOR_SET);
                put_i16(&mut b, 9, position.x);
                put_i16(&mut b, 11, position.y);
                put_u8(&mut b, 13, u8::from(*visible));
                let p = self.cursor_shape(shape)?;
                le::put_u64(&mut b, 14, p);
            }
            CursorCmd::Move { position } => {
                put_u8(&mut b, 8, CURSOR_MOVE);
                put_i16(&mut b, 9, position.x);
                put_i16(&mut b, 11, position.y);
            }
            CursorCmd::Hide => put_u8(&mut b, 8, CURSOR_HIDE),
            CursorCmd::Trail { length, frequency } => {
                put_u8(&mut b, 8, CURSOR_TRAIL);
                le::put_u16(&mut b, 9, *length);
                le::put_u16(&mut b, 11, *frequency);
            }
        }
        self.raw(&b)
    }

    fn surface_cmd(&mut self, s: &SurfaceCmd, release_id: u64) -> Result<u64> {
        let mut b = [0u8; SURFACE_CMD_SIZE];
        le::put_u64(&mut b, 0, release_id);
        match s {
            SurfaceCmd::Create(c) => {
                let data = alloc_surface(self.mem, self.heap, c)?;
                le::put_u32(&mut b, 8, c.surface_id);
                put_u8(&mut b, 12, SURFACE_CMD_CREATE);
                le::put_u32(&mut b, 13, c.flags);
                le::put_u32(&mut b, 17, c.format as u32);
                le::put_u32(&mut b, 21, c.width);
                le::put_u32(&mut b, 25, c.height);
                put_i32(&mut b, 29, c.stride);
                le::put_u64(&mut b, 33, data);
            }
            SurfaceCmd::Destroy { surface_id } => {
                le::put_u32(&mut b, 8, *surface_id);
                put_u8(&mut b, 12, SURFACE_CMD_DESTROY);
            }
        }
        self.raw(&b)
    }
}

/// Encode `cmd` with the default [`EncodeOptions`]. Returns the command
/// structure's `QXLPHYSICAL` and the `QXL_CMD_*` type for the ring entry.
pub fn encode_command<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    cmd: &Command,
    release_id: u64,
) -> Result<(u64, u32)> {
    encode_command_with(mem, heap, cmd, release_id, &EncodeOptions::default())
}

/// Encode `cmd` with explicit options. `release_id` goes into `release_info`.
///
/// A [`SurfaceCmd::Create`] also allocates the surface memory (`height *
/// |stride|` bytes, see [`alloc_surface`]). A [`Command::Message`] is written
/// with a terminating NUL.
pub fn encode_command_with<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    cmd: &Command,
    release_id: u64,
    opts: &EncodeOptions,
) -> Result<(u64, u32)> {
    let mut e = Enc {
        mem,
        heap,
        opts: *opts,
    };
    match cmd {
        Command::Draw(d) => Ok((e.drawable(d, release_id)?, QXL_CMD_DRAW)),
        Command::Update(u) => {
            let mut b = [0u8; UPDATE_CMD_SIZE];
            le::put_u64(&mut b, 0, release_id);
            put_rect(&mut b, 8, &u.area);
            le::put_u32(&mut b, 24, u.update_id);
            le::put_u32(&mut b, 28, u.surface_id);
            Ok((e.raw(&b)?, QXL_CMD_UPDATE))
        }
        Command::Message(text) => {
            let mut b = release_id.to_le_bytes().to_vec();
            b.extend_from_slice(text);
            b.push(0);
            Ok((e.raw(&b)?, QXL_CMD_MESSAGE))
        }
        Command::Surface(s) => Ok((e.surface_cmd(s, release_id)?, QXL_CMD_SURFACE)),
        Command::Cursor(c) => Ok((e.cursor_cmd(c, release_id)?, QXL_CMD_CURSOR)),
    }
}

/// Encode just an image (for tests of the image decoder through a drawable).
pub fn encode_image<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    image: &Image,
    opts: &EncodeOptions,
) -> Result<u64> {
    Enc {
        mem,
        heap,
        opts: *opts,
    }
    .image(image)
}

/// Allocate the memory of surface `s` (`height * |stride|` bytes, 4 KiB
/// aligned) and, when [`SurfaceCreate::initial`] is set, write those pixels
/// (given top row first; stored bottom-up for a negative stride). Returns the
/// `QXLPHYSICAL` of the lowest byte, as `QXLSurfaceCmd.data` and
/// `QXLSurfaceCreate.mem` expect.
pub fn alloc_surface<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    s: &SurfaceCreate,
) -> Result<u64> {
    let row = u64::from(s.stride.unsigned_abs());
    let size = row
        .checked_mul(u64::from(s.height))
        .ok_or(Error::Overflow("mock surface"))?;
    let (addr, phys) = heap.alloc(size, 4096)?;
    if let Some(px) = &s.initial {
        if s.stride < 0 && row > 0 {
            let r = usize::try_from(row).map_err(|_| Error::Overflow("mock surface"))?;
            let stored: Vec<u8> = px.chunks(r).rev().flatten().copied().collect();
            mem.write_bytes(addr, &stored)?;
        } else {
            mem.write_bytes(addr, px)?;
        }
    }
    Ok(phys)
}

/// Encode a `QXLSurfaceCmd` create for `s`. Returns `(command, surface memory)`
/// `QXLPHYSICAL`s.
pub fn encode_surface_create<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    s: &SurfaceCreate,
    release_id: u64,
) -> Result<(u64, u64)> {
    let data = alloc_surface(mem, heap, s)?;
    let mut b = [0u8; SURFACE_CMD_SIZE];
    le::put_u64(&mut b, 0, release_id);
    le::put_u32(&mut b, 8, s.surface_id);
    put_u8(&mut b, 12, SURFACE_CMD_CREATE);
    le::put_u32(&mut b, 13, s.flags);
    le::put_u32(&mut b, 17, s.format as u32);
    le::put_u32(&mut b, 21, s.width);
    le::put_u32(&mut b, 25, s.height);
    put_i32(&mut b, 29, s.stride);
    le::put_u64(&mut b, 33, data);
    Ok((write_raw(mem, heap, &b)?, data))
}

/// Encode a `QXLMonitorsConfig` (`count` = number of heads). Returns its `QXLPHYSICAL`.
pub fn encode_monitors_config<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    config: &MonitorsConfig,
) -> Result<u64> {
    let count = u16::try_from(config.heads.len()).map_err(|_| Error::Overflow("mock monitors"))?;
    encode_monitors_config_raw(mem, heap, count, config.max_allowed, &config.heads)
}

/// Encode a `QXLMonitorsConfig` with an arbitrary `count` (which may disagree
/// with the number of heads written).
pub fn encode_monitors_config_raw<V: GuestView + ?Sized>(
    mem: &V,
    heap: &mut GuestHeap,
    count: u16,
    max_allowed: u16,
    heads: &[spice_server::command::Head],
) -> Result<u64> {
    let mut b = vec![0u8; 4];
    le::put_u16(&mut b, 0, count);
    le::put_u16(&mut b, 2, max_allowed);
    for h in heads {
        for v in [h.id, h.surface_id, h.width, h.height, h.x, h.y, h.flags] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_raw(mem, heap, &b)
}

/// `QXLPHYSICAL` of `phys + off` (re-exported for tests building layouts by hand).
pub fn phys_plus(phys: u64, off: u64) -> Result<u64> {
    phys_add(phys, off)
}
