//! Decoding guest commands into owned [`spice_server::command`] values.
//!
//! # Primer
//!
//! A `QXLCommand` on the command or cursor ring is `{data: QXLPHYSICAL, type}`.
//! `data` points at a packed C structure whose layout depends on `type`
//! (`QXLDrawable`, `QXLUpdateCmd`, `QXLCursorCmd`, `QXLMessage`,
//! `QXLSurfaceCmd`), and those structures point at more structures (images,
//! palettes, clip lists, paths, glyph strings, cursor shapes), often split over
//! `QXLDataChunk` chains (see [`super::chunks`]).
//!
//! Everything is guest-controlled, so this module follows a few rules that the
//! QXL/SPICE CVE history (see `THREATS.md`) taught:
//!
//! - **One read per structure.** Each guest structure is copied into a host
//!   buffer with one [`GuestView::read_bytes`] of exactly its packed size and
//!   parsed from that copy only; no field is ever read twice (CVE-2015-3247,
//!   CVE-2021-4207).
//! - **Every pointer is translated with the length that is read**
//!   ([`MemSlots::translate`]), so no read crosses a memslot end
//!   (CVE-2010-0431, CVE-2022-4144).
//! - **Checked `u64` size arithmetic and caps before allocating** ([`Limits`]),
//!   for bitmaps, palettes, cursors, clip lists, paths and glyphs (the spice
//!   2015-09 series, CVE-2021-4206, spice 547f9f43).
//! - **Bounded loops**: chunk chains carry a chunk-count cap, parsers of
//!   chained data advance by at least one header per iteration.
//!
//! The behavioural reference is spice-server's `red-parse-qxl.cpp`; where this
//! decoder is stricter it says so on the item. Nothing here panics on guest data.

mod draw;
mod image;

#[cfg(test)]
mod tests;

use vm_memory::GuestAddress;

use spice_server::command::{
    Command, Cursor, CursorCmd, CursorType, Head, MonitorsConfig, Point16, Rect,
    SURFACE_FLAG_KEEP_DATA, SurfaceCmd, SurfaceCreate, SurfaceFormat, UpdateCmd,
};

use super::chunks::{ChunkHeader, ChunkStart, phys_add, read_chunks};
use super::guest::{GuestView, le};
use super::memslot::MemSlots;
use crate::error::{Error, Result};

/// `QXL_CMD_NOP`.
pub const QXL_CMD_NOP: u32 = 0;
/// `QXL_CMD_DRAW`.
pub const QXL_CMD_DRAW: u32 = 1;
/// `QXL_CMD_UPDATE`.
pub const QXL_CMD_UPDATE: u32 = 2;
/// `QXL_CMD_CURSOR`.
pub const QXL_CMD_CURSOR: u32 = 3;
/// `QXL_CMD_MESSAGE`.
pub const QXL_CMD_MESSAGE: u32 = 4;
/// `QXL_CMD_SURFACE`.
pub const QXL_CMD_SURFACE: u32 = 5;

/// `QXL_COMMAND_FLAG_COMPAT`: the command comes from a qxl-1 (compat mode) guest.
pub const QXL_COMMAND_FLAG_COMPAT: u32 = 1;
/// `QXL_COMMAND_FLAG_COMPAT_16BPP`: compat mode with a 16-bit mode; colours are x555.
pub const QXL_COMMAND_FLAG_COMPAT_16BPP: u32 = 2;

/// Size of `QXLDrawable`.
pub const DRAWABLE_SIZE: usize = 191;
/// Size of `QXLCompatDrawable`.
pub const COMPAT_DRAWABLE_SIZE: usize = 128;
/// Size of `QXLUpdateCmd`.
pub const UPDATE_CMD_SIZE: usize = 32;
/// Size of `QXLCompatUpdateCmd` (no `surface_id`).
pub const COMPAT_UPDATE_CMD_SIZE: usize = 28;
/// Size of `QXLSurfaceCmd`.
pub const SURFACE_CMD_SIZE: usize = 41;
/// Size of `QXLCursorCmd` (spice-server maps all of it, `device_data` included).
pub const CURSOR_CMD_SIZE: usize = 150;
/// Size of the `QXLCursor` header up to and including its embedded chunk header.
pub const CURSOR_SIZE: usize = 42;
/// Size of the `QXLMessage` header (`release_info`); the text follows.
pub const MESSAGE_HEADER_SIZE: usize = 8;
/// Size of the `QXLMonitorsConfig` header (`count`, `max_allowed`).
pub const MONITORS_CONFIG_HEADER_SIZE: usize = 4;
/// Size of one `QXLHead`.
pub const HEAD_SIZE: usize = 28;

