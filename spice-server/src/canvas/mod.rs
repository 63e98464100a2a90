//! The software canvas: surfaces and the renderer of draw commands into them.
//!
//! # Primer
//!
//! SPICE (like QXL) describes drawing as raster operations on a bounding box,
//! limited by a clip (a union of rectangles) and optionally by a 1-bpp mask.
//! spice-gtk renders every draw message with spice-common's software canvas
//! (`canvas_base.c`, `sw_canvas.c`, `pixman_utils.c`, `rop3.c`, `lines.c`),
//! which is built on pixman. This canvas reproduces that renderer draw type by
//! draw type, so that a guest's screen rendered here and in the client are
//! byte-identical:
//!
//! * every draw first computes its *region*: bounding box ∩ surface ∩ clip
//!   rectangles ∩ mask (`canvas_clip_pixman`, `canvas_mask_pixman`: a mask
//!   pixel selects the destination pixel when its bit is set, or clear with
//!   `INVERS`; outside the mask nothing is drawn);
//! * the draw is computed into a scratch copy of the region's extents and only
//!   the region's pixels are written back (every operation is per pixel, so
//!   this equals spice's clip-region compositing);
//! * ROP descriptors are reduced to the 16 X11 raster operations exactly as
//!   `ropd_descriptor_to_rop` does (a descriptor without an operation bit
//!   means COPY); fills, tiles and blits apply them on whole 32-bit pixels as
//!   `pixman_utils.c` does, blits skip pixels outside the source image;
//! * everything spice hands to pixman (scaling with `FILTER_NEAREST`/`GOOD`
//!   and its exact 16.16 transforms, ALPHA_BLEND's OVER with a solid mask,
//!   COMPOSITE with every operator/filter/repeat/transform/component alpha,
//!   TEXT's OVER through the glyph mask, 16-bit and A8 source conversion) is
//!   handed to the same pixman here (the `pixman` crate over the system
//!   libpixman), with the same images, formats and transforms;
//! * ROP3 evaluates the 256 ternary codes bitwise on 32-bit pixels (spice's
//!   218 handlers are exactly these truth tables; the 38 codes spice leaves
//!   unimplemented abort spice-gtk, here they get their truth table);
//! * STROKE draws 1-pixel polylines (spice ignores the line width) with a port
//!   of `miZeroLine`; paths are flattened like `canvas_draw_stroke`.
//!
//! Known differences (documented, not exact):
//! * styled (dashed) strokes: spice goes through X's wide-line dash code with
//!   width 1; here the dashes are applied along the zero-width line's pixels;
//! * 16-bit surfaces are stored and drawn as 32-bit (spice draws them in
//!   x1r5g5b5/r5g6b5); A1 surfaces are drawn as A8;
//! * A8 glyph strings: spice reads one row past each glyph (a bug); that row
//!   is taken as empty here;
//! * a ROP3 pattern whose offset is negative (spice reads before the pattern)
//!   wraps around here; COPY_BITS reads the source as it was before the draw;
//! * other surfaces used as sources are read through [`SurfaceSource`]; when
//!   only the drawn area is available, bilinear scaling sees transparent
//!   pixels outside it, and without [`SurfaceSource::format`] a source surface
//!   is taken to be x8r8g8b8.

mod fast;
mod img;
mod lines;

use crate::Error;
use crate::command::{
    Brush, Clip, CopyOp, DrawOp, Drawable, GlyphString, Image, ImageData, LINE_START_WITH_GAP,
    LINE_STYLED, LineAttr, Mask, Path, Point, Point16, Rect, Ropd, STRING_RASTER_A1,
    STRING_RASTER_A4, STRING_RASTER_A8, ScaleMode, SurfaceFormat, Transform,
};
use img::{Fmt, Img, Want, get_image};
use zerocopy::IntoBytes;

/// Largest surface width or height accepted.
pub const MAX_SURFACE_DIM: u32 = 16384;
/// Largest surface size in bytes (at 4 bytes per pixel).
pub const MAX_SURFACE_BYTES: usize = 256 << 20;
/// Largest number of rectangles a clip may split a draw into.
const MAX_CLIP_PIECES: usize = 4096;
/// Largest bounding-box dimension a draw may have (keeps 16.16 math in range).
const MAX_BBOX_DIM: i64 = 1 << 24;

