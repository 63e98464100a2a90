//! Native SPICE draw messages: every [`DrawOp`] marshalled as its
//! `SPICE_MSG_DISPLAY_DRAW_*` message (spice-wire.md §7, §8).
//!
//! # Primer
//!
//! A draw message body starts with a `DisplayBase` (surface id, bounding box,
//! clip) and continues with the operation's fixed fields. Everything the
//! operation points to (images, palettes, masks, paths, glyph strings, line
//! styles) is appended after the fixed part and referenced by `u32` offsets
//! from the start of the body; spice-gtk's generated demarshaller checks each
//! offset against the message size, so every pointer here is filled with the
//! position the pointee was actually written at.
//!
//! Whether a draw may go out natively depends on the client: [`NativeCaps`]
//! describes what the client can render. A client with the full spice-common
//! canvas (spice-gtk; recognised by `SPICE_DISPLAY_CAP_COMPOSITE`) gets every
//! draw type; a limited client (spice-html5) only gets solid fills, plain
//! unscaled `DRAW_COPY`s of 32-bit bitmaps and surfaces, and `COPY_BITS`, all
//! without clip or mask. [`check_native`] is the pure decision, and
//! [`marshal_draw`] never fails for a drawable [`check_native`] accepted
//! (short of a body larger than 4 GiB).

use crate::Error;
use crate::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, COMPOSITE_HAS_MASK, COMPOSITE_HAS_MASK_TRANSFORM,
    COMPOSITE_HAS_SRC_TRANSFORM, Clip, CopyOp, DrawOp, Drawable, GlyphString, Image, ImageData,
    LINE_STYLED, LineAttr, Mask, Path, Ropd,
};
use crate::server::ImageCompression;
use crate::wire::Writer;

use super::images::{
    BITMAP_FLAGS_TOP_DOWN, ClientDecoders, ClientImages, ImageCounters, Policy, Use, put_palette,
};

/// `SPICE_MSG_DISPLAY_COPY_BITS`.
pub const COPY_BITS: u16 = 104;
/// `SPICE_MSG_DISPLAY_DRAW_FILL`.
pub const DRAW_FILL: u16 = 302;
/// `SPICE_MSG_DISPLAY_DRAW_OPAQUE`.
pub const DRAW_OPAQUE: u16 = 303;
/// `SPICE_MSG_DISPLAY_DRAW_COPY`.
pub const DRAW_COPY: u16 = 304;
/// `SPICE_MSG_DISPLAY_DRAW_BLEND`.
pub const DRAW_BLEND: u16 = 305;
/// `SPICE_MSG_DISPLAY_DRAW_BLACKNESS`.
pub const DRAW_BLACKNESS: u16 = 306;
/// `SPICE_MSG_DISPLAY_DRAW_WHITENESS`.
pub const DRAW_WHITENESS: u16 = 307;
/// `SPICE_MSG_DISPLAY_DRAW_INVERS`.
pub const DRAW_INVERS: u16 = 308;
/// `SPICE_MSG_DISPLAY_DRAW_ROP3`.
pub const DRAW_ROP3: u16 = 309;
/// `SPICE_MSG_DISPLAY_DRAW_STROKE`.
pub const DRAW_STROKE: u16 = 310;
/// `SPICE_MSG_DISPLAY_DRAW_TEXT`.
pub const DRAW_TEXT: u16 = 311;
/// `SPICE_MSG_DISPLAY_DRAW_TRANSPARENT`.
pub const DRAW_TRANSPARENT: u16 = 312;
/// `SPICE_MSG_DISPLAY_DRAW_ALPHA_BLEND`.
pub const DRAW_ALPHA_BLEND: u16 = 313;
/// `SPICE_MSG_DISPLAY_DRAW_COMPOSITE`.
pub const DRAW_COMPOSITE: u16 = 318;

/// `SPICE_IMAGE_TYPE_BITMAP`.
pub const IMAGE_TYPE_BITMAP: u8 = 0;
/// `SPICE_IMAGE_TYPE_QUIC`.
pub const IMAGE_TYPE_QUIC: u8 = 1;
/// `SPICE_IMAGE_TYPE_SURFACE`.
pub const IMAGE_TYPE_SURFACE: u8 = 104;
/// `SPICE_IMAGE_TYPE_LZ4`.
pub const IMAGE_TYPE_LZ4: u8 = 109;
/// Bitmaps smaller than this are never compressed.
pub const MIN_COMPRESS_BYTES: usize = 256;
/// Most glyphs one DRAW_TEXT may carry (`length` is a u16 on the wire).
const MAX_GLYPHS: usize = u16::MAX as usize;