/// `QXL_SURFACE_CMD_CREATE`.
pub const SURFACE_CMD_CREATE: u8 = 0;
/// `QXL_SURFACE_CMD_DESTROY`.
pub const SURFACE_CMD_DESTROY: u8 = 1;

/// `QXL_CURSOR_SET`.
pub const CURSOR_SET: u8 = 0;
/// `QXL_CURSOR_MOVE`.
pub const CURSOR_MOVE: u8 = 1;
/// `QXL_CURSOR_HIDE`.
pub const CURSOR_HIDE: u8 = 2;
/// `QXL_CURSOR_TRAIL`.
pub const CURSOR_TRAIL: u8 = 3;

/// spice-server's `MAX_DATA_CHUNK`: no guest size may exceed 2^31 − 1.
pub const MAX_DATA_CHUNK: u64 = 0x7fff_ffff;

/// Caps on what one guest command may make the host read and allocate.
///
/// Every cap is checked with checked `u64` arithmetic *before* the
/// corresponding allocation. The defaults are generous for every real driver
/// (Linux, xf86-video-qxl, qxl-dod) and far below what would hurt the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of chunks in one chain, empty chunks included
    /// (spice: `0x7fffffff / 1024`; default 65 536).
    pub max_chunks: u32,
    /// Maximum bytes one chunk chain may hold (spice: `0x7fffffff`; default 512 MiB).
    pub max_chunk_data: u64,
    /// Maximum `y * stride` of one bitmap, and the maximum QUIC stream size
    /// (default 512 MiB).
    pub max_image_bytes: u64,
    /// Maximum bitmap width and height in pixels (default 65 536).
    pub max_bitmap_dim: u32,
    /// Maximum bytes of guest data one command may make the decoder copy, summed
    /// over all its images, lists and strings (default 1 GiB).
    pub max_command_bytes: u64,
    /// Maximum cursor width and height (default 512).
    pub max_cursor_dim: u16,
    /// Maximum cursor `data_size` (default 2 MiB: a 512×512 COLOR32 cursor with
    /// its mask needs 1 081 344 bytes).
    pub max_cursor_bytes: u32,
    /// Maximum rectangles in a clip list (default 65 536).
    pub max_clip_rects: u32,
    /// Maximum segments in a path (default 65 536).
    pub max_path_segments: u32,
    /// Maximum points over all segments of a path (default 1 Mi).
    pub max_path_points: u64,
    /// Maximum glyphs in a string (default 65 535, the `u16` limit).
    pub max_glyphs: u32,
    /// Maximum text of a `QXLMessage` searched for its NUL (spice: 100 000).
    pub max_message_len: u64,
    /// Maximum heads kept from a monitors configuration (spice
    /// `MAX_MONITORS_COUNT` = 16); extra heads are dropped.
    pub max_monitors: u16,
    /// `n_surfaces` (ROM): surface ids must be below it (QEMU default 1024).
    pub n_surfaces: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chunks: 65_536,
            max_chunk_data: 512 << 20,
            max_image_bytes: 512 << 20,
            max_bitmap_dim: 65_536,
            max_command_bytes: 1 << 30,
            max_cursor_dim: 512,
            max_cursor_bytes: 2 << 20,
            max_clip_rects: 65_536,
            max_path_segments: 65_536,
            max_path_points: 1 << 20,
            max_glyphs: 65_535,
            max_message_len: 100_000,
            max_monitors: 16,
            n_surfaces: 1024,
        }
    }
}

