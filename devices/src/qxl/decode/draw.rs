//! `QXLDrawable` (191 bytes) and `QXLCompatDrawable` (128 bytes) decoding.
//!
//! The drawable is copied with one read; every payload field is parsed from
//! that copy at the packed offsets of `qxl_dev.h`. Payload offsets below are
//! relative to the start of the payload union (`u`), which is at 123 in
//! `QXLDrawable` and at 60 in `QXLCompatDrawable`; the payload structs are the
//! same in both except `QXLCompatAlphaBlend`, which lacks `alpha_flags`.
//!
//! Referenced structures (clip lists, images, brushes' patterns, masks, paths,
//! line styles, glyph strings, transforms) are each copied once as well.

use spice_server::command::{
    Brush, COMPOSITE_HAS_MASK, COMPOSITE_HAS_MASK_TRANSFORM, COMPOSITE_HAS_SRC_TRANSFORM, Clip,
    CopyOp, DrawOp, Drawable, GlyphString, ImageData, LINE_STYLED, LineAttr, Mask, Path, PathSeg,
    Point, PointFix, RasterGlyph, Rect, Ropd, STRING_RASTER_A1, STRING_RASTER_A4, STRING_RASTER_A8,
    ScaleMode, Transform,
};

use super::image::decode_image;
use super::{
    COMPAT_DRAWABLE_SIZE, Ctx, DRAWABLE_SIZE, QXL_COMMAND_FLAG_COMPAT, color_16_to_32, point16_at,
    rect_at,
};
use crate::error::{Error, Result};
use crate::qxl::chunks::{ChunkHeader, ChunkStart, phys_add};
use crate::qxl::guest::{GuestView, le};

/// Offset of the payload union in `QXLDrawable`.
pub const DRAWABLE_PAYLOAD: usize = 123;
/// Offset of the payload union in `QXLCompatDrawable`.
pub const COMPAT_DRAWABLE_PAYLOAD: usize = 60;

/// `QXL_DRAW_*` numbers.
mod ty {
    pub const NOP: u8 = 0;
    pub const FILL: u8 = 1;
    pub const OPAQUE: u8 = 2;
    pub const COPY: u8 = 3;
    pub const COPY_BITS: u8 = 4;
    pub const BLEND: u8 = 5;
    pub const BLACKNESS: u8 = 6;
    pub const WHITENESS: u8 = 7;
    pub const INVERS: u8 = 8;
    pub const ROP3: u8 = 9;
    pub const STROKE: u8 = 10;
    pub const TEXT: u8 = 11;
    pub const TRANSPARENT: u8 = 12;
    pub const ALPHA_BLEND: u8 = 13;
    pub const COMPOSITE: u8 = 14;
}

/// `SPICE_CLIP_TYPE_NONE`.
pub const CLIP_TYPE_NONE: u32 = 0;
/// `SPICE_CLIP_TYPE_RECTS`.
pub const CLIP_TYPE_RECTS: u32 = 1;
/// `SPICE_BRUSH_TYPE_NONE`.
pub const BRUSH_TYPE_NONE: u32 = 0;
/// `SPICE_BRUSH_TYPE_SOLID`.
pub const BRUSH_TYPE_SOLID: u32 = 1;
/// `SPICE_BRUSH_TYPE_PATTERN`.
pub const BRUSH_TYPE_PATTERN: u32 = 2;

/// A `QXLPoint` at `off` of a host copy.
fn point_at(b: &[u8], off: usize) -> Point {
    Point {
        x: le::i32_at(b, off),
        y: le::i32_at(b, off + 4),
    }
}

/// The bytes of `b` from `off` (empty when out of range; callers size `b` from
/// the layout tables so this never truncates in practice).
fn tail(b: &[u8], off: usize) -> &[u8] {
    b.get(off..).unwrap_or_default()
}

/// Decode the drawable at `phys` (compat layout when the command flags say so).
pub(crate) fn decode_drawable<V: GuestView + ?Sized>(
    ctx: &mut Ctx<'_, V>,
    phys: u64,
) -> Result<Drawable> {
    if ctx.flags & QXL_COMMAND_FLAG_COMPAT != 0 {
        decode_compat(ctx, phys)
    } else {
        decode_native(ctx, phys)
    }
}

