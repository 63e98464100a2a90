//! `image_*` / `bitmap_*`: image descriptors, bitmaps, palettes, QUIC and
//! surface images (spice 0f58e9da, ac5f64a8, 547f9f43).

use spice_server::command::{
    BITMAP_DIRECT, BITMAP_TOP_DOWN, BITMAP_UNSTABLE, Bitmap, BitmapFormat, Command, DrawOp, Image,
    ImageData, Mask, Palette, Point,
};

use super::{Fx, bitmap_image, copy_of, drawable, palette_image, pattern};
use crate::error::Error;
use crate::qxl::decode::{QXL_CMD_DRAW, QXL_COMMAND_FLAG_COMPAT, QXL_COMMAND_FLAG_COMPAT_16BPP};
use crate::qxl::guest::le;
use crate::qxl::mock::encode::{EncodeOptions, write_embedded_chain};

/// Decode a COPY drawable whose source image is at `img` (a raw `QXLImage`).
fn decode_copy_of_raw(fx: &mut Fx, img: u64, w: i32, h: i32) -> crate::error::Result<Command> {
    let d = drawable(copy_of(bitmap_image(1, 1)));
    let (p, ty) = fx.encode(&Command::Draw(d), &EncodeOptions::default());
    // Patch src_bitmap (@123) and src_area (@131) of the drawable.
    let mut patch = [0u8; 24];
    le::put_u64(&mut patch, 0, img);
    le::put_u32(&mut patch, 8, 0);
    le::put_u32(&mut patch, 12, 0);
    le::put_u32(&mut patch, 16, u32::from_le_bytes(h.to_le_bytes()));
    le::put_u32(&mut patch, 20, u32::from_le_bytes(w.to_le_bytes()));
    fx.write(crate::qxl::chunks::phys_add(p, 123).unwrap(), &patch);
    fx.decode(ty, p, 0).map(|d| d.command)
}

/// A raw QXLImage with a QXLBitmap variant.
#[allow(clippy::too_many_arguments)]
fn raw_bitmap(
    fx: &mut Fx,
    dw: u32,
    dh: u32,
    format: u8,
    flags: u8,
    x: u32,
    y: u32,
    stride: u32,
    palette: u64,
    data: u64,
) -> u64 {
    let mut b = [0u8; 48];
    b[8] = 0;
    le::put_u32(&mut b, 10, dw);
    le::put_u32(&mut b, 14, dh);
    b[18] = format;
    b[19] = flags;
    le::put_u32(&mut b, 20, x);
    le::put_u32(&mut b, 24, y);
    le::put_u32(&mut b, 28, stride);
    le::put_u64(&mut b, 32, palette);
    le::put_u64(&mut b, 40, data);
    fx.raw(&b)
}

fn bitmap(format: BitmapFormat, w: u32, h: u32, extra: u32, flags: u8, palette: bool) -> Image {
    let stride = (u64::from(w) * u64::from(format.bpp())).div_ceil(8);
    let stride = u32::try_from(stride).unwrap() + extra;
    Image {
        id: 77,
        flags: 2,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format,
            flags,
            width: w,
            height: h,
            stride,
            palette: palette.then(|| Palette {
                unique: 3,
                entries: vec![0x00ff_0000, 0x0000_ff00, 0x0000_00ff],
            }),
            data: pattern(usize::try_from(stride * h).unwrap()),
        }),
    }
}

#[test]
fn bitmap_every_format_roundtrip() {
    let mut fx = Fx::new();
    for f in 1..=10u8 {
        let format = BitmapFormat::from_u8(f).unwrap();
        for (w, h, extra) in [(1, 1, 0), (13, 5, 0), (13, 5, 3), (64, 2, 0)] {
            for flags in [
                0,
                BITMAP_TOP_DOWN,
                BITMAP_UNSTABLE | BITMAP_TOP_DOWN,
                BITMAP_DIRECT,
            ] {
                let img = bitmap(format, w, h, extra, flags, format.has_palette());
                fx.assert_roundtrip(&Command::Draw(drawable(copy_of(img))));
            }
        }
    }
}