/// Where a surface's pixels live in device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurfaceMem {
    /// Device-memory address of the surface's lowest byte (for a negative
    /// stride, that is the start of the *bottom* row).
    pub addr: GuestAddress,
    /// The guest's stride (negative = rows stored bottom-up).
    pub stride: i32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format.
    pub format: SurfaceFormat,
}

impl SurfaceMem {
    /// `height * |stride|`: the bytes the surface occupies.
    pub fn size(&self) -> u64 {
        u64::from(self.height) * u64::from(self.stride.unsigned_abs())
    }
}

/// A decoded command and what the device must remember about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The owned command.
    pub command: Command,
    /// For a `QXL_CMD_SURFACE` create: the mapped surface memory (the device
    /// writes rendered pixels there on `UPDATE_AREA`).
    pub surface_mem: Option<SurfaceMem>,
}

/// Per-command decoding state: the memory, the memslots, the command flags,
/// the limits, and the remaining copy budget ([`Limits::max_command_bytes`]).
pub(crate) struct Ctx<'a, V: GuestView + ?Sized> {
    pub(crate) mem: &'a V,
    pub(crate) slots: &'a MemSlots,
    pub(crate) flags: u32,
    pub(crate) limits: &'a Limits,
    budget: u64,
}

impl<'a, V: GuestView + ?Sized> Ctx<'a, V> {
    pub(crate) fn new(mem: &'a V, slots: &'a MemSlots, flags: u32, limits: &'a Limits) -> Self {
        Self {
            mem,
            slots,
            flags,
            limits,
            budget: limits.max_command_bytes,
        }
    }

    /// Take `n` bytes from the command's copy budget (before allocating them).
    pub(crate) fn charge(&mut self, what: &'static str, n: u64) -> Result<()> {
        self.budget = self.budget.checked_sub(n).ok_or(Error::TooLarge {
            what,
            size: n,
            cap: self.limits.max_command_bytes,
        })?;
        Ok(())
    }

    /// True in compat mode with 16-bit colours.
    pub(crate) fn compat_16bpp(&self) -> bool {
        self.flags & QXL_COMMAND_FLAG_COMPAT_16BPP != 0
    }

    /// Copy exactly `N` bytes at `phys` (one translated read).
    pub(crate) fn read_array<const N: usize>(&mut self, phys: u64) -> Result<[u8; N]> {
        let len = u64::try_from(N).map_err(|_| Error::Overflow("struct size"))?;
        let addr = self.slots.translate(phys, len)?;
        let mut b = [0u8; N];
        self.mem.read_bytes(addr, &mut b)?;
        Ok(b)
    }

    /// Copy `len` bytes at `phys` into a new buffer (one translated read),
    /// charging them to the budget first.
    pub(crate) fn read_vec(&mut self, what: &'static str, phys: u64, len: u64) -> Result<Vec<u8>> {
        let addr = self.slots.translate(phys, len)?;
        self.charge(what, len)?;
        let n = usize::try_from(len).map_err(|_| Error::Overflow(what))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| Error::TooLarge {
            what,
            size: len,
            cap: self.limits.max_command_bytes,
        })?;
        v.resize(n, 0);
        self.mem.read_bytes(addr, &mut v)?;
        Ok(v)
    }

    /// Read a chunk chain that must hold exactly `len` bytes, charging them first.
    pub(crate) fn read_chain(
        &mut self,
        what: &'static str,
        first: ChunkStart,
        len: u64,
    ) -> Result<Vec<u8>> {
        self.charge(what, len)?;
        read_chunks(self.mem, self.slots, first, Some(len), self.limits)
    }

    /// Fail unless `id < n_surfaces`.
    pub(crate) fn check_surface_id(&self, id: u32) -> Result<()> {
        if id < self.limits.n_surfaces {
            Ok(())
        } else {
            Err(Error::SurfaceIdOutOfRange {
                id,
                max: self.limits.n_surfaces,
            })
        }
    }
}

/// Convert an x555 colour to x888 (`QXL_COMMAND_FLAG_COMPAT_16BPP`): each
/// 5-bit channel is widened by replicating its top bits.
pub const fn color_16_to_32(c: u32) -> u32 {
    const fn widen(v: u32) -> u32 {
        (v << 3) | (v >> 2)
    }
    let b = c & 0x1f;
    let g = (c >> 5) & 0x1f;
    let r = (c >> 10) & 0x1f;
    (widen(r) << 16) | (widen(g) << 8) | widen(b)
}