fn decode_native<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Drawable> {
    let b: [u8; DRAWABLE_SIZE] = ctx.read_array(phys)?;
    let surface_id = le::u32_at(&b, 8);
    ctx.check_surface_id(surface_id)?;
    let effect = le::u8_at(&b, 12);
    let kind = le::u8_at(&b, 13);
    let self_bitmap = (le::u8_at(&b, 14) != 0).then(|| rect_at(&b, 15));
    let bbox = rect_at(&b, 31);
    let mut surfaces_dest = [-1i32; 3];
    let mut surfaces_rects = [Rect::default(); 3];
    for (i, (dest, rect)) in surfaces_dest
        .iter_mut()
        .zip(surfaces_rects.iter_mut())
        .enumerate()
    {
        *dest = le::i32_at(&b, 63 + 4 * i);
        *rect = rect_at(&b, 75 + 16 * i);
        if *dest != -1 {
            let id = u32::try_from(*dest).map_err(|_| Error::InvalidValue {
                field: "QXLDrawable.surfaces_dest",
                value: u64::from(dest.unsigned_abs()),
            })?;
            ctx.check_surface_id(id)?;
        }
    }
    let clip = decode_clip(ctx, le::u32_at(&b, 47), le::u64_at(&b, 51))?;
    let op = decode_op(ctx, kind, tail(&b, DRAWABLE_PAYLOAD), false)?;
    Ok(Drawable {
        surface_id,
        effect,
        self_bitmap: if matches!(op, DrawOp::Copy(_) | DrawOp::Blend(_)) {
            // spice-server resets it for COPY and BLEND: some drivers set it by mistake.
            None
        } else {
            self_bitmap
        },
        bbox,
        clip,
        mm_time: le::u32_at(&b, 59),
        surfaces_dest,
        surfaces_rects,
        op,
    })
}

fn decode_compat<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Drawable> {
    let b: [u8; COMPAT_DRAWABLE_SIZE] = ctx.read_array(phys)?;
    let effect = le::u8_at(&b, 8);
    let kind = le::u8_at(&b, 9);
    let self_bitmap = (le::u16_at(&b, 10) != 0).then(|| rect_at(&b, 12));
    let bbox = rect_at(&b, 28);
    let clip = decode_clip(ctx, le::u32_at(&b, 44), le::u64_at(&b, 48))?;
    let op = decode_op(ctx, kind, tail(&b, COMPAT_DRAWABLE_PAYLOAD), true)?;
    let mut surfaces_dest = [-1i32; 3];
    let mut surfaces_rects = [Rect::default(); 3];
    if let DrawOp::CopyBits { src_pos } = op {
        // A compat COPY_BITS reads the area of surface 0 it copies from.
        let w = i64::from(bbox.right) - i64::from(bbox.left);
        let h = i64::from(bbox.bottom) - i64::from(bbox.top);
        let edge = |start: i32, len: i64| {
            i32::try_from(i64::from(start) + len)
                .map_err(|_| Error::Malformed("compat COPY_BITS source area"))
        };
        surfaces_dest[0] = 0;
        surfaces_rects[0] = Rect {
            top: src_pos.y,
            left: src_pos.x,
            bottom: edge(src_pos.y, h)?,
            right: edge(src_pos.x, w)?,
        };
    }
    Ok(Drawable {
        surface_id: 0,
        effect,
        self_bitmap: if matches!(op, DrawOp::Copy(_) | DrawOp::Blend(_)) {
            None
        } else {
            self_bitmap
        },
        bbox,
        clip,
        mm_time: le::u32_at(&b, 56),
        surfaces_dest,
        surfaces_rects,
        op,
    })
}