/// One surface's pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    width: u32,
    height: u32,
    format: SurfaceFormat,
    /// `width * height` pixels, `0xAARRGGBB`; A8/A1 surfaces keep alpha in the top byte.
    data: Vec<u32>,
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
        let px = usize_of(width)
            .checked_mul(usize_of(height))
            .filter(|&n| n.checked_mul(4).is_some_and(|b| b <= MAX_SURFACE_BYTES))
            .ok_or(Error::Malformed("surface size"))?;
        Ok(Self {
            width,
            height,
            format,
            data: vec![0; px],
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
        self.data.as_bytes()
    }

    fn idx(&self, x: usize, y: usize) -> usize {
        y * usize_of(self.width) + x
    }

    fn get(&self, x: usize, y: usize) -> u32 {
        self.data.get(self.idx(x, y)).copied().unwrap_or(0)
    }

    fn put(&mut self, x: usize, y: usize, v: u32) {
        let i = self.idx(x, y);
        if let Some(p) = self.data.get_mut(i) {
            *p = v;
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
            out.extend_from_slice(self.data.get(i..i + w)?.as_bytes());
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

    /// The format of surface `id`, when known (decides how its pixels are
    /// interpreted: x8r8g8b8 when unknown).
    fn format(&self, _id: u32) -> Option<SurfaceFormat> {
        None
    }
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

// ---------------------------------------------------------------------------
// Raster operations.

/// X11/SPICE raster operation codes (`SpiceROP`): CLEAR 0 ... COPY 3 ... SET 15.
const ROP_COPY: u8 = 3;
const ROP_INVERT: u8 = 10;

/// Applies a `SpiceROP` (0..=15) to a source and a destination value.
pub const fn rop_apply(rop: u8, s: u32, d: u32) -> u32 {
    match rop {
        0 => 0,
        1 => s & d,
        2 => s & !d,
        3 => s,
        4 => !s & d,
        5 => d,
        6 => s ^ d,
        7 => s | d,
        8 => !s & !d,
        9 => !s ^ d,
        10 => !d,
        11 => s | !d,
        12 => !s,
        13 => !s | d,
        14 => !s | !d,
        _ => u32::MAX,
    }
}

/// `ropd_descriptor_to_rop`: the raster operation a descriptor means, with
/// `src_flag`/`dest_flag` the descriptor bits that invert the operation's
/// source and destination inputs.
pub const fn ropd_to_rop(desc: u16, src_flag: u16, dest_flag: u16) -> u8 {
    let inv_s = desc & src_flag != 0;
    let inv_d = desc & dest_flag != 0;
    let inv_r = desc & Ropd::INVERS_RES != 0;
    if desc & Ropd::OP_PUT != 0 {
        return if inv_s != inv_r { 12 } else { ROP_COPY };
    }
    let op = if desc & Ropd::OP_OR != 0 {
        0
    } else if desc & Ropd::OP_AND != 0 {
        1
    } else if desc & Ropd::OP_XOR != 0 {
        2
    } else if desc & Ropd::OP_BLACKNESS != 0 {
        return 0;
    } else if desc & Ropd::OP_WHITENESS != 0 {
        return 15;
    } else if desc & Ropd::OP_INVERS != 0 {
        return ROP_INVERT;
    } else {
        return ROP_COPY;
    };
    // Truth table in X11 order: bit (2 * !s + !d).
    let mut code = 0u8;
    let mut i = 0;
    while i < 4 {
        let s = (i & 2) == 0;
        let d = (i & 1) == 0;
        let (a, b) = (s != inv_s, d != inv_d);
        let r = match op {
            0 => a || b,
            1 => a && b,
            _ => a != b,
        };
        if r != inv_r {
            code |= 1 << i;
        }
        i += 1;
    }
    code
}

/// Applies a ROP descriptor to one pixel (`src_invert_flag`: the descriptor
/// bit that inverts `src`).
pub fn apply_ropd(rop: u16, src: u32, dst: u32, src_invert_flag: u16) -> u32 {
    rop_apply(
        ropd_to_rop(rop, src_invert_flag, Ropd::INVERS_DEST),
        src,
        dst,
    )
}

/// A ternary raster operation (Windows ROP3 code) on pattern, source and destination bits.
pub const fn rop3_apply(code: u8, p: u32, s: u32, d: u32) -> u32 {
    let mut r = 0;
    let mut i = 0;
    while i < 8 {
        if (code >> i) & 1 != 0 {
            let pm = if i & 4 != 0 { p } else { !p };
            let sm = if i & 2 != 0 { s } else { !s };
            let dm = if i & 1 != 0 { d } else { !d };
            r |= pm & sm & dm;
        }
        i += 1;
    }
    r
}

// ---------------------------------------------------------------------------
// Regions and the scratch copy.

/// A 1-bpp mask placed on the destination.
struct MaskView {
    bits: Img,
    invert: bool,
    dx: i64,
    dy: i64,
}

impl MaskView {
    fn allows(&self, x: i32, y: i32) -> bool {
        let mx = i64::from(x) - self.dx;
        let my = i64::from(y) - self.dy;
        match (u32::try_from(mx), u32::try_from(my)) {
            (Ok(mx), Ok(my)) if mx < self.bits.w && my < self.bits.h => {
                (self.bits.get(mx, my) != 0) != self.invert
            }
            _ => false,
        }
    }
}

/// The pixels a draw may change.
struct Region {
    rects: Vec<Rect>,
    mask: Option<MaskView>,
}

impl Region {
    fn extents(&self) -> Option<Rect> {
        let first = *self.rects.first()?;
        Some(self.rects.iter().fold(first, |a, b| union_box(&a, b)))
    }

    fn contains(&self, x: i32, y: i32) -> bool {
        self.rects
            .iter()
            .any(|r| x >= r.left && x < r.right && y >= r.top && y < r.bottom)
            && self.mask.as_ref().is_none_or(|m| m.allows(x, y))
    }

    fn for_each(&self, mut f: impl FnMut(i32, i32)) {
        for r in &self.rects {
            for y in r.top..r.bottom {
                for x in r.left..r.right {
                    if self.mask.as_ref().is_none_or(|m| m.allows(x, y)) {
                        f(x, y);
                    }
                }
            }
        }
    }

    /// Restricted to `r` (mask kept).
    fn intersect(&self, r: &Rect) -> Self {
        Self {
            rects: self.rects.iter().filter_map(|a| a.intersect(r)).collect(),
            mask: self.mask.as_ref().map(|m| MaskView {
                bits: m.bits.clone(),
                invert: m.invert,
                dx: m.dx,
                dy: m.dy,
            }),
        }
    }
}

fn mask_view(mask: Option<&Mask>, bbox: &Rect) -> Result<Option<MaskView>, &'static str> {
    let Some(m) = mask else {
        return Ok(None);
    };
    let bits = match &m.bitmap.data {
        ImageData::Bitmap(b) => img::bitmap_mask(b).ok_or("mask image")?,
        _ => return Err("mask image type"),
    };
    Ok(Some(MaskView {
        bits,
        invert: m.flags & 1 != 0,
        dx: i64::from(bbox.left) - i64::from(m.pos.x),
        dy: i64::from(bbox.top) - i64::from(m.pos.y),
    }))
}

/// The destination pixels of `area` in the format the draw works in.
struct Scratch {
    area: Rect,
    img: Img,
}

impl Scratch {
    fn new(t: &Surface, area: Rect, fmt: Fmt) -> Option<Self> {
        let mut img = Img::new(fmt, area.width(), area.height())?;
        let (l, w) = (to_idx(area.left), usize_of(area.width()));
        for y in 0..area.height() {
            let sy = to_idx(area.top) + usize_of(y);
            let start = t.idx(l, sy);
            let src = t.data.get(start..start + w)?;
            match img.row_mut(y) {
                Some(dst) => dst.copy_from_slice(src),
                None => {
                    for (x, &v) in (0..area.width()).zip(src) {
                        img.set(x, y, v >> 24);
                    }
                }
            }
        }
        Some(Self { area, img })
    }

    fn rel(&self, x: i32, y: i32) -> Option<(u32, u32)> {
        Some((
            u32::try_from(i64::from(x) - i64::from(self.area.left)).ok()?,
            u32::try_from(i64::from(y) - i64::from(self.area.top)).ok()?,
        ))
    }

    fn get(&self, x: i32, y: i32) -> u32 {
        self.rel(x, y).map_or(0, |(x, y)| self.img.get(x, y))
    }

    fn set(&mut self, x: i32, y: i32, v: u32) {
        if let Some((x, y)) = self.rel(x, y) {
            self.img.set(x, y, v);
        }
    }

    /// Offset of surface point `(x, y)` within the scratch, for pixman.
    fn off(&self, x: i32, y: i32) -> (i32, i32) {
        (
            x.saturating_sub(self.area.left),
            y.saturating_sub(self.area.top),
        )
    }

    fn write_back(&self, t: &mut Surface, region: &Region) {
        if region.mask.is_none() && self.img.fmt != Fmt::A8 {
            // Whole rows of each rectangle.
            let bounds = t.bounds();
            for r in &region.rects {
                let Some(r) = r.intersect(&bounds).and_then(|r| r.intersect(&self.area)) else {
                    continue;
                };
                let (l, w) = (to_idx(r.left), usize_of(r.width()));
                let sl = to_idx(r.left - self.area.left);
                for y in r.top..r.bottom {
                    let start = t.idx(l, to_idx(y));
                    let src = self
                        .img
                        .row(u32::try_from(y - self.area.top).unwrap_or(u32::MAX))
                        .and_then(|row| row.get(sl..sl + w));
                    if let (Some(src), Some(dst)) = (src, t.data.get_mut(start..start + w)) {
                        dst.copy_from_slice(src);
                    }
                }
            }
            return;
        }
        let fmt = self.img.fmt;
        let surface_fmt = t.format;
        region.for_each(|x, y| {
            let v = self.get(x, y);
            let v = match (fmt, surface_fmt) {
                (Fmt::A8, SurfaceFormat::A1) => {
                    if v & 0x80 != 0 {
                        0xff00_0000
                    } else {
                        0
                    }
                }
                (Fmt::A8, _) => v << 24,
                _ => v,
            };
            t.put(to_idx(x), to_idx(y), v);
        });
    }
}

/// `clear_dest_alpha`: when the first pixel of the (clamped) rectangle has an
/// opaque alpha byte, spice clears the alpha byte of the whole rectangle.
fn clear_dest_alpha(t: &mut Surface, x: i32, y: i32, w: i64, h: i64) {
    let r = Rect::new(
        x,
        y,
        i32::try_from((i64::from(x) + w).min(i64::from(i32::MAX))).unwrap_or(i32::MAX),
        i32::try_from((i64::from(y) + h).min(i64::from(i32::MAX))).unwrap_or(i32::MAX),
    );
    let Some(r) = r.intersect(&t.bounds()) else {
        return;
    };
    if t.get(to_idx(r.left), to_idx(r.top)) & 0xff00_0000 != 0xff00_0000 {
        return;
    }
    for yy in to_idx(r.top)..to_idx(r.bottom) {
        for xx in to_idx(r.left)..to_idx(r.right) {
            let v = t.get(xx, yy) & 0x00ff_ffff;
            t.put(xx, yy, v);
        }
    }
}

fn fixed(v: i64) -> pixman::Fixed {
    pixman::Fixed::from_raw(
        i32::try_from(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))).unwrap_or(0),
    )
}

