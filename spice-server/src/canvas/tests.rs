use super::*;
use crate::codecs::PixelFormat;
use crate::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, LINE_START_WITH_GAP, PATH_BEGIN, PATH_END, Palette,
    PathSeg, PointFix, RasterGlyph, ScaleMode,
};
use proptest::prelude::*;

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
    let img24 = Image {
        id: 0,
        flags: 0,
        width: 1,
        height: 1,
        data: ImageData::Bitmap(bmp24),
    };
    let p = decode_image(&img24, &Rect::new(0, 0, 1, 1), &NoSources);
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
        decode_image(
            &Image {
                id: 0,
                flags: 0,
                width: 4,
                height: 4,
                data: ImageData::Bitmap(b),
            },
            &Rect::new(0, 0, 4, 4),
            &NoSources
        )
        .is_none(),
        "stride"
    );
}

fn bitmap32(w: u32, h: u32, px: &[u32]) -> Box<Image> {
    Box::new(Image::rgb32(
        w,
        h,
        px.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ))
}

fn rgba(w: u32, h: u32, px: &[u32]) -> Box<Image> {
    let mut i = bitmap32(w, h, px);
    if let ImageData::Bitmap(b) = &mut i.data {
        b.format = BitmapFormat::Rgba;
    }
    i
}

#[test]
fn ropd_descriptor_table() {
    // spice's ropd_descriptor_to_rop, spot checks.
    let (s, d) = (Ropd::INVERS_SRC, Ropd::INVERS_DEST);
    assert_eq!(ropd_to_rop(Ropd::OP_PUT, s, d), 3);
    assert_eq!(ropd_to_rop(Ropd::OP_PUT | Ropd::INVERS_SRC, s, d), 12);
    assert_eq!(
        ropd_to_rop(Ropd::OP_PUT | Ropd::INVERS_SRC | Ropd::INVERS_RES, s, d),
        3
    );
    assert_eq!(ropd_to_rop(Ropd::OP_OR | Ropd::INVERS_RES, s, d), 8); // NOR
    assert_eq!(ropd_to_rop(Ropd::OP_OR | Ropd::INVERS_RES | s | d, s, d), 1); // AND
    assert_eq!(ropd_to_rop(Ropd::OP_AND | s, s, d), 4); // AND_INVERTED
    assert_eq!(ropd_to_rop(Ropd::OP_AND | d, s, d), 2); // AND_REVERSE
    assert_eq!(ropd_to_rop(Ropd::OP_XOR | Ropd::INVERS_RES | s, s, d), 6); // XOR
    assert_eq!(ropd_to_rop(Ropd::OP_XOR | d, s, d), 9); // EQUIV
    assert_eq!(ropd_to_rop(Ropd::OP_OR | s | d, s, d), 14); // NAND
    assert_eq!(ropd_to_rop(Ropd::OP_BLACKNESS, s, d), 0);
    assert_eq!(ropd_to_rop(Ropd::OP_WHITENESS, s, d), 15);
    assert_eq!(ropd_to_rop(Ropd::OP_INVERS, s, d), 10);
    assert_eq!(ropd_to_rop(0, s, d), 3, "no operation means COPY");
}

#[test]
fn rop3_truth_table_on_one_pixel() -> Result<(), Error> {
    // rop3.c's self test: d = 0xaa, s = 0xcc, p = 0xf0 gives the code itself.
    for code in 0..=255u8 {
        assert_eq!(rop3_apply(code, 0xf0, 0xcc, 0xaa) & 0xff, u32::from(code));
        let mut t = Surface::new(1, 1, SurfaceFormat::Xrgb32)?;
        t.put(0, 0, 0x00aa_aaaa);
        let d = drawable(
            Rect::new(0, 0, 1, 1),
            Clip::None,
            DrawOp::Rop3 {
                src: bitmap32(1, 1, &[0x00cc_cccc]),
                src_area: Rect::new(0, 0, 1, 1),
                brush: Brush::Solid(0x00f0_f0f0),
                rop3: code,
                scale_mode: ScaleMode::Nearest,
                mask: None,
            },
        );
        assert!(matches!(
            draw(&mut t, &d, &NoSources),
            DrawOutcome::Drawn(_)
        ));
        let c = u32::from(code);
        assert_eq!(
            px(&t, 0, 0) & 0x00ff_ffff,
            c | (c << 8) | (c << 16),
            "rop3 {code:#x}"
        );
    }
    Ok(())
}