/// Decode the payload `u` (a host copy starting at the union) of a drawable of type `kind`.
fn decode_op<V: GuestView + ?Sized>(
    ctx: &mut Ctx<'_, V>,
    kind: u8,
    u: &[u8],
    compat: bool,
) -> Result<DrawOp> {
    Ok(match kind {
        ty::NOP => DrawOp::Nop,
        ty::FILL => DrawOp::Fill {
            brush: decode_brush(ctx, u)?,
            rop: Ropd(le::u16_at(u, 20)),
            mask: decode_mask(ctx, tail(u, 22))?,
        },
        ty::OPAQUE => DrawOp::Opaque {
            src: Box::new(decode_image(ctx, le::u64_at(u, 0), false)?),
            src_area: rect_at(u, 8),
            brush: decode_brush(ctx, tail(u, 24))?,
            rop: Ropd(le::u16_at(u, 44)),
            scale_mode: scale_mode(le::u8_at(u, 46))?,
            mask: decode_mask(ctx, tail(u, 47))?,
        },
        ty::COPY => DrawOp::Copy(decode_copy(ctx, u)?),
        ty::BLEND => DrawOp::Blend(decode_copy(ctx, u)?),
        ty::COPY_BITS => DrawOp::CopyBits {
            src_pos: point_at(u, 0),
        },
        ty::BLACKNESS => DrawOp::Blackness {
            mask: decode_mask(ctx, u)?,
        },
        ty::WHITENESS => DrawOp::Whiteness {
            mask: decode_mask(ctx, u)?,
        },
        ty::INVERS => DrawOp::Invers {
            mask: decode_mask(ctx, u)?,
        },
        ty::ROP3 => DrawOp::Rop3 {
            src: Box::new(decode_image(ctx, le::u64_at(u, 0), false)?),
            src_area: rect_at(u, 8),
            brush: decode_brush(ctx, tail(u, 24))?,
            rop3: le::u8_at(u, 44),
            scale_mode: scale_mode(le::u8_at(u, 45))?,
            mask: decode_mask(ctx, tail(u, 46))?,
        },
        ty::STROKE => DrawOp::Stroke {
            path: decode_path(ctx, le::u64_at(u, 0))?,
            attr: decode_line_attr(ctx, tail(u, 8))?,
            brush: decode_brush(ctx, tail(u, 28))?,
            fore_mode: le::u16_at(u, 48),
            back_mode: le::u16_at(u, 50),
        },
        ty::TEXT => DrawOp::Text {
            string: decode_string(ctx, le::u64_at(u, 0))?,
            back_area: rect_at(u, 8),
            fore_brush: decode_brush(ctx, tail(u, 24))?,
            back_brush: decode_brush(ctx, tail(u, 44))?,
            fore_mode: le::u16_at(u, 64),
            back_mode: le::u16_at(u, 66),
        },
        ty::TRANSPARENT => DrawOp::Transparent {
            src: Box::new(decode_image(ctx, le::u64_at(u, 0), false)?),
            src_area: rect_at(u, 8),
            src_color: le::u32_at(u, 24),
            true_color: le::u32_at(u, 28),
        },
        ty::ALPHA_BLEND if compat => DrawOp::AlphaBlend {
            alpha_flags: 0,
            alpha: le::u8_at(u, 0),
            src: Box::new(decode_image(ctx, le::u64_at(u, 1), false)?),
            src_area: rect_at(u, 9),
        },
        ty::ALPHA_BLEND => DrawOp::AlphaBlend {
            alpha_flags: le::u16_at(u, 0),
            alpha: le::u8_at(u, 2),
            src: Box::new(decode_image(ctx, le::u64_at(u, 3), false)?),
            src_area: rect_at(u, 11),
        },
        // spice-server's compat parser has no COMPOSITE either.
        ty::COMPOSITE if !compat => decode_composite(ctx, u)?,
        other => {
            return Err(Error::InvalidValue {
                field: "QXLDrawable.type",
                value: u64::from(other),
            });
        }
    })
}

/// `SpiceImageScaleMode`: INTERPOLATE 0, NEAREST 1; anything else is an error.
fn scale_mode(v: u8) -> Result<ScaleMode> {
    match v {
        0 => Ok(ScaleMode::Interpolate),
        1 => Ok(ScaleMode::Nearest),
        other => Err(Error::InvalidValue {
            field: "scale_mode",
            value: u64::from(other),
        }),
    }
}