/// A `QXLRect` (top, left, bottom, right; `i32` each) at `off` of a host copy.
pub(crate) fn rect_at(b: &[u8], off: usize) -> Rect {
    Rect {
        top: le::i32_at(b, off),
        left: le::i32_at(b, off + 4),
        bottom: le::i32_at(b, off + 8),
        right: le::i32_at(b, off + 12),
    }
}

/// A `QXLPoint16` at `off` of a host copy.
pub(crate) fn point16_at(b: &[u8], off: usize) -> Point16 {
    Point16 {
        x: le::i16_at(b, off),
        y: le::i16_at(b, off + 2),
    }
}

/// Decode the command of type `cmd_type` whose structure is at `phys`.
///
/// `flags` are the `QXLCommandExt` flags ([`QXL_COMMAND_FLAG_COMPAT`],
/// [`QXL_COMMAND_FLAG_COMPAT_16BPP`]). The command structure is copied once;
/// every structure it references is copied once. `QXL_CMD_NOP` (and any
/// unknown type) is an error: there is nothing to hand on.
pub fn decode_command<V: GuestView + ?Sized>(
    mem: &V,
    slots: &MemSlots,
    cmd_type: u32,
    phys: u64,
    flags: u32,
    limits: &Limits,
) -> Result<Decoded> {
    let mut ctx = Ctx::new(mem, slots, flags, limits);
    let plain = |command| Decoded {
        command,
        surface_mem: None,
    };
    match cmd_type {
        QXL_CMD_DRAW => draw::decode_drawable(&mut ctx, phys).map(|d| plain(Command::Draw(d))),
        QXL_CMD_UPDATE => decode_update(&mut ctx, phys).map(|u| plain(Command::Update(u))),
        QXL_CMD_CURSOR => decode_cursor_cmd(&mut ctx, phys).map(|c| plain(Command::Cursor(c))),
        QXL_CMD_MESSAGE => decode_message(&mut ctx, phys).map(|m| plain(Command::Message(m))),
        QXL_CMD_SURFACE => decode_surface_cmd(&mut ctx, phys),
        other => Err(Error::InvalidValue {
            field: "QXLCommand.type",
            value: u64::from(other),
        }),
    }
}

/// `QXLUpdateCmd` (or `QXLCompatUpdateCmd` in compat mode, whose target is surface 0).
fn decode_update<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<UpdateCmd> {
    let compat = ctx.flags & QXL_COMMAND_FLAG_COMPAT != 0;
    let b: [u8; UPDATE_CMD_SIZE] = if compat {
        let mut b = [0u8; UPDATE_CMD_SIZE];
        let c: [u8; COMPAT_UPDATE_CMD_SIZE] = ctx.read_array(phys)?;
        if let Some(dst) = b.get_mut(..COMPAT_UPDATE_CMD_SIZE) {
            dst.copy_from_slice(&c);
        }
        b
    } else {
        ctx.read_array(phys)?
    };
    let surface_id = le::u32_at(&b, 28);
    ctx.check_surface_id(surface_id)?;
    Ok(UpdateCmd {
        area: rect_at(&b, 8),
        update_id: le::u32_at(&b, 24),
        surface_id,
    })
}

/// `QXLMessage`: the text up to its NUL, searched within
/// [`Limits::max_message_len`] bytes and the memslot end, in one read.
fn decode_message<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Vec<u8>> {
    ctx.slots.translate(phys, 8)?;
    let text = phys_add(phys, 8)?;
    let len = ctx.slots.remaining(text)?.min(ctx.limits.max_message_len);
    // One read covering the header and the whole search window.
    let total = len.checked_add(8).ok_or(Error::Overflow("message"))?;
    let buf = ctx.read_vec("message", phys, total)?;
    let body = buf.get(MESSAGE_HEADER_SIZE..).unwrap_or_default();
    let nul = body
        .iter()
        .position(|&c| c == 0)
        .ok_or(Error::Unterminated(len))?;
    Ok(body.get(..nul).unwrap_or_default().to_vec())
}