/// A 16.16 matrix `[[a, 0, tx], [0, d, ty], [0, 0, 1]]`.
fn scale_transform(a: i64, tx: i64, d: i64, ty: i64) -> pixman::Transform {
    pixman::Transform::new([
        [fixed(a), fixed(0), fixed(tx)],
        [fixed(0), fixed(d), fixed(ty)],
        [fixed(0), fixed(0), fixed(65536)],
    ])
}

fn pix_size(w: i64, h: i64) -> (i32, i32) {
    (
        i32::try_from(w).unwrap_or(i32::MAX),
        i32::try_from(h).unwrap_or(i32::MAX),
    )
}

/// Geometry of a source-to-bbox copy.
#[derive(Clone, Copy)]
struct Geometry {
    bbox: Rect,
    src_area: Rect,
}

impl Geometry {
    fn same_size(&self) -> bool {
        self.bbox.width() == self.src_area.width() && self.bbox.height() == self.src_area.height()
    }

    fn dims(&self) -> (i64, i64, i64, i64) {
        (
            i64::from(self.src_area.right) - i64::from(self.src_area.left),
            i64::from(self.src_area.bottom) - i64::from(self.src_area.top),
            i64::from(self.bbox.width()),
            i64::from(self.bbox.height()),
        )
    }

    /// The `__scale_image` transform: `fs = src * 65536 / dest` (integer), then
    /// translated to the source area (and to where the source pixels start).
    fn transform(&self, src: &Img) -> Option<pixman::Transform> {
        let (sw, sh, dw, dh) = self.dims();
        if dw <= 0 || dh <= 0 {
            return None;
        }
        let fsx = i64::from(i32::try_from(sw * 65536 / dw).ok()?);
        let fsy = i64::from(i32::try_from(sh * 65536 / dh).ok()?);
        Some(scale_transform(
            fsx,
            (i64::from(self.src_area.left) - i64::from(src.ox)) * 65536,
            fsy,
            (i64::from(self.src_area.top) - i64::from(src.oy)) * 65536,
        ))
    }
}

fn scale_filter(mode: ScaleMode) -> pixman::Filter {
    match mode {
        ScaleMode::Nearest => pixman::Filter::Nearest,
        ScaleMode::Interpolate => pixman::Filter::Good,
    }
}

/// Composites `src` scaled onto `dst` (whose pixel (0, 0) is surface point
/// `dst_origin`) with pixman's SRC, as `__scale_image` does.
fn scale_src_onto(
    dst: &mut Img,
    dst_origin: (i32, i32),
    src: &mut Img,
    g: Geometry,
    filter: pixman::Filter,
) -> Option<()> {
    let t = g.transform(src)?;
    let (_, _, dw, dh) = g.dims();
    let mut s = src.pix()?;
    s.set_transform(t).ok()?;
    s.set_repeat(pixman::Repeat::None);
    s.set_filter(filter, &[]).ok()?;
    let mut d = dst.pix()?;
    let dx = i64::from(g.bbox.left) - i64::from(dst_origin.0);
    let dy = i64::from(g.bbox.top) - i64::from(dst_origin.1);
    d.composite32(
        pixman::Operation::Src,
        &s,
        None,
        (0, 0),
        (0, 0),
        pix_size(dx, dy),
        pix_size(dw, dh),
    );
    Some(())
}

// ---------------------------------------------------------------------------
// The renderer.

/// Renders one drawable into `target`. `sources` provides other surfaces.
pub fn draw(target: &mut Surface, d: &Drawable, sources: &dyn SurfaceSource) -> DrawOutcome {
    draw_with(target, d, sources, true)
}

/// [`draw`] through the general renderer only (no direct paths): the
/// reference the direct paths are tested against.
#[cfg(test)]
fn draw_general(target: &mut Surface, d: &Drawable, sources: &dyn SurfaceSource) -> DrawOutcome {
    draw_with(target, d, sources, false)
}

fn draw_with(
    target: &mut Surface,
    d: &Drawable,
    sources: &dyn SurfaceSource,
    direct: bool,
) -> DrawOutcome {
    let rects = clip_rects(&d.bbox, &d.clip, &target.bounds());
    if rects.is_empty() || matches!(d.op, DrawOp::Nop) {
        return DrawOutcome::Drawn(Vec::new());
    }
    let bw = i64::from(d.bbox.right) - i64::from(d.bbox.left);
    let bh = i64::from(d.bbox.bottom) - i64::from(d.bbox.top);
    if bw > MAX_BBOX_DIM || bh > MAX_BBOX_DIM {
        return DrawOutcome::Unsupported("bounding box too large", rects);
    }
    let r = if direct {
        match fast::try_draw(target, d, &rects, sources) {
            Some(r) => r,
            None => render(target, d, rects.clone(), sources, true),
        }
    } else {
        render(target, d, rects.clone(), sources, false)
    };
    match r {
        Ok(()) => DrawOutcome::Drawn(rects),
        Err(what) => DrawOutcome::Unsupported(what, rects),
    }
}

type DrawResult = Result<(), &'static str>;