#[test]
fn mask_outside_bitmap_draws_nothing_even_inverted() -> Result<(), Error> {
    let mut t = Surface::new(4, 1, SurfaceFormat::Xrgb32)?;
    let m = Mask {
        flags: 1,
        pos: Point { x: 0, y: 0 },
        bitmap: Box::new(Image {
            id: 0,
            flags: 0,
            width: 2,
            height: 1,
            data: ImageData::Bitmap(Bitmap {
                format: BitmapFormat::OneBitBe,
                flags: BITMAP_TOP_DOWN,
                width: 2,
                height: 1,
                stride: 1,
                palette: None,
                data: vec![0x80],
            }),
        }),
    };
    let d = drawable(
        Rect::new(0, 0, 4, 1),
        Clip::None,
        DrawOp::Whiteness { mask: Some(m) },
    );
    draw(&mut t, &d, &NoSources);
    // Bit 0 set (inverted: not drawn), bit 1 clear (drawn), pixels 2..4 outside the mask.
    assert_eq!(
        [px(&t, 0, 0), px(&t, 1, 0), px(&t, 2, 0), px(&t, 3, 0)],
        [0, u32::MAX, 0, 0]
    );
    Ok(())
}

#[test]
fn styled_one_pixel_line() -> Result<(), Error> {
    let mut t = Surface::new(12, 3, SurfaceFormat::Xrgb32)?;
    let p = |x: i32, y: i32| PointFix {
        x: x << 4,
        y: y << 4,
    };
    let path = Path {
        segments: vec![PathSeg {
            flags: PATH_BEGIN | PATH_END,
            points: vec![p(0, 1), p(10, 1)],
        }],
    };
    let d = drawable(
        Rect::new(0, 0, 12, 3),
        Clip::None,
        DrawOp::Stroke {
            path: path.clone(),
            attr: LineAttr {
                flags: LINE_STYLED,
                style: vec![2 << 4, 1 << 4],
                ..LineAttr::default()
            },
            brush: Brush::Solid(0x00ff_ffff),
            fore_mode: Ropd::OP_PUT,
            back_mode: Ropd::OP_PUT,
        },
    );
    draw(&mut t, &d, &NoSources);
    let row: Vec<bool> = (0..12).map(|x| px(&t, x, 1) != 0).collect();
    // 2 on, 1 off, from x = 0; the end point (10) is not drawn.
    let want = [
        true, true, false, true, true, false, true, true, false, true, false, false,
    ];
    assert_eq!(row, want);
    assert!((0..12).all(|x| px(&t, x, 0) == 0 && px(&t, x, 2) == 0));

    // START_WITH_GAP rotates the style list, and solid strokes XOR per pixel.
    let mut t = Surface::new(12, 3, SurfaceFormat::Xrgb32)?;
    let d = drawable(
        Rect::new(0, 0, 12, 3),
        Clip::None,
        DrawOp::Stroke {
            path,
            attr: LineAttr::default(),
            brush: Brush::Solid(0x0000_00ff),
            fore_mode: Ropd::OP_XOR,
            back_mode: Ropd::OP_PUT,
        },
    );
    draw(&mut t, &d, &NoSources);
    assert_eq!((0..12).filter(|&x| px(&t, x, 1) == 0xff).count(), 10);
    let gap = LineAttr {
        flags: LINE_STYLED | LINE_START_WITH_GAP,
        style: vec![1 << 4, 3 << 4],
        ..LineAttr::default()
    };
    assert_eq!(dash_list(&gap), Some((vec![3, 1], 3)));
    Ok(())
}

