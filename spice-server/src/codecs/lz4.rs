//! LZ4 as SPICE frames it (image type `LZ4`, spice-server `lz4-encoder.c`,
//! spice-gtk `canvas_get_lz4`).
//!
//! ```text
//! u8  top_down (0/1)
//! u8  SpiceBitmapFmt: 16BIT 6, 24BIT 7, 32BIT 8, RGBA 9
//! repeated: u32 big-endian compressed length, raw LZ4 block
//! ```
//!
//! The blocks hold consecutive groups of tightly packed rows in stored order.
//! They are *linked*: each block is compressed with the previous 64 KiB of
//! input as its dictionary, so it may reference data of earlier blocks; the
//! client decodes them with one `LZ4_streamDecode_t` into one contiguous
//! buffer. Width and height are not in the stream (they come from the image
//! descriptor), so the decoder takes them as arguments.

use std::num::NonZeroU32;

use super::{CodecError, DecodeLimits, DecodedImage, ImageRef, PixelFormat};

/// LZ4's window: how far back a match may reach.
const WINDOW: usize = 64 * 1024;

/// `SpiceBitmapFmt` value of a pixel format LZ4 can carry.
fn spice_bitmap_fmt(format: PixelFormat) -> Result<u8, CodecError> {
    match format {
        PixelFormat::Rgb16 => Ok(6),
        PixelFormat::Rgb24 => Ok(7),
        PixelFormat::Rgb32 => Ok(8),
        PixelFormat::Rgba => Ok(9),
        _ => Err(CodecError::UnsupportedFormat {
            codec: "LZ4",
            format,
        }),
    }
}

/// Pixel format of a `SpiceBitmapFmt` value in an LZ4 header.
fn format_of(fmt: u8) -> Result<PixelFormat, CodecError> {
    match fmt {
        6 => Ok(PixelFormat::Rgb16),
        7 => Ok(PixelFormat::Rgb24),
        8 => Ok(PixelFormat::Rgb32),
        9 => Ok(PixelFormat::Rgba),
        other => Err(CodecError::BadImageType(u32::from(other))),
    }
}

/// Encodes `img` as one LZ4 block (the fastest, and what a client decodes best).
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for formats other than RGB16/24/32 and RGBA,
/// or an invalid [`ImageRef`].
pub fn encode(img: &ImageRef<'_>) -> Result<Vec<u8>, CodecError> {
    encode_blocks(img, None)
}

/// Encodes `img` as linked blocks of `rows_per_block` rows each (`None`: one
/// block). Each block is compressed with the previous 64 KiB of rows as its
/// dictionary, exactly what `LZ4_compress_fast_continue` on one stream allows.
///
/// # Errors
/// As [`encode`].
pub fn encode_blocks(
    img: &ImageRef<'_>,
    rows_per_block: Option<NonZeroU32>,
) -> Result<Vec<u8>, CodecError> {
    img.validate()?;
    let fmt = spice_bitmap_fmt(img.format)?;
    let row_bytes = img.row_bytes();
    let rows = img.rows();

    // The rows as one contiguous buffer (borrowed when already packed).
    let packed: std::borrow::Cow<'_, [u8]> = if img.stride == row_bytes {
        std::borrow::Cow::Borrowed(&img.pixels[..row_bytes * rows])
    } else {
        let mut v = Vec::with_capacity(row_bytes * rows);
        for r in 0..rows {
            v.extend_from_slice(img.row(r));
        }
        std::borrow::Cow::Owned(v)
    };
    let data: &[u8] = &packed;

    let rows_per_block = rows_per_block.map_or(rows, |n| usize::try_from(n.get()).unwrap_or(rows));
    let block_bytes = rows_per_block.max(1).saturating_mul(row_bytes);
    let n_blocks = data.len().div_ceil(block_bytes);
    let bound =
        2 + n_blocks * 4 + lz4_flex::block::get_maximum_output_size(data.len()) + n_blocks * 32;
    let mut out = vec![0u8; bound];
    out[0] = u8::from(img.top_down);
    out[1] = fmt;
    let mut pos = 2;
    let mut start = 0;
    while start < data.len() {
        let end = (start + block_bytes).min(data.len());
        let input = &data[start..end];
        let dict = &data[start.saturating_sub(WINDOW)..start];
        let dst = &mut out[pos + 4..];
        let n = lz4_flex::block::compress_into_with_dict(input, dst, dict)
            .map_err(|e| CodecError::Lz4(e.to_string()))?;
        let len = u32::try_from(n).map_err(|_| CodecError::Lz4("block too large".into()))?;
        out[pos..pos + 4].copy_from_slice(&len.to_be_bytes());
        pos += 4 + n;
        start = end;
    }
    out.truncate(pos);
    Ok(out)
}

/// Decodes an LZ4 image of `width` × `height` pixels with default limits.
///
/// # Errors
/// Any malformed stream: see [`decode_with_limits`].
pub fn decode(data: &[u8], width: u32, height: u32) -> Result<DecodedImage, CodecError> {
    decode_with_limits(data, width, height, &DecodeLimits::default())
}