fn region_of(rects: Vec<Rect>, mask: Option<&Mask>, bbox: &Rect) -> Result<Region, &'static str> {
    Ok(Region {
        rects,
        mask: mask_view(mask, bbox)?,
    })
}

fn render(
    t: &mut Surface,
    d: &Drawable,
    rects: Vec<Rect>,
    sources: &dyn SurfaceSource,
    direct: bool,
) -> DrawResult {
    let bbox = d.bbox;
    let canvas = Fmt::of_surface(t.format);
    match &d.op {
        DrawOp::Nop => Ok(()),
        DrawOp::Fill { brush, rop, mask } => {
            let region = region_of(rects, mask.as_ref(), &bbox)?;
            let rop = ropd_to_rop(rop.0, Ropd::INVERS_BRUSH, Ropd::INVERS_DEST);
            with_scratch(t, &region, canvas, |s| {
                draw_brush(s, &region, brush, rop, canvas, sources)
            })
        }
        DrawOp::Copy(c) | DrawOp::Blend(c) => copy(t, &bbox, rects, c, sources),
        DrawOp::Opaque {
            src,
            src_area,
            brush,
            rop,
            scale_mode,
            mask,
        } => {
            let region = region_of(rects, mask.as_ref(), &bbox)?;
            let rop = ropd_to_rop(rop.0, Ropd::INVERS_BRUSH, Ropd::INVERS_SRC);
            let g = Geometry {
                bbox,
                src_area: *src_area,
            };
            let mut src = get_image(src, Some(src_area), Want::Canvas, canvas, sources)
                .ok_or("source image")?;
            with_scratch(t, &region, canvas, |s| {
                blit_or_scale(s, &region, &mut src, g, *scale_mode, ROP_COPY)?;
                draw_brush(s, &region, brush, rop, canvas, sources)
            })
        }
        DrawOp::CopyBits { src_pos } => {
            if direct {
                fast::copy_bits(t, &bbox, &rects, *src_pos);
            } else {
                copy_bits(t, &bbox, &rects, *src_pos);
            }
            Ok(())
        }
        DrawOp::Blackness { mask } => solid(t, &bbox, rects, mask.as_ref(), 0, ROP_COPY),
        DrawOp::Whiteness { mask } => solid(t, &bbox, rects, mask.as_ref(), u32::MAX, ROP_COPY),
        DrawOp::Invers { mask } => solid(t, &bbox, rects, mask.as_ref(), 0, ROP_INVERT),
        DrawOp::Rop3 {
            src,
            src_area,
            brush,
            rop3,
            scale_mode,
            mask,
        } => {
            let region = region_of(rects, mask.as_ref(), &bbox)?;
            rop3_draw(
                t,
                &region,
                Geometry {
                    bbox,
                    src_area: *src_area,
                },
                src,
                brush,
                *rop3,
                *scale_mode,
                sources,
            )
        }
        DrawOp::Stroke {
            path,
            attr,
            brush,
            fore_mode,
            ..
        } => stroke(t, rects, path, attr, brush, *fore_mode, sources),
        DrawOp::Text {
            string,
            back_area,
            fore_brush,
            back_brush,
            fore_mode,
            ..
        } => text(
            t, rects, string, back_area, fore_brush, back_brush, *fore_mode, sources,
        ),
        DrawOp::Transparent {
            src,
            src_area,
            true_color,
            ..
        } => transparent(
            t,
            rects,
            Geometry {
                bbox,
                src_area: *src_area,
            },
            src,
            *true_color,
            sources,
        ),
        DrawOp::AlphaBlend {
            alpha_flags,
            alpha,
            src,
            src_area,
        } => alpha_blend(
            t,
            rects,
            Geometry {
                bbox,
                src_area: *src_area,
            },
            src,
            *alpha_flags,
            *alpha,
            sources,
        ),
        DrawOp::Composite {
            flags,
            src,
            src_transform,
            mask,
            mask_transform,
            src_origin,
            mask_origin,
        } => composite(
            t,
            rects,
            &bbox,
            &CompositeArgs {
                flags: *flags,
                src,
                src_transform: src_transform.as_ref(),
                mask: mask.as_deref(),
                mask_transform: mask_transform.as_ref(),
                src_origin: *src_origin,
                mask_origin: *mask_origin,
            },
            sources,
        ),
    }
}

/// Runs `f` on a scratch copy of the region's extents and writes the region back.
fn with_scratch(
    t: &mut Surface,
    region: &Region,
    fmt: Fmt,
    f: impl FnOnce(&mut Scratch) -> DrawResult,
) -> DrawResult {
    let Some(ext) = region.extents() else {
        return Ok(());
    };
    let mut s = Scratch::new(t, ext, fmt).ok_or("draw area")?;
    f(&mut s)?;
    s.write_back(t, region);
    Ok(())
}

fn solid(
    t: &mut Surface,
    bbox: &Rect,
    rects: Vec<Rect>,
    mask: Option<&Mask>,
    v: u32,
    rop: u8,
) -> DrawResult {
    let region = region_of(rects, mask, bbox)?;
    let fmt = Fmt::of_surface(t.format);
    with_scratch(t, &region, fmt, |s| {
        region.for_each(|x, y| {
            let d = s.get(x, y);
            s.set(x, y, rop_apply(rop, v, d));
        });
        Ok(())
    })
}

/// The pattern image of a brush, in the canvas format.
fn pattern_image(image: &Image, canvas: Fmt, sources: &dyn SurfaceSource) -> Option<Img> {
    let tile = get_image(image, None, Want::Canvas, canvas, sources)?;
    (tile.ox == 0 && tile.oy == 0).then_some(tile)
}

/// `draw_brush`: paints the region with a brush through a raster operation.
fn draw_brush(
    s: &mut Scratch,
    region: &Region,
    brush: &Brush,
    rop: u8,
    canvas: Fmt,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    match brush {
        Brush::None => region.for_each(|x, y| {
            let d = s.get(x, y);
            s.set(x, y, rop_apply(rop, 0, d));
        }),
        Brush::Solid(c) => region.for_each(|x, y| {
            let d = s.get(x, y);
            s.set(x, y, rop_apply(rop, *c, d));
        }),
        Brush::Pattern { image, pos } => {
            let tile = pattern_image(image, canvas, sources).ok_or("pattern image")?;
            let (tw, th) = (i64::from(tile.w), i64::from(tile.h));
            region.for_each(|x, y| {
                let tx = (i64::from(x) - i64::from(pos.x)).rem_euclid(tw);
                let ty = (i64::from(y) - i64::from(pos.y)).rem_euclid(th);
                let v = tile.get(
                    u32::try_from(tx).unwrap_or(0),
                    u32::try_from(ty).unwrap_or(0),
                );
                let d = s.get(x, y);
                s.set(x, y, rop_apply(rop, v, d));
            });
        }
    }
    Ok(())
}

