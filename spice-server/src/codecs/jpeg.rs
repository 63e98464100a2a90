//! JPEG (image type 105) and JPEG_ALPHA (108), lossy, for WAN clients.
//!
//! * **JPEG**: a complete baseline JFIF stream of the colour, rows in *visual*
//!   order (top first) whatever the source orientation — spice-server reverses
//!   bottom-up bitmaps. spice-server's `jpeg-encoder.c` uses libjpeg defaults
//!   (baseline, standard Huffman tables, YCbCr 4:2:0) at quality 85
//!   ([`DEFAULT_QUALITY`]); spice-gtk decodes with libjpeg to RGB. This module
//!   encodes the same way with the pure-Rust `jpeg-encoder` crate.
//! * **JPEG_ALPHA** (`SpiceJPEGAlphaData`): `flags` (`u8`, bit 0
//!   [`JPEG_ALPHA_FLAGS_TOP_DOWN`]), `jpeg_size`, `data_size`, then the JPEG of
//!   the colour followed by an LZ image of type `XXXA` holding the alpha bytes
//!   in *stored* row order, whose `top_down` must equal the flag (the client
//!   checks; `canvas_base.c canvas_get_jpeg_alpha`).
//!
//! The decoders (`jpeg-decoder` crate) are test oracles and fuzz targets.

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use super::lz::{self, LzImageType};
use super::{CodecError, DecodeLimits, DecodedImage, ImageRef, PixelFormat};

/// spice-server's default JPEG quality (`dcc.cpp`).
pub const DEFAULT_QUALITY: u8 = 85;
/// `SPICE_JPEG_ALPHA_FLAGS_TOP_DOWN`.
pub const JPEG_ALPHA_FLAGS_TOP_DOWN: u8 = 1;

/// A JPEG_ALPHA image (`SpiceJPEGAlphaData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegAlpha {
    /// `flags`: [`JPEG_ALPHA_FLAGS_TOP_DOWN`] when the source is top-down.
    pub flags: u8,
    /// Bytes of JPEG at the start of `data`.
    pub jpeg_size: u32,
    /// The JPEG then the LZ `XXXA` alpha image (`data_size` = its length).
    pub data: Vec<u8>,
}

/// Maps an encoder error.
fn enc_err(_: jpeg_encoder::EncodingError) -> CodecError {
    CodecError::Corrupt("JPEG encoder failed")
}

/// Encodes the colour of `img` (RGB16/24/32 or RGBA, whose alpha is ignored)
/// as a baseline 4:2:0 JPEG at `quality` (1–100), rows top first.
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for palette/A8 images,
/// [`CodecError::BadDimensions`] above 65535 pixels either way, or an invalid
/// [`ImageRef`].
pub fn encode(img: &ImageRef<'_>, quality: u8) -> Result<Vec<u8>, CodecError> {
    img.validate()?;
    let (w, h) = match (u16::try_from(img.width), u16::try_from(img.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(CodecError::BadDimensions {
                width: img.width,
                height: img.height,
            });
        }
    };
    let (color, bpp) = match img.format {
        PixelFormat::Rgb32 | PixelFormat::Rgba => (ColorType::Bgra, 4),
        PixelFormat::Rgb24 | PixelFormat::Rgb16 => (ColorType::Bgr, 3),
        other => {
            return Err(CodecError::UnsupportedFormat {
                codec: "JPEG",
                format: other,
            });
        }
    };
    let rows = img.rows();
    let row_bytes = img.row_bytes();
    // Visual row `v` is stored row `v` (top-down) or `rows - 1 - v`.
    let stored = |v: usize| if img.top_down { v } else { rows - 1 - v };
    let packed;
    let data: &[u8] = if img.format != PixelFormat::Rgb16
        && img.top_down
        && (img.stride == row_bytes || rows == 1)
    {
        &img.pixels[..row_bytes * rows]
    } else {
        let mut v = Vec::with_capacity(img.cols() * bpp * rows);
        for r in 0..rows {
            let row = img.row(stored(r));
            if img.format == PixelFormat::Rgb16 {
                for c in row.as_chunks::<2>().0 {
                    let p = u16::from_le_bytes(*c);
                    let ch = |s: u16| {
                        let x = u8::try_from((p >> s) & 31).unwrap_or(0);
                        (x << 3) | (x >> 2)
                    };
                    v.extend_from_slice(&[ch(0), ch(5), ch(10)]);
                }
            } else {
                v.extend_from_slice(row);
            }
        }
        packed = v;
        &packed
    };
    let mut out = Vec::with_capacity(row_bytes * rows / 8 + 1024);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.set_progressive(false);
    enc.set_optimized_huffman_tables(false);
    enc.encode(data, w, h, color).map_err(enc_err)?;
    Ok(out)
}