/// Decodes an LZ4 image of `width` × `height` pixels (from the image
/// descriptor), like spice-gtk's `canvas_get_lz4`: blocks are decoded in order
/// into one buffer, each may reference the previous 64 KiB of output. Stricter
/// than the client, the decoded size must be exactly `height` packed rows.
///
/// # Errors
/// [`CodecError::Truncated`] for a missing header or block, [`CodecError::BadImageType`]
/// for an unknown format byte, [`CodecError::BadDimensions`]/[`CodecError::TooLarge`]
/// against `limits`, [`CodecError::Lz4`] or [`CodecError::Corrupt`] for bad blocks.
pub fn decode_with_limits(
    data: &[u8],
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<DecodedImage, CodecError> {
    let [top_down, fmt, rest @ ..] = data else {
        return Err(CodecError::Truncated);
    };
    let top_down = *top_down != 0;
    let format = format_of(*fmt)?;
    let row_bytes = format.row_bytes(width);
    let total = limits.check(width, height, row_bytes)?;
    let mut out = vec![0u8; total];
    let mut written = 0usize;
    let mut input = rest;
    loop {
        let Some((len_bytes, tail)) = input.split_first_chunk::<4>() else {
            return Err(CodecError::Truncated);
        };
        let len =
            usize::try_from(u32::from_be_bytes(*len_bytes)).map_err(|_| CodecError::Truncated)?;
        if len > tail.len() {
            return Err(CodecError::Truncated);
        }
        let (block, tail) = tail.split_at(len);
        let (done, free) = out.split_at_mut(written);
        let dict = &done[done.len().saturating_sub(WINDOW)..];
        let n = lz4_flex::block::decompress_into_with_dict(block, free, dict)
            .map_err(|e| CodecError::Lz4(e.to_string()))?;
        if n == 0 {
            return Err(CodecError::Corrupt("LZ4 block decodes to nothing"));
        }
        written += n;
        input = tail;
        if input.is_empty() {
            break;
        }
    }
    if written != total {
        return Err(CodecError::Corrupt("LZ4 data shorter than the image"));
    }
    Ok(DecodedImage {
        width,
        height,
        format,
        top_down,
        stride: row_bytes,
        pixels: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32, format: PixelFormat, seed: u32) -> Vec<u8> {
        let n = format.row_bytes(width) * usize::try_from(height).unwrap();
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Mostly repetitive with some noise so that matches span blocks.
                if (s >> 16).is_multiple_of(4) {
                    u8::try_from((s >> 24) & 0xff).unwrap()
                } else {
                    u8::try_from(i % 61).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn lz4_round_trip_single_and_linked_blocks() {
        for format in [
            PixelFormat::Rgb16,
            PixelFormat::Rgb24,
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
        ] {
            let (w, h) = (97, 131);
            let px = image(w, h, format, 7);
            let img = ImageRef::new(&px, w, h, format.row_bytes(w), format, false).unwrap();
            for rows in [
                None,
                NonZeroU32::new(1),
                NonZeroU32::new(7),
                NonZeroU32::new(200),
            ] {
                let enc = encode_blocks(&img, rows).unwrap();
                assert_eq!(enc[0], 0);
                let dec = decode(&enc, w, h).unwrap();
                assert_eq!(dec.pixels, px, "{format:?} {rows:?}");
                assert!(!dec.top_down);
            }
        }
    }

    #[test]
    fn lz4_linked_blocks_reference_previous_blocks() {
        // Identical rows: with one row per block every block after the first must
        // be a pure back-reference into the previous block, hence tiny.
        let (w, h) = (300u32, 20u32);
        let row: Vec<u8> = (0..w * 4)
            .map(|i| u8::try_from((i * 37) % 251).unwrap())
            .collect();
        let px: Vec<u8> = (0..h).flat_map(|_| row.iter().copied()).collect();
        let img = ImageRef::new(&px, w, h, 1200, PixelFormat::Rgb32, true).unwrap();
        let enc = encode_blocks(&img, NonZeroU32::new(1)).unwrap();
        assert!(enc.len() < 1200 + 20 * 40, "{}", enc.len());
        let dec = decode(&enc, w, h).unwrap();
        assert_eq!(dec.pixels, px);
        assert!(dec.top_down);
    }

    #[test]
    fn lz4_strided_input() {
        let (w, h) = (5u32, 3u32);
        let stride = 32;
        let px: Vec<u8> = (0..stride * 3)
            .map(|i| u8::try_from(i % 256).unwrap())
            .collect();
        let img = ImageRef::new(&px, w, h, stride, PixelFormat::Rgb24, true).unwrap();
        let dec = decode(&encode(&img).unwrap(), w, h).unwrap();
        for r in 0..3 {
            assert_eq!(&dec.pixels[r * 15..r * 15 + 15], img.row(r));
        }
    }

    #[test]
    fn lz4_rejects_garbage() {
        decode(&[], 1, 1).unwrap_err();
        decode(&[1], 1, 1).unwrap_err();
        decode(&[1, 8], 1, 1).unwrap_err();
        decode(&[1, 5, 0, 0, 0, 0], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 9, 1], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 0], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 0, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 100_000, 100_000).unwrap_err();
        // A block claiming more output than the image.
        let px = [0u8; 64];
        let img = ImageRef::new(&px, 16, 1, 64, PixelFormat::Rgb32, true).unwrap();
        let enc = encode(&img).unwrap();
        decode(&enc, 15, 1).unwrap_err();
        decode(&enc, 17, 1).unwrap_err();
        decode(&enc, 16, 1).unwrap();
        // Every truncation fails cleanly.
        for cut in 0..enc.len() {
            decode(&enc[..cut], 16, 1).unwrap_err();
        }
    }

    proptest::proptest! {
        #[test]
        fn lz4_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                    w in 1u32..40, h in 1u32..40) {
            let _ = decode(&data, w, h);
        }
    }
}
