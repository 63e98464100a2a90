//! Drawables: every draw type, compat mode, and the `clip_rects_*`, `path_*`
//! and `string_*` rows (spice 2571cec5, 3dd93a1f, caec52dc, a447c4f2).

use spice_server::command::{
    Brush, COMPOSITE_HAS_MASK, COMPOSITE_HAS_MASK_TRANSFORM, COMPOSITE_HAS_SRC_TRANSFORM, Clip,
    Command, CopyOp, DrawOp, GlyphString, Image, ImageData, LINE_START_WITH_GAP, LINE_STYLED,
    LineAttr, Mask, Path, PathSeg, Point, Point16, PointFix, RasterGlyph, Rect, Ropd,
    STRING_RASTER_A1, STRING_RASTER_A4, STRING_RASTER_A8, STRING_RASTER_TOP_DOWN, ScaleMode,
    Transform,
};

use super::{Fx, bitmap_image, copy_of, drawable, palette_image, pattern};
use crate::error::Error;
use crate::qxl::chunks::phys_add;
use crate::qxl::decode::{QXL_CMD_DRAW, QXL_COMMAND_FLAG_COMPAT, QXL_COMMAND_FLAG_COMPAT_16BPP};
use crate::qxl::guest::le;
use crate::qxl::mock::encode::{EncodeOptions, write_embedded_chain};

fn mask() -> Option<Mask> {
    Some(Mask {
        flags: 1,
        pos: Point { x: -1, y: 2 },
        bitmap: Box::new(bitmap_image(3, 2)),
    })
}

fn pattern_brush() -> Brush {
    Brush::Pattern {
        image: Box::new(palette_image(4, 4)),
        pos: Point { x: 5, y: -6 },
    }
}

fn stroke_path() -> Path {
    Path {
        segments: vec![
            PathSeg {
                flags: 1,
                points: vec![PointFix { x: 0, y: 0 }, PointFix { x: 160, y: -16 }],
            },
            PathSeg {
                flags: 2 | 8 | 16,
                points: vec![],
            },
            PathSeg {
                flags: 16,
                points: (0..9).map(|i| PointFix { x: i, y: -i }).collect(),
            },
        ],
    }
}

fn glyphs(flags: u16, bpp: u32) -> GlyphString {
    GlyphString {
        flags,
        glyphs: [(0u16, 0u16), (1, 1), (7, 3), (9, 2), (16, 16)]
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| RasterGlyph {
                render_pos: Point {
                    x: i32::try_from(i).unwrap() * 10,
                    y: 20,
                },
                glyph_origin: Point {
                    x: 0,
                    y: -i32::from(h),
                },
                width: w,
                height: h,
                data: pattern(
                    usize::from(h) * usize::try_from((u32::from(w) * bpp).div_ceil(8)).unwrap(),
                ),
            })
            .collect(),
    }
}

