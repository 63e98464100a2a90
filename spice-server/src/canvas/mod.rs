//! The software canvas: surfaces of 32-bit BGRX pixels and the renderer of
//! draw commands into them.
//!
//! # Primer
//!
//! SPICE (like QXL) describes drawing as raster operations on a bounding box,
//! limited by a clip (a union of rectangles) and optionally by a 1-bpp mask.
//! The ROP descriptor (`SpiceRopd`) of fills and copies combines a source (an
//! image, or the brush for fills) with the destination:
//! `res = OP(src', dst')`, where `src'`/`dst'` may be inverted first
//! (`INVERS_SRC`/`INVERS_BRUSH`/`INVERS_DEST`), `OP` is one of
//! PUT/OR/AND/XOR/BLACKNESS/WHITENESS/INVERS, and `INVERS_RES` inverts the
//! result.
//!
//! Every surface is stored as top-down BGRX (`x8r8g8b8` little-endian), the
//! format every SPICE client's primary uses, whatever the guest's format.
//! Source images are first converted into a [`Pixels`] block of the source
//! area (32-bit, top-down), then combined with the destination.
//!
//! Rendered so far: Fill (solid and pattern brushes), Copy (BITMAP of every
//! format, QUIC images through `codecs::quic`, SURFACE images; scaled copies use nearest-neighbour), CopyBits,
//! Blackness/Whiteness/Invers, all ROP descriptors, clip rects and masks. The
//! other draw types are reported as unsupported (their bounding box is still
//! damaged so clients see the canvas as it is). The structure (one function per
//! draw type, one source decoder) is ready for the full set.

use crate::Error;
use crate::codecs::PixelFormat;
use crate::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, Clip, CopyOp, DrawOp, Drawable, Image, ImageData,
    Mask, Point, Rect, Ropd, SurfaceFormat,
};

/// Largest surface width or height accepted.
pub const MAX_SURFACE_DIM: u32 = 16384;
/// Largest surface size in bytes (at 4 bytes per pixel).
pub const MAX_SURFACE_BYTES: usize = 256 << 20;
/// Largest number of rectangles a clip may split a draw into.
const MAX_CLIP_PIECES: usize = 4096;

/// One surface's pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    width: u32,
    height: u32,
    format: SurfaceFormat,
    data: Vec<u8>,
}

/// A block of 32-bit pixels, top-down, `width * 4` bytes per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels as u32 `0xXXRRGGBB`.
    pub data: Vec<u32>,
}