/// Bits per pixel of a `SpiceSurfaceFmt`, or the error for an unknown format.
fn surface_format(format: u32) -> Result<SurfaceFormat> {
    SurfaceFormat::from_u32(format).ok_or(Error::InvalidValue {
        field: "surface format",
        value: u64::from(format),
    })
}

/// Validate surface parameters and map the surface memory at `phys`.
///
/// The rules are spice-server's `red_validate_surface` plus QEMU's: the format
/// is one of the six `SpiceSurfaceFmt` values, `stride != i32::MIN`,
/// `stride % 4 == 0`, `|stride| >= ceil(width * bpp / 8)`,
/// `height * |stride| <= 0x7fffffff`, and all `height * |stride|` bytes from
/// `phys` (the lowest address, whatever the stride sign) translate through one
/// memslot. Zero width or height is accepted, as spice-server does.
///
/// `mem` and `limits` are not consulted today (the checks above need neither);
/// they are part of the signature so that callers need not change if a cap on
/// surface sizes or a probe of the memory is added.
#[allow(clippy::too_many_arguments)]
pub fn map_surface<V: GuestView + ?Sized>(
    mem: &V,
    slots: &MemSlots,
    phys: u64,
    width: u32,
    height: u32,
    stride: i32,
    format: u32,
    limits: &Limits,
) -> Result<SurfaceMem> {
    let _ = (mem, limits);
    let format = surface_format(format)?;
    if stride == i32::MIN {
        return Err(Error::InvalidSurface("stride is i32::MIN"));
    }
    if stride % 4 != 0 {
        return Err(Error::InvalidSurface("stride is not a multiple of 4"));
    }
    let abs = u64::from(stride.unsigned_abs());
    let row = (u64::from(width) * u64::from(format.bpp())).div_ceil(8);
    if abs < row {
        return Err(Error::InvalidSurface("stride smaller than a row"));
    }
    let size = u64::from(height) * abs;
    if size > MAX_DATA_CHUNK {
        return Err(Error::InvalidSurface("height * stride above 2^31 - 1"));
    }
    let addr = slots.translate(phys, size)?;
    Ok(SurfaceMem {
        addr,
        stride,
        width,
        height,
        format,
    })
}

