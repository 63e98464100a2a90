//! Direct paths for the common draws on 32-bit surfaces: they write the
//! surface's rows in place (no scratch copy; the region is walked as runs of
//! pixels: clip rectangles' rows, cut by the mask when there is one) and give byte-identical results to the general renderer
//! (`tests.rs` runs random draws through both and compares the surfaces).
//!
//! * FILL with a solid, empty or pattern brush and every raster operation;
//! * BLACKNESS, WHITENESS, INVERS;
//! * unscaled COPY/BLEND of a bitmap (32-bit, 24-bit and palette bitmaps are
//!   decoded row by row straight into the surface; other images go through
//!   the general conversion and are then blitted by rows).

use crate::command::{
    BitmapFormat, Brush, CopyOp, DrawOp, Drawable, IMAGE_FLAG_HIGH_BITS_SET, ImageData, Mask,
    Point, Rect, Ropd,
};

use super::img::{self, Fmt, Img, Want, get_image};
use super::{
    DrawResult, Geometry, MaskView, ROP_COPY, ROP_INVERT, Surface, SurfaceSource, mask_view,
    pattern_image, rop_apply, ropd_to_rop, to_idx, union_box, usize_of,
};

/// `dst[i] = rop(src[i], dst[i])`, monomorphised per operation.
fn rop_row_n<const R: u8>(dst: &mut [u32], src: &[u32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = rop_apply(R, s, *d);
    }
}

/// `dst[i] = rop(c, dst[i])`, monomorphised per operation.
fn rop_const_n<const R: u8>(dst: &mut [u32], c: u32) {
    for d in dst.iter_mut() {
        *d = rop_apply(R, c, *d);
    }
}

macro_rules! dispatch_rop {
    ($rop:expr, $f:ident, $($arg:expr),*) => {
        match $rop {
            0 => $f::<0>($($arg),*),
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*),
            14 => $f::<14>($($arg),*),
            _ => $f::<15>($($arg),*),
        }
    };
}