/// One example of every draw type.
pub(super) fn all_ops() -> Vec<DrawOp> {
    let area = Rect::new(0, 0, 2, 2);
    vec![
        DrawOp::Nop,
        DrawOp::Fill {
            brush: Brush::Solid(0x00ab_cdef),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
        DrawOp::Fill {
            brush: pattern_brush(),
            rop: Ropd(Ropd::OP_XOR | Ropd::INVERS_BRUSH),
            mask: mask(),
        },
        DrawOp::Opaque {
            src: Box::new(bitmap_image(3, 3)),
            src_area: area,
            brush: pattern_brush(),
            rop: Ropd(Ropd::OP_AND),
            scale_mode: ScaleMode::Interpolate,
            mask: mask(),
        },
        copy_of(bitmap_image(6, 2)),
        DrawOp::Blend(CopyOp {
            src: Box::new(palette_image(3, 3)),
            src_area: Rect::new(1, 1, 3, 3),
            rop: Ropd(Ropd::OP_OR),
            scale_mode: ScaleMode::Interpolate,
            mask: mask(),
        }),
        DrawOp::CopyBits {
            src_pos: Point { x: 7, y: -3 },
        },
        DrawOp::Blackness { mask: mask() },
        DrawOp::Whiteness { mask: None },
        DrawOp::Invers { mask: mask() },
        DrawOp::Rop3 {
            src: Box::new(bitmap_image(2, 5)),
            src_area: area,
            brush: Brush::Solid(7),
            rop3: 0xca,
            scale_mode: ScaleMode::Nearest,
            mask: mask(),
        },
        DrawOp::Stroke {
            path: stroke_path(),
            attr: LineAttr {
                flags: LINE_STYLED | LINE_START_WITH_GAP,
                join_style: 2,
                end_style: 1,
                width: 32,
                miter_limit: 10 << 4,
                style: vec![16, 48, -1, i32::MAX],
            },
            brush: Brush::Solid(0xff),
            fore_mode: Ropd::OP_PUT,
            back_mode: Ropd::OP_OR,
        },
        DrawOp::Stroke {
            path: Path::default(),
            attr: LineAttr::default(),
            brush: Brush::None,
            fore_mode: 0,
            back_mode: 0,
        },
        DrawOp::Text {
            string: glyphs(STRING_RASTER_A1 | STRING_RASTER_TOP_DOWN, 1),
            back_area: Rect::new(0, 0, 50, 20),
            fore_brush: Brush::Solid(0),
            back_brush: pattern_brush(),
            fore_mode: Ropd::OP_PUT,
            back_mode: Ropd::OP_PUT,
        },
        DrawOp::Text {
            string: glyphs(STRING_RASTER_A4, 4),
            back_area: Rect::default(),
            fore_brush: Brush::Solid(1),
            back_brush: Brush::None,
            fore_mode: 1,
            back_mode: 2,
        },
        DrawOp::Text {
            string: glyphs(STRING_RASTER_A8, 8),
            back_area: Rect::default(),
            fore_brush: Brush::Solid(1),
            back_brush: Brush::None,
            fore_mode: 1,
            back_mode: 2,
        },
        DrawOp::Transparent {
            src: Box::new(bitmap_image(4, 4)),
            src_area: area,
            src_color: 0x00ff_00ff,
            true_color: 0x00ff_00fe,
        },
        DrawOp::AlphaBlend {
            alpha_flags: 3,
            alpha: 0x80,
            src: Box::new(bitmap_image(2, 2)),
            src_area: area,
        },
        DrawOp::Composite {
            flags: 3
                | (1 << 8)
                | (2 << 14)
                | COMPOSITE_HAS_MASK
                | COMPOSITE_HAS_SRC_TRANSFORM
                | COMPOSITE_HAS_MASK_TRANSFORM,
            src: Box::new(bitmap_image(2, 2)),
            src_transform: Some(Transform([1 << 16, 0, 5, 0, 1 << 16, u32::MAX])),
            mask: Some(Box::new(bitmap_image(2, 1))),
            mask_transform: Some(Transform([1, 2, 3, 4, 5, 6])),
            src_origin: Point16 { x: -3, y: 4 },
            mask_origin: Point16 { x: 5, y: -6 },
        },
        DrawOp::Composite {
            flags: 0x0d,
            src: Box::new(Image {
                id: 0,
                flags: 0,
                width: 8,
                height: 8,
                data: ImageData::Surface(3),
            }),
            src_transform: None,
            mask: None,
            mask_transform: None,
            src_origin: Point16::default(),
            mask_origin: Point16::default(),
        },
    ]
}

#[test]
fn draw_every_type_roundtrip() {
    let mut fx = Fx::new();
    let ops = all_ops();
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        seen.insert(op.type_id());
        let mut d = drawable(op);
        d.surface_id = 3;
        d.effect = 7;
        d.clip = Clip::Rects(vec![Rect::new(0, 0, 1, 1), Rect::new(-5, -5, 100, 100)]);
        d.surfaces_dest = [3, -1, 1023];
        d.surfaces_rects = [
            Rect::new(1, 2, 3, 4),
            Rect::default(),
            Rect::new(-1, -2, 3, 4),
        ];
        if !matches!(d.op, DrawOp::Copy(_) | DrawOp::Blend(_)) {
            d.self_bitmap = Some(Rect::new(0, 0, 8, 8));
        }
        fx.assert_roundtrip(&Command::Draw(d));
    }
    assert_eq!(seen.len(), 15, "NOP and all 14 draw types");
}

