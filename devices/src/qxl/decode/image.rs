//! `QXLImage` decoding: bitmaps (with palettes), QUIC streams and surface images.
//!
//! A `QXLImage` is an 18-byte descriptor (`id` u64 @0, `type` u8 @8, `flags`
//! u8 @9, `width` u32 @10, `height` u32 @14) followed by one of three variants.
//! Only the three image types spice-server accepts from a guest are decoded:
//!
//! - **BITMAP (0)**: `QXLBitmap` @18 (30 bytes: format u8 @0, flags u8 @1,
//!   x u32 @2, y u32 @6, stride u32 @10, palette @14, data @22). With
//!   `QXL_BITMAP_DIRECT` the `y * stride` pixel bytes are contiguous at `data`;
//!   otherwise `data` points at a chunk chain holding exactly `y * stride` bytes.
//! - **QUIC (1)**: `data_size` u32 @18 then a chunk chain whose first header is
//!   embedded @22; the chain holds exactly `data_size` bytes.
//! - **SURFACE (104)**: `surface_id` u32 @18.
//!
//! The descriptor and the variant are read once each (two disjoint reads, each
//! translated with its exact length).

use spice_server::command::{Bitmap, BitmapFormat, Image, ImageData, Palette};

use super::{Ctx, MAX_DATA_CHUNK, color_16_to_32};
use crate::error::{Error, Result};
use crate::qxl::chunks::{ChunkHeader, ChunkStart, phys_add};
use crate::qxl::guest::{GuestView, le};

/// `SPICE_IMAGE_TYPE_BITMAP`.
pub const IMAGE_TYPE_BITMAP: u8 = 0;
/// `SPICE_IMAGE_TYPE_QUIC`.
pub const IMAGE_TYPE_QUIC: u8 = 1;
/// `SPICE_IMAGE_TYPE_SURFACE`.
pub const IMAGE_TYPE_SURFACE: u8 = 104;
/// Size of the `QXLImageDescriptor`.
pub const IMAGE_DESCRIPTOR_SIZE: u64 = 18;
/// Size of `QXLBitmap`.
pub const BITMAP_SIZE: usize = 30;
/// Size of the `QXLPalette` header (`unique` u64, `num_ents` u16).
pub const PALETTE_HEADER_SIZE: usize = 10;

/// Decode the image at `phys` (which must be non-zero).
///
/// `is_mask`: the image is a `QXLQMask` bitmap, which needs no palette even in
/// a palette format (as spice-server's `red_get_image(.., is_mask)`).
///
/// Checks beyond spice-server: for bitmaps the descriptor's width and height
/// must equal the bitmap's `x` and `y` (every driver writes them equal, and a
/// client trusts both), `x` and `y` are at most [`super::Limits::max_bitmap_dim`], and
/// `y * stride` at most [`super::Limits::max_image_bytes`]; surface ids must be below
/// [`super::Limits::n_surfaces`].
pub(crate) fn decode_image<V: GuestView + ?Sized>(
    ctx: &mut Ctx<'_, V>,
    phys: u64,
    is_mask: bool,
) -> Result<Image> {
    if phys == 0 {
        return Err(Error::NullPointer("image"));
    }
    let d: [u8; 18] = ctx.read_array(phys)?;
    let id = le::u64_at(&d, 0);
    let kind = le::u8_at(&d, 8);
    let flags = le::u8_at(&d, 9);
    let width = le::u32_at(&d, 10);
    let height = le::u32_at(&d, 14);
    let variant = phys_add(phys, IMAGE_DESCRIPTOR_SIZE)?;
    let data = match kind {
        IMAGE_TYPE_BITMAP => {
            let b = decode_bitmap(ctx, variant, is_mask)?;
            if b.width != width || b.height != height {
                return Err(Error::Malformed(
                    "image descriptor size differs from bitmap",
                ));
            }
            ImageData::Bitmap(b)
        }
        IMAGE_TYPE_QUIC => {
            let q: [u8; 24] = ctx.read_array(variant)?;
            let size = u64::from(le::u32_at(&q, 0));
            if size > ctx.limits.max_image_bytes {
                return Err(Error::TooLarge {
                    what: "QUIC image",
                    size,
                    cap: ctx.limits.max_image_bytes,
                });
            }
            let first = ChunkStart::Embedded {
                header: ChunkHeader::parse(q.get(4..).unwrap_or_default()),
                data: phys_add(variant, 24)?,
            };
            ImageData::Quic(ctx.read_chain("QUIC image", first, size)?)
        }
        IMAGE_TYPE_SURFACE => {
            let s: [u8; 4] = ctx.read_array(variant)?;
            let surface_id = le::u32_at(&s, 0);
            ctx.check_surface_id(surface_id)?;
            ImageData::Surface(surface_id)
        }
        other => {
            return Err(Error::InvalidValue {
                field: "QXLImage.type",
                value: u64::from(other),
            });
        }
    };
    Ok(Image {
        id,
        flags,
        width,
        height,
        data,
    })
}