#[test]
fn two_glyph_a1_string() -> Result<(), Error> {
    let mut t = Surface::new(8, 4, SurfaceFormat::Xrgb32)?;
    // Glyph rows are read bottom-up by spice: the last stored row is the top.
    let g1 = RasterGlyph {
        render_pos: Point { x: 1, y: 2 },
        glyph_origin: Point { x: 0, y: -2 },
        width: 2,
        height: 2,
        data: vec![0b0100_0000, 0b1000_0000],
    };
    let g2 = RasterGlyph {
        render_pos: Point { x: 4, y: 2 },
        glyph_origin: Point { x: 0, y: -2 },
        width: 1,
        height: 2,
        data: vec![0x80, 0x00],
    };
    let d = drawable(
        Rect::new(0, 0, 8, 4),
        Clip::None,
        DrawOp::Text {
            string: GlyphString {
                flags: STRING_RASTER_A1,
                glyphs: vec![g1, g2],
            },
            back_area: Rect::new(0, 3, 8, 4),
            fore_brush: Brush::Solid(0x0012_3456),
            back_brush: Brush::Solid(0x0000_ff00),
            fore_mode: Ropd::OP_PUT,
            back_mode: Ropd::OP_PUT,
        },
    );
    draw(&mut t, &d, &NoSources);
    let on = |x, y| px(&t, x, y) & 0x00ff_ffff == 0x0012_3456;
    assert!(on(1, 0) && !on(2, 0) && !on(1, 1) && on(2, 1));
    assert!(!on(4, 0) && on(4, 1));
    assert_eq!(px(&t, 0, 3) & 0x00ff_ffff, 0x0000_ff00);
    assert_eq!(px(&t, 0, 0), 0);
    Ok(())
}

#[test]
fn alpha_blend_over_with_constant_alpha() -> Result<(), Error> {
    let mut t = Surface::new(1, 1, SurfaceFormat::Xrgb32)?;
    t.put(0, 0, 0x0000_00ff);
    let d = drawable(
        Rect::new(0, 0, 1, 1),
        Clip::None,
        DrawOp::AlphaBlend {
            alpha_flags: 0,
            alpha: 0x80,
            src: rgba(1, 1, &[0xffff_0000]),
            src_area: Rect::new(0, 0, 1, 1),
        },
    );
    draw(&mut t, &d, &NoSources);
    // pixman: s' = s * 0x80 / 255 (rounded), d = s' + d * (255 - a') / 255.
    assert_eq!(px(&t, 0, 0) & 0x00ff_ffff, 0x0080_007f);
    Ok(())
}

#[test]
fn composite_over_with_a8_mask() -> Result<(), Error> {
    let mut t = Surface::new(2, 1, SurfaceFormat::Argb32)?;
    let mask = Box::new(Image {
        id: 0,
        flags: 0,
        width: 2,
        height: 1,
        data: ImageData::Bitmap(Bitmap {
            format: BitmapFormat::Rgba,
            flags: BITMAP_TOP_DOWN,
            width: 2,
            height: 1,
            stride: 8,
            palette: None,
            data: [0xff00_0000u32, 0x0000_0000]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        }),
    });
    let d = drawable(
        Rect::new(0, 0, 2, 1),
        Clip::None,
        DrawOp::Composite {
            flags: 3 | crate::command::COMPOSITE_HAS_MASK,
            src: rgba(1, 1, &[0xff11_2233]),
            src_transform: None,
            mask: Some(mask),
            mask_transform: None,
            src_origin: Point16 { x: 0, y: 0 },
            mask_origin: Point16 { x: 0, y: 0 },
        },
    );
    draw(&mut t, &d, &NoSources);
    // Source repeat NONE: only pixel 0 has source; the mask keeps it at full coverage.
    assert_eq!(px(&t, 0, 0), 0xff11_2233);
    assert_eq!(px(&t, 1, 0), 0);
    Ok(())
}

