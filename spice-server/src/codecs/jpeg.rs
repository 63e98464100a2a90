//! JPEG (image type 105) and JPEG_ALPHA (108), lossy, for WAN clients.
//!
//! * **JPEG**: a complete baseline JFIF stream of the colour, rows in *visual*
//!   order (top first) whatever the source orientation — spice-server reverses
//!   bottom-up bitmaps. spice-server's `jpeg-encoder.c` uses libjpeg defaults
//!   (baseline, standard Huffman tables, YCbCr 4:2:0) at quality 85
//!   ([`DEFAULT_QUALITY`]); spice-gtk decodes with libjpeg to RGB. This module
//!   encodes the same way with [`jpeg_enc`], this crate's own baseline
//!   encoder (about 1.6× the `jpeg-encoder` crate's speed, same size and
//!   quality or better).
//! * **JPEG_ALPHA** (`SpiceJPEGAlphaData`): `flags` (`u8`, bit 0
//!   [`JPEG_ALPHA_FLAGS_TOP_DOWN`]), `jpeg_size`, `data_size`, then the JPEG of
//!   the colour followed by an LZ image of type `XXXA` holding the alpha bytes
//!   in *stored* row order, whose `top_down` must equal the flag (the client
//!   checks; `canvas_base.c canvas_get_jpeg_alpha`).
//!
//! The decoders (`jpeg-decoder` crate) are test oracles and fuzz targets.

use super::jpeg_enc;
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

/// Encodes the colour of `img` (RGB16/24/32 or RGBA, whose alpha is ignored)
/// as a baseline 4:2:0 JPEG at `quality` (1–100), rows top first.
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for palette/A8 images,
/// [`CodecError::BadDimensions`] above 65535 pixels either way, or an invalid
/// [`ImageRef`].
pub fn encode(img: &ImageRef<'_>, quality: u8) -> Result<Vec<u8>, CodecError> {
    jpeg_enc::encode(img, quality, 0)
}

/// Images from this many pixels on are worth [`encode_parallel`]'s threads.
pub const PARALLEL_MIN_PIXELS: usize = 256 * 1024;