impl Pixels {
    fn get(&self, x: u32, y: u32) -> u32 {
        let i = u64::from(y) * u64::from(self.width) + u64::from(x);
        usize::try_from(i)
            .ok()
            .and_then(|i| self.data.get(i))
            .copied()
            .unwrap_or(0)
    }
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Surface {
    /// A black surface.
    pub fn new(width: u32, height: u32, format: SurfaceFormat) -> Result<Self, Error> {
        if width == 0 || height == 0 || width > MAX_SURFACE_DIM || height > MAX_SURFACE_DIM {
            return Err(Error::Malformed("surface size"));
        }
        let bytes = usize_of(width)
            .checked_mul(usize_of(height))
            .and_then(|n| n.checked_mul(4))
            .filter(|&n| n <= MAX_SURFACE_BYTES)
            .ok_or(Error::Malformed("surface size"))?;
        Ok(Self {
            width,
            height,
            format,
            data: vec![0; bytes],
        })
    }

    /// A surface initialised from the guest's pixels (`height` rows of
    /// `row_bytes`, top row first, in `format`).
    pub fn with_initial(
        width: u32,
        height: u32,
        format: SurfaceFormat,
        row_bytes: usize,
        initial: &[u8],
    ) -> Result<Self, Error> {
        let mut s = Self::new(width, height, format)?;
        let bpp = usize_of(format.bpp());
        let need = usize_of(width)
            .checked_mul(bpp)
            .map(|b| b.div_ceil(8))
            .ok_or(Error::Malformed("surface stride"))?;
        if row_bytes < need {
            return Err(Error::Malformed("surface stride"));
        }
        for (y, row) in initial.chunks(row_bytes).take(usize_of(height)).enumerate() {
            for x in 0..usize_of(width) {
                let px = match format {
                    SurfaceFormat::Xrgb32 | SurfaceFormat::Argb32 => row
                        .get(x * 4..x * 4 + 4)
                        .map_or(0, |p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])),
                    SurfaceFormat::Rgb555 => row
                        .get(x * 2..x * 2 + 2)
                        .map_or(0, |p| rgb555_to_32(u16::from_le_bytes([p[0], p[1]]))),
                    SurfaceFormat::Rgb565 => row
                        .get(x * 2..x * 2 + 2)
                        .map_or(0, |p| rgb565_to_32(u16::from_le_bytes([p[0], p[1]]))),
                    SurfaceFormat::A8 => row.get(x).map_or(0, |&a| u32::from(a) << 24),
                    SurfaceFormat::A1 => row.get(x / 8).map_or(0, |&b| {
                        if b & (0x80 >> (x % 8)) != 0 {
                            0xff00_0000
                        } else {
                            0
                        }
                    }),
                };
                s.put(x, y, px);
            }
        }
        Ok(s)
    }

    /// Width in pixels.
    pub const fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub const fn height(&self) -> u32 {
        self.height
    }

    /// The guest's format of this surface.
    pub const fn format(&self) -> SurfaceFormat {
        self.format
    }

    /// The whole surface as a rectangle.
    pub fn bounds(&self) -> Rect {
        Rect::new(
            0,
            0,
            i32::try_from(self.width).unwrap_or(i32::MAX),
            i32::try_from(self.height).unwrap_or(i32::MAX),
        )
    }

    /// All pixels, BGRX, top-down, `width * 4` bytes per row.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn idx(&self, x: usize, y: usize) -> usize {
        (y * usize_of(self.width) + x) * 4
    }

    fn get(&self, x: usize, y: usize) -> u32 {
        let i = self.idx(x, y);
        self.data
            .get(i..i + 4)
            .map_or(0, |p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
    }

    fn put(&mut self, x: usize, y: usize, v: u32) {
        let i = self.idx(x, y);
        if let Some(p) = self.data.get_mut(i..i + 4) {
            p.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The pixels of `area` (clipped to the surface), BGRX top-down, with the
    /// clipped area. `None` when nothing remains.
    pub fn read_rect(&self, area: &Rect) -> Option<(Rect, Vec<u8>)> {
        let r = area.intersect(&self.bounds())?;
        let (l, t) = (to_idx(r.left), to_idx(r.top));
        let w = usize_of(r.width());
        let mut out = Vec::with_capacity(w * usize_of(r.height()) * 4);
        for y in t..t + usize_of(r.height()) {
            let i = self.idx(l, y);
            out.extend_from_slice(self.data.get(i..i + w * 4)?);
        }
        Some((r, out))
    }

    /// The pixels of `area` converted to the surface's own format (for the
    /// guest's `UPDATE_AREA`), with bytes per row.
    pub fn read_rect_native(&self, area: &Rect) -> Option<(Rect, usize, Vec<u8>)> {
        let (r, bgrx) = self.read_rect(area)?;
        let w = usize_of(r.width());
        match self.format {
            SurfaceFormat::Xrgb32 | SurfaceFormat::Argb32 => Some((r, w * 4, bgrx)),
            SurfaceFormat::Rgb555 | SurfaceFormat::Rgb565 => {
                let out = bgrx
                    .chunks_exact(4)
                    .flat_map(|p| {
                        let (b, g, r8) = (u16::from(p[0]), u16::from(p[1]), u16::from(p[2]));
                        let v = if self.format == SurfaceFormat::Rgb555 {
                            ((r8 >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)
                        } else {
                            ((r8 >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
                        };
                        v.to_le_bytes()
                    })
                    .collect();
                Some((r, w * 2, out))
            }
            SurfaceFormat::A8 => Some((r, w, bgrx.chunks_exact(4).map(|p| p[3]).collect())),
            SurfaceFormat::A1 => {
                let stride = w.div_ceil(8);
                let mut out = vec![0u8; stride * usize_of(r.height())];
                for (i, p) in bgrx.chunks_exact(4).enumerate() {
                    let (y, x) = (i / w.max(1), i % w.max(1));
                    if p[3] != 0
                        && let Some(b) = out.get_mut(y * stride + x / 8)
                    {
                        *b |= 0x80 >> (x % 8);
                    }
                }
                Some((r, stride, out))
            }
        }
    }
}

fn to_idx(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

/// Expands x1r5g5b5 to x8r8g8b8 the way pixman does (replicating high bits).
pub fn rgb555_to_32(v: u16) -> u32 {
    let r = u32::from((v >> 10) & 0x1f);
    let g = u32::from((v >> 5) & 0x1f);
    let b = u32::from(v & 0x1f);
    (((r << 3) | (r >> 2)) << 16) | (((g << 3) | (g >> 2)) << 8) | ((b << 3) | (b >> 2))
}

/// Expands r5g6b5 to x8r8g8b8.
pub fn rgb565_to_32(v: u16) -> u32 {
    let r = u32::from((v >> 11) & 0x1f);
    let g = u32::from((v >> 5) & 0x3f);
    let b = u32::from(v & 0x1f);
    (((r << 3) | (r >> 2)) << 16) | (((g << 2) | (g >> 4)) << 8) | ((b << 3) | (b >> 2))
}

/// What a draw did to its target surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrawOutcome {
    /// The pixels in these (disjoint) rectangles changed.
    Drawn(Vec<Rect>),
    /// The draw type or an input is not rendered yet; the bounding box (clipped)
    /// is reported so that clients still get what the canvas holds.
    Unsupported(&'static str, Vec<Rect>),
}

/// Looks up another surface's pixels for `ImageData::Surface` sources.
pub trait SurfaceSource {
    /// The pixels of `area` of surface `id` (32-bit, top-down), or `None`.
    fn read(&self, id: u32, area: &Rect) -> Option<Pixels>;
}

/// Splits the bounding box into the disjoint rectangles the clip allows, all
/// inside `bounds`.
pub fn clip_rects(bbox: &Rect, clip: &Clip, bounds: &Rect) -> Vec<Rect> {
    let Some(base) = bbox.intersect(bounds) else {
        return Vec::new();
    };
    match clip {
        Clip::None => vec![base],
        Clip::Rects(rects) => {
            let mut out: Vec<Rect> = Vec::new();
            for r in rects {
                let Some(r) = r.intersect(&base) else {
                    continue;
                };
                let mut pieces = vec![r];
                for have in &out {
                    pieces = pieces.iter().flat_map(|p| subtract(p, have)).collect();
                    if pieces.is_empty() {
                        break;
                    }
                }
                out.extend(pieces);
                if out.len() > MAX_CLIP_PIECES {
                    // Pathological clip: fall back to the bounding box of what we have.
                    let bb = out.iter().fold(out[0], |a, b| union_box(&a, b));
                    return vec![bb];
                }
            }
            out
        }
    }
}

/// The smallest rectangle containing both.
pub fn union_box(a: &Rect, b: &Rect) -> Rect {
    Rect {
        top: a.top.min(b.top),
        left: a.left.min(b.left),
        bottom: a.bottom.max(b.bottom),
        right: a.right.max(b.right),
    }
}

/// `a` minus `b` as up to four disjoint rectangles.
pub fn subtract(a: &Rect, b: &Rect) -> Vec<Rect> {
    let Some(i) = a.intersect(b) else {
        return vec![*a];
    };
    let mut v = Vec::with_capacity(4);
    if a.top < i.top {
        v.push(Rect::new(a.left, a.top, a.right, i.top));
    }
    if i.bottom < a.bottom {
        v.push(Rect::new(a.left, i.bottom, a.right, a.bottom));
    }
    if a.left < i.left {
        v.push(Rect::new(a.left, i.top, i.left, i.bottom));
    }
    if i.right < a.right {
        v.push(Rect::new(i.right, i.top, a.right, i.bottom));
    }
    v
}

/// Applies a ROP descriptor to one pixel.
pub fn apply_ropd(rop: u16, src: u32, dst: u32, src_invert_flag: u16) -> u32 {
    let s = if rop & src_invert_flag != 0 {
        !src
    } else {
        src
    };
    let d = if rop & Ropd::INVERS_DEST != 0 {
        !dst
    } else {
        dst
    };
    let r = if rop & Ropd::OP_PUT != 0 {
        s
    } else if rop & Ropd::OP_OR != 0 {
        s | d
    } else if rop & Ropd::OP_AND != 0 {
        s & d
    } else if rop & Ropd::OP_XOR != 0 {
        s ^ d
    } else if rop & Ropd::OP_BLACKNESS != 0 {
        0
    } else if rop & Ropd::OP_WHITENESS != 0 {
        u32::MAX
    } else if rop & Ropd::OP_INVERS != 0 {
        !d
    } else {
        // No operation bit: the destination is left alone.
        return dst;
    };
    if rop & Ropd::INVERS_RES != 0 { !r } else { r }
}

/// A decoded 1-bpp mask positioned on the destination.
struct MaskView {
    pix: Pixels,
    invert: bool,
    origin_x: i64,
    origin_y: i64,
}

impl MaskView {
    fn new(m: &Mask, bbox: &Rect) -> Option<Self> {
        let ImageData::Bitmap(b) = &m.bitmap.data else {
            return None;
        };
        let area = Rect::new(
            0,
            0,
            i32::try_from(b.width).ok()?,
            i32::try_from(b.height).ok()?,
        );
        let pix = decode_bitmap(b, &area, true)?;
        Some(Self {
            pix,
            invert: m.flags & 1 != 0,
            origin_x: i64::from(bbox.left) - i64::from(m.pos.x),
            origin_y: i64::from(bbox.top) - i64::from(m.pos.y),
        })
    }

    fn allows(&self, x: usize, y: usize) -> bool {
        let mx = i64::try_from(x).unwrap_or(i64::MAX) - self.origin_x;
        let my = i64::try_from(y).unwrap_or(i64::MAX) - self.origin_y;
        let inside =
            mx >= 0 && my >= 0 && mx < i64::from(self.pix.width) && my < i64::from(self.pix.height);
        let bit = inside
            && self.pix.get(
                u32::try_from(mx).unwrap_or(0),
                u32::try_from(my).unwrap_or(0),
            ) != 0;
        bit != self.invert
    }
}

/// Renders one drawable into `target`. `sources` provides other surfaces.
pub fn draw(target: &mut Surface, d: &Drawable, sources: &dyn SurfaceSource) -> DrawOutcome {
    let rects = clip_rects(&d.bbox, &d.clip, &target.bounds());
    if rects.is_empty() {
        return DrawOutcome::Drawn(rects);
    }
    let r = match &d.op {
        DrawOp::Nop => return DrawOutcome::Drawn(Vec::new()),
        DrawOp::Fill { brush, rop, mask } => fill(
            target,
            &d.bbox,
            &rects,
            brush,
            rop.0,
            mask.as_ref(),
            sources,
        ),
        DrawOp::Copy(c) => copy(target, &d.bbox, &rects, c, sources),
        DrawOp::CopyBits { src_pos } => {
            copy_bits(target, &d.bbox, &rects, *src_pos);
            Ok(())
        }
        DrawOp::Blackness { mask } => rop_only(target, &d.bbox, &rects, Ropd::OP_BLACKNESS, mask),
        DrawOp::Whiteness { mask } => rop_only(target, &d.bbox, &rects, Ropd::OP_WHITENESS, mask),
        DrawOp::Invers { mask } => rop_only(target, &d.bbox, &rects, Ropd::OP_INVERS, mask),
        DrawOp::Opaque { .. } => Err("DRAW_OPAQUE"),
        DrawOp::Blend(_) => Err("DRAW_BLEND"),
        DrawOp::Rop3 { .. } => Err("DRAW_ROP3"),
        DrawOp::Stroke { .. } => Err("DRAW_STROKE"),
        DrawOp::Text { .. } => Err("DRAW_TEXT"),
        DrawOp::Transparent { .. } => Err("DRAW_TRANSPARENT"),
        DrawOp::AlphaBlend { .. } => Err("DRAW_ALPHA_BLEND"),
        DrawOp::Composite { .. } => Err("DRAW_COMPOSITE"),
    };
    match r {
        Ok(()) => DrawOutcome::Drawn(rects),
        Err(what) => DrawOutcome::Unsupported(what, rects),
    }
}

fn for_each_pixel(rects: &[Rect], mask: Option<&MaskView>, mut f: impl FnMut(usize, usize)) {
    for r in rects {
        for y in to_idx(r.top)..to_idx(r.bottom) {
            for x in to_idx(r.left)..to_idx(r.right) {
                if mask.is_none_or(|m| m.allows(x, y)) {
                    f(x, y);
                }
            }
        }
    }
}

fn mask_view(mask: Option<&Mask>, bbox: &Rect) -> Result<Option<MaskView>, &'static str> {
    match mask {
        None => Ok(None),
        Some(m) => MaskView::new(m, bbox).map(Some).ok_or("mask image"),
    }
}

fn rop_only(
    t: &mut Surface,
    bbox: &Rect,
    rects: &[Rect],
    op: u16,
    mask: &Option<Mask>,
) -> Result<(), &'static str> {
    let mv = mask_view(mask.as_ref(), bbox)?;
    for_each_pixel(rects, mv.as_ref(), |x, y| {
        let v = apply_ropd(op, 0, t.get(x, y), 0);
        t.put(x, y, v);
    });
    Ok(())
}

fn fill(
    t: &mut Surface,
    bbox: &Rect,
    rects: &[Rect],
    brush: &Brush,
    rop: u16,
    mask: Option<&Mask>,
    sources: &dyn SurfaceSource,
) -> Result<(), &'static str> {
    let mv = mask_view(mask, bbox)?;
    let pattern = match brush {
        Brush::None => return Ok(()),
        Brush::Solid(_) => None,
        Brush::Pattern { image, pos } => {
            let area = Rect::new(
                0,
                0,
                i32::try_from(image.width).map_err(|_| "pattern size")?,
                i32::try_from(image.height).map_err(|_| "pattern size")?,
            );
            let p = decode_image(image, &area, sources).ok_or("pattern image")?;
            if p.width == 0 || p.height == 0 {
                return Err("pattern image");
            }
            Some((p, *pos))
        }
    };
    let solid = if let Brush::Solid(c) = brush { *c } else { 0 };
    if pattern.is_none() && mv.is_none() && rop == Ropd::OP_PUT {
        // Fast path: plain solid fill.
        let px = solid.to_le_bytes();
        for r in rects {
            for y in to_idx(r.top)..to_idx(r.bottom) {
                let (a, b) = (t.idx(to_idx(r.left), y), t.idx(to_idx(r.right), y));
                if let Some(row) = t.data.get_mut(a..b) {
                    for p in row.chunks_exact_mut(4) {
                        p.copy_from_slice(&px);
                    }
                }
            }
        }
        return Ok(());
    }
    for_each_pixel(rects, mv.as_ref(), |x, y| {
        let src = match &pattern {
            None => solid,
            Some((p, pos)) => {
                let px = i64::try_from(x).unwrap_or(0) - i64::from(pos.x);
                let py = i64::try_from(y).unwrap_or(0) - i64::from(pos.y);
                let sx = px.rem_euclid(i64::from(p.width));
                let sy = py.rem_euclid(i64::from(p.height));
                p.get(
                    u32::try_from(sx).unwrap_or(0),
                    u32::try_from(sy).unwrap_or(0),
                )
            }
        };
        let v = apply_ropd(rop, src, t.get(x, y), Ropd::INVERS_BRUSH);
        t.put(x, y, v);
    });
    Ok(())
}

fn copy(
    t: &mut Surface,
    bbox: &Rect,
    rects: &[Rect],
    c: &CopyOp,
    sources: &dyn SurfaceSource,
) -> Result<(), &'static str> {
    if !c.src_area.is_well_formed() || c.src_area.is_empty() {
        return Err("empty source area");
    }
    let src = decode_image(&c.src, &c.src_area, sources).ok_or("source image")?;
    let mv = mask_view(c.mask.as_ref(), bbox)?;
    let (bw, bh) = (u64::from(bbox.width()), u64::from(bbox.height()));
    let (sw, sh) = (u64::from(src.width), u64::from(src.height));
    if bw == 0 || bh == 0 || sw == 0 || sh == 0 {
        return Ok(());
    }
    let scaled = bw != sw || bh != sh;
    let (left, top) = (i64::from(bbox.left), i64::from(bbox.top));
    for_each_pixel(rects, mv.as_ref(), |x, y| {
        // x, y lie inside the bounding box, so these are non-negative.
        let dx = u64::try_from(i64::try_from(x).unwrap_or(0) - left).unwrap_or(0);
        let dy = u64::try_from(i64::try_from(y).unwrap_or(0) - top).unwrap_or(0);
        let (sx, sy) = if scaled {
            (dx * sw / bw, dy * sh / bh)
        } else {
            (dx, dy)
        };
        let s = src.get(
            u32::try_from(sx).unwrap_or(u32::MAX),
            u32::try_from(sy).unwrap_or(u32::MAX),
        );
        let v = apply_ropd(c.rop.0, s, t.get(x, y), Ropd::INVERS_SRC);
        t.put(x, y, v);
    });
    Ok(())
}

fn copy_bits(t: &mut Surface, bbox: &Rect, rects: &[Rect], src_pos: Point) {
    let dx = i64::from(src_pos.x) - i64::from(bbox.left);
    let dy = i64::from(src_pos.y) - i64::from(bbox.top);
    // Snapshot first: source and destination may overlap.
    let snapshot = t.data.clone();
    let (w, h) = (i64::from(t.width), i64::from(t.height));
    for r in rects {
        for y in to_idx(r.top)..to_idx(r.bottom) {
            for x in to_idx(r.left)..to_idx(r.right) {
                let sx = i64::try_from(x).unwrap_or(0) + dx;
                let sy = i64::try_from(y).unwrap_or(0) + dy;
                if sx < 0 || sy < 0 || sx >= w || sy >= h {
                    continue;
                }
                let i = (usize::try_from(sy * w + sx).unwrap_or(0)) * 4;
                if let Some(p) = snapshot.get(i..i + 4) {
                    t.put(x, y, u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
                }
            }
        }
    }
}

/// Converts `area` of an image into 32-bit pixels.
pub fn decode_image(img: &Image, area: &Rect, sources: &dyn SurfaceSource) -> Option<Pixels> {
    match &img.data {
        ImageData::Bitmap(b) => decode_bitmap(b, area, false),
        ImageData::Surface(id) => sources.read(*id, area),
        ImageData::Quic(data) => {
            let d = crate::codecs::quic::decode(data).ok()?;
            if d.width != img.width || d.height != img.height {
                return None;
            }
            let format = match d.format {
                PixelFormat::Rgb16 => BitmapFormat::Rgb16,
                PixelFormat::Rgb24 => BitmapFormat::Rgb24,
                PixelFormat::Rgb32 => BitmapFormat::Rgb32,
                PixelFormat::Rgba => BitmapFormat::Rgba,
                PixelFormat::A8 => BitmapFormat::A8,
                _ => return None,
            };
            let b = Bitmap {
                format,
                flags: if d.top_down { BITMAP_TOP_DOWN } else { 0 },
                width: d.width,
                height: d.height,
                stride: u32::try_from(d.stride).ok()?,
                palette: None,
                data: d.pixels,
            };
            decode_bitmap(&b, area, false)
        }
    }
}

/// Converts `area` of a bitmap into 32-bit pixels (mask formats give 0/1).
///
/// `raw_bits`: for 1-bpp images, return the bit values instead of palette colours.
pub fn decode_bitmap(b: &Bitmap, area: &Rect, raw_bits: bool) -> Option<Pixels> {
    let full = Rect::new(
        0,
        0,
        i32::try_from(b.width).ok()?,
        i32::try_from(b.height).ok()?,
    );
    let a = area.intersect(&full)?;
    if a != *area {
        return None;
    }
    let bpp = u64::from(b.format.bpp());
    let min_stride = (u64::from(b.width) * bpp).div_ceil(8);
    if u64::from(b.stride) < min_stride
        || (b.data.len() as u64) < u64::from(b.stride) * u64::from(b.height)
    {
        return None;
    }
    let pal = |i: u32| -> u32 {
        if raw_bits {
            return i;
        }
        b.palette
            .as_ref()
            .and_then(|p| p.entries.get(usize_of(i)))
            .copied()
            .unwrap_or(0)
    };
    let (w, h) = (a.width(), a.height());
    let mut data = Vec::with_capacity(usize_of(w).checked_mul(usize_of(h))?);
    let stride = usize_of(b.stride);
    for y in 0..h {
        let vy = u32::try_from(a.top).ok()? + y;
        let row_idx = if b.is_top_down() {
            vy
        } else {
            b.height - 1 - vy
        };
        let row = b.data.get(usize_of(row_idx) * stride..)?;
        for x in 0..w {
            let vx = usize_of(u32::try_from(a.left).ok()? + x);
            let px = match b.format {
                BitmapFormat::Rgb32 | BitmapFormat::Rgba => {
                    let p = row.get(vx * 4..vx * 4 + 4)?;
                    u32::from_le_bytes([p[0], p[1], p[2], p[3]])
                }
                BitmapFormat::Rgb24 => {
                    let p = row.get(vx * 3..vx * 3 + 3)?;
                    u32::from_le_bytes([p[0], p[1], p[2], 0])
                }
                BitmapFormat::Rgb16 => {
                    let p = row.get(vx * 2..vx * 2 + 2)?;
                    rgb555_to_32(u16::from_le_bytes([p[0], p[1]]))
                }
                BitmapFormat::EightBit => pal(u32::from(*row.get(vx)?)),
                BitmapFormat::A8 => u32::from(*row.get(vx)?) << 24,
                BitmapFormat::FourBitBe => {
                    let byte = *row.get(vx / 2)?;
                    pal(u32::from(if vx.is_multiple_of(2) {
                        byte >> 4
                    } else {
                        byte & 0xf
                    }))
                }
                BitmapFormat::FourBitLe => {
                    let byte = *row.get(vx / 2)?;
                    pal(u32::from(if vx.is_multiple_of(2) {
                        byte & 0xf
                    } else {
                        byte >> 4
                    }))
                }
                BitmapFormat::OneBitBe => {
                    let byte = *row.get(vx / 8)?;
                    pal(u32::from((byte >> (7 - vx % 8)) & 1))
                }
                BitmapFormat::OneBitLe => {
                    let byte = *row.get(vx / 8)?;
                    pal(u32::from((byte >> (vx % 8)) & 1))
                }
            };
            data.push(px);
        }
    }
    Some(Pixels {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Palette, ScaleMode};

    struct NoSources;
    impl SurfaceSource for NoSources {
        fn read(&self, _: u32, _: &Rect) -> Option<Pixels> {
            None
        }
    }

    fn drawable(bbox: Rect, clip: Clip, op: DrawOp) -> Drawable {
        Drawable {
            surface_id: 0,
            effect: 0,
            self_bitmap: None,
            bbox,
            clip,
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op,
        }
    }

    fn px(s: &Surface, x: usize, y: usize) -> u32 {
        s.get(x, y)
    }

    #[test]
    fn fill_with_clip() -> Result<(), Error> {
        let mut s = Surface::new(8, 8, SurfaceFormat::Xrgb32)?;
        let d = drawable(
            Rect::new(0, 0, 8, 8),
            Clip::Rects(vec![Rect::new(0, 0, 4, 4), Rect::new(2, 2, 6, 6)]),
            DrawOp::Fill {
                brush: Brush::Solid(0x00ff_0000),
                rop: Ropd(Ropd::OP_XOR),
                mask: None,
            },
        );
        let out = draw(&mut s, &d, &NoSources);
        // Overlapping clip rects must not XOR twice.
        assert_eq!(px(&s, 3, 3), 0x00ff_0000);
        assert_eq!(px(&s, 5, 5), 0x00ff_0000);
        assert_eq!(px(&s, 5, 1), 0);
        let DrawOutcome::Drawn(r) = out else {
            panic!("not drawn")
        };
        let area: u32 = r.iter().map(|r| r.width() * r.height()).sum();
        assert_eq!(area, 16 + 16 - 4);
        Ok(())
    }

    #[test]
    fn copy_bottom_up_palette_and_24bit() -> Result<(), Error> {
        let mut s = Surface::new(4, 4, SurfaceFormat::Xrgb32)?;
        let bmp = Bitmap {
            format: BitmapFormat::EightBit,
            flags: 0,
            width: 2,
            height: 2,
            stride: 4,
            palette: Some(Palette {
                unique: 0,
                entries: vec![0x11, 0x22],
            }),
            // bottom-up: first stored row is the bottom one
            data: vec![1, 0, 0, 0, 0, 1, 0, 0],
        };
        let img = Image {
            id: 0,
            flags: 0,
            width: 2,
            height: 2,
            data: ImageData::Bitmap(bmp),
        };
        let d = drawable(
            Rect::new(1, 1, 3, 3),
            Clip::None,
            DrawOp::Copy(CopyOp {
                src: Box::new(img),
                src_area: Rect::new(0, 0, 2, 2),
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Nearest,
                mask: None,
            }),
        );
        assert!(matches!(
            draw(&mut s, &d, &NoSources),
            DrawOutcome::Drawn(_)
        ));
        assert_eq!(
            [px(&s, 1, 1), px(&s, 2, 1), px(&s, 1, 2), px(&s, 2, 2)],
            [0x11, 0x22, 0x22, 0x11]
        );

        let bmp24 = Bitmap {
            format: BitmapFormat::Rgb24,
            flags: BITMAP_TOP_DOWN,
            width: 1,
            height: 1,
            stride: 4,
            palette: None,
            data: vec![1, 2, 3, 0],
        };
        let p = decode_bitmap(&bmp24, &Rect::new(0, 0, 1, 1), false);
        assert_eq!(p.map(|p| p.data), Some(vec![0x0003_0201]));
        Ok(())
    }

    #[test]
    fn copy_with_bbox_partly_off_surface() -> Result<(), Error> {
        let mut s = Surface::new(4, 4, SurfaceFormat::Xrgb32)?;
        let bmp = Bitmap {
            format: BitmapFormat::Rgb32,
            flags: BITMAP_TOP_DOWN,
            width: 4,
            height: 4,
            stride: 16,
            palette: None,
            data: (0..64u8).collect(),
        };
        let img = Image {
            id: 0,
            flags: 0,
            width: 4,
            height: 4,
            data: ImageData::Bitmap(bmp),
        };
        let d = drawable(
            Rect::new(-2, -1, 2, 3),
            Clip::None,
            DrawOp::Copy(CopyOp {
                src: Box::new(img),
                src_area: Rect::new(0, 0, 4, 4),
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Nearest,
                mask: None,
            }),
        );
        draw(&mut s, &d, &NoSources);
        // Surface (0,0) shows source pixel (2,1).
        assert_eq!(px(&s, 0, 0), u32::from_le_bytes([24, 25, 26, 27]));
        Ok(())
    }

    #[test]
    fn quic_source_renders_like_the_bitmap() -> Result<(), Error> {
        let (w, h) = (37u32, 23u32);
        let data: Vec<u8> = (0..w * h * 4)
            .map(|i| u8::try_from((i * 31 + i / 148 * 7) % 256).unwrap_or(0))
            .collect();
        let img = crate::codecs::ImageRef::new(&data, w, h, 148, PixelFormat::Rgb32, true)
            .map_err(|_| Error::Malformed("image"))?;
        let q = crate::codecs::quic::encode(&img).map_err(|_| Error::Malformed("quic"))?;
        let mk = |data: ImageData| Image {
            id: 0,
            flags: 0,
            width: w,
            height: h,
            data,
        };
        let bmp = ImageData::Bitmap(Bitmap {
            format: BitmapFormat::Rgb32,
            flags: BITMAP_TOP_DOWN,
            width: w,
            height: h,
            stride: 148,
            palette: None,
            data: data.clone(),
        });
        let area = Rect::new(3, 2, 30, 20);
        let a = decode_image(&mk(bmp), &area, &NoSources).ok_or(Error::Malformed("bmp"))?;
        let b = decode_image(&mk(ImageData::Quic(q)), &area, &NoSources)
            .ok_or(Error::Malformed("quic decode"))?;
        // QUIC RGB32 carries no X byte: compare colour only.
        let rgb = |p: &Pixels| p.data.iter().map(|v| v & 0x00ff_ffff).collect::<Vec<_>>();
        assert_eq!(rgb(&a), rgb(&b));
        let corrupt = decode_image(&mk(ImageData::Quic(vec![1, 2, 3, 4, 5])), &area, &NoSources);
        assert!(corrupt.is_none());
        Ok(())
    }

    #[test]
    fn copy_bits_overlapping() -> Result<(), Error> {
        let mut s = Surface::new(4, 1, SurfaceFormat::Xrgb32)?;
        for x in 0..4 {
            s.put(x, 0, u32::try_from(x).unwrap_or(0) + 1);
        }
        let d = drawable(
            Rect::new(1, 0, 4, 1),
            Clip::None,
            DrawOp::CopyBits {
                src_pos: Point { x: 0, y: 0 },
            },
        );
        draw(&mut s, &d, &NoSources);
        assert_eq!(
            [px(&s, 0, 0), px(&s, 1, 0), px(&s, 2, 0), px(&s, 3, 0)],
            [1, 1, 2, 3]
        );
        Ok(())
    }

    #[test]
    fn ropd_ops() {
        assert_eq!(apply_ropd(Ropd::OP_PUT, 5, 9, Ropd::INVERS_SRC), 5);
        assert_eq!(
            apply_ropd(Ropd::OP_PUT | Ropd::INVERS_SRC, 5, 9, Ropd::INVERS_SRC),
            !5
        );
        assert_eq!(
            apply_ropd(Ropd::OP_AND | Ropd::INVERS_DEST, 0xf, 0x3, 0),
            0xc
        );
        assert_eq!(apply_ropd(Ropd::OP_INVERS, 0, 0, 0), u32::MAX);
        assert_eq!(apply_ropd(Ropd::OP_OR | Ropd::INVERS_RES, 1, 2, 0), !3);
    }

    #[test]
    fn refuses_bad_sizes() {
        let _ = Surface::new(0, 1, SurfaceFormat::Xrgb32).expect_err("unexpected result");
        let _ = Surface::new(16385, 1, SurfaceFormat::Xrgb32).expect_err("unexpected result");
        let _ = Surface::new(16384, 16384, SurfaceFormat::Xrgb32).expect_err("unexpected result");
        let b = Bitmap {
            format: BitmapFormat::Rgb32,
            flags: 0,
            width: 4,
            height: 4,
            stride: 8,
            palette: None,
            data: vec![0; 64],
        };
        assert!(
            decode_bitmap(&b, &Rect::new(0, 0, 4, 4), false).is_none(),
            "stride"
        );
    }
}