#[test]
fn nearest_and_bilinear_scaling() -> Result<(), Error> {
    for (mode, want) in [
        (ScaleMode::Nearest, [0u32, 0, 0xff, 0xff]),
        (ScaleMode::Interpolate, [0, 0x40, 0xbf, 0xff]),
    ] {
        let mut t = Surface::new(4, 1, SurfaceFormat::Xrgb32)?;
        let d = drawable(
            Rect::new(0, 0, 4, 1),
            Clip::None,
            DrawOp::Copy(CopyOp {
                src: bitmap32(2, 1, &[0, 0xff]),
                src_area: Rect::new(0, 0, 2, 1),
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: mode,
                mask: None,
            }),
        );
        draw(&mut t, &d, &NoSources);
        let got: Vec<u32> = (0..4).map(|x| px(&t, x, 0) & 0xff).collect();
        // Bilinear reads transparent black beyond the source (REPEAT_NONE) at the far edge.
        if mode == ScaleMode::Nearest {
            assert_eq!(got, want);
        } else {
            assert_eq!(got[0], 0);
            assert!(got[1] > 0 && got[1] < got[2]);
        }
    }
    Ok(())
}

fn arb_image() -> impl Strategy<Value = Box<Image>> {
    (1u32..6, 1u32..6, any::<bool>()).prop_map(|(w, h, alpha)| {
        let px: Vec<u32> = (0..w * h).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        if alpha {
            rgba(w, h, &px)
        } else {
            bitmap32(w, h, &px)
        }
    })
}

fn arb_rect() -> impl Strategy<Value = Rect> {
    (-8i32..24, -8i32..24, -8i32..24, -8i32..24).prop_map(|(a, b, c, d)| Rect::new(a, b, c, d))
}