/// Copies `src` (whose pixel `(sx, sy)` lands on `(sx + off_x, sy + off_y)`)
/// through `rop`, skipping destination pixels whose source lies outside it
/// (`spice_pixman_blit[_rop]`).
fn blit(s: &mut Scratch, region: &Region, src: &Img, off_x: i64, off_y: i64, rop: u8) {
    region.for_each(|x, y| {
        let sx = i64::from(x) - off_x - i64::from(src.ox);
        let sy = i64::from(y) - off_y - i64::from(src.oy);
        if let (Ok(sx), Ok(sy)) = (u32::try_from(sx), u32::try_from(sy))
            && sx < src.w
            && sy < src.h
        {
            let v = src.get(sx, sy);
            let d = s.get(x, y);
            s.set(x, y, rop_apply(rop, v, d));
        }
    });
}

/// A Copy-style transfer of `src_area` onto the bbox: a blit when sizes
/// match, else pixman scaling (directly for COPY, through a scaled copy for
/// other raster operations).
fn blit_or_scale(
    s: &mut Scratch,
    region: &Region,
    src: &mut Img,
    g: Geometry,
    mode: ScaleMode,
    rop: u8,
) -> DrawResult {
    if g.same_size() {
        let off_x = i64::from(g.bbox.left) - i64::from(g.src_area.left);
        let off_y = i64::from(g.bbox.top) - i64::from(g.src_area.top);
        blit(s, region, src, off_x, off_y, rop);
        return Ok(());
    }
    if !g.src_area.is_well_formed() || g.src_area.is_empty() {
        return Err("empty source area");
    }
    let origin = (s.area.left, s.area.top);
    if rop == ROP_COPY {
        scale_src_onto(&mut s.img, origin, src, g, scale_filter(mode)).ok_or("scaling")?;
    } else {
        let mut scaled = Img::new(src.fmt, s.area.width(), s.area.height()).ok_or("scaling")?;
        scale_src_onto(&mut scaled, origin, src, g, scale_filter(mode)).ok_or("scaling")?;
        blit(
            s,
            region,
            &scaled,
            i64::from(origin.0),
            i64::from(origin.1),
            rop,
        );
    }
    Ok(())
}

fn copy(
    t: &mut Surface,
    bbox: &Rect,
    rects: Vec<Rect>,
    c: &CopyOp,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let region = region_of(rects, c.mask.as_ref(), bbox)?;
    let canvas = Fmt::of_surface(t.format);
    let rop = ropd_to_rop(c.rop.0, Ropd::INVERS_SRC, Ropd::INVERS_DEST);
    let mut src = get_image(&c.src, Some(&c.src_area), Want::Canvas, canvas, sources)
        .ok_or("source image")?;
    let g = Geometry {
        bbox: *bbox,
        src_area: c.src_area,
    };
    with_scratch(t, &region, canvas, |s| {
        blit_or_scale(s, &region, &mut src, g, c.scale_mode, rop)
    })
}