/// What a display client can render natively.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NativeCaps {
    /// The client runs spice-common's full canvas (every draw type, clips,
    /// masks, every bitmap format). Recognised by `SPICE_DISPLAY_CAP_COMPOSITE`.
    pub full_canvas: bool,
    /// `SPICE_DISPLAY_CAP_COMPOSITE`: DRAW_COMPOSITE may be sent.
    pub composite: bool,
    /// `SPICE_DISPLAY_CAP_A8_SURFACE`: A8 surfaces may be created on the client.
    pub a8_surface: bool,
    /// `SPICE_DISPLAY_CAP_MONITORS_CONFIG`: the guest's monitors configuration
    /// is forwarded as `SPICE_MSG_DISPLAY_MONITORS_CONFIG`.
    pub monitors_config: bool,
    /// LZ4 images may be sent (client cap, server config, client preference).
    pub lz4: bool,
}

/// The message type a draw operation travels as (`None` for NOP).
pub const fn draw_msg_type(op: &DrawOp) -> Option<u16> {
    Some(match op {
        DrawOp::Nop => return None,
        DrawOp::Fill { .. } => DRAW_FILL,
        DrawOp::Opaque { .. } => DRAW_OPAQUE,
        DrawOp::Copy(_) => DRAW_COPY,
        DrawOp::Blend(_) => DRAW_BLEND,
        DrawOp::CopyBits { .. } => COPY_BITS,
        DrawOp::Blackness { .. } => DRAW_BLACKNESS,
        DrawOp::Whiteness { .. } => DRAW_WHITENESS,
        DrawOp::Invers { .. } => DRAW_INVERS,
        DrawOp::Rop3 { .. } => DRAW_ROP3,
        DrawOp::Stroke { .. } => DRAW_STROKE,
        DrawOp::Text { .. } => DRAW_TEXT,
        DrawOp::Transparent { .. } => DRAW_TRANSPARENT,
        DrawOp::AlphaBlend { .. } => DRAW_ALPHA_BLEND,
        DrawOp::Composite { .. } => DRAW_COMPOSITE,
    })
}

/// Every surface a drawable reads through SURFACE images (besides its target).
pub fn source_surfaces(op: &DrawOp) -> Vec<u32> {
    let mut v = Vec::new();
    let mut img = |i: &Image| {
        if let ImageData::Surface(id) = i.data {
            v.push(id);
        }
    };
    let brush = |b: &Brush, img: &mut dyn FnMut(&Image)| {
        if let Brush::Pattern { image, .. } = b {
            img(image);
        }
    };
    match op {
        DrawOp::Nop
        | DrawOp::CopyBits { .. }
        | DrawOp::Blackness { .. }
        | DrawOp::Whiteness { .. }
        | DrawOp::Invers { .. } => {}
        DrawOp::Fill { brush: b, .. } | DrawOp::Stroke { brush: b, .. } => brush(b, &mut img),
        DrawOp::Opaque { src, brush: b, .. } | DrawOp::Rop3 { src, brush: b, .. } => {
            img(src);
            brush(b, &mut img);
        }
        DrawOp::Copy(c) | DrawOp::Blend(c) => img(&c.src),
        DrawOp::Text {
            fore_brush,
            back_brush,
            ..
        } => {
            brush(fore_brush, &mut img);
            brush(back_brush, &mut img);
        }
        DrawOp::Transparent { src, .. } | DrawOp::AlphaBlend { src, .. } => img(src),
        DrawOp::Composite { src, mask, .. } => {
            img(src);
            if let Some(m) = mask {
                img(m);
            }
        }
    }
    v
}