/// Copy a mapped surface's pixels: `height` rows of `|stride|` bytes, **top
/// row first** whatever the stride sign (one read of the whole area, then the
/// rows are reordered on the host for a negative stride).
pub fn read_surface_pixels<V: GuestView + ?Sized>(mem: &V, s: &SurfaceMem) -> Result<Vec<u8>> {
    let size = usize::try_from(s.size()).map_err(|_| Error::Overflow("surface size"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(size).map_err(|_| Error::TooLarge {
        what: "surface pixels",
        size: s.size(),
        cap: MAX_DATA_CHUNK,
    })?;
    v.resize(size, 0);
    mem.read_bytes(s.addr, &mut v)?;
    if s.stride < 0 {
        let row =
            usize::try_from(s.stride.unsigned_abs()).map_err(|_| Error::Overflow("stride"))?;
        let rows = usize::try_from(s.height).map_err(|_| Error::Overflow("height"))?;
        if row > 0 {
            // Stored bottom row first: reverse the order of the rows in place
            // (no second surface-sized buffer).
            for i in 0..rows / 2 {
                let j = rows - 1 - i;
                let (head, tail) = v.split_at_mut(j * row);
                if let (Some(a), Some(b)) =
                    (head.get_mut(i * row..(i + 1) * row), tail.get_mut(..row))
                {
                    a.swap_with_slice(b);
                }
            }
        }
    }
    Ok(v)
}

/// `QXLSurfaceCmd`: create (mapped and validated; with `KEEP_DATA` the current
/// pixels are copied into [`SurfaceCreate::initial`]) or destroy.
fn decode_surface_cmd<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Decoded> {
    let b: [u8; SURFACE_CMD_SIZE] = ctx.read_array(phys)?;
    let surface_id = le::u32_at(&b, 8);
    ctx.check_surface_id(surface_id)?;
    let kind = le::u8_at(&b, 12);
    let flags = le::u32_at(&b, 13);
    match kind {
        SURFACE_CMD_CREATE => {
            let format = le::u32_at(&b, 17);
            let width = le::u32_at(&b, 21);
            let height = le::u32_at(&b, 25);
            let stride = le::i32_at(&b, 29);
            let data = le::u64_at(&b, 33);
            let sm = map_surface(
                ctx.mem, ctx.slots, data, width, height, stride, format, ctx.limits,
            )?;
            let initial = if flags & SURFACE_FLAG_KEEP_DATA != 0 {
                ctx.charge("surface pixels", sm.size())?;
                Some(read_surface_pixels(ctx.mem, &sm)?)
            } else {
                None
            };
            Ok(Decoded {
                command: Command::Surface(SurfaceCmd::Create(SurfaceCreate {
                    surface_id,
                    format: sm.format,
                    width,
                    height,
                    stride,
                    flags,
                    position: 0,
                    initial,
                })),
                surface_mem: Some(sm),
            })
        }
        SURFACE_CMD_DESTROY => Ok(Decoded {
            command: Command::Surface(SurfaceCmd::Destroy { surface_id }),
            surface_mem: None,
        }),
        other => Err(Error::InvalidValue {
            field: "QXLSurfaceCmd.type",
            value: u64::from(other),
        }),
    }
}

/// Bytes of cursor data a shape of this type and size needs.
///
/// spice-server passes cursor data through unchecked; these sizes are the ones
/// SPICE clients use to interpret it (spice-gtk `set_cursor`, PureSpice
/// `cursorBufferSize`): with `mask = ceil(w/8) * h`,
/// ALPHA `w*h*4`; MONO `2 * mask`; COLOR4 `ceil(w/2)*h + 16*4 + mask`;
/// COLOR8 `w*h + 256*4 + mask`; COLOR16 `w*h*2 + mask`; COLOR24 `w*h*3 + mask`;
/// COLOR32 `w*h*4 + mask`. Computed in `u64`, so it cannot overflow for `u16`
/// dimensions (CVE-2021-4206).
pub fn cursor_data_size(kind: CursorType, width: u16, height: u16) -> u64 {
    let w = u64::from(width);
    let h = u64::from(height);
    let mask = w.div_ceil(8) * h;
    match kind {
        CursorType::Alpha => w * h * 4,
        CursorType::Mono => 2 * mask,
        CursorType::Color4 => w.div_ceil(2) * h + 16 * 4 + mask,
        CursorType::Color8 => w * h + 256 * 4 + mask,
        CursorType::Color16 => w * h * 2 + mask,
        CursorType::Color24 => w * h * 3 + mask,
        CursorType::Color32 => w * h * 4 + mask,
    }
}

/// `QXLCursorCmd` (150 bytes, one read) and, for SET, its `QXLCursor`.
fn decode_cursor_cmd<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<CursorCmd> {
    let b: [u8; CURSOR_CMD_SIZE] = ctx.read_array(phys)?;
    match le::u8_at(&b, 8) {
        CURSOR_SET => Ok(CursorCmd::Set {
            position: point16_at(&b, 9),
            visible: le::u8_at(&b, 13) != 0,
            shape: decode_cursor(ctx, le::u64_at(&b, 14))?,
        }),
        CURSOR_MOVE => Ok(CursorCmd::Move {
            position: point16_at(&b, 9),
        }),
        CURSOR_HIDE => Ok(CursorCmd::Hide),
        CURSOR_TRAIL => Ok(CursorCmd::Trail {
            length: le::u16_at(&b, 9),
            frequency: le::u16_at(&b, 11),
        }),
        other => Err(Error::InvalidValue {
            field: "QXLCursorCmd.type",
            value: u64::from(other),
        }),
    }
}

/// A `QXLCursor`: header, `data_size` and the embedded first chunk header in
/// one 42-byte read; the chain must hold exactly `data_size` bytes.
///
/// Stricter than spice-server (which forwards whatever it finds): the type must
/// be known, width and height at most [`Limits::max_cursor_dim`], `data_size`
/// at most [`Limits::max_cursor_bytes`] and at least [`cursor_data_size`]; the
/// shape keeps exactly the needed bytes (extra trailing bytes are dropped).
fn decode_cursor<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Cursor> {
    if phys == 0 {
        return Err(Error::NullPointer("QXLCursorCmd.shape"));
    }
    let b: [u8; CURSOR_SIZE] = ctx.read_array(phys)?;
    let raw_kind = le::u16_at(&b, 8);
    let kind = CursorType::from_u16(raw_kind).ok_or(Error::InvalidValue {
        field: "QXLCursor.type",
        value: u64::from(raw_kind),
    })?;
    let width = le::u16_at(&b, 10);
    let height = le::u16_at(&b, 12);
    let max = ctx.limits.max_cursor_dim;
    if width > max || height > max {
        return Err(Error::TooLarge {
            what: "cursor dimension",
            size: u64::from(width.max(height)),
            cap: u64::from(max),
        });
    }
    let data_size = le::u32_at(&b, 18);
    if data_size > ctx.limits.max_cursor_bytes {
        return Err(Error::TooLarge {
            what: "cursor data",
            size: u64::from(data_size),
            cap: u64::from(ctx.limits.max_cursor_bytes),
        });
    }
    let needed = cursor_data_size(kind, width, height);
    if u64::from(data_size) < needed {
        return Err(Error::ChunkSizeMismatch {
            got: u64::from(data_size),
            expected: needed,
        });
    }
    let first = ChunkStart::Embedded {
        header: ChunkHeader::parse(b.get(22..).unwrap_or_default()),
        data: phys_add(phys, 42)?,
    };
    let mut data = ctx.read_chain("cursor data", first, u64::from(data_size))?;
    data.truncate(usize::try_from(needed).map_err(|_| Error::Overflow("cursor"))?);
    Ok(Cursor {
        unique: le::u64_at(&b, 0),
        kind,
        width,
        height,
        hot_spot_x: le::u16_at(&b, 14),
        hot_spot_y: le::u16_at(&b, 16),
        data,
    })
}

/// Decode the `QXLMonitorsConfig` at `phys` (from `QXLRam.monitors_config`).
///
/// `count` and `max_allowed` are read once (one 4-byte read); `count == 0`, or
/// `count > max_allowed` when `max_allowed != 0`, is an error (spice-server
/// ignores such a config). At most [`Limits::max_monitors`] heads are read
/// (one read of `min(count, max) * 28` bytes); the rest are dropped, as
/// spice-server clamps to its maximum.
pub fn decode_monitors_config<V: GuestView + ?Sized>(
    mem: &V,
    slots: &MemSlots,
    phys: u64,
    limits: &Limits,
) -> Result<MonitorsConfig> {
    let mut ctx = Ctx::new(mem, slots, 0, limits);
    let h: [u8; MONITORS_CONFIG_HEADER_SIZE] = ctx.read_array(phys)?;
    let count = le::u16_at(&h, 0);
    let max_allowed = le::u16_at(&h, 2);
    if count == 0 {
        return Err(Error::InvalidValue {
            field: "QXLMonitorsConfig.count",
            value: 0,
        });
    }
    if max_allowed != 0 && count > max_allowed {
        return Err(Error::InvalidValue {
            field: "QXLMonitorsConfig.count",
            value: u64::from(count),
        });
    }
    let n = count.min(limits.max_monitors);
    let len = u64::from(n) * 28;
    let heads_phys = phys_add(phys, 4)?;
    let buf = ctx.read_vec("monitors config", heads_phys, len)?;
    let heads = buf
        .chunks_exact(HEAD_SIZE)
        .map(|c| Head {
            id: le::u32_at(c, 0),
            surface_id: le::u32_at(c, 4),
            width: le::u32_at(c, 8),
            height: le::u32_at(c, 12),
            x: le::u32_at(c, 16),
            y: le::u32_at(c, 20),
            flags: le::u32_at(c, 24),
        })
        .collect();
    Ok(MonitorsConfig { max_allowed, heads })
}