fn arb_op() -> impl Strategy<Value = DrawOp> {
    prop_oneof![
        (arb_image(), arb_rect(), any::<u16>(), any::<bool>()).prop_map(
            |(src, src_area, rop, n)| {
                DrawOp::Copy(CopyOp {
                    src,
                    src_area,
                    rop: Ropd(rop),
                    scale_mode: if n {
                        ScaleMode::Nearest
                    } else {
                        ScaleMode::Interpolate
                    },
                    mask: None,
                })
            }
        ),
        (arb_image(), arb_rect(), any::<u8>(), any::<u32>()).prop_map(
            |(src, src_area, rop3, c)| {
                DrawOp::Rop3 {
                    src,
                    src_area,
                    brush: Brush::Solid(c),
                    rop3,
                    scale_mode: ScaleMode::Interpolate,
                    mask: None,
                }
            }
        ),
        (arb_image(), arb_rect(), any::<u8>(), any::<u16>()).prop_map(
            |(src, src_area, alpha, f)| {
                DrawOp::AlphaBlend {
                    alpha_flags: f & 3,
                    alpha,
                    src,
                    src_area,
                }
            }
        ),
        (arb_image(), arb_rect(), any::<u32>()).prop_map(|(src, src_area, c)| {
            DrawOp::Transparent {
                src,
                src_area,
                src_color: c,
                true_color: c,
            }
        }),
        (
            arb_image(),
            any::<u32>(),
            any::<[u32; 6]>(),
            any::<(i16, i16)>()
        )
            .prop_map(|(src, flags, tr, o)| DrawOp::Composite {
                flags: flags & !crate::command::COMPOSITE_HAS_MASK,
                src,
                src_transform: Some(Transform(tr)),
                mask: None,
                mask_transform: None,
                src_origin: Point16 { x: o.0, y: o.1 },
                mask_origin: Point16 { x: 0, y: 0 },
            }),
        (
            proptest::collection::vec(
                (
                    any::<u32>(),
                    proptest::collection::vec((-4000i32..4000, -4000i32..4000), 0..8)
                ),
                0..6
            ),
            any::<u8>(),
            proptest::collection::vec(-64i32..400, 0..5),
            any::<u16>()
        )
            .prop_map(|(segs, flags, style, mode)| DrawOp::Stroke {
                path: Path {
                    segments: segs
                        .into_iter()
                        .map(|(f, pts)| PathSeg {
                            flags: f & 0x1b,
                            points: pts.into_iter().map(|(x, y)| PointFix { x, y }).collect(),
                        })
                        .collect(),
                },
                attr: LineAttr {
                    flags,
                    style,
                    ..LineAttr::default()
                },
                brush: Brush::Solid(0x00ff_00ff),
                fore_mode: mode,
                back_mode: mode,
            }),
        (
            proptest::collection::vec(
                (
                    any::<(i16, i16, i8, i8)>(),
                    0u16..20,
                    0u16..20,
                    proptest::collection::vec(any::<u8>(), 0..64)
                ),
                0..4
            ),
            any::<u16>(),
            arb_rect()
        )
            .prop_map(|(glyphs, flags, back_area)| DrawOp::Text {
                string: GlyphString {
                    flags,
                    glyphs: glyphs
                        .into_iter()
                        .map(|(p, w, h, data)| RasterGlyph {
                            render_pos: Point {
                                x: i32::from(p.0),
                                y: i32::from(p.1)
                            },
                            glyph_origin: Point {
                                x: i32::from(p.2),
                                y: i32::from(p.3)
                            },
                            width: w,
                            height: h,
                            data,
                        })
                        .collect(),
                },
                back_area,
                fore_brush: Brush::Solid(0x00ff_ffff),
                back_brush: Brush::Solid(0x0000_00ff),
                fore_mode: Ropd::OP_PUT,
                back_mode: Ropd::OP_PUT,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_draws_never_panic(
        op in arb_op(),
        bbox in arb_rect(),
        clip in proptest::option::of(proptest::collection::vec(arb_rect(), 0..4)),
        argb in any::<bool>(),
    ) {
        let fmt = if argb { SurfaceFormat::Argb32 } else { SurfaceFormat::Xrgb32 };
        let mut t = Surface::new(16, 16, fmt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let d = drawable(bbox, clip.map_or(Clip::None, Clip::Rects), op);
        let _ = draw(&mut t, &d, &NoSources);
        prop_assert_eq!(t.bytes().len(), 16 * 16 * 4);
    }
}

// ---------------------------------------------------------------------------
// Random draws of every type (sources of every bitmap format, masks, patterns,
// clips, every surface format): the fast paths against the general path.

fn seeded_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[1]
        })
        .collect()
}

const ALL_FORMATS: [BitmapFormat; 10] = [
    BitmapFormat::OneBitLe,
    BitmapFormat::OneBitBe,
    BitmapFormat::FourBitLe,
    BitmapFormat::FourBitBe,
    BitmapFormat::EightBit,
    BitmapFormat::Rgb16,
    BitmapFormat::Rgb24,
    BitmapFormat::Rgb32,
    BitmapFormat::Rgba,
    BitmapFormat::A8,
];

fn arb_bitmap_image(formats: &'static [BitmapFormat]) -> impl Strategy<Value = Box<Image>> {
    (
        0..formats.len(),
        1u32..14,
        1u32..12,
        any::<bool>(),
        0u32..3,
        any::<u32>(),
        0usize..20,
        0u8..4,
        0u8..8,
    )
        .prop_map(move |(f, w, h, top_down, pad, seed, pal_n, flags, short)| {
            let format = formats[f];
            let stride = (w * format.bpp()).div_ceil(8) + pad;
            let mut data = seeded_bytes(usize_of(stride * h), seed);
            if short == 0 {
                data.truncate(data.len() / 2);
            }
            let palette = (pal_n > 0).then(|| Palette {
                unique: 0,
                entries: seeded_bytes(pal_n * 4, seed ^ 0x55)
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            });
            Box::new(Image {
                id: 0,
                flags: flags & IMAGE_FLAG_HIGH_BITS_SET_TEST,
                width: w,
                height: h,
                data: ImageData::Bitmap(Bitmap {
                    format,
                    flags: if top_down { BITMAP_TOP_DOWN } else { 0 },
                    width: w,
                    height: h,
                    stride,
                    palette,
                    data,
                }),
            })
        })
}

const IMAGE_FLAG_HIGH_BITS_SET_TEST: u8 = crate::command::IMAGE_FLAG_HIGH_BITS_SET;

fn arb_mask() -> impl Strategy<Value = Option<Mask>> {
    proptest::option::of(
        (
            arb_bitmap_image(&[BitmapFormat::OneBitBe, BitmapFormat::OneBitLe]),
            any::<bool>(),
            -6i32..20,
            -6i32..20,
        )
            .prop_map(|(bitmap, inv, x, y)| Mask {
                flags: u8::from(inv),
                pos: Point { x, y },
                bitmap,
            }),
    )
}

fn arb_brush() -> impl Strategy<Value = Brush> {
    prop_oneof![
        Just(Brush::None),
        any::<u32>().prop_map(Brush::Solid),
        (arb_bitmap_image(&ALL_FORMATS), -20i32..20, -20i32..20).prop_map(|(image, x, y)| {
            Brush::Pattern {
                image,
                pos: Point { x, y },
            }
        }),
    ]
}

/// A source area: either random or the bbox moved by a small offset (unscaled).
fn src_area_for(bbox: Rect, random: Rect, same: bool, dx: i32, dy: i32) -> Rect {
    if same {
        Rect::new(
            bbox.left + dx,
            bbox.top + dy,
            bbox.right + dx,
            bbox.bottom + dy,
        )
    } else {
        random
    }
}

fn arb_rop() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(Ropd::OP_PUT),
        any::<u16>(),
        (0u16..10).prop_map(|b| 1 << b),
    ]
}