/// Rough number of bytes a drawable holds (what queuing it costs).
pub fn approx_size(d: &Drawable) -> usize {
    fn image(i: &Image) -> usize {
        64 + match &i.data {
            ImageData::Bitmap(b) => {
                b.data.len() + b.palette.as_ref().map_or(0, |p| p.entries.len() * 4)
            }
            ImageData::Quic(q) => q.len(),
            ImageData::Surface(_) => 0,
        }
    }
    fn brush(b: &Brush) -> usize {
        match b {
            Brush::Pattern { image: i, .. } => image(i),
            _ => 0,
        }
    }
    fn mask(m: Option<&Mask>) -> usize {
        m.map_or(0, |m| image(&m.bitmap))
    }
    let clip = match &d.clip {
        Clip::None => 0,
        Clip::Rects(r) => r.len() * 16,
    };
    128 + clip
        + match &d.op {
            DrawOp::Nop | DrawOp::CopyBits { .. } => 0,
            DrawOp::Fill {
                brush: b, mask: m, ..
            } => brush(b) + mask(m.as_ref()),
            DrawOp::Blackness { mask: m }
            | DrawOp::Whiteness { mask: m }
            | DrawOp::Invers { mask: m } => mask(m.as_ref()),
            DrawOp::Opaque {
                src,
                brush: b,
                mask: m,
                ..
            }
            | DrawOp::Rop3 {
                src,
                brush: b,
                mask: m,
                ..
            } => image(src) + brush(b) + mask(m.as_ref()),
            DrawOp::Copy(c) | DrawOp::Blend(c) => image(&c.src) + mask(c.mask.as_ref()),
            DrawOp::Stroke { path, brush: b, .. } => {
                brush(b)
                    + path
                        .segments
                        .iter()
                        .map(|s| 8 + s.points.len() * 8)
                        .sum::<usize>()
            }
            DrawOp::Text {
                string,
                fore_brush,
                back_brush,
                ..
            } => {
                brush(fore_brush)
                    + brush(back_brush)
                    + string
                        .glyphs
                        .iter()
                        .map(|g| 20 + g.data.len())
                        .sum::<usize>()
            }
            DrawOp::Transparent { src, .. } | DrawOp::AlphaBlend { src, .. } => image(src),
            DrawOp::Composite { src, mask: m, .. } => image(src) + m.as_deref().map_or(0, image),
        }
}

/// Why a drawable cannot be sent natively.
pub type Refusal = &'static str;

fn check_image(
    img: &Image,
    caps: &NativeCaps,
    has_surface: &dyn Fn(u32) -> bool,
) -> Result<(), Refusal> {
    match &img.data {
        ImageData::Bitmap(b) => {
            if b.width != img.width || b.height != img.height || b.width == 0 || b.height == 0 {
                return Err("bitmap size differs from its descriptor");
            }
            let row = u64::from(b.width) * u64::from(b.format.bpp());
            let need = u64::from(b.stride) * u64::from(b.height);
            if u64::from(b.stride) < row.div_ceil(8) || (b.data.len() as u64) < need {
                return Err("bitmap shorter than its stride");
            }
            if b.format.has_palette() && b.palette.is_none() {
                return Err("palette bitmap without a palette");
            }
            if let Some(p) = &b.palette
                && p.entries.len() > usize::from(u16::MAX)
            {
                return Err("palette too large");
            }
            if b.format == BitmapFormat::A8 {
                return Err("8BIT_A images are not decoded by spice-common");
            }
            if !caps.full_canvas && !matches!(b.format, BitmapFormat::Rgb32 | BitmapFormat::Rgba) {
                return Err("bitmap format the client cannot decode");
            }
            Ok(())
        }
        ImageData::Quic(_) if caps.full_canvas => Ok(()),
        ImageData::Quic(_) => Err("QUIC for a limited client"),
        ImageData::Surface(id) if has_surface(*id) => Ok(()),
        ImageData::Surface(_) => Err("source surface not on the client"),
    }
}

fn check_brush(
    b: &Brush,
    caps: &NativeCaps,
    has_surface: &dyn Fn(u32) -> bool,
) -> Result<(), Refusal> {
    match b {
        Brush::None | Brush::Solid(_) => Ok(()),
        Brush::Pattern { image, .. } => check_image(image, caps, has_surface),
    }
}

fn check_mask(m: Option<&Mask>) -> Result<(), Refusal> {
    let Some(m) = m else { return Ok(()) };
    let ImageData::Bitmap(b) = &m.bitmap.data else {
        return Err("mask is not a bitmap");
    };
    if !matches!(b.format, BitmapFormat::OneBitLe | BitmapFormat::OneBitBe) {
        return Err("mask is not 1 bpp");
    }
    if b.width != m.bitmap.width || b.height != m.bitmap.height || b.width == 0 || b.height == 0 {
        return Err("mask size differs from its descriptor");
    }
    let need = u64::from(b.stride) * u64::from(b.height);
    if u64::from(b.stride) < u64::from(b.width).div_ceil(8) || (b.data.len() as u64) < need {
        return Err("mask shorter than its stride");
    }
    Ok(())
}

fn check_path(p: &Path) -> Result<(), Refusal> {
    if p.segments.iter().any(|s| u8::try_from(s.flags).is_err()) {
        return Err("path flags beyond 8 bits");
    }
    Ok(())
}

fn check_attr(a: &LineAttr) -> Result<(), Refusal> {
    if a.flags & LINE_STYLED != 0 && (a.style.is_empty() || a.style.len() > 255) {
        return Err("line style length");
    }
    Ok(())
}

fn check_string(s: &GlyphString) -> Result<(), Refusal> {
    let bpp = s.bpp().ok_or("glyph string flags")?;
    if u8::try_from(s.flags).is_err() || s.glyphs.len() > MAX_GLYPHS {
        return Err("glyph string flags or length");
    }
    for g in &s.glyphs {
        let row = (u64::from(g.width) * u64::from(bpp)).div_ceil(8);
        if g.data.len() as u64 != row * u64::from(g.height) {
            return Err("glyph data size");
        }
    }
    Ok(())
}