#[test]
fn draw_compat_roundtrip() {
    let mut fx = Fx::new();
    let opts = EncodeOptions {
        compat: true,
        chunk_size: Some(7),
        ..EncodeOptions::default()
    };
    for op in all_ops() {
        let mut d = drawable(op);
        if let DrawOp::AlphaBlend { alpha_flags, .. } = &mut d.op {
            *alpha_flags = 0; // QXLCompatAlphaBlend has none
        }
        if matches!(d.op, DrawOp::Composite { .. }) {
            // No COMPOSITE in compat mode.
            let (p, ty) = fx.encode(&Command::Draw(d), &opts);
            assert!(matches!(
                fx.decode(ty, p, QXL_COMMAND_FLAG_COMPAT),
                Err(Error::InvalidValue { .. })
            ));
            continue;
        }
        if !matches!(d.op, DrawOp::Copy(_) | DrawOp::Blend(_)) {
            d.self_bitmap = Some(Rect::new(1, 1, 2, 2));
        }
        if let DrawOp::CopyBits { src_pos } = d.op {
            // The decoder derives the dependency on surface 0.
            d.surfaces_dest[0] = 0;
            d.surfaces_rects[0] = Rect::new(src_pos.x, src_pos.y, src_pos.x + 4, src_pos.y + 4);
        }
        d.clip = Clip::Rects(vec![Rect::new(0, 0, 1, 1)]);
        let got = fx.roundtrip_with(&Command::Draw(d.clone()), &opts).unwrap();
        assert_eq!(got, Command::Draw(d));
    }
}

#[test]
fn draw_compat_16bpp_solid_colors() {
    let mut fx = Fx::new();
    let d = drawable(DrawOp::Fill {
        brush: Brush::Solid(0x7c1f),
        rop: Ropd(8),
        mask: None,
    });
    let opts = EncodeOptions {
        compat: true,
        ..EncodeOptions::default()
    };
    let (p, ty) = fx.encode(&Command::Draw(d), &opts);
    let got = fx
        .decode(
            ty,
            p,
            QXL_COMMAND_FLAG_COMPAT | QXL_COMMAND_FLAG_COMPAT_16BPP,
        )
        .unwrap();
    let Command::Draw(got) = got.command else {
        panic!()
    };
    assert!(matches!(
        got.op,
        DrawOp::Fill {
            brush: Brush::Solid(0x00ff_00ff),
            ..
        }
    ));
}

#[test]
fn draw_self_bitmap_forced_off_for_copy_and_blend() {
    let mut fx = Fx::new();
    let mut d = drawable(copy_of(bitmap_image(2, 2)));
    d.self_bitmap = Some(Rect::new(0, 0, 2, 2));
    let got = fx
        .roundtrip_with(&Command::Draw(d.clone()), &EncodeOptions::default())
        .unwrap();
    d.self_bitmap = None;
    assert_eq!(got, Command::Draw(d));
}

#[test]
fn draw_copy_source_area_checks() {
    let mut fx = Fx::new();
    for area in [
        Rect::new(-1, 0, 2, 2),
        Rect::new(0, -1, 2, 2),
        Rect::new(2, 0, 1, 2),
        Rect::new(0, 2, 2, 1),
        Rect::new(0, 0, 5, 2),
        Rect::new(0, 0, 4, 3),
    ] {
        let op = DrawOp::Copy(CopyOp {
            src: Box::new(bitmap_image(4, 2)),
            src_area: area,
            rop: Ropd(8),
            scale_mode: ScaleMode::Nearest,
            mask: None,
        });
        let (p, ty) = fx.encode(&Command::Draw(drawable(op)), &EncodeOptions::default());
        assert!(
            matches!(fx.decode(ty, p, 0), Err(Error::Malformed(_))),
            "{area:?}"
        );
    }
}