#[test]
fn bitmap_direct_option_and_chunked_agree() {
    let mut fx = Fx::new();
    let img = bitmap(BitmapFormat::Rgb24, 9, 7, 1, BITMAP_DIRECT, false);
    let cmd = Command::Draw(drawable(copy_of(img)));
    let opts = EncodeOptions {
        direct_bitmaps: true,
        ..EncodeOptions::default()
    };
    assert_eq!(fx.roundtrip_with(&cmd, &opts).unwrap(), cmd);
}

#[test]
fn bitmap_palette_missing() {
    let mut fx = Fx::new();
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    for format in [1u8, 2, 3, 4, 5] {
        let img = raw_bitmap(&mut fx, 4, 4, format, 0, 4, 4, 4, 0, data);
        assert_eq!(
            decode_copy_of_raw(&mut fx, img, 4, 4),
            Err(Error::NullPointer("QXLBitmap.palette")),
            "{format}"
        );
    }
    // RGB formats need none.
    let img = raw_bitmap(&mut fx, 1, 4, 8, 0, 1, 4, 4, 0, data);
    decode_copy_of_raw(&mut fx, img, 1, 4).unwrap();
}

#[test]
fn bitmap_palette_not_needed_for_masks() {
    let mut fx = Fx::new();
    let mask_img = bitmap(BitmapFormat::OneBitBe, 16, 4, 2, 0, false);
    let op = DrawOp::Blackness {
        mask: Some(Mask {
            flags: 1,
            pos: Point { x: 3, y: 4 },
            bitmap: Box::new(mask_img.clone()),
        }),
    };
    fx.assert_roundtrip(&Command::Draw(drawable(op)));
    // The same image as a COPY source must have one.
    let (p, ty) = fx.encode(
        &Command::Draw(drawable(copy_of(mask_img))),
        &EncodeOptions::default(),
    );
    assert_eq!(
        fx.decode(ty, p, 0),
        Err(Error::NullPointer("QXLBitmap.palette"))
    );
}

#[test]
fn bitmap_zero_area_and_bad_format() {
    let mut fx = Fx::new();
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    let img = raw_bitmap(&mut fx, 0, 4, 8, 0, 0, 4, 4, 0, data);
    assert_eq!(
        decode_copy_of_raw(&mut fx, img, 0, 4),
        Err(Error::Malformed("zero-area bitmap"))
    );
    let img = raw_bitmap(&mut fx, 4, 0, 8, 0, 4, 0, 16, 0, data);
    assert_eq!(
        decode_copy_of_raw(&mut fx, img, 4, 0),
        Err(Error::Malformed("zero-area bitmap"))
    );
    for format in [0u8, 11, 255] {
        let img = raw_bitmap(&mut fx, 1, 4, format, 0, 1, 4, 4, 0, data);
        assert!(matches!(
            decode_copy_of_raw(&mut fx, img, 1, 4),
            Err(Error::InvalidValue {
                field: "QXLBitmap.format",
                ..
            })
        ));
    }
}