/// True for a plain copy a limited client renders exactly: no clip, mask,
/// scaling or ROP other than PUT.
fn limited_copy_ok(d: &Drawable, c: &CopyOp) -> bool {
    matches!(d.clip, Clip::None)
        && c.mask.is_none()
        && c.rop.0 == Ropd::OP_PUT
        && c.src_area.width() == d.bbox.width()
        && c.src_area.height() == d.bbox.height()
}

/// Decides whether `d` may be sent natively to a client with `caps` whose
/// surfaces are those for which `has_surface` is true (its target included).
pub fn check_native(
    d: &Drawable,
    caps: &NativeCaps,
    has_surface: &dyn Fn(u32) -> bool,
) -> Result<(), Refusal> {
    if !has_surface(d.surface_id) {
        return Err("target surface not on the client");
    }
    if !d.bbox.is_well_formed() {
        return Err("malformed bounding box");
    }
    if let Clip::Rects(r) = &d.clip
        && u32::try_from(r.len()).is_err()
    {
        return Err("too many clip rectangles");
    }
    if !caps.full_canvas {
        return match &d.op {
            DrawOp::Fill {
                brush: Brush::Solid(_),
                rop,
                mask: None,
            } if rop.0 == Ropd::OP_PUT && matches!(d.clip, Clip::None) => Ok(()),
            DrawOp::Copy(c) if limited_copy_ok(d, c) => check_image(&c.src, caps, has_surface),
            DrawOp::CopyBits { .. } if matches!(d.clip, Clip::None) => Ok(()),
            _ => Err("draw the limited client cannot render"),
        };
    }
    match &d.op {
        DrawOp::Nop => Err("NOP"),
        DrawOp::Fill { brush, mask, .. } => {
            check_brush(brush, caps, has_surface)?;
            check_mask(mask.as_ref())
        }
        DrawOp::Rop3 { rop3, .. } if !rop3_is_ternary(*rop3) => {
            Err("ROP3 code spice-common does not implement (it aborts the client)")
        }
        DrawOp::Opaque {
            src, brush, mask, ..
        }
        | DrawOp::Rop3 {
            src, brush, mask, ..
        } => {
            check_image(src, caps, has_surface)?;
            check_brush(brush, caps, has_surface)?;
            check_mask(mask.as_ref())
        }
        DrawOp::Copy(c) | DrawOp::Blend(c) => {
            check_image(&c.src, caps, has_surface)?;
            check_mask(c.mask.as_ref())
        }
        DrawOp::CopyBits { .. } => Ok(()),
        DrawOp::Blackness { mask } | DrawOp::Whiteness { mask } | DrawOp::Invers { mask } => {
            check_mask(mask.as_ref())
        }
        DrawOp::Stroke {
            path, attr, brush, ..
        } => {
            check_path(path)?;
            check_attr(attr)?;
            check_brush(brush, caps, has_surface)
        }
        DrawOp::Text {
            string,
            fore_brush,
            back_brush,
            ..
        } => {
            check_string(string)?;
            if string.bpp() == Some(8) {
                // spice-common renders A8 glyphs through a path it marks
                // untested, reading one row past each glyph: its output depends
                // on memory we do not control, so send the result instead.
                return Err("A8 glyphs (spice-common reads past each glyph)");
            }
            check_brush(fore_brush, caps, has_surface)?;
            check_brush(back_brush, caps, has_surface)
        }
        DrawOp::Transparent { src, .. } => check_image(src, caps, has_surface),
        DrawOp::AlphaBlend {
            alpha_flags, src, ..
        } => {
            if u8::try_from(*alpha_flags).is_err() {
                return Err("alpha flags beyond 8 bits");
            }
            check_image(src, caps, has_surface)
        }
        DrawOp::Composite { src, mask, .. } => {
            if !caps.composite {
                return Err("client lacks SPICE_DISPLAY_CAP_COMPOSITE");
            }
            check_image(src, caps, has_surface)?;
            match mask {
                Some(m) => check_image(m, caps, has_surface),
                None => Ok(()),
            }
        }
    }
}

/// True when a ROP3 code depends on pattern, source *and* destination:
/// spice-common's `rop3.c` implements exactly those and aborts the client
/// (`spice_critical("not implemented")`) on the 2-operand and constant codes.
pub const fn rop3_is_ternary(code: u8) -> bool {
    let p = (code & 0xf0) >> 4 != code & 0x0f;
    let s = (code & 0xcc) >> 2 != code & 0x33;
    let d = (code & 0xaa) >> 1 != code & 0x55;
    p && s && d
}