/// The `QXLBitmap` at `phys` (the variant part of a `QXLImage`).
fn decode_bitmap<V: GuestView + ?Sized>(
    ctx: &mut Ctx<'_, V>,
    phys: u64,
    is_mask: bool,
) -> Result<Bitmap> {
    let b: [u8; BITMAP_SIZE] = ctx.read_array(phys)?;
    let raw_format = le::u8_at(&b, 0);
    let format = BitmapFormat::from_u8(raw_format).ok_or(Error::InvalidValue {
        field: "QXLBitmap.format",
        value: u64::from(raw_format),
    })?;
    let flags = le::u8_at(&b, 1);
    let x = le::u32_at(&b, 2);
    let y = le::u32_at(&b, 6);
    let stride = le::u32_at(&b, 10);
    let palette_phys = le::u64_at(&b, 14);
    let data_phys = le::u64_at(&b, 22);

    if format.has_palette() && palette_phys == 0 && !is_mask {
        return Err(Error::NullPointer("QXLBitmap.palette"));
    }
    if x == 0 || y == 0 {
        return Err(Error::Malformed("zero-area bitmap"));
    }
    let max = ctx.limits.max_bitmap_dim;
    if x > max || y > max {
        return Err(Error::TooLarge {
            what: "bitmap dimension",
            size: u64::from(x.max(y)),
            cap: u64::from(max),
        });
    }
    // bitmap_consistent, in u64 (spice 0f58e9da).
    let row = (u64::from(x) * u64::from(format.bpp())).div_ceil(8);
    if u64::from(stride) < row {
        return Err(Error::Malformed("bitmap stride smaller than a row"));
    }
    let size = u64::from(y) * u64::from(stride);
    let cap = ctx.limits.max_image_bytes.min(MAX_DATA_CHUNK);
    if size > cap {
        return Err(Error::TooLarge {
            what: "bitmap",
            size,
            cap,
        });
    }
    let palette = if palette_phys != 0 {
        Some(decode_palette(ctx, palette_phys)?)
    } else {
        None
    };
    if data_phys == 0 {
        return Err(Error::NullPointer("QXLBitmap.data"));
    }
    let data = if flags & spice_server::command::BITMAP_DIRECT != 0 {
        ctx.read_vec("bitmap", data_phys, size)?
    } else {
        ctx.read_chain("bitmap", ChunkStart::Pointer(data_phys), size)?
    };
    Ok(Bitmap {
        format,
        flags,
        width: x,
        height: y,
        stride,
        palette,
        data,
    })
}

/// The `QXLPalette` at `phys`: header once, then `num_ents` entries once.
/// In `COMPAT_16BPP` mode the entries are x555 and are widened to x888.
fn decode_palette<V: GuestView + ?Sized>(ctx: &mut Ctx<'_, V>, phys: u64) -> Result<Palette> {
    let h: [u8; PALETTE_HEADER_SIZE] = ctx.read_array(phys)?;
    let unique = le::u64_at(&h, 0);
    let num_ents = le::u16_at(&h, 8);
    let len = u64::from(num_ents) * 4;
    let ents = ctx.read_vec("palette", phys_add(phys, 10)?, len)?;
    let convert = ctx.compat_16bpp();
    let entries = ents
        .chunks_exact(4)
        .map(|c| {
            let v = le::u32_at(c, 0);
            if convert { color_16_to_32(v) } else { v }
        })
        .collect();
    Ok(Palette { unique, entries })
}