/// Applies a raster operation of a source row onto a destination row (the
/// shorter length of the two).
pub(super) fn rop_row(rop: u8, dst: &mut [u32], src: &[u32]) {
    if rop == ROP_COPY {
        let n = dst.len().min(src.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        return;
    }
    dispatch_rop!(rop, rop_row_n, dst, src);
}

/// Applies a raster operation of a constant onto a destination row.
pub(super) fn rop_const(rop: u8, dst: &mut [u32], c: u32) {
    match rop {
        0 => dst.fill(0),
        ROP_COPY => dst.fill(c),
        15 => dst.fill(u32::MAX),
        _ => dispatch_rop!(rop, rop_const_n, dst, c),
    }
}

/// Row `y`, columns `l..r` of the surface (all inside the surface).
fn row_mut(t: &mut Surface, y: usize, l: usize, r: usize) -> Option<&mut [u32]> {
    let base = y.checked_mul(usize_of(t.width))?;
    t.data.get_mut(base + l..base + r)
}

/// Calls `f(x, y, pixels)` for every run of pixels the region allows: the
/// rows of every rectangle (clipped to the surface), cut into the runs the
/// mask selects when there is one (`x`: the run's first column).
fn for_spans(
    t: &mut Surface,
    rects: &[Rect],
    mask: Option<&MaskView>,
    mut f: impl FnMut(i32, i32, &mut [u32]),
) {
    let bounds = t.bounds();
    for r in rects {
        let Some(r) = r.intersect(&bounds) else {
            continue;
        };
        let (l, rr) = (to_idx(r.left), to_idx(r.right));
        for y in r.top..r.bottom {
            let Some(row) = row_mut(t, to_idx(y), l, rr) else {
                continue;
            };
            let Some(m) = mask else {
                f(r.left, y, row);
                continue;
            };
            // Outside the mask nothing is drawn (inverted or not).
            let my = i64::from(y) - m.dy;
            let Some(bits) = u32::try_from(my).ok().and_then(|my| m.bits.raw_row(my)) else {
                continue;
            };
            let mw = i64::from(m.bits.w);
            let allowed = |x: i64| {
                let mx = x - m.dx;
                (0..mw).contains(&mx) && {
                    let mx = usize::try_from(mx).unwrap_or(0);
                    let bit = bits.get(mx / 32).is_some_and(|w| (w >> (mx % 32)) & 1 != 0);
                    bit != m.invert
                }
            };
            let (x0, x1) = (i64::from(r.left), i64::from(r.right));
            let mut x = x0;
            while x < x1 {
                if !allowed(x) {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < x1 && allowed(x) {
                    x += 1;
                }
                let (a, e) = (
                    usize::try_from(start - x0).unwrap_or(0),
                    usize::try_from(x - x0).unwrap_or(0),
                );
                if let Some(run) = row.get_mut(a..e) {
                    f(i32::try_from(start).unwrap_or(0), y, run);
                }
            }
        }
    }
}

/// Whether the direct paths apply to this surface (32-bit canvas formats).
fn direct_surface(t: &Surface) -> bool {
    matches!(Fmt::of_surface(t.format), Fmt::X8r8g8b8 | Fmt::A8r8g8b8)
}

/// Renders `d` directly when a direct path exists (`None`: use the general
/// renderer). `rects` are the clip's rectangles inside the surface.
pub(super) fn try_draw(
    t: &mut Surface,
    d: &Drawable,
    rects: &[Rect],
    sources: &dyn SurfaceSource,
) -> Option<DrawResult> {
    if !direct_surface(t) {
        return None;
    }
    let mask = |m: Option<&Mask>| mask_view(m, &d.bbox);
    match &d.op {
        DrawOp::Fill {
            brush,
            rop,
            mask: m,
        } => {
            let m = match mask(m.as_ref()) {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let rop = ropd_to_rop(rop.0, Ropd::INVERS_BRUSH, Ropd::INVERS_DEST);
            Some(fill(t, rects, m.as_ref(), brush, rop, sources))
        }
        DrawOp::Blackness { mask: m } => {
            Some(mask(m.as_ref()).map(|m| constant(t, rects, m.as_ref(), 0, ROP_COPY)))
        }
        DrawOp::Whiteness { mask: m } => {
            Some(mask(m.as_ref()).map(|m| constant(t, rects, m.as_ref(), u32::MAX, ROP_COPY)))
        }
        DrawOp::Invers { mask: m } => {
            Some(mask(m.as_ref()).map(|m| constant(t, rects, m.as_ref(), 0, ROP_INVERT)))
        }
        DrawOp::Copy(c) | DrawOp::Blend(c) => {
            if !(Geometry {
                bbox: d.bbox,
                src_area: c.src_area,
            })
            .same_size()
            {
                return None;
            }
            let m = match mask(c.mask.as_ref()) {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            copy(t, &d.bbox, rects, m.as_ref(), c, sources)
        }
        _ => None,
    }
}

fn constant(t: &mut Surface, rects: &[Rect], mask: Option<&MaskView>, v: u32, rop: u8) {
    for_spans(t, rects, mask, |_, _, row| rop_const(rop, row, v));
}

fn fill(
    t: &mut Surface,
    rects: &[Rect],
    mask: Option<&MaskView>,
    brush: &Brush,
    rop: u8,
    sources: &dyn SurfaceSource,
) -> DrawResult {
    let canvas = Fmt::of_surface(t.format);
    match brush {
        Brush::None => {
            constant(t, rects, mask, 0, rop);
            Ok(())
        }
        Brush::Solid(c) => {
            constant(t, rects, mask, *c, rop);
            Ok(())
        }
        Brush::Pattern { image, pos } => {
            let tile = pattern_image(image, canvas, sources).ok_or("pattern image")?;
            if !matches!(tile.fmt, Fmt::X8r8g8b8 | Fmt::A8r8g8b8) {
                // Not produced for 32-bit canvases; refuse rather than guess.
                return Err("pattern image");
            }
            let (tw, th) = (i64::from(tile.w), i64::from(tile.h));
            let mut buf: Vec<u32> = Vec::new();
            for_spans(t, rects, mask, |left, y, row| {
                let ty = (i64::from(y) - i64::from(pos.y)).rem_euclid(th);
                let Some(trow) = tile.row(u32::try_from(ty).unwrap_or(0)) else {
                    return;
                };
                let tx0 = (i64::from(left) - i64::from(pos.x)).rem_euclid(tw);
                let tx0 = usize::try_from(tx0).unwrap_or(0);
                buf.clear();
                buf.extend(trow.iter().cycle().skip(tx0).take(row.len()));
                rop_row(rop, row, &buf);
            });
            Ok(())
        }
    }
}

/// Unscaled COPY/BLEND.
fn copy(
    t: &mut Surface,
    bbox: &Rect,
    rects: &[Rect],
    mask: Option<&MaskView>,
    c: &CopyOp,
    sources: &dyn SurfaceSource,
) -> Option<DrawResult> {
    let canvas = Fmt::of_surface(t.format);
    let rop = ropd_to_rop(c.rop.0, Ropd::INVERS_SRC, Ropd::INVERS_DEST);
    // Destination point (x, y) reads source pixel (x - off_x, y - off_y).
    let off_x = i64::from(bbox.left) - i64::from(c.src_area.left);
    let off_y = i64::from(bbox.top) - i64::from(c.src_area.top);
    if let ImageData::Bitmap(b) = &c.src.data
        && img::row_decodable(b.format)
    {
        let Some(rows) = img::BitmapRows::new(b) else {
            return Some(Err("source image"));
        };
        let high = c.src.flags & IMAGE_FLAG_HIGH_BITS_SET != 0 && b.format != BitmapFormat::Rgba;
        let (w, h) = (i64::from(b.width), i64::from(b.height));
        let mut buf: Vec<u32> = Vec::new();
        for_spans(t, rects, mask, |left, y, row| {
            let sy = i64::from(y) - off_y;
            if sy < 0 || sy >= h {
                return;
            }
            // Columns whose source lies inside the bitmap.
            let sx0 = i64::from(left) - off_x;
            let len = i64::try_from(row.len()).unwrap_or(0);
            let a = (-sx0).clamp(0, len);
            let e = (w - sx0).clamp(a, len);
            let (Ok(a), Ok(e)) = (usize::try_from(a), usize::try_from(e)) else {
                return;
            };
            let Some(dst) = row.get_mut(a..e) else {
                return;
            };
            let sx = usize::try_from(sx0 + i64::try_from(a).unwrap_or(0)).unwrap_or(0);
            let sy = u32::try_from(sy).unwrap_or(0);
            if rop == ROP_COPY && !high {
                rows.decode(sy, sx, dst);
            } else {
                buf.clear();
                buf.resize(dst.len(), 0);
                rows.decode(sy, sx, &mut buf);
                if high {
                    for v in &mut buf {
                        *v |= 0xff00_0000;
                    }
                }
                rop_row(rop, dst, &buf);
            }
        });
        return Some(Ok(()));
    }
    let Some(src) = get_image(&c.src, Some(&c.src_area), Want::Canvas, canvas, sources) else {
        return Some(Err("source image"));
    };
    if !matches!(src.fmt, Fmt::X8r8g8b8 | Fmt::A8r8g8b8) {
        return None;
    }
    Some(blit_img(t, rects, mask, &src, off_x, off_y, rop))
}

/// `blit` by rows: `src`'s pixel `(sx, sy)` (of the image it was taken from)
/// lands on `(sx + off_x, sy + off_y)`; pixels outside `src` are skipped.
fn blit_img(
    t: &mut Surface,
    rects: &[Rect],
    mask: Option<&MaskView>,
    src: &Img,
    off_x: i64,
    off_y: i64,
    rop: u8,
) -> DrawResult {
    let ox = off_x + i64::from(src.ox);
    let oy = off_y + i64::from(src.oy);
    let (w, h) = (i64::from(src.w), i64::from(src.h));
    for_spans(t, rects, mask, |left, y, row| {
        let sy = i64::from(y) - oy;
        if sy < 0 || sy >= h {
            return;
        }
        let sx0 = i64::from(left) - ox;
        let len = i64::try_from(row.len()).unwrap_or(0);
        let a = (-sx0).clamp(0, len);
        let e = (w - sx0).clamp(a, len);
        let (Ok(a), Ok(e)) = (usize::try_from(a), usize::try_from(e)) else {
            return;
        };
        let sx = usize::try_from(sx0 + i64::try_from(a).unwrap_or(0)).unwrap_or(0);
        let Some(srow) = src.row(u32::try_from(sy).unwrap_or(0)) else {
            return;
        };
        if let (Some(dst), Some(s)) = (row.get_mut(a..e), srow.get(sx..sx + (e - a))) {
            rop_row(rop, dst, s);
        }
    });
    Ok(())
}

/// COPY_BITS: the destination rectangles take the pixels at `src_pos`
/// (relative to the bbox's corner) as they were before the draw; pixels
/// whose source lies outside the surface are left alone. One rectangle is
/// moved in place (rows in the order that reads each before it is
/// overwritten, `memmove` within a row); several are read from a snapshot of
/// their sources' extents.
pub(super) fn copy_bits(t: &mut Surface, bbox: &Rect, rects: &[Rect], src_pos: Point) {
    let dx = i64::from(src_pos.x) - i64::from(bbox.left);
    let dy = i64::from(src_pos.y) - i64::from(bbox.top);
    if dx == 0 && dy == 0 {
        return;
    }
    let bounds = t.bounds();
    let w = usize_of(t.width);
    // (destination rectangle, source rectangle), both inside the surface.
    let moves: Vec<(Rect, Rect)> = rects
        .iter()
        .filter_map(|r| {
            let r = r.intersect(&bounds)?;
            let s = shift(&r, dx, dy)?.intersect(&bounds)?;
            Some((shift(&s, -dx, -dy)?, s))
        })
        .collect();
    if let [(d, s)] = moves.as_slice() {
        let n = usize_of(d.width());
        let rows: Vec<i32> = if dy > 0 {
            (d.top..d.bottom).collect()
        } else {
            (d.top..d.bottom).rev().collect()
        };
        for y in rows {
            let sy = y + (s.top - d.top);
            let from = to_idx(sy) * w + to_idx(s.left);
            let to = to_idx(y) * w + to_idx(d.left);
            if from + n <= t.data.len() && to + n <= t.data.len() {
                t.data.copy_within(from..from + n, to);
            }
        }
        return;
    }
    let Some(first) = moves.first().map(|m| m.1) else {
        return;
    };
    let ext = moves.iter().fold(first, |a, m| union_box(&a, &m.1));
    let ew = usize_of(ext.width());
    let mut snap = Vec::with_capacity(ew * usize_of(ext.height()));
    for y in ext.top..ext.bottom {
        let start = to_idx(y) * w + to_idx(ext.left);
        if let Some(row) = t.data.get(start..start + ew) {
            snap.extend_from_slice(row);
        }
    }
    for (d, s) in &moves {
        let n = usize_of(d.width());
        for y in d.top..d.bottom {
            let sy = y + (s.top - d.top);
            let from = to_idx(sy - ext.top) * ew + to_idx(s.left - ext.left);
            let to = to_idx(y) * w + to_idx(d.left);
            if let (Some(src), Some(dst)) = (snap.get(from..from + n), t.data.get_mut(to..to + n)) {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// `r` moved by `(dx, dy)`; `None` when that leaves the `i32` range.
fn shift(r: &Rect, dx: i64, dy: i64) -> Option<Rect> {
    let m = |v: i32, d: i64| i32::try_from(i64::from(v) + d).ok();
    Some(Rect::new(
        m(r.left, dx)?,
        m(r.top, dy)?,
        m(r.right, dx)?,
        m(r.bottom, dy)?,
    ))
}