#[test]
fn bitmap_consistent_overflow() {
    // spice 0f58e9da: x * bpp overflowed 32 bits, so a tiny stride passed.
    let mut fx = Fx::new();
    fx.limits.max_bitmap_dim = u32::MAX;
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    // 0x4000_0000 * 32 bpp = 2^35 bits: wraps to 0 in 32-bit arithmetic.
    let img = raw_bitmap(&mut fx, 0x4000_0000, 1, 8, 0, 0x4000_0000, 1, 16, 0, data);
    assert_eq!(
        decode_copy_of_raw(&mut fx, img, 1, 1),
        Err(Error::Malformed("bitmap stride smaller than a row"))
    );
    // y * stride overflowing 32 bits (ac5f64a8): refused by the size cap, before any read.
    let img = raw_bitmap(&mut fx, 1, 0x1_0000, 8, 0, 1, 0x1_0000, 0x1_0000, 0, data);
    assert!(matches!(
        decode_copy_of_raw(&mut fx, img, 1, 1),
        Err(Error::TooLarge {
            what: "bitmap",
            size: 0x1_0000_0000,
            ..
        })
    ));
    let img = raw_bitmap(&mut fx, 4, u32::MAX, 8, 0, 4, u32::MAX, u32::MAX, 0, data);
    assert!(matches!(
        decode_copy_of_raw(&mut fx, img, 1, 1),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn bitmap_dimension_cap() {
    let mut fx = Fx::new();
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    let max = fx.limits.max_bitmap_dim;
    let img = raw_bitmap(&mut fx, max + 1, 1, 10, 0, max + 1, 1, max + 1, 0, data);
    assert!(matches!(
        decode_copy_of_raw(&mut fx, img, 1, 1),
        Err(Error::TooLarge {
            what: "bitmap dimension",
            ..
        })
    ));
}

#[test]
fn bitmap_descriptor_must_match() {
    let mut fx = Fx::new();
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    let img = raw_bitmap(&mut fx, 2, 4, 8, 0, 1, 4, 4, 0, data);
    assert_eq!(
        decode_copy_of_raw(&mut fx, img, 1, 1),
        Err(Error::Malformed(
            "image descriptor size differs from bitmap"
        ))
    );
}

#[test]
fn bitmap_chunked_total_must_be_y_times_stride() {
    let mut fx = Fx::new();
    for len in [15usize, 17, 0] {
        let data =
            write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(len), Some(4)).unwrap();
        let img = raw_bitmap(&mut fx, 1, 4, 8, 0, 1, 4, 4, 0, data);
        assert!(matches!(
            decode_copy_of_raw(&mut fx, img, 1, 4),
            Err(Error::ChunkSizeMismatch { .. })
        ));
    }
}

#[test]
fn bitmap_direct_out_of_slot() {
    let mut fx = Fx::new();
    let end = super::SLOT1_SIZE;
    let img = raw_bitmap(
        &mut fx,
        4,
        4,
        8,
        BITMAP_DIRECT,
        4,
        4,
        16,
        0,
        Fx::phys(end - 64),
    );
    decode_copy_of_raw(&mut fx, img, 4, 4).unwrap();
    let img = raw_bitmap(
        &mut fx,
        4,
        4,
        8,
        BITMAP_DIRECT,
        4,
        4,
        16,
        0,
        Fx::phys(end - 63),
    );
    assert!(matches!(
        decode_copy_of_raw(&mut fx, img, 4, 4),
        Err(Error::OutsideSlot { .. })
    ));
    // Null data pointer.
    let img = raw_bitmap(&mut fx, 4, 4, 8, BITMAP_DIRECT, 4, 4, 16, 0, 0);
    assert_eq!(
        decode_copy_of_raw(&mut fx, img, 4, 4),
        Err(Error::NullPointer("QXLBitmap.data"))
    );
}

#[test]
fn bitmap_palette_out_of_slot() {
    let mut fx = Fx::new();
    let data = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(16), None).unwrap();
    // num_ents = 0xffff entries at the end of the slot.
    let pal = Fx::phys(super::SLOT1_SIZE - 100);
    fx.write(pal, &[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    let img = raw_bitmap(&mut fx, 4, 4, 5, 0, 4, 4, 4, pal, data);
    assert!(matches!(
        decode_copy_of_raw(&mut fx, img, 4, 4),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn image_quic_roundtrip_and_size_mismatch() {
    let mut fx = Fx::new();
    let img = Image {
        id: 1,
        flags: 0,
        width: 100,
        height: 100,
        data: ImageData::Quic(pattern(333)),
    };
    fx.assert_roundtrip(&Command::Draw(drawable(copy_of(img))));
    // data_size disagrees with the chain.
    let mut prefix = [0u8; 22];
    prefix[8] = 1;
    le::put_u32(&mut prefix, 18, 334);
    let p = write_embedded_chain(&fx.mem, &mut fx.heap, &prefix, &pattern(333), Some(100)).unwrap();
    assert!(matches!(
        decode_copy_of_raw(&mut fx, p, 1, 1),
        Err(Error::ChunkSizeMismatch { .. })
    ));
    // data_size above the image cap.
    le::put_u32(&mut prefix, 18, u32::MAX);
    let p = write_embedded_chain(&fx.mem, &mut fx.heap, &prefix, &[], None).unwrap();
    assert!(matches!(
        decode_copy_of_raw(&mut fx, p, 1, 1),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn image_surface_id_checked() {
    let mut fx = Fx::new();
    let img = |id| Image {
        id: 0,
        flags: 0,
        width: 10,
        height: 10,
        data: ImageData::Surface(id),
    };
    fx.assert_roundtrip(&Command::Draw(drawable(copy_of(img(1023)))));
    let (p, ty) = fx.encode(
        &Command::Draw(drawable(copy_of(img(1024)))),
        &EncodeOptions::default(),
    );
    assert_eq!(
        fx.decode(ty, p, 0),
        Err(Error::SurfaceIdOutOfRange {
            id: 1024,
            max: 1024
        })
    );
}

#[test]
fn image_unknown_types_rejected() {
    let mut fx = Fx::new();
    // LZ_PLT 100, LZ_RGB 101, GLZ_RGB 102, FROM_CACHE 103, JPEG 105, LZ4 107 ... only 0, 1, 104 pass.
    for t in [2u8, 100, 101, 102, 103, 105, 106, 107, 255] {
        let mut b = [0u8; 48];
        b[8] = t;
        let p = fx.raw(&b);
        assert!(matches!(
            decode_copy_of_raw(&mut fx, p, 1, 1),
            Err(Error::InvalidValue {
                field: "QXLImage.type",
                ..
            })
        ));
    }
    assert_eq!(
        decode_copy_of_raw(&mut fx, 0, 1, 1),
        Err(Error::NullPointer("image"))
    );
}

#[test]
fn image_variant_read_with_exact_length() {
    // A SURFACE image needs 22 bytes: it may sit 22 bytes before the slot end.
    let mut fx = Fx::new();
    let p = Fx::phys(super::SLOT1_SIZE - 22);
    let mut b = [0u8; 22];
    b[8] = 104;
    le::put_u32(&mut b, 10, 1);
    le::put_u32(&mut b, 14, 1);
    le::put_u32(&mut b, 18, 3);
    fx.write(p, &b);
    decode_copy_of_raw(&mut fx, p, 1, 1).unwrap();
    let q = Fx::phys(super::SLOT1_SIZE - 21);
    fx.write(q, &b[..21]);
    assert!(matches!(
        decode_copy_of_raw(&mut fx, q, 1, 1),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn image_compat_16bpp_palette_and_brush_conversion() {
    let mut fx = Fx::new();
    let mut img = palette_image(2, 2);
    if let ImageData::Bitmap(b) = &mut img.data {
        b.palette = Some(Palette {
            unique: 1,
            entries: vec![0x7fff, 0x001f, 0x03e0, 0x7c00, 0],
        });
    }
    let op = DrawOp::Fill {
        brush: spice_server::command::Brush::Pattern {
            image: Box::new(img),
            pos: Point::default(),
        },
        rop: spice_server::command::Ropd(8),
        mask: None,
    };
    let opts = EncodeOptions {
        compat: true,
        ..EncodeOptions::default()
    };
    let (p, ty) = fx.encode(&Command::Draw(drawable(op)), &opts);
    let d = fx
        .decode(
            ty,
            p,
            QXL_COMMAND_FLAG_COMPAT | QXL_COMMAND_FLAG_COMPAT_16BPP,
        )
        .unwrap();
    let Command::Draw(d) = d.command else {
        panic!()
    };
    let DrawOp::Fill {
        brush: spice_server::command::Brush::Pattern { image, .. },
        ..
    } = d.op
    else {
        panic!()
    };
    let ImageData::Bitmap(b) = image.data else {
        panic!()
    };
    assert_eq!(
        b.palette.unwrap().entries,
        vec![0xffffff, 0x0000ff, 0x00ff00, 0xff0000, 0]
    );
    let _ = QXL_CMD_DRAW;
}