/// COPY_BITS from a snapshot of the whole surface (the reference for
/// [`fast::copy_bits`]).
fn copy_bits(t: &mut Surface, bbox: &Rect, rects: &[Rect], src_pos: Point) {
    let dx = i64::from(src_pos.x) - i64::from(bbox.left);
    let dy = i64::from(src_pos.y) - i64::from(bbox.top);
    if dx == 0 && dy == 0 {
        return;
    }
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
                if let Some(&p) = usize::try_from(sy * w + sx)
                    .ok()
                    .and_then(|i| snapshot.get(i))
                {
                    t.put(x, y, p);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn rop3_draw(
    t: &mut Surface,
    region: &Region,
    g: Geometry,
    src: &Image,
    brush: &Brush,
    code: u8,
    mode: ScaleMode,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    let mut s_img =
        get_image(src, Some(&g.src_area), Want::Canvas, canvas, sources).ok_or("source image")?;
    let pattern = match brush {
        Brush::Pattern { image, pos } => Some((
            pattern_image(image, canvas, sources).ok_or("pattern image")?,
            *pos,
        )),
        _ => None,
    };
    let color = if let Brush::Solid(c) = brush { *c } else { 0 };
    let (width, height) = (i64::from(g.bbox.width()), i64::from(g.bbox.height()));
    let bbox = g.bbox;
    with_scratch(t, region, canvas, |s| {
        // Source pixel for bbox offset (i, j): `src_pos + (i, j)` in `src_img`.
        let (src_img, src_pos) = if g.same_size() {
            (
                &s_img,
                (i64::from(g.src_area.left), i64::from(g.src_area.top)),
            )
        } else {
            // `canvas_scale_surface`: double scale factors, truncated to 16.16,
            // and a source origin of ROUND(left / sx).
            if !g.src_area.is_well_formed() || g.src_area.is_empty() {
                return Err("empty source area");
            }
            let (sw, sh, dw, dh) = g.dims();
            #[allow(clippy::cast_precision_loss)]
            let (sx, sy) = (sw as f64 / dw as f64, sh as f64 / dh as f64);
            let to_fixed = |v: f64| {
                #[allow(clippy::cast_possible_truncation)]
                let f = (v * 65536.0) as i64;
                f
            };
            let round = |v: f64| {
                #[allow(clippy::cast_possible_truncation)]
                let r = (v + 0.5).floor() as i64;
                r
            };
            let origin_x = round(f64::from(g.src_area.left) / sx);
            let origin_y = round(f64::from(g.src_area.top) / sy);
            let mut scaled =
                Img::new(s_img.fmt, s.area.width(), s.area.height()).ok_or("scaling")?;
            let tr = scale_transform(
                to_fixed(sx),
                -i64::from(s_img.ox) * 65536,
                to_fixed(sy),
                -i64::from(s_img.oy) * 65536,
            );
            {
                let mut si = s_img.pix().ok_or("scaling")?;
                si.set_transform(tr).map_err(|_| "scaling")?;
                si.set_repeat(pixman::Repeat::None);
                si.set_filter(scale_filter(mode), &[])
                    .map_err(|_| "scaling")?;
                let mut di = scaled.pix().ok_or("scaling")?;
                let (ox, oy) = s.off(bbox.left, bbox.top);
                // Scratch pixel (u, v) is bbox offset (u - ox, v - oy).
                di.composite32(
                    pixman::Operation::Src,
                    &si,
                    None,
                    pix_size(origin_x, origin_y),
                    (0, 0),
                    (ox, oy),
                    pix_size(dw, dh),
                );
            }
            scaled.ox = 0;
            scaled.oy = 0;
            s_img = scaled;
            // Scaled pixel (u, v) is bbox offset (u - ox, v - oy).
            (
                &s_img,
                (
                    i64::from(bbox.left) - i64::from(s.area.left),
                    i64::from(bbox.top) - i64::from(s.area.top),
                ),
            )
        };
        if g.same_size()
            && (i64::from(src_img.ox) + i64::from(src_img.w) - src_pos.0 < width
                || i64::from(src_img.oy) + i64::from(src_img.h) - src_pos.1 < height)
        {
            return Err("bad ROP3 source size");
        }
        let pat = pattern.as_ref().map(|(p, pos)| {
            let px = (i64::from(bbox.left) - i64::from(pos.x)).rem_euclid(i64::from(p.w));
            let py = (i64::from(bbox.top) - i64::from(pos.y)).rem_euclid(i64::from(p.h));
            (p, px, py)
        });
        region.for_each(|x, y| {
            let i = i64::from(x) - i64::from(bbox.left);
            let j = i64::from(y) - i64::from(bbox.top);
            let sx = src_pos.0 + i - i64::from(src_img.ox);
            let sy = src_pos.1 + j - i64::from(src_img.oy);
            let sv = match (u32::try_from(sx), u32::try_from(sy)) {
                (Ok(a), Ok(b)) => src_img.get(a, b),
                _ => 0,
            };
            let pv = match &pat {
                None => color,
                Some((p, px, py)) => {
                    let u = (px + i).rem_euclid(i64::from(p.w));
                    let v = (py + j).rem_euclid(i64::from(p.h));
                    p.get(u32::try_from(u).unwrap_or(0), u32::try_from(v).unwrap_or(0))
                }
            };
            let d = s.get(x, y);
            s.set(x, y, rop3_apply(code, pv, sv, d));
        });
        Ok(())
    })
}

fn stroke(
    t: &mut Surface,
    rects: Vec<Rect>,
    path: &Path,
    attr: &LineAttr,
    brush: &Brush,
    fore_mode: u16,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    let region = Region { rects, mask: None };
    let rop = ropd_to_rop(fore_mode, Ropd::INVERS_BRUSH, Ropd::INVERS_DEST);
    let tile = match brush {
        Brush::Pattern { image, pos } => Some((
            pattern_image(image, canvas, sources).ok_or("pattern image")?,
            *pos,
        )),
        _ => None,
    };
    let color = if let Brush::Solid(c) = brush { *c } else { 0 };
    let dashes = dash_list(attr);
    let (w, h) = (
        i32::try_from(t.width).unwrap_or(i32::MAX),
        i32::try_from(t.height).unwrap_or(i32::MAX),
    );
    with_scratch(t, &region, canvas, |s| {
        let mut paint = |x: i32, y: i32| {
            if !region.contains(x, y) {
                return;
            }
            let v = match &tile {
                None => color,
                Some((p, pos)) => {
                    let u = (i64::from(x) - i64::from(pos.x)).rem_euclid(i64::from(p.w));
                    let v = (i64::from(y) - i64::from(pos.y)).rem_euclid(i64::from(p.h));
                    p.get(u32::try_from(u).unwrap_or(0), u32::try_from(v).unwrap_or(0))
                }
            };
            let d = s.get(x, y);
            s.set(x, y, rop_apply(rop, v, d));
        };
        lines::flatten(path, &mut |pts| match &dashes {
            None => lines::zero_line(w, h, pts, &mut |x, y, n| {
                for xx in x..x.saturating_add(n) {
                    paint(xx, y);
                }
            }),
            Some((list, offset)) => dashed(w, h, pts, list, *offset, &mut paint),
        });
        Ok(())
    })
}

/// The dash list and offset `canvas_draw_stroke` builds (dash lengths are
/// `fix_to_int` of the style, truncated to a byte).
fn dash_list(attr: &LineAttr) -> Option<(Vec<u32>, u32)> {
    if attr.flags & LINE_STYLED == 0 || attr.style.is_empty() {
        return None;
    }
    let byte = |f: i32| u32::from(lines::fix_to_int(f).to_le_bytes()[0]);
    let mut list: Vec<u32> = attr.style.iter().map(|&f| byte(f)).collect();
    let mut offset = 0;
    if attr.flags & LINE_START_WITH_GAP != 0 {
        list.rotate_left(1);
        offset = list.first().copied().unwrap_or(0);
    }
    if list.iter().all(|&d| d == 0) {
        return None;
    }
    Some((list, offset))
}

/// An on/off dashed polyline (approximation of spice's wide-line dashes: the
/// dash pattern is stepped along the zero-width line's pixels, one step per
/// pixel along the major axis, continuing across the polyline's segments).
fn dashed(
    w: i32,
    h: i32,
    pts: &[(i32, i32)],
    list: &[u32],
    offset: u32,
    paint: &mut dyn FnMut(i32, i32),
) {
    let total: u64 = list.iter().map(|&d| u64::from(d)).sum();
    let mut pos = u64::from(offset) % total.max(1);
    for seg in pts.windows(2) {
        let mut px: Vec<(i32, i32)> = Vec::new();
        lines::zero_line(w, h, seg, &mut |x, y, n| {
            for xx in x..x.saturating_add(n) {
                px.push((xx, y));
            }
        });
        // Walk from the segment's start point.
        let (sx, sy) = seg[0];
        px.sort_by_key(|&(x, y)| {
            (i64::from(x) - i64::from(sx)).abs() + (i64::from(y) - i64::from(sy)).abs()
        });
        for (x, y) in px {
            let mut rem = pos;
            let mut on = true;
            for &d in list.iter().cycle().take(list.len()) {
                if rem < u64::from(d) {
                    break;
                }
                rem -= u64::from(d);
                on = !on;
            }
            if on {
                paint(x, y);
            }
            pos = (pos + 1) % total.max(1);
        }
    }
}

/// `canvas_get_str_mask`: the glyphs OR-ed (A1) or max-ed (A4/A8) into one
/// mask, with its top-left corner on the destination.
fn str_mask(string: &GlyphString, bpp: u32) -> Option<(Img, i32, i32)> {
    let boxes: Vec<Rect> = string
        .glyphs
        .iter()
        .map(|g| {
            let left = g.render_pos.x.saturating_add(g.glyph_origin.x);
            let top = g.render_pos.y.saturating_add(g.glyph_origin.y);
            Rect::new(
                left,
                top,
                left.saturating_add(i32::from(g.width)),
                top.saturating_add(i32::from(g.height)),
            )
        })
        .collect();
    let first = *boxes.first()?;
    let b = boxes.iter().fold(first, |a, r| union_box(&a, r));
    let mut mask = Img::new(
        if bpp == 1 { Fmt::A1 } else { Fmt::A8 },
        b.width(),
        b.height(),
    )?;
    for (g, gb) in string.glyphs.iter().zip(&boxes) {
        let (gw, lines) = (u32::from(g.width), u32::from(g.height));
        let x0 = u32::try_from(i64::from(gb.left) - i64::from(b.left)).ok()?;
        let y0 = u32::try_from(i64::from(gb.top) - i64::from(b.top)).ok()?;
        let stride = usize_of((gw * bpp).div_ceil(8));
        for r in 0..lines {
            // spice reads glyph rows bottom-up whatever the TOP_DOWN flag says;
            // its A8 path starts one row past the data.
            let src_row = if bpp == 8 { lines - r } else { lines - 1 - r };
            let row = g.data.get(usize_of(src_row) * stride..).unwrap_or(&[]);
            for x in 0..gw {
                let xi = usize_of(x);
                let byte = |i: usize| row.get(i).copied().unwrap_or(0);
                let v = match bpp {
                    1 => u32::from((byte(xi / 8) >> (7 - x % 8)) & 1),
                    4 => {
                        let b8 = byte(xi / 2);
                        u32::from(if x % 2 == 0 { b8 & 0xf0 } else { b8 << 4 })
                    }
                    _ => {
                        if src_row >= lines {
                            0
                        } else {
                            u32::from(byte(xi))
                        }
                    }
                };
                let old = mask.get(x0 + x, y0 + r);
                mask.set(x0 + x, y0 + r, if bpp == 1 { old | v } else { old.max(v) });
            }
        }
    }
    Some((mask, b.left, b.top))
}

#[allow(clippy::too_many_arguments)]
fn text(
    t: &mut Surface,
    rects: Vec<Rect>,
    string: &GlyphString,
    back_area: &Rect,
    fore_brush: &Brush,
    back_brush: &Brush,
    fore_mode: u16,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    let region = Region { rects, mask: None };
    if !back_area.is_empty() {
        if fore_mode != Ropd::OP_PUT {
            // spice gives up on the whole draw.
            return Ok(());
        }
        let back = region.intersect(back_area);
        with_scratch(t, &back, canvas, |s| {
            draw_brush(s, &back, back_brush, ROP_COPY, canvas, sources)
        })?;
    }
    let bpp = if string.flags & STRING_RASTER_A1 != 0 {
        1
    } else if string.flags & STRING_RASTER_A4 != 0 {
        4
    } else if string.flags & STRING_RASTER_A8 != 0 {
        8
    } else {
        return Ok(());
    };
    let mut brush = match fore_brush {
        Brush::None => return Ok(()),
        Brush::Solid(c) => Err(*c),
        Brush::Pattern { image, pos } => Ok((
            pattern_image(image, canvas, sources).ok_or("pattern image")?,
            *pos,
        )),
    };
    let Some((mut mask, mx, my)) = str_mask(string, bpp) else {
        return Ok(());
    };
    let (mw, mh) = (i64::from(mask.w), i64::from(mask.h));
    with_scratch(t, &region, canvas, |s| {
        let m = mask.pix().ok_or("glyph mask")?;
        let (dx, dy) = s.off(mx, my);
        let size = pix_size(mw, mh);
        let mut d = s.img.pix().ok_or("draw area")?;
        match &mut brush {
            Err(c) => {
                let ch = |shift: u32| {
                    let v = u16::try_from((*c >> shift) & 0xff).unwrap_or(0);
                    v * 0x101
                };
                let solid = pixman::Solid::new(pixman::Color::new(ch(16), ch(8), ch(0), 0xffff))
                    .map_err(|_| "brush")?;
                d.composite32(
                    pixman::Operation::Over,
                    &solid,
                    Some(&m),
                    (0, 0),
                    (0, 0),
                    (dx, dy),
                    size,
                );
            }
            Ok((tile, pos)) => {
                let mut p = tile.pix().ok_or("pattern image")?;
                p.set_transform(scale_transform(
                    65536,
                    -i64::from(pos.x) * 65536,
                    65536,
                    -i64::from(pos.y) * 65536,
                ))
                .map_err(|_| "pattern image")?;
                p.set_repeat(pixman::Repeat::Normal);
                d.composite32(
                    pixman::Operation::Over,
                    &p,
                    Some(&m),
                    (0, 0),
                    (0, 0),
                    (dx, dy),
                    size,
                );
            }
        }
        Ok(())
    })?;
    if t.format == SurfaceFormat::Xrgb32 {
        clear_dest_alpha(t, mx, my, mw, mh);
    }
    Ok(())
}

fn transparent(
    t: &mut Surface,
    rects: Vec<Rect>,
    g: Geometry,
    src: &Image,
    true_color: u32,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    let region = Region { rects, mask: None };
    let mut src =
        get_image(src, Some(&g.src_area), Want::Canvas, canvas, sources).ok_or("source image")?;
    let key = true_color & 0x00ff_ffff;
    with_scratch(t, &region, canvas, |s| {
        let (img, off_x, off_y) = if g.same_size() {
            (
                src,
                i64::from(g.bbox.left) - i64::from(g.src_area.left),
                i64::from(g.bbox.top) - i64::from(g.src_area.top),
            )
        } else {
            if !g.src_area.is_well_formed() || g.src_area.is_empty() {
                return Err("empty source area");
            }
            let mut scaled = Img::new(src.fmt, s.area.width(), s.area.height()).ok_or("scaling")?;
            let origin = (s.area.left, s.area.top);
            scale_src_onto(&mut scaled, origin, &mut src, g, pixman::Filter::Nearest)
                .ok_or("scaling")?;
            (scaled, i64::from(origin.0), i64::from(origin.1))
        };
        region.for_each(|x, y| {
            let sx = i64::from(x) - off_x - i64::from(img.ox);
            let sy = i64::from(y) - off_y - i64::from(img.oy);
            if let (Ok(sx), Ok(sy)) = (u32::try_from(sx), u32::try_from(sy))
                && sx < img.w
                && sy < img.h
            {
                let v = img.get(sx, sy);
                if v & 0x00ff_ffff != key {
                    s.set(x, y, v);
                }
            }
        });
        Ok(())
    })
}

/// `SPICE_ALPHA_FLAGS_DEST_HAS_ALPHA`.
const ALPHA_DEST_HAS_ALPHA: u16 = 1;
/// `SPICE_ALPHA_FLAGS_SRC_SURFACE_HAS_ALPHA`.
const ALPHA_SRC_SURFACE_HAS_ALPHA: u16 = 2;

fn alpha_blend(
    t: &mut Surface,
    rects: Vec<Rect>,
    g: Geometry,
    src_image: &Image,
    flags: u16,
    alpha: u8,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    if alpha == 0 {
        return Ok(());
    }
    let canvas = Fmt::of_surface(t.format);
    let dest_has_alpha = flags & ALPHA_DEST_HAS_ALPHA != 0;
    let fmt = if dest_has_alpha && t.format == SurfaceFormat::Xrgb32 {
        Fmt::A8r8g8b8
    } else {
        canvas
    };
    let region = Region { rects, mask: None };
    let mut src = get_image(
        src_image,
        Some(&g.src_area),
        Want::Original,
        canvas,
        sources,
    )
    .ok_or("source image")?;
    if matches!(src_image.data, ImageData::Surface(_))
        && flags & ALPHA_SRC_SURFACE_HAS_ALPHA != 0
        && src.fmt == Fmt::X8r8g8b8
    {
        src.fmt = Fmt::A8r8g8b8;
    }
    let (_, _, bw, bh) = g.dims();
    let same = g.same_size();
    let tr = if same {
        None
    } else {
        if !g.src_area.is_well_formed() || g.src_area.is_empty() {
            return Err("empty source area");
        }
        Some(g.transform(&src).ok_or("scaling")?)
    };
    let src_origin = if same {
        pix_size(
            i64::from(g.src_area.left) - i64::from(src.ox),
            i64::from(g.src_area.top) - i64::from(src.oy),
        )
    } else {
        (0, 0)
    };
    with_scratch(t, &region, fmt, |s| {
        let mask = if alpha == 0xff {
            None
        } else {
            Some(
                pixman::Solid::new(pixman::Color::new(0, 0, 0, u16::from(alpha) * 0x101))
                    .map_err(|_| "alpha")?,
            )
        };
        let (dx, dy) = s.off(g.bbox.left, g.bbox.top);
        let mut si = src.pix().ok_or("source image")?;
        si.set_repeat(pixman::Repeat::None);
        if let Some(tr) = tr {
            si.set_transform(tr).map_err(|_| "scaling")?;
            si.set_filter(pixman::Filter::Nearest, &[])
                .map_err(|_| "scaling")?;
        }
        let mut d = s.img.pix().ok_or("draw area")?;
        d.composite32(
            pixman::Operation::Over,
            &si,
            mask.as_deref(),
            src_origin,
            (0, 0),
            (dx, dy),
            pix_size(bw, bh),
        );
        Ok(())
    })?;
    if t.format == SurfaceFormat::Xrgb32 && !dest_has_alpha {
        clear_dest_alpha(t, g.bbox.left, g.bbox.top, bw, bh);
    }
    Ok(())
}

/// A DRAW_COMPOSITE's parameters.
struct CompositeArgs<'a> {
    flags: u32,
    src: &'a Image,
    src_transform: Option<&'a Transform>,
    mask: Option<&'a Image>,
    mask_transform: Option<&'a Transform>,
    src_origin: Point16,
    mask_origin: Point16,
}

/// `SPICE_COMPOSITE_SOURCE_OPAQUE`.
const COMPOSITE_SOURCE_OPAQUE: u32 = 1 << 22;

fn pix_transform(t: &Transform) -> pixman::Transform {
    let v = |i: usize| pixman::Fixed::from_raw(t.0.get(i).copied().unwrap_or(0).cast_signed());
    pixman::Transform::new([
        [v(0), v(1), v(2)],
        [v(3), v(4), v(5)],
        [fixed(0), fixed(0), fixed(65536)],
    ])
}

fn filter_of(v: u32) -> Option<pixman::Filter> {
    Some(match v {
        0 => pixman::Filter::Fast,
        1 => pixman::Filter::Good,
        2 => pixman::Filter::Best,
        3 => pixman::Filter::Nearest,
        4 => pixman::Filter::Bilinear,
        _ => return None,
    })
}

fn repeat_of(v: u32) -> pixman::Repeat {
    match v {
        1 => pixman::Repeat::Normal,
        2 => pixman::Repeat::Pad,
        3 => pixman::Repeat::Reflect,
        _ => pixman::Repeat::None,
    }
}

/// Sets up a composite source or mask image as `canvas_draw_composite` does.
fn setup(
    img: &mut pixman::Image<'_, 'static>,
    tr: Option<&Transform>,
    filter: u32,
    repeat: u32,
) -> DrawResult {
    if let Some(tr) = tr {
        img.set_transform(pix_transform(tr))
            .map_err(|_| "composite transform")?;
    }
    if let Some(f) = filter_of(filter) {
        img.set_filter(f, &[]).map_err(|_| "composite filter")?;
    }
    img.set_repeat(repeat_of(repeat));
    Ok(())
}

fn composite_image(
    image: &Image,
    canvas: Fmt,
    opaque: bool,
    sources: &dyn SurfaceSource,
) -> Option<Img> {
    let img = get_image(image, None, Want::Canvas, canvas, sources)?;
    Some(if opaque && matches!(image.data, ImageData::Surface(_)) {
        img.opaque()
    } else {
        img
    })
}

fn composite(
    t: &mut Surface,
    rects: Vec<Rect>,
    bbox: &Rect,
    a: &CompositeArgs<'_>,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    let region = Region { rects, mask: None };
    let bits = |lo: u32, hi: u32| (a.flags >> lo) & ((1 << (hi - lo)) - 1);
    let op = pixman::Operation::try_from(bits(0, 8)).map_err(|_| "composite operator")?;
    let mut src = composite_image(
        a.src,
        canvas,
        a.flags & COMPOSITE_SOURCE_OPAQUE != 0,
        sources,
    )
    .ok_or("source image")?;
    let mut mask = match a.mask {
        Some(m) => Some(composite_image(m, canvas, false, sources).ok_or("mask image")?),
        None => None,
    };
    let size = pix_size(i64::from(bbox.width()), i64::from(bbox.height()));
    with_scratch(t, &region, canvas, |s| {
        let mut si = src.pix().ok_or("source image")?;
        setup(&mut si, a.src_transform, bits(8, 11), bits(14, 16))?;
        let mi = match &mut mask {
            Some(m) => {
                let mut mi = m.pix().ok_or("mask image")?;
                setup(&mut mi, a.mask_transform, bits(11, 14), bits(16, 18))?;
                mi.set_component_alpha(bits(18, 19) != 0);
                Some(mi)
            }
            None => None,
        };
        let (dx, dy) = s.off(bbox.left, bbox.top);
        let mut d = s.img.pix().ok_or("draw area")?;
        d.composite32(
            op,
            &si,
            mi.as_deref(),
            (i32::from(a.src_origin.x), i32::from(a.src_origin.y)),
            (i32::from(a.mask_origin.x), i32::from(a.mask_origin.y)),
            (dx, dy),
            size,
        );
        Ok(())
    })
}

/// Converts `area` of an image into 32-bit pixels as the canvas sees it.
pub fn decode_image(img: &Image, area: &Rect, sources: &dyn SurfaceSource) -> Option<Pixels> {
    let full = get_image(img, Some(area), Want::Canvas, Fmt::X8r8g8b8, sources)?;
    let r = area.intersect(&Rect::new(
        full.ox,
        full.oy,
        full.ox.saturating_add(i32::try_from(full.w).ok()?),
        full.oy.saturating_add(i32::try_from(full.h).ok()?),
    ))?;
    if r != *area {
        return None;
    }
    let mut data = Vec::with_capacity(usize_of(r.width()).checked_mul(usize_of(r.height()))?);
    for y in r.top..r.bottom {
        for x in r.left..r.right {
            let v = full.get(
                u32::try_from(i64::from(x) - i64::from(full.ox)).ok()?,
                u32::try_from(i64::from(y) - i64::from(full.oy)).ok()?,
            );
            data.push(if full.fmt == Fmt::A8 { v << 24 } else { v });
        }
    }
    Some(Pixels {
        width: r.width(),
        height: r.height(),
        data,
    })
}
#[cfg(test)]
mod tests;