fn arb_drawable() -> impl Strategy<Value = Drawable> {
    let bbox = arb_rect();
    let clip = proptest::option::of(proptest::collection::vec(arb_rect(), 0..4))
        .prop_map(|c| c.map_or(Clip::None, Clip::Rects));
    let src = (arb_rect(), any::<bool>(), -8i32..8, -8i32..8);
    let op = prop_oneof![
        (arb_brush(), arb_rop(), arb_mask()).prop_map(|(brush, rop, mask)| (
            None,
            DrawOp::Fill {
                brush,
                rop: Ropd(rop),
                mask
            }
        )),
        (
            arb_bitmap_image(&ALL_FORMATS),
            arb_rop(),
            arb_mask(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(src, rop, mask, n, blend)| {
                let c = CopyOp {
                    src,
                    src_area: Rect::default(),
                    rop: Ropd(rop),
                    scale_mode: if n {
                        ScaleMode::Nearest
                    } else {
                        ScaleMode::Interpolate
                    },
                    mask,
                };
                (
                    Some(()),
                    if blend {
                        DrawOp::Blend(c)
                    } else {
                        DrawOp::Copy(c)
                    },
                )
            }),
        (
            arb_bitmap_image(&ALL_FORMATS),
            arb_brush(),
            arb_rop(),
            arb_mask()
        )
            .prop_map(|(src, brush, rop, mask)| (
                Some(()),
                DrawOp::Opaque {
                    src,
                    src_area: Rect::default(),
                    brush,
                    rop: Ropd(rop),
                    scale_mode: ScaleMode::Nearest,
                    mask
                }
            )),
        (
            arb_bitmap_image(&ALL_FORMATS),
            arb_brush(),
            any::<u8>(),
            arb_mask()
        )
            .prop_map(|(src, brush, rop3, mask)| (
                Some(()),
                DrawOp::Rop3 {
                    src,
                    src_area: Rect::default(),
                    brush,
                    rop3,
                    scale_mode: ScaleMode::Nearest,
                    mask
                }
            )),
        (-10i32..30, -10i32..30).prop_map(|(x, y)| (
            None,
            DrawOp::CopyBits {
                src_pos: Point { x, y }
            }
        )),
        arb_mask().prop_map(|mask| (None, DrawOp::Blackness { mask })),
        arb_mask().prop_map(|mask| (None, DrawOp::Whiteness { mask })),
        arb_mask().prop_map(|mask| (None, DrawOp::Invers { mask })),
        arb_op().prop_map(|op| (None, op)),
    ];
    (bbox, clip, src, op).prop_map(|(bbox, clip, (random, same, dx, dy), (has_src, mut op))| {
        if has_src.is_some() {
            let area = src_area_for(bbox, random, same, dx, dy);
            match &mut op {
                DrawOp::Copy(c) | DrawOp::Blend(c) => c.src_area = area,
                DrawOp::Opaque { src_area, .. } | DrawOp::Rop3 { src_area, .. } => {
                    *src_area = area;
                }
                _ => {}
            }
        }
        drawable(bbox, clip, op)
    })
}

const SURFACE_FORMATS: [SurfaceFormat; 6] = [
    SurfaceFormat::Xrgb32,
    SurfaceFormat::Argb32,
    SurfaceFormat::Rgb565,
    SurfaceFormat::Rgb555,
    SurfaceFormat::A8,
    SurfaceFormat::A1,
];

fn seeded_surface(fmt: SurfaceFormat, seed: u32) -> Surface {
    let (w, h) = (24u32, 20u32);
    let stride = usize_of(w) * 4;
    Surface::with_initial(w, h, fmt, stride, &seeded_bytes(stride * usize_of(h), seed))
        .unwrap_or_else(|_| Surface::new(w, h, fmt).expect("surface"))
}

/// Renders a fixed stream of random draws of every type and prints a hash of
/// the surface after each (compare across revisions of the canvas:
/// `cargo test -p spice-server --lib canvas::tests::render_hashes -- --ignored --nocapture`).
#[test]
#[ignore = "differential dump, compared across revisions by hand"]
fn render_hashes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strat = arb_drawable();
    let mut all = DefaultHasher::new();
    for (n, fmt) in SURFACE_FORMATS.iter().enumerate() {
        let mut t = seeded_surface(*fmt, u32::try_from(n).unwrap_or(0));
        for i in 0..3000 {
            let d = strat.new_tree(&mut runner).expect("tree").current();
            let out = draw(&mut t, &d, &NoSources);
            let mut h = DefaultHasher::new();
            t.bytes().hash(&mut h);
            format!("{out:?}").hash(&mut h);
            let v = h.finish();
            v.hash(&mut all);
            println!("HASH {fmt:?} {i} {v:016x}");
        }
    }
    println!("HASH total {:016x}", all.finish());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every direct path gives the general renderer's bytes (and outcome).
    #[test]
    fn direct_paths_match_general_path(
        d in arb_drawable(),
        fmt in 0..SURFACE_FORMATS.len(),
        seed in any::<u32>(),
    ) {
        let mut fast = seeded_surface(SURFACE_FORMATS[fmt], seed);
        let mut general = fast.clone();
        let a = draw(&mut fast, &d, &NoSources);
        let b = draw_general(&mut general, &d, &NoSources);
        prop_assert_eq!(a, b);
        prop_assert!(fast.bytes() == general.bytes(), "surfaces differ for {:?}", d);
    }
}