/// Encodes an RGBA image as JPEG_ALPHA: the colour as [`encode`], the alpha
/// as LZ `XXXA` in stored row order.
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] unless `img` is RGBA, otherwise as
/// [`encode`] and [`lz::encode_alpha`].
pub fn encode_alpha(img: &ImageRef<'_>, quality: u8) -> Result<JpegAlpha, CodecError> {
    if img.format != PixelFormat::Rgba {
        return Err(CodecError::UnsupportedFormat {
            codec: "JPEG_ALPHA",
            format: img.format,
        });
    }
    let mut data = encode(img, quality)?;
    let jpeg_size = u32::try_from(data.len()).map_err(|_| CodecError::TooLarge {
        bytes: u64::MAX,
        limit: 0,
    })?;
    data.extend_from_slice(&lz::encode_alpha(img)?);
    Ok(JpegAlpha {
        flags: if img.top_down {
            JPEG_ALPHA_FLAGS_TOP_DOWN
        } else {
            0
        },
        jpeg_size,
        data,
    })
}

/// Decodes a JPEG into RGB32 (`B, G, R, 0`), rows top first (what spice-gtk
/// draws), checking the size against `limits` before decoding.
///
/// # Errors
/// [`CodecError::Corrupt`] for anything the JPEG decoder rejects (including
/// non-RGB/gray streams), [`CodecError::BadDimensions`] / [`CodecError::TooLarge`]
/// against `limits`.
pub fn decode(data: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, CodecError> {
    let mut dec = jpeg_decoder::Decoder::new(data);
    dec.read_info()
        .map_err(|_| CodecError::Corrupt("bad JPEG header"))?;
    let info = dec.info().ok_or(CodecError::Corrupt("bad JPEG header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let bytes = limits.check(width, height, 4 * usize::from(info.width))?;
    dec.set_max_decoding_buffer_size(bytes);
    let raw = dec
        .decode()
        .map_err(|_| CodecError::Corrupt("bad JPEG data"))?;
    let n = usize::from(info.width) * usize::from(info.height);
    let mut pixels = Vec::with_capacity(bytes);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if raw.len() >= n * 3 => {
            for c in raw[..n * 3].as_chunks::<3>().0 {
                pixels.extend_from_slice(&[c[2], c[1], c[0], 0]);
            }
        }
        jpeg_decoder::PixelFormat::L8 if raw.len() >= n => {
            for &l in &raw[..n] {
                pixels.extend_from_slice(&[l, l, l, 0]);
            }
        }
        _ => return Err(CodecError::Corrupt("unsupported JPEG colour format")),
    }
    Ok(DecodedImage {
        width,
        height,
        format: PixelFormat::Rgb32,
        top_down: true,
        stride: 4 * usize::from(info.width),
        pixels,
    })
}

/// Decodes a JPEG_ALPHA payload as the client does: the JPEG colour, then the
/// LZ `XXXA` alpha (same size, `top_down` equal to the flag) into byte 3.
/// Returns RGBA rows top first.
///
/// # Errors
/// [`CodecError::Truncated`] if `jpeg_size` exceeds `data`,
/// [`CodecError::Corrupt`] when the parts disagree (type, size, orientation),
/// otherwise as [`decode`] and [`lz::decode_with_limits`].
pub fn decode_alpha(
    flags: u8,
    jpeg_size: u32,
    data: &[u8],
    limits: &DecodeLimits,
) -> Result<DecodedImage, CodecError> {
    let split = usize::try_from(jpeg_size).unwrap_or(usize::MAX);
    if split > data.len() {
        return Err(CodecError::Truncated);
    }
    let (jpeg, alpha) = data.split_at(split);
    let mut img = decode(jpeg, limits)?;
    let hdr = lz::parse_header(alpha)?;
    let top_down = flags & JPEG_ALPHA_FLAGS_TOP_DOWN != 0;
    if hdr.image_type != LzImageType::Xxxa {
        return Err(CodecError::Corrupt("JPEG_ALPHA alpha is not LZ XXXA"));
    }
    if hdr.top_down != top_down || hdr.width != img.width || hdr.height != img.height {
        return Err(CodecError::Corrupt(
            "JPEG_ALPHA alpha size or orientation differs from the JPEG",
        ));
    }
    let a = lz::decode_with_limits(alpha, limits)?;
    let w = img.stride;
    let rows = img.height as usize;
    for (r, arow) in a.pixels.chunks_exact(w).enumerate() {
        let v = if top_down { r } else { rows - 1 - r };
        let dst = &mut img.pixels[v * w..(v + 1) * w];
        for (d, s) in dst
            .as_chunks_mut::<4>()
            .0
            .iter_mut()
            .zip(arow.as_chunks::<4>().0)
        {
            d[3] = s[3];
        }
    }
    img.format = PixelFormat::Rgba;
    Ok(img)
}

/// Peak signal-to-noise ratio in dB between two equally sized BGRX/BGRA
/// images over the colour bytes (infinite when identical).
#[must_use]
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mut se = 0u64;
    let mut n = 0u64;
    for (x, y) in a.as_chunks::<4>().0.iter().zip(b.as_chunks::<4>().0) {
        for k in 0..3 {
            let d = u64::from(x[k].abs_diff(y[k]));
            se += d * d;
            n += 1;
        }
    }
    if se == 0 || n == 0 {
        return f64::INFINITY;
    }
    #[allow(clippy::cast_precision_loss)] // Sums far below 2^52.
    let mse = se as f64 / n as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}