#[test]
fn draw_composite_flags_derived_from_pointers() {
    let mut fx = Fx::new();
    let op = DrawOp::Composite {
        flags: 0x0d
            | COMPOSITE_HAS_MASK
            | COMPOSITE_HAS_SRC_TRANSFORM
            | COMPOSITE_HAS_MASK_TRANSFORM,
        src: Box::new(bitmap_image(1, 1)),
        src_transform: None,
        mask: None,
        mask_transform: Some(Transform([9; 6])),
        src_origin: Point16::default(),
        mask_origin: Point16::default(),
    };
    let got = fx
        .roundtrip_with(&Command::Draw(drawable(op)), &EncodeOptions::default())
        .unwrap();
    let Command::Draw(d) = got else { panic!() };
    let DrawOp::Composite {
        flags,
        mask_transform,
        ..
    } = d.op
    else {
        panic!()
    };
    assert_eq!(flags, 0x0d, "guest HAS_* bits without pointers are cleared");
    assert_eq!(mask_transform, None, "no mask transform without a mask");
}

#[test]
fn draw_bad_transform_pointer() {
    let mut fx = Fx::new();
    let op = DrawOp::Composite {
        flags: 0,
        src: Box::new(bitmap_image(1, 1)),
        src_transform: None,
        mask: None,
        mask_transform: None,
        src_origin: Point16::default(),
        mask_origin: Point16::default(),
    };
    let (p, ty) = fx.encode(&Command::Draw(drawable(op)), &EncodeOptions::default());
    fx.write(
        phys_add(p, 123 + 12).unwrap(),
        &Fx::phys(super::SLOT1_SIZE - 23).to_le_bytes(),
    );
    assert!(matches!(
        fx.decode(ty, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
}

/// Encode `d`, then overwrite bytes at `off` of the drawable.
fn patched(
    fx: &mut Fx,
    d: &spice_server::command::Drawable,
    off: u64,
    bytes: &[u8],
) -> crate::error::Result<Command> {
    let (p, ty) = fx.encode(&Command::Draw(d.clone()), &EncodeOptions::default());
    fx.write(phys_add(p, off).unwrap(), bytes);
    fx.decode(ty, p, 0).map(|d| d.command)
}

#[test]
fn draw_invalid_enums() {
    let mut fx = Fx::new();
    let fill = drawable(DrawOp::Fill {
        brush: Brush::Solid(1),
        rop: Ropd(8),
        mask: None,
    });
    // Draw type 15 and 255.
    for t in [15u8, 255] {
        assert!(matches!(
            patched(&mut fx, &fill, 13, &[t]),
            Err(Error::InvalidValue {
                field: "QXLDrawable.type",
                ..
            })
        ));
    }
    // Brush type 3.
    assert!(matches!(
        patched(&mut fx, &fill, 123, &[3, 0, 0, 0]),
        Err(Error::InvalidValue {
            field: "QXLBrush.type",
            ..
        })
    ));
    // Clip type 2 (SPICE_CLIP_TYPE_PATH does not exist on QXL).
    assert!(matches!(
        patched(&mut fx, &fill, 47, &[2, 0, 0, 0]),
        Err(Error::InvalidValue {
            field: "QXLClip.type",
            ..
        })
    ));
    // Scale mode 2.
    let copy = drawable(copy_of(bitmap_image(1, 1)));
    assert!(matches!(
        patched(&mut fx, &copy, 123 + 26, &[2]),
        Err(Error::InvalidValue {
            field: "scale_mode",
            ..
        })
    ));
    // Null pattern image.
    let pat = drawable(DrawOp::Fill {
        brush: pattern_brush(),
        rop: Ropd(8),
        mask: None,
    });
    assert_eq!(
        patched(&mut fx, &pat, 127, &[0; 8]),
        Err(Error::NullPointer("image"))
    );
}

#[test]
fn draw_surface_ids_checked() {
    let mut fx = Fx::new();
    let mut d = drawable(DrawOp::Nop);
    d.surface_id = 1024;
    let (p, ty) = fx.encode(&Command::Draw(d), &EncodeOptions::default());
    assert_eq!(
        fx.decode(ty, p, 0),
        Err(Error::SurfaceIdOutOfRange {
            id: 1024,
            max: 1024
        })
    );
    for bad in [-2i32, i32::MIN, 1024] {
        let mut d = drawable(DrawOp::Nop);
        d.surfaces_dest = [-1, -1, bad];
        let (p, ty) = fx.encode(&Command::Draw(d), &EncodeOptions::default());
        assert!(fx.decode(ty, p, 0).is_err(), "{bad}");
    }
}

#[test]
fn draw_struct_at_slot_end() {
    let mut fx = Fx::new();
    let (p, _) = fx.encode(
        &Command::Draw(drawable(DrawOp::Nop)),
        &EncodeOptions::default(),
    );
    let mut b = [0u8; 191];
    crate::qxl::guest::GuestView::read_bytes(&fx.mem, fx.slots.translate(p, 191).unwrap(), &mut b)
        .unwrap();
    let at = Fx::phys(super::SLOT1_SIZE - 191);
    fx.write(at, &b);
    fx.decode(QXL_CMD_DRAW, at, 0).unwrap();
    let at = Fx::phys(super::SLOT1_SIZE - 190);
    assert!(matches!(
        fx.decode(QXL_CMD_DRAW, at, 0),
        Err(Error::OutsideSlot { .. })
    ));
    // The compat layout is 128 bytes.
    let at = Fx::phys(super::SLOT1_SIZE - 128);
    fx.write(at, &[0u8; 128]);
    fx.decode(QXL_CMD_DRAW, at, QXL_COMMAND_FLAG_COMPAT)
        .unwrap();
}

// ---- clip rects -------------------------------------------------------------

/// A raw QXLClipRects with `num` in the header and `data` in its chain.
fn clip_rects_raw(
    fx: &mut Fx,
    num: u32,
    data: &[u8],
    split: Option<usize>,
) -> crate::error::Result<Command> {
    let p = write_embedded_chain(&fx.mem, &mut fx.heap, &num.to_le_bytes(), data, split).unwrap();
    let mut d = drawable(DrawOp::Nop);
    d.clip = Clip::Rects(vec![]);
    let mut patch = [0u8; 12];
    le::put_u32(&mut patch, 0, 1);
    le::put_u64(&mut patch, 4, p);
    patched(fx, &d, 47, &patch)
}

#[test]
fn clip_rects_roundtrip_many_chunks() {
    let mut fx = Fx::new();
    let rects: Vec<Rect> = (0..1000).map(|i| Rect::new(i, -i, i + 3, i * 2)).collect();
    let mut d = drawable(DrawOp::Nop);
    d.clip = Clip::Rects(rects);
    fx.assert_roundtrip(&Command::Draw(d.clone()));
    let opts = EncodeOptions {
        chunk_size: Some(17),
        ..EncodeOptions::default()
    };
    assert_eq!(
        fx.roundtrip_with(&Command::Draw(d.clone()), &opts).unwrap(),
        Command::Draw(d)
    );
    let mut empty = drawable(DrawOp::Nop);
    empty.clip = Clip::Rects(vec![]);
    fx.assert_roundtrip(&Command::Draw(empty));
}

#[test]
fn clip_rects_count_must_match_data() {
    let mut fx = Fx::new();
    let data = pattern(16 * 3);
    clip_rects_raw(&mut fx, 3, &data, Some(5)).unwrap();
    for n in [2u32, 4, 0] {
        assert!(matches!(
            clip_rects_raw(&mut fx, n, &data, Some(5)),
            Err(Error::ChunkSizeMismatch { .. })
        ));
    }
    // 15 bytes: not a whole rectangle.
    assert!(matches!(
        clip_rects_raw(&mut fx, 1, &data[..15], None),
        Err(Error::ChunkSizeMismatch { .. })
    ));
}

#[test]
fn clip_rects_count_overflow_and_cap() {
    // 2571cec5: num_rects * sizeof(rect) overflowed 32 bits.
    let mut fx = Fx::new();
    assert!(matches!(
        clip_rects_raw(&mut fx, 0x1000_0000, &pattern(16), None),
        Err(Error::TooLarge {
            what: "clip rects",
            ..
        })
    ));
    fx.limits.max_clip_rects = u32::MAX;
    assert!(matches!(
        clip_rects_raw(&mut fx, 0x1000_0001, &pattern(16), None),
        Err(Error::TooLarge { .. }) | Err(Error::ChunkSizeMismatch { .. })
    ));
}

#[test]
fn clip_rects_null_and_bad_pointer() {
    let mut fx = Fx::new();
    let d = drawable(DrawOp::Nop);
    assert_eq!(
        patched(&mut fx, &d, 47, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(Error::NullPointer("QXLClip.data"))
    );
    let mut patch = [0u8; 12];
    le::put_u32(&mut patch, 0, 1);
    le::put_u64(&mut patch, 4, Fx::phys(super::SLOT1_SIZE - 23));
    assert!(matches!(
        patched(&mut fx, &d, 47, &patch),
        Err(Error::OutsideSlot { .. })
    ));
}

// ---- paths ---------------------------------------------------------------

/// A STROKE whose QXLPath holds `data` with the header claiming `data_size`.
fn path_raw(fx: &mut Fx, data_size: u32, data: &[u8]) -> crate::error::Result<Command> {
    let p = write_embedded_chain(
        &fx.mem,
        &mut fx.heap,
        &data_size.to_le_bytes(),
        data,
        Some(8),
    )
    .unwrap();
    let d = drawable(DrawOp::Stroke {
        path: Path::default(),
        attr: LineAttr::default(),
        brush: Brush::None,
        fore_mode: 0,
        back_mode: 0,
    });
    patched(fx, &d, 123, &p.to_le_bytes())
}

fn seg(flags: u32, count: u32, points: &[(i32, i32)]) -> Vec<u8> {
    let mut v = flags.to_le_bytes().to_vec();
    v.extend_from_slice(&count.to_le_bytes());
    for (x, y) in points {
        v.extend_from_slice(&x.to_le_bytes());
        v.extend_from_slice(&y.to_le_bytes());
    }
    v
}

fn size_of(v: &[u8]) -> u32 {
    u32::try_from(v.len()).unwrap()
}

#[test]
fn path_roundtrip() {
    let mut fx = Fx::new();
    let mut data = seg(1, 2, &[(1, 2), (3, 4)]);
    data.extend(seg(2, 0, &[]));
    let Command::Draw(d) = path_raw(&mut fx, size_of(&data), &data).unwrap() else {
        panic!()
    };
    let DrawOp::Stroke { path, .. } = d.op else {
        panic!()
    };
    assert_eq!(
        path,
        Path {
            segments: vec![
                PathSeg {
                    flags: 1,
                    points: vec![PointFix { x: 1, y: 2 }, PointFix { x: 3, y: 4 }]
                },
                PathSeg {
                    flags: 2,
                    points: vec![]
                },
            ]
        }
    );
}

#[test]
fn path_count_beyond_data() {
    // 3dd93a1f: count * sizeof(point) was not checked against the data.
    let mut fx = Fx::new();
    for count in [3u32, u32::MAX, 0x2000_0000, 0x8000_0000] {
        let data = seg(1, count, &[(1, 2), (3, 4)]);
        assert_eq!(
            path_raw(&mut fx, size_of(&data), &data),
            Err(Error::Malformed("path segment points past the data")),
            "{count}"
        );
    }
}

#[test]
fn path_trailing_bytes_and_size_mismatch() {
    let mut fx = Fx::new();
    let mut data = seg(1, 1, &[(1, 2)]);
    data.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        path_raw(&mut fx, size_of(&data), &data),
        Err(Error::Malformed("path segment header"))
    );
    let data = seg(1, 1, &[(1, 2)]);
    assert!(matches!(
        path_raw(&mut fx, size_of(&data) + 1, &data),
        Err(Error::ChunkSizeMismatch { .. })
    ));
}

#[test]
fn path_segment_and_point_caps() {
    let mut fx = Fx::new();
    fx.limits.max_path_segments = 4;
    let data: Vec<u8> = (0..5).flat_map(|_| seg(0, 0, &[])).collect();
    assert!(matches!(
        path_raw(&mut fx, size_of(&data), &data),
        Err(Error::TooLarge {
            what: "path segments",
            ..
        })
    ));
    fx.limits = crate::qxl::decode::Limits::default();
    fx.limits.max_path_points = 3;
    let data = seg(0, 4, &[(0, 0); 4]);
    assert!(matches!(
        path_raw(&mut fx, size_of(&data), &data),
        Err(Error::TooLarge {
            what: "path points",
            ..
        })
    ));
}

#[test]
fn path_null_pointer_and_line_style() {
    let mut fx = Fx::new();
    assert_eq!(path_raw(&mut fx, 0, &[]).map(|_| ()), Ok(()));
    let d = drawable(DrawOp::Stroke {
        path: Path::default(),
        attr: LineAttr::default(),
        brush: Brush::None,
        fore_mode: 0,
        back_mode: 0,
    });
    assert_eq!(
        patched(&mut fx, &d, 123, &[0; 8]),
        Err(Error::NullPointer("QXLStroke.path"))
    );
    // STYLED with 3 segments and a null style pointer.
    assert_eq!(
        patched(&mut fx, &d, 131, &[LINE_STYLED, 0, 0, 3]),
        Err(Error::NullPointer("QXLLineAttr.style"))
    );
    // Not STYLED: style_nseg and the pointer are ignored.
    let got = patched(&mut fx, &d, 131, &[0, 0, 0, 200]).unwrap();
    let Command::Draw(got) = got else { panic!() };
    assert!(matches!(got.op, DrawOp::Stroke { ref attr, .. } if attr.style.is_empty()));
    // Style array past the slot end.
    let mut attr = [0u8; 20];
    attr[0] = LINE_STYLED;
    attr[3] = 255;
    le::put_u64(&mut attr, 12, Fx::phys(super::SLOT1_SIZE - 1019));
    assert!(matches!(
        patched(&mut fx, &d, 131, &attr),
        Err(Error::OutsideSlot { .. })
    ));
}

// ---- glyph strings ---------------------------------------------------------

/// A TEXT whose QXLString has the given header and glyph data.
fn string_raw(
    fx: &mut Fx,
    data_size: u32,
    length: u16,
    flags: u16,
    data: &[u8],
) -> crate::error::Result<Command> {
    let mut prefix = [0u8; 8];
    le::put_u32(&mut prefix, 0, data_size);
    le::put_u16(&mut prefix, 4, length);
    le::put_u16(&mut prefix, 6, flags);
    let p = write_embedded_chain(&fx.mem, &mut fx.heap, &prefix, data, Some(16)).unwrap();
    let d = drawable(DrawOp::Text {
        string: GlyphString {
            flags: STRING_RASTER_A1,
            glyphs: vec![],
        },
        back_area: Rect::default(),
        fore_brush: Brush::None,
        back_brush: Brush::None,
        fore_mode: 0,
        back_mode: 0,
    });
    patched(fx, &d, 123, &p.to_le_bytes())
}

fn glyph(w: u16, h: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v.extend_from_slice(&w.to_le_bytes());
    v.extend_from_slice(&h.to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn string_raster_flags_exactly_one() {
    let mut fx = Fx::new();
    for flags in [
        0u16,
        STRING_RASTER_TOP_DOWN,
        STRING_RASTER_A1 | STRING_RASTER_A4,
        7,
        0xfff0,
    ] {
        assert!(matches!(
            string_raw(&mut fx, 0, 0, flags, &[]),
            Err(Error::InvalidValue {
                field: "QXLString.flags",
                ..
            })
        ));
    }
    string_raw(
        &mut fx,
        0,
        0,
        STRING_RASTER_A8 | STRING_RASTER_TOP_DOWN,
        &[],
    )
    .unwrap();
}

#[test]
fn string_glyph_count_must_equal_length() {
    let mut fx = Fx::new();
    let mut data = glyph(8, 2, &[1, 2]);
    data.extend(glyph(3, 1, &[3]));
    let n = size_of(&data);
    string_raw(&mut fx, n, 2, STRING_RASTER_A1, &data).unwrap();
    assert_eq!(
        string_raw(&mut fx, n, 3, STRING_RASTER_A1, &data),
        Err(Error::Malformed(
            "glyph count differs from the string length"
        ))
    );
    assert_eq!(
        string_raw(&mut fx, n, 1, STRING_RASTER_A1, &data),
        Err(Error::Malformed(
            "glyph string holds more glyphs than its length"
        ))
    );
}

#[test]
fn string_glyph_size_overflow() {
    // caec52dc / a447c4f2: height * ceil(width * bpp / 8) computed in too few bits.
    let mut fx = Fx::new();
    for (w, h, bpp_flag) in [
        (u16::MAX, u16::MAX, STRING_RASTER_A8),
        (u16::MAX, 1, STRING_RASTER_A8),
        (1, u16::MAX, STRING_RASTER_A1),
        (9, 1, STRING_RASTER_A1),
    ] {
        let data = glyph(w, h, &[0xaa]);
        assert_eq!(
            string_raw(&mut fx, size_of(&data), 1, bpp_flag, &data),
            Err(Error::Malformed("glyph data past the data")),
            "{w}x{h}"
        );
    }
    // A truncated glyph header.
    let data = glyph(0, 0, &[])[..19].to_vec();
    assert_eq!(
        string_raw(&mut fx, 19, 1, STRING_RASTER_A1, &data),
        Err(Error::Malformed("glyph header past the data"))
    );
}

#[test]
fn string_data_size_must_match_chain() {
    let mut fx = Fx::new();
    let data = glyph(8, 1, &[1]);
    assert!(matches!(
        string_raw(&mut fx, size_of(&data) + 1, 1, STRING_RASTER_A1, &data),
        Err(Error::ChunkSizeMismatch { .. })
    ));
    assert!(matches!(
        string_raw(&mut fx, u32::MAX, 1, STRING_RASTER_A1, &data),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn string_null_pointer_and_glyph_cap() {
    let mut fx = Fx::new();
    let d = drawable(DrawOp::Text {
        string: GlyphString {
            flags: STRING_RASTER_A1,
            glyphs: vec![],
        },
        back_area: Rect::default(),
        fore_brush: Brush::None,
        back_brush: Brush::None,
        fore_mode: 0,
        back_mode: 0,
    });
    assert_eq!(
        patched(&mut fx, &d, 123, &[0; 8]),
        Err(Error::NullPointer("QXLText.str"))
    );
    fx.limits.max_glyphs = 1;
    let mut data = glyph(0, 0, &[]);
    data.extend(glyph(0, 0, &[]));
    assert!(matches!(
        string_raw(&mut fx, size_of(&data), 2, STRING_RASTER_A1, &data),
        Err(Error::TooLarge { what: "glyphs", .. })
    ));
}