/// `QXLCopy` (COPY and BLEND), with spice-server's source-area checks: the
/// area must not be inverted nor start at a negative coordinate, and for a
/// bitmap source must lie inside the bitmap.
fn decode_copy<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, u: &[u8]) -> Result<CopyOp> {
    let src = decode_image(ctx, le::u64_at(u, 0), false)?;
    let src_area = rect_at(u, 8);
    if src_area.left < 0
        || src_area.left > src_area.right
        || src_area.top < 0
        || src_area.top > src_area.bottom
    {
        return Err(Error::Malformed("copy source area"));
    }
    if let ImageData::Bitmap(bm) = &src.data {
        let right = u32::try_from(src_area.right).unwrap_or(u32::MAX);
        let bottom = u32::try_from(src_area.bottom).unwrap_or(u32::MAX);
        if right > bm.width || bottom > bm.height {
            return Err(Error::Malformed("copy source area outside the bitmap"));
        }
    }
    Ok(CopyOp {
        src: Box::new(src),
        src_area,
        rop: Ropd(le::u16_at(u, 24)),
        scale_mode: scale_mode(le::u8_at(u, 26))?,
        mask: decode_mask(ctx, tail(u, 27))?,
    })
}

/// `QXLComposite`. The `COMPOSITE_HAS_*` bits are derived from the pointers
/// only: bits the guest set itself are cleared (stricter than spice-server,
/// which only ORs them in, so a renderer can trust them). A mask transform is
/// read only when there is a mask, as spice-server does.
fn decode_composite<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, u: &[u8]) -> Result<DrawOp> {
    let mut flags = le::u32_at(u, 0)
        & !(COMPOSITE_HAS_MASK | COMPOSITE_HAS_SRC_TRANSFORM | COMPOSITE_HAS_MASK_TRANSFORM);
    let src = Box::new(decode_image(ctx, le::u64_at(u, 4), false)?);
    let src_transform = decode_transform(ctx, le::u64_at(u, 12))?;
    if src_transform.is_some() {
        flags |= COMPOSITE_HAS_SRC_TRANSFORM;
    }
    let mask_phys = le::u64_at(u, 20);
    let (mask, mask_transform) = if mask_phys != 0 {
        flags |= COMPOSITE_HAS_MASK;
        let m = Box::new(decode_image(ctx, mask_phys, false)?);
        let t = decode_transform(ctx, le::u64_at(u, 28))?;
        if t.is_some() {
            flags |= COMPOSITE_HAS_MASK_TRANSFORM;
        }
        (Some(m), t)
    } else {
        (None, None)
    };
    Ok(DrawOp::Composite {
        flags,
        src,
        src_transform,
        mask,
        mask_transform,
        src_origin: point16_at(u, 36),
        mask_origin: point16_at(u, 40),
    })
}

/// A `QXLTransform` (24 bytes) at `phys`, `None` for a null pointer. Unlike
/// spice-server, an untranslatable non-null pointer is an error, not "no transform".
fn decode_transform<V: GuestView + ?Sized>(
    ctx: &mut Ctx<'_, V>,
    phys: u64,
) -> Result<Option<Transform>> {
    if phys == 0 {
        return Ok(None);
    }
    let b: [u8; 24] = ctx.read_array(phys)?;
    let mut t = [0u32; 6];
    for (i, v) in t.iter_mut().enumerate() {
        *v = le::u32_at(&b, 4 * i);
    }
    Ok(Some(Transform(t)))
}

/// A `QXLBrush` (20 bytes) at the start of `b`.
fn decode_brush<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, b: &[u8]) -> Result<Brush> {
    match le::u32_at(b, 0) {
        BRUSH_TYPE_NONE => Ok(Brush::None),
        BRUSH_TYPE_SOLID => {
            let c = le::u32_at(b, 4);
            Ok(Brush::Solid(if ctx.compat_16bpp() {
                color_16_to_32(c)
            } else {
                c
            }))
        }
        BRUSH_TYPE_PATTERN => Ok(Brush::Pattern {
            image: Box::new(decode_image(ctx, le::u64_at(b, 4), false)?),
            pos: point_at(b, 12),
        }),
        other => Err(Error::InvalidValue {
            field: "QXLBrush.type",
            value: u64::from(other),
        }),
    }
}