fn len_u32(n: usize, what: &'static str) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::Malformed(what))
}

fn put_clip(w: &mut Writer, clip: &Clip) -> Result<(), Error> {
    match clip {
        Clip::None => {
            w.u8(0);
        }
        Clip::Rects(rects) => {
            w.u8(1).u32(len_u32(rects.len(), "clip rects")?);
            for r in rects {
                w.rect(r);
            }
        }
    }
    Ok(())
}

fn put_base(w: &mut Writer, d: &Drawable) -> Result<(), Error> {
    w.u32(d.surface_id).rect(&d.bbox);
    put_clip(w, &d.clip)
}

/// Pointees still to be written after the fixed part, in order.
enum Pointee<'a> {
    Image(&'a Image),
    Mask(&'a Image),
    Path(&'a Path),
    Style(&'a [i32]),
    Str(&'a GlyphString),
}

struct Body<'a, 'c> {
    w: Writer,
    pending: Vec<(crate::wire::PtrSlot, Pointee<'a>)>,
    images: &'c mut ClientImages,
    counters: Option<&'c ImageCounters>,
    /// Images of this draw may be lossy on the client.
    lossy_ok: bool,
}

impl<'a> Body<'a, '_> {
    fn ptr(&mut self, p: Pointee<'a>) {
        let slot = self.w.ptr();
        self.pending.push((slot, p));
    }

    fn brush(&mut self, b: &'a Brush) {
        match b {
            Brush::None => {
                self.w.u8(0);
            }
            Brush::Solid(c) => {
                self.w.u8(1).u32(*c);
            }
            Brush::Pattern { image, pos } => {
                self.w.u8(2);
                self.ptr(Pointee::Image(image));
                self.w.i32(pos.x).i32(pos.y);
            }
        }
    }

    fn qmask(&mut self, m: Option<&'a Mask>) {
        match m {
            None => {
                self.w.u8(0).i32(0).i32(0).u32(0);
            }
            Some(m) => {
                self.w.u8(m.flags).i32(m.pos.x).i32(m.pos.y);
                self.ptr(Pointee::Mask(&m.bitmap));
            }
        }
    }

    fn finish(mut self) -> Result<Vec<u8>, Error> {
        let pending = std::mem::take(&mut self.pending);
        for (slot, p) in pending {
            self.w.fill_ptr(slot)?;
            match p {
                Pointee::Image(i) => {
                    let usage = Use {
                        in_drawable: true,
                        lossy_ok: self.lossy_ok,
                    };
                    self.images
                        .put_image(&mut self.w, i, usage, false, self.counters)?;
                }
                Pointee::Mask(i) => {
                    self.images
                        .put_image(&mut self.w, i, Use::default(), true, self.counters)?;
                }
                Pointee::Path(p) => put_path(&mut self.w, p)?,
                Pointee::Style(s) => {
                    for v in s {
                        self.w.i32(*v);
                    }
                }
                Pointee::Str(s) => put_string(&mut self.w, s)?,
            }
        }
        Ok(self.w.finish())
    }
}

fn put_path(w: &mut Writer, p: &Path) -> Result<(), Error> {
    w.u32(len_u32(p.segments.len(), "path segments")?);
    for s in &p.segments {
        let flags = u8::try_from(s.flags).map_err(|_| Error::Malformed("path flags"))?;
        w.u8(flags).u32(len_u32(s.points.len(), "path points")?);
        for pt in &s.points {
            w.i32(pt.x).i32(pt.y);
        }
    }
    Ok(())
}

fn put_string(w: &mut Writer, s: &GlyphString) -> Result<(), Error> {
    let n = u16::try_from(s.glyphs.len()).map_err(|_| Error::Malformed("glyph count"))?;
    let flags = u8::try_from(s.flags).map_err(|_| Error::Malformed("string flags"))?;
    w.u16(n).u8(flags);
    for g in &s.glyphs {
        w.i32(g.render_pos.x)
            .i32(g.render_pos.y)
            .i32(g.glyph_origin.x)
            .i32(g.glyph_origin.y)
            .u16(g.width)
            .u16(g.height)
            .bytes(&g.data);
    }
    Ok(())
}

/// The `SpiceBitmapFmt` a bitmap travels as: spice-common's image decoder
/// (`spice_bitmap_to_pixman`) only knows the big-endian sub-byte formats and
/// *aborts the client* on the others, so palette images in 1BIT_LE/4BIT_LE
/// are converted (masks keep 1BIT_LE, which the mask decoder handles).
pub const fn wire_format(f: BitmapFormat, mask: bool) -> u8 {
    match f {
        BitmapFormat::OneBitLe if !mask => BitmapFormat::OneBitBe as u8,
        BitmapFormat::FourBitLe if !mask => BitmapFormat::FourBitBe as u8,
        other => other as u8,
    }
}

/// Pixel bytes of an image bitmap in its wire format (see [`wire_format`]).
pub fn le_to_be(f: BitmapFormat, px: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match f {
        BitmapFormat::OneBitLe => px.iter().map(|b| b.reverse_bits()).collect(),
        BitmapFormat::FourBitLe => px.iter().map(|b| b.rotate_left(4)).collect(),
        _ => std::borrow::Cow::Borrowed(px),
    }
}

/// Writes an image (descriptor and data; a bitmap's palette follows its
/// pixels) without caches, as BITMAP, or LZ4 when `lz4` and it is worth it.
///
/// `mask`: the image is a QMask bitmap, sent without palette.
pub fn put_image(w: &mut Writer, img: &Image, lz4: bool, mask: bool) -> Result<(), Error> {
    let mut ctx = ClientImages::new(legacy_policy(lz4), 0);
    let usage = Use {
        in_drawable: true,
        lossy_ok: false,
    };
    ctx.put_image(w, img, usage, mask, None).map(|_| ())
}

/// The policy of the `lz4: bool` entry points: LZ4 or nothing, no caches.
fn legacy_policy(lz4: bool) -> Policy {
    Policy {
        mode: if lz4 {
            ImageCompression::Lz4
        } else {
            ImageCompression::Off
        },
        jpeg: false,
        zlib_glz: false,
        client: ClientDecoders {
            full_canvas: true,
            lz4,
            glz_window: 0,
        },
    }
}

/// A palette reference decided by the caller: (palette flags, cached id
/// when `PAL_FROM_CACHE`, `unique` to send with the palette, entries).
pub type PaletteRef<'a> = (u8, Option<u64>, u64, &'a [u32]);

/// Writes a `BITMAP` image: descriptor `{id, BITMAP, flags, w, h}` and the
/// bitmap. `pal`: the palette reference (`None`: the bitmap's own palette, by
/// pointer, unless `mask`).
pub fn put_bitmap_plain(
    w: &mut Writer,
    id: u64,
    flags: u8,
    b: &Bitmap,
    mask: bool,
    pal: Option<PaletteRef<'_>>,
) -> Result<(), Error> {
    w.u64(id)
        .u8(IMAGE_TYPE_BITMAP)
        .u8(flags)
        .u32(b.width)
        .u32(b.height);
    let mut bflags = if b.flags & BITMAP_TOP_DOWN != 0 {
        BITMAP_FLAGS_TOP_DOWN
    } else {
        0
    };
    let own: Option<Vec<u32>> = match (&pal, mask) {
        (None, false) => b.palette.as_ref().map(|p| {
            let want = if b.format.has_palette() {
                1usize << b.format.bpp()
            } else {
                0
            };
            let n = p.entries.len().max(want);
            (0..n)
                .map(|i| p.entries.get(i).copied().unwrap_or(0))
                .collect()
        }),
        _ => None,
    };
    let (pflags, from_cache, unique, entries): (u8, Option<u64>, u64, Option<&[u32]>) = match pal {
        Some((f, c, u, e)) => (f, c, u, Some(e)),
        None => (
            0,
            None,
            b.palette.as_ref().map_or(0, |p| p.unique),
            own.as_deref(),
        ),
    };
    bflags |= pflags;
    w.u8(wire_format(b.format, mask))
        .u8(bflags)
        .u32(b.width)
        .u32(b.height)
        .u32(b.stride);
    let len = usize::try_from(u64::from(b.stride) * u64::from(b.height))
        .map_err(|_| Error::Malformed("bitmap size"))?;
    let px = b.data.get(..len).ok_or(Error::Malformed("bitmap size"))?;
    let px = if mask {
        std::borrow::Cow::Borrowed(px)
    } else {
        le_to_be(b.format, px)
    };
    if let Some(id) = from_cache {
        w.u64(id).bytes(&px);
        return Ok(());
    }
    let slot = w.ptr();
    w.bytes(&px);
    if let Some(e) = entries {
        w.fill_ptr(slot)?;
        put_palette(w, unique, e)?;
    }
    Ok(())
}

/// Marshals `d` as its native message: `(message type, body)`.
///
/// Call [`check_native`] first; this only fails on sizes the wire cannot carry.
pub fn marshal_draw(d: &Drawable, lz4: bool) -> Result<(u16, Vec<u8>), Error> {
    let mut ctx = ClientImages::new(legacy_policy(lz4), 0);
    marshal_draw_with(d, &mut ctx, None)
}

/// Whether the images of `d` may reach the client lossy: a plain copy onto
/// the primary (what the client shows; nothing reads it back exactly).
pub fn lossy_ok(d: &Drawable) -> bool {
    d.surface_id == 0
        && matches!(&d.op, DrawOp::Copy(c) if c.mask.is_none() && c.rop.0 == Ropd::OP_PUT)
}

/// Marshals `d` as its native message with one client's image state
/// (codecs, caches): `(message type, body)`. Cache evictions it caused are
/// left in `images` ([`ClientImages::take_invalidations`]): send them first.
///
/// Call [`check_native`] first; this only fails on sizes the wire cannot carry.
pub fn marshal_draw_with(
    d: &Drawable,
    images: &mut ClientImages,
    counters: Option<&ImageCounters>,
) -> Result<(u16, Vec<u8>), Error> {
    let ty = draw_msg_type(&d.op).ok_or(Error::Malformed("NOP has no message"))?;
    let mut b = Body {
        w: Writer::new(),
        pending: Vec::new(),
        images,
        counters,
        lossy_ok: lossy_ok(d),
    };
    put_base(&mut b.w, d)?;
    match &d.op {
        DrawOp::Nop => {}
        DrawOp::Fill { brush, rop, mask } => {
            b.brush(brush);
            b.w.u16(rop.0);
            b.qmask(mask.as_ref());
        }
        DrawOp::Opaque {
            src,
            src_area,
            brush,
            rop,
            scale_mode,
            mask,
        } => {
            b.ptr(Pointee::Image(src));
            b.w.rect(src_area);
            b.brush(brush);
            b.w.u16(rop.0).u8(*scale_mode as u8);
            b.qmask(mask.as_ref());
        }
        DrawOp::Copy(c) | DrawOp::Blend(c) => {
            b.ptr(Pointee::Image(&c.src));
            b.w.rect(&c.src_area).u16(c.rop.0).u8(c.scale_mode as u8);
            b.qmask(c.mask.as_ref());
        }
        DrawOp::CopyBits { src_pos } => {
            b.w.i32(src_pos.x).i32(src_pos.y);
        }
        DrawOp::Blackness { mask } | DrawOp::Whiteness { mask } | DrawOp::Invers { mask } => {
            b.qmask(mask.as_ref());
        }
        DrawOp::Rop3 {
            src,
            src_area,
            brush,
            rop3,
            scale_mode,
            mask,
        } => {
            b.ptr(Pointee::Image(src));
            b.w.rect(src_area);
            b.brush(brush);
            b.w.u8(*rop3).u8(*scale_mode as u8);
            b.qmask(mask.as_ref());
        }
        DrawOp::Stroke {
            path,
            attr,
            brush,
            fore_mode,
            back_mode,
        } => {
            b.ptr(Pointee::Path(path));
            b.w.u8(attr.flags);
            if attr.flags & LINE_STYLED != 0 {
                let n = u8::try_from(attr.style.len()).map_err(|_| Error::Malformed("style"))?;
                b.w.u8(n);
                b.ptr(Pointee::Style(&attr.style));
            }
            b.brush(brush);
            b.w.u16(*fore_mode).u16(*back_mode);
        }
        DrawOp::Text {
            string,
            back_area,
            fore_brush,
            back_brush,
            fore_mode,
            back_mode,
        } => {
            b.ptr(Pointee::Str(string));
            b.w.rect(back_area);
            b.brush(fore_brush);
            b.brush(back_brush);
            b.w.u16(*fore_mode).u16(*back_mode);
        }
        DrawOp::Transparent {
            src,
            src_area,
            src_color,
            true_color,
        } => {
            b.ptr(Pointee::Image(src));
            b.w.rect(src_area).u32(*src_color).u32(*true_color);
        }
        DrawOp::AlphaBlend {
            alpha_flags,
            alpha,
            src,
            src_area,
        } => {
            let f = u8::try_from(*alpha_flags).map_err(|_| Error::Malformed("alpha flags"))?;
            b.w.u8(f).u8(*alpha);
            b.ptr(Pointee::Image(src));
            b.w.rect(src_area);
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
            let mut f = flags
                & !(COMPOSITE_HAS_MASK
                    | COMPOSITE_HAS_SRC_TRANSFORM
                    | COMPOSITE_HAS_MASK_TRANSFORM);
            if mask.is_some() {
                f |= COMPOSITE_HAS_MASK;
            }
            if src_transform.is_some() {
                f |= COMPOSITE_HAS_SRC_TRANSFORM;
            }
            if mask_transform.is_some() {
                f |= COMPOSITE_HAS_MASK_TRANSFORM;
            }
            b.w.u32(f);
            b.ptr(Pointee::Image(src));
            if let Some(m) = mask {
                b.ptr(Pointee::Image(m));
            }
            for t in [src_transform, mask_transform].into_iter().flatten() {
                for v in t.0 {
                    b.w.u32(v);
                }
            }
            b.w.i16(src_origin.x)
                .i16(src_origin.y)
                .i16(mask_origin.x)
                .i16(mask_origin.y);
        }
    }
    Ok((ty, b.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Point, Rect};

    fn base(op: DrawOp) -> Drawable {
        Drawable {
            surface_id: 0,
            effect: 0,
            self_bitmap: None,
            bbox: Rect::new(1, 2, 3, 4),
            clip: Clip::Rects(vec![Rect::new(1, 2, 3, 3)]),
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op,
        }
    }

    #[test]
    fn rop3_codes_spice_common_implements() {
        let n = (0..=255u8).filter(|c| rop3_is_ternary(*c)).count();
        // 256 minus the functions of at most two operands: 3 pairs × 16,
        // minus the 3 × 4 of one operand counted twice, plus the 2 constants.
        assert_eq!(n, 256 - (3 * 16 - 3 * 4 + 2));
        for c in [0x01u8, 0x1e, 0x96, 0xb8, 0xe2, 0xca, 0xfe] {
            assert!(rop3_is_ternary(c), "{c:#x}");
        }
        for c in [
            0x00u8, 0xff, 0xcc, 0x33, 0xf0, 0x5a, 0x66, 0x88, 0xee, 0xaa, 0x55, 0x0f,
        ] {
            assert!(!rop3_is_ternary(c), "{c:#x}");
        }
    }

    #[test]
    fn fill_layout_and_pointers() -> Result<(), Error> {
        let d = base(DrawOp::Fill {
            brush: Brush::Solid(0x0012_3456),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        });
        let (ty, b) = marshal_draw(&d, false)?;
        assert_eq!(ty, DRAW_FILL);
        // DisplayBase 4+16+1+4+16, brush 5, rop 2, qmask 13
        assert_eq!(b.len(), 41 + 5 + 2 + 13);
        assert_eq!(&b[41..46], &[1, 0x56, 0x34, 0x12, 0]);
        Ok(())
    }

    #[test]
    fn le_palette_bitmaps_travel_big_endian() -> Result<(), Error> {
        let img = Image {
            id: 0,
            flags: 0,
            width: 8,
            height: 1,
            data: ImageData::Bitmap(Bitmap {
                format: BitmapFormat::OneBitLe,
                flags: 0,
                width: 8,
                height: 1,
                stride: 4,
                palette: Some(crate::command::Palette {
                    unique: 0,
                    entries: vec![1],
                }),
                data: vec![0b0000_0001, 0, 0, 0],
            }),
        };
        let mut w = Writer::new();
        put_image(&mut w, &img, false, false)?;
        let b = w.finish();
        assert_eq!(b[18], BitmapFormat::OneBitBe as u8);
        assert_eq!(b[36], 0b1000_0000);
        // palette padded to 2 entries, after the 4 pixel bytes
        let pal = usize::try_from(u32::from_le_bytes([b[32], b[33], b[34], b[35]])).unwrap_or(0);
        assert_eq!(pal, 40);
        assert_eq!(&b[pal + 8..pal + 10], &2u16.to_le_bytes());
        Ok(())
    }

    #[test]
    fn every_pointer_stays_inside_the_body() -> Result<(), Error> {
        let pat = Image {
            id: 0,
            flags: 0,
            width: 1,
            height: 1,
            data: ImageData::Surface(3),
        };
        let d = base(DrawOp::Stroke {
            path: Path {
                segments: vec![crate::command::PathSeg {
                    flags: 3,
                    points: vec![crate::command::PointFix { x: 1, y: 2 }; 2],
                }],
            },
            attr: LineAttr {
                flags: LINE_STYLED,
                style: vec![16, 32],
                ..LineAttr::default()
            },
            brush: Brush::Pattern {
                image: Box::new(pat),
                pos: Point { x: 1, y: 1 },
            },
            fore_mode: Ropd::OP_PUT,
            back_mode: Ropd::OP_PUT,
        });
        assert!(
            check_native(
                &d,
                &NativeCaps {
                    full_canvas: true,
                    ..NativeCaps::default()
                },
                &|id| id == 0
            )
            .is_err()
        );
        let (ty, b) = marshal_draw(&d, false)?;
        assert_eq!(ty, DRAW_STROKE);
        let path_ptr = u32::from_le_bytes([b[41], b[42], b[43], b[44]]);
        assert!(usize::try_from(path_ptr).unwrap_or(usize::MAX) < b.len());
        Ok(())
    }
}