/// Encodes `img` like [`encode`], on up to `threads` threads for images of
/// at least [`PARALLEL_MIN_PIXELS`]: the image is cut into bands of whole MCU
/// rows, each band's entropy-coded data is made on its own thread
/// ([`jpeg_enc::scan`]: DC predictions from 0, ending on a byte boundary),
/// and the bands are joined with restart markers (`RST0`…`RST7` in turn)
/// under headers that declare a restart interval (`DRI`) of one band's MCUs.
/// A restart resets the DC predictions and byte-aligns the bit stream,
/// exactly how each band starts and ends, so the result is byte for byte
/// the single-threaded encoding with that restart interval — a baseline JPEG
/// every decoder (libjpeg in spice-gtk) reads.
///
/// # Errors
/// As [`encode`].
pub fn encode_parallel(
    img: &ImageRef<'_>,
    quality: u8,
    threads: usize,
) -> Result<Vec<u8>, CodecError> {
    img.validate()?;
    let (cols, rows) = (img.cols(), img.rows());
    let mcu_cols = jpeg_enc::mcu_cols(img).max(1);
    let mcu_rows = jpeg_enc::mcu_rows(img);
    // The restart interval (MCUs of one band) must fit DRI's 16 bits.
    let max_band = (usize::from(u16::MAX) / mcu_cols).max(1);
    let band_mcu_rows = mcu_rows.div_ceil(threads.max(1)).clamp(1, max_band);
    let bands = mcu_rows.div_ceil(band_mcu_rows);
    if threads <= 1 || bands <= 1 || cols * rows < PARALLEL_MIN_PIXELS {
        return encode(img, quality);
    }
    let interval = u16::try_from(band_mcu_rows * mcu_cols)
        .map_err(|_| CodecError::Corrupt("JPEG restart interval"))?;
    // Headers first: they reject what JPEG cannot carry before any thread.
    let mut out = jpeg_enc::headers(img, quality, interval)?;
    let band = |k: usize| jpeg_enc::scan(img, quality, k * band_mcu_rows..(k + 1) * band_mcu_rows);
    // Runs of `per_thread` consecutive bands, one run per thread.
    let per_thread = bands.div_ceil(threads);
    let runs: Vec<std::ops::Range<usize>> = (0..bands)
        .step_by(per_thread)
        .map(|k| k..(k + per_thread).min(bands))
        .collect();
    let mut coded: Vec<Result<Vec<u8>, CodecError>> = Vec::with_capacity(bands);
    for run in super::on_threads(&runs, |run| run.clone().map(band).collect::<Vec<_>>()) {
        match run {
            Ok(v) => coded.extend(v),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    let coded = coded.into_iter().collect::<Result<Vec<_>, _>>()?;
    out.reserve(coded.iter().map(Vec::len).sum::<usize>() + 2 * bands + 2);
    for (k, data) in coded.iter().enumerate() {
        if k > 0 {
            let rst = u8::try_from((k - 1) % 8).unwrap_or(0);
            out.extend_from_slice(&[0xff, 0xd0 + rst]);
        }
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&[0xff, 0xd9]);
    Ok(out)
}

/// Encodes an RGBA image as JPEG_ALPHA: the colour as [`encode`], the alpha
/// as LZ `XXXA` in stored row order.
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] unless `img` is RGBA, otherwise as
/// [`encode`] and [`lz::encode_alpha`].
pub fn encode_alpha(img: &ImageRef<'_>, quality: u8) -> Result<JpegAlpha, CodecError> {
    encode_alpha_parallel(img, quality, 1)
}

/// [`encode_alpha`] with the colour encoded by [`encode_parallel`] on up to
/// `threads` threads.
///
/// # Errors
/// As [`encode_alpha`].
pub fn encode_alpha_parallel(
    img: &ImageRef<'_>,
    quality: u8,
    threads: usize,
) -> Result<JpegAlpha, CodecError> {
    if img.format != PixelFormat::Rgba {
        return Err(CodecError::UnsupportedFormat {
            codec: "JPEG_ALPHA",
            format: img.format,
        });
    }
    let mut data = encode_parallel(img, quality, threads)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize, bpp: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * bpp);
        let mut s = 7u32;
        for y in 0..h {
            for x in 0..w {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let n = u8::try_from((s >> 16) % 9).unwrap();
                let px = [
                    u8::try_from((x + y) % 256).unwrap().wrapping_add(n),
                    u8::try_from((x * 3) % 256).unwrap(),
                    if (x / 64 + y / 48) % 2 == 0 {
                        240
                    } else {
                        n * 20
                    },
                    0,
                ];
                v.extend_from_slice(&px[..bpp]);
            }
        }
        v
    }

    #[test]
    fn jpeg_parallel_bands_equal_restart_encoding() {
        // Heights and widths on and off the 16-pixel MCU grid, both row
        // orders, 16/24/32-bit; the banded stream is the single-threaded
        // encoding with one band's MCUs as the restart interval.
        for (w, h, format, top_down) in [
            (640usize, 480usize, PixelFormat::Rgb32, true),
            (1000, 517, PixelFormat::Rgb32, false),
            (700, 401, PixelFormat::Rgb24, true),
            (613, 500, PixelFormat::Rgb16, false),
            (600, 450, PixelFormat::Rgba, true),
        ] {
            let bpp = usize::try_from(format.bits_per_pixel() / 8).unwrap();
            let px = pattern(w, h, bpp);
            let img = ImageRef::new(
                &px,
                u32::try_from(w).unwrap(),
                u32::try_from(h).unwrap(),
                w * bpp,
                format,
                top_down,
            )
            .unwrap();
            let single = encode(&img, DEFAULT_QUALITY).unwrap();
            assert_eq!(encode_parallel(&img, DEFAULT_QUALITY, 1).unwrap(), single);
            let whole = decode(&single, &DecodeLimits::default()).unwrap();
            for threads in [2usize, 3, 4, 7] {
                let par = encode_parallel(&img, DEFAULT_QUALITY, threads).unwrap();
                let mcu_rows = h.div_ceil(16);
                let band = mcu_rows.div_ceil(threads);
                let interval = u16::try_from(band * w.div_ceil(16)).unwrap();
                let want = jpeg_enc::encode(&img, DEFAULT_QUALITY, interval).unwrap();
                assert!(par == want, "{w}x{h} {format:?} {threads} threads");
                let dec = decode(&par, &DecodeLimits::default()).unwrap();
                assert!(psnr(&dec.pixels, &whole.pixels) > 40.0, "{w}x{h} {threads}");
            }
        }
        // JPEG_ALPHA: the colour in bands, the alpha as before.
        let px = pattern(640, 480, 4);
        let img = ImageRef::new(&px, 640, 480, 2560, PixelFormat::Rgba, false).unwrap();
        let one = encode_alpha(&img, DEFAULT_QUALITY).unwrap();
        let par = encode_alpha_parallel(&img, DEFAULT_QUALITY, 3).unwrap();
        let lim = DecodeLimits::default();
        let a = decode_alpha(one.flags, one.jpeg_size, &one.data, &lim).unwrap();
        let b = decode_alpha(par.flags, par.jpeg_size, &par.data, &lim).unwrap();
        assert_ne!(one.data, par.data);
        assert_eq!(a.pixels, b.pixels);
        // Below the threshold: one band.
        let px = pattern(300, 200, 4);
        let img = ImageRef::new(&px, 300, 200, 1200, PixelFormat::Rgb32, true).unwrap();
        assert_eq!(
            encode_parallel(&img, DEFAULT_QUALITY, 4).unwrap(),
            encode(&img, DEFAULT_QUALITY).unwrap()
        );
    }
}