/// A `QXLQMask` (17 bytes) at the start of `b`; a null bitmap means no mask.
fn decode_mask<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, b: &[u8]) -> Result<Option<Mask>> {
    let bitmap = le::u64_at(b, 9);
    if bitmap == 0 {
        return Ok(None);
    }
    Ok(Some(Mask {
        flags: le::u8_at(b, 0),
        pos: point_at(b, 1),
        bitmap: Box::new(decode_image(ctx, bitmap, true)?),
    }))
}

/// A `QXLClip`: NONE, or RECTS pointing at a `QXLClipRects` (num_rects u32 @0,
/// embedded chunk @4) whose chain holds exactly `num_rects * 16` bytes. Other
/// clip types are errors (spice-server handles only these two).
fn decode_clip<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, kind: u32, data: u64) -> Result<Clip> {
    match kind {
        CLIP_TYPE_NONE => Ok(Clip::None),
        CLIP_TYPE_RECTS => {
            if data == 0 {
                return Err(Error::NullPointer("QXLClip.data"));
            }
            let h: [u8; 24] = ctx.read_array(data)?;
            let num = le::u32_at(&h, 0);
            if num > ctx.limits.max_clip_rects {
                return Err(Error::TooLarge {
                    what: "clip rects",
                    size: u64::from(num),
                    cap: u64::from(ctx.limits.max_clip_rects),
                });
            }
            let first = ChunkStart::Embedded {
                header: ChunkHeader::parse(tail(&h, 4)),
                data: phys_add(data, 24)?,
            };
            let bytes = ctx.read_chain("clip rects", first, u64::from(num) * 16)?;
            Ok(Clip::Rects(
                bytes.chunks_exact(16).map(|c| rect_at(c, 0)).collect(),
            ))
        }
        other => Err(Error::InvalidValue {
            field: "QXLClip.type",
            value: u64::from(other),
        }),
    }
}

/// A `QXLPath` (data_size u32 @0, embedded chunk @4): the chain holds exactly
/// `data_size` bytes of back-to-back `QXLPathSeg {flags u32, count u32,
/// QXLPointFix points[count]}`.
///
/// Stricter than spice-server, which silently ignores a trailing fragment
/// shorter than a segment header (and a final zero-point segment): here the
/// segments must consume the data exactly.
fn decode_path<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Path> {
    if phys == 0 {
        return Err(Error::NullPointer("QXLStroke.path"));
    }
    let h: [u8; 24] = ctx.read_array(phys)?;
    let size = u64::from(le::u32_at(&h, 0));
    let first = ChunkStart::Embedded {
        header: ChunkHeader::parse(tail(&h, 4)),
        data: phys_add(phys, 24)?,
    };
    let data = ctx.read_chain("path", first, size)?;
    let mut segments = Vec::new();
    let mut points_total: u64 = 0;
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let (head, body) = rest
            .split_at_checked(8)
            .ok_or(Error::Malformed("path segment header"))?;
        if segments.len() >= usize::try_from(ctx.limits.max_path_segments).unwrap_or(usize::MAX) {
            return Err(Error::TooLarge {
                what: "path segments",
                size: u64::try_from(segments.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1),
                cap: u64::from(ctx.limits.max_path_segments),
            });
        }
        let flags = le::u32_at(head, 0);
        let count = le::u32_at(head, 4);
        let len = usize::try_from(u64::from(count) * 8).map_err(|_| Error::Overflow("path"))?;
        let (pts, next) = body
            .split_at_checked(len)
            .ok_or(Error::Malformed("path segment points past the data"))?;
        points_total = points_total.saturating_add(u64::from(count));
        if points_total > ctx.limits.max_path_points {
            return Err(Error::TooLarge {
                what: "path points",
                size: points_total,
                cap: ctx.limits.max_path_points,
            });
        }
        segments.push(PathSeg {
            flags,
            points: pts
                .chunks_exact(8)
                .map(|p| PointFix {
                    x: le::i32_at(p, 0),
                    y: le::i32_at(p, 4),
                })
                .collect(),
        });
        rest = next;
    }
    Ok(Path { segments })
}

/// A `QXLLineAttr` (20 bytes) at the start of `b`. When `STYLED`, `style_nseg`
/// 28.4 dash lengths are read at `style` (a null pointer with a non-zero
/// `style_nseg` is an error); otherwise the style is empty.
fn decode_line_attr<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, b: &[u8]) -> Result<LineAttr> {
    let flags = le::u8_at(b, 0);
    let nseg = le::u8_at(b, 3);
    let style_phys = le::u64_at(b, 12);
    let style = if flags & LINE_STYLED != 0 && nseg > 0 {
        if style_phys == 0 {
            return Err(Error::NullPointer("QXLLineAttr.style"));
        }
        let bytes = ctx.read_vec("line style", style_phys, u64::from(nseg) * 4)?;
        bytes.chunks_exact(4).map(|c| le::i32_at(c, 0)).collect()
    } else {
        Vec::new()
    };
    Ok(LineAttr {
        flags,
        join_style: le::u8_at(b, 1),
        end_style: le::u8_at(b, 2),
        width: le::i32_at(b, 4),
        miter_limit: le::i32_at(b, 8),
        style,
    })
}

/// A `QXLString` (data_size u32 @0, length u16 @4, flags u16 @6, embedded
/// chunk @8): exactly one of RASTER_A1/A4/A8, the chain holds exactly
/// `data_size` bytes of back-to-back `QXLRasterGlyph`s (20-byte header, then
/// `height * ceil(width * bpp / 8)` bytes), which must be consumed exactly by
/// exactly `length` glyphs.
fn decode_string<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<GlyphString> {
    if phys == 0 {
        return Err(Error::NullPointer("QXLText.str"));
    }
    let h: [u8; 28] = ctx.read_array(phys)?;
    let size = u64::from(le::u32_at(&h, 0));
    let length = le::u16_at(&h, 4);
    let flags = le::u16_at(&h, 6);
    let bpp: u64 = match flags & (STRING_RASTER_A1 | STRING_RASTER_A4 | STRING_RASTER_A8) {
        STRING_RASTER_A1 => 1,
        STRING_RASTER_A4 => 4,
        STRING_RASTER_A8 => 8,
        _ => {
            return Err(Error::InvalidValue {
                field: "QXLString.flags",
                value: u64::from(flags),
            });
        }
    };
    if u32::from(length) > ctx.limits.max_glyphs {
        return Err(Error::TooLarge {
            what: "glyphs",
            size: u64::from(length),
            cap: u64::from(ctx.limits.max_glyphs),
        });
    }
    let first = ChunkStart::Embedded {
        header: ChunkHeader::parse(tail(&h, 8)),
        data: phys_add(phys, 28)?,
    };
    let data = ctx.read_chain("glyph string", first, size)?;
    let mut glyphs = Vec::new();
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        if glyphs.len() >= usize::from(length) {
            return Err(Error::Malformed(
                "glyph string holds more glyphs than its length",
            ));
        }
        let (head, body) = rest
            .split_at_checked(20)
            .ok_or(Error::Malformed("glyph header past the data"))?;
        let width = le::u16_at(head, 16);
        let height = le::u16_at(head, 18);
        let glyph_size = u64::from(height) * (u64::from(width) * bpp).div_ceil(8);
        let len = usize::try_from(glyph_size).map_err(|_| Error::Overflow("glyph"))?;
        let (pixels, next) = body
            .split_at_checked(len)
            .ok_or(Error::Malformed("glyph data past the data"))?;
        glyphs.push(RasterGlyph {
            render_pos: point_at(head, 0),
            glyph_origin: point_at(head, 8),
            width,
            height,
            data: pixels.to_vec(),
        });
        rest = next;
    }
    if glyphs.len() != usize::from(length) {
        return Err(Error::Malformed(
            "glyph count differs from the string length",
        ));
    }
    Ok(GlyphString { flags, glyphs })
}
