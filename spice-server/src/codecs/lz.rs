//! SPICE LZ (image types `LZ_RGB` and `LZ_PLT`; spice-common `lz.c`).
//!
//! # Stream
//! A 28-byte header of big-endian `u32`s — magic `0x20205a4c` (`"  ZL"`), version
//! `0x00010001`, [`LzImageType`], width, height, stride in bytes, top_down —
//! followed by control bytes over a sequence of *pixels* (bytes for palette
//! types):
//!
//! * `ctrl < 32`: `ctrl + 1` literal pixels follow (RGB24/RGB32: 3 bytes B, G, R;
//!   RGB16: 2 bytes, high first; palette and alpha: 1 byte).
//! * `ctrl ≥ 32`: a back-reference. Its length field is `ctrl >> 5`, and when
//!   that is 7 it is extended by following bytes while each is 255. The distance
//!   is `(ctrl & 31) << 8` plus the next byte; when that is 31/255 a far distance
//!   follows as a big-endian `u16` plus 8191. The distance is biased by one and
//!   the copied length is the field (RGB24/32), field + 1 (RGB16) or field + 2
//!   (palette, alpha), in pixels. Copies run forward and may overlap (runs).
//!
//! `RGBA` is an RGB32 pass over all pixels followed by a second stream over the
//! alpha bytes alone; `XXXA` is that alpha stream alone. Rows are in stored
//! order; `top_down` tells the client where the first one goes.
//!
//! # Encoder
//! Greedy LZ77 over whole pixels with three candidates per position: the
//! previous pixel (a run), the pixel one row above, and a hash-table candidate
//! (hash of the next pixels); the candidate that saves the most bytes wins. The
//! window is the current image (near distances up to 8191, far up to 73727).

use super::{CodecError, DecodeLimits, DecodedImage, ImageRef, PixelFormat};

/// `"  ZL"` read as a big-endian `u32`.
pub const LZ_MAGIC: u32 = 0x2020_5a4c;
/// Version 1.1.
pub const LZ_VERSION: u32 = 0x0001_0001;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 28;

/// Largest image (stride × height in bytes) spice-common accepts.
const MAX_IMAGE_BYTES: u64 = 1024 * 1024 * 1024 - 1;
/// Largest near distance (13 bits, biased by one, minus the far escape).
const MAX_NEAR: usize = 8191;
/// Largest far distance (16 bits + 8191, biased by one).
const MAX_FAR: usize = 65535 + 8192;
/// A candidate this long is taken without trying the others.
const LONG_ENOUGH: usize = 32;
/// Bits of the encoder's hash table index.
const HASH_BITS: u32 = 15;

/// `LzImageType` (spice-common `lz_common.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LzImageType {
    /// 1 bpp palette, LSB first.
    Plt1Le = 1,
    /// 1 bpp palette, MSB first.
    Plt1Be = 2,
    /// 4 bpp palette, low nibble first.
    Plt4Le = 3,
    /// 4 bpp palette, high nibble first.
    Plt4Be = 4,
    /// 8 bpp palette.
    Plt8 = 5,
    /// x1r5g5b5.
    Rgb16 = 6,
    /// B, G, R.
    Rgb24 = 7,
    /// B, G, R, X.
    Rgb32 = 8,
    /// B, G, R, A: RGB32 pass then alpha pass.
    Rgba = 9,
    /// Only the alpha pass of 32-bit pixels (used by JPEG_ALPHA).
    Xxxa = 10,
    /// One alpha byte per pixel.
    A8 = 11,
}

impl LzImageType {
    /// The type with wire value `v`.
    ///
    /// # Errors
    /// [`CodecError::BadImageType`] for 0 and values above 11.
    pub fn from_u32(v: u32) -> Result<Self, CodecError> {
        Ok(match v {
            1 => Self::Plt1Le,
            2 => Self::Plt1Be,
            3 => Self::Plt4Le,
            4 => Self::Plt4Be,
            5 => Self::Plt8,
            6 => Self::Rgb16,
            7 => Self::Rgb24,
            8 => Self::Rgb32,
            9 => Self::Rgba,
            10 => Self::Xxxa,
            11 => Self::A8,
            other => return Err(CodecError::BadImageType(other)),
        })
    }

    /// The natural LZ type of a pixel format.
    #[must_use]
    pub const fn for_format(format: PixelFormat) -> Self {
        match format {
            PixelFormat::Plt1Le => Self::Plt1Le,
            PixelFormat::Plt1Be => Self::Plt1Be,
            PixelFormat::Plt4Le => Self::Plt4Le,
            PixelFormat::Plt4Be => Self::Plt4Be,
            PixelFormat::Plt8 => Self::Plt8,
            PixelFormat::Rgb16 => Self::Rgb16,
            PixelFormat::Rgb24 => Self::Rgb24,
            PixelFormat::Rgb32 => Self::Rgb32,
            PixelFormat::Rgba => Self::Rgba,
            PixelFormat::A8 => Self::A8,
        }
    }

    /// The pixel format the decoder produces for this type (XXXA gives RGBA
    /// pixels whose colour bytes are zero).
    #[must_use]
    pub const fn pixel_format(self) -> PixelFormat {
        match self {
            Self::Plt1Le => PixelFormat::Plt1Le,
            Self::Plt1Be => PixelFormat::Plt1Be,
            Self::Plt4Le => PixelFormat::Plt4Le,
            Self::Plt4Be => PixelFormat::Plt4Be,
            Self::Plt8 => PixelFormat::Plt8,
            Self::Rgb16 => PixelFormat::Rgb16,
            Self::Rgb24 => PixelFormat::Rgb24,
            Self::Rgb32 => PixelFormat::Rgb32,
            Self::Rgba | Self::Xxxa => PixelFormat::Rgba,
            Self::A8 => PixelFormat::A8,
        }
    }

    /// Wire value.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self as u32
    }
}

/// Low 8 bits of `v`.
#[allow(clippy::cast_possible_truncation)] // Truncation to the low byte is the intent.
#[inline(always)]
const fn lo8(v: usize) -> u8 {
    v as u8
}

/// One pixel of an LZ pass, compared and hashed as a whole.
trait LzPixel: Copy + Eq + Default {
    /// Bytes of a literal.
    const LIT_BYTES: usize;
    /// Shortest copy the format can express (the length bias).
    const MIN_MATCH: usize;
    /// Pixels hashed to find a candidate.
    const HASH_LEN: usize;
    /// Hash of `p[..HASH_LEN]`, below `1 << HASH_BITS`.
    fn hash(p: &[Self]) -> usize;
    /// Writes the literal encoding into `dst` (`LIT_BYTES` long).
    fn write(self, dst: &mut [u8]);
    /// Reads a literal from `LIT_BYTES` bytes.
    fn get(b: &[u8]) -> Self;
}

/// Multiplicative hash of up to 64 bits into `HASH_BITS` bits.
#[allow(clippy::cast_possible_truncation)] // The shift leaves HASH_BITS bits.
#[inline(always)]
const fn mix(v: u64) -> usize {
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - HASH_BITS)) as usize
}

/// RGB24/RGB32 pixel: `B | G << 8 | R << 16`.
impl LzPixel for u32 {
    const LIT_BYTES: usize = 3;
    const MIN_MATCH: usize = 1;
    const HASH_LEN: usize = 2;
    #[inline(always)]
    fn hash(p: &[Self]) -> usize {
        mix(u64::from(p[0]) | (u64::from(p[1]) << 24))
    }
    #[inline(always)]
    fn write(self, dst: &mut [u8]) {
        dst.copy_from_slice(&self.to_le_bytes()[..3]);
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Self {
        u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16)
    }
}

/// RGB32 pixel read in place: B, G, R, X. Pixels match only when all four
/// bytes do (a stricter equality than the format needs, so never wrong; QXL
/// guests keep X constant), literals carry B, G, R.
impl LzPixel for [u8; 4] {
    const LIT_BYTES: usize = 3;
    const MIN_MATCH: usize = 1;
    const HASH_LEN: usize = 2;
    #[inline(always)]
    fn hash(p: &[Self]) -> usize {
        mix(u64::from(u32::from_le_bytes(p[0])) | (u64::from(u32::from_le_bytes(p[1])) << 32))
    }
    #[inline(always)]
    fn write(self, dst: &mut [u8]) {
        dst.copy_from_slice(&self[..3]);
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Self {
        [b[0], b[1], b[2], 0]
    }
}

/// RGB16 pixel (the top bit is always clear).
impl LzPixel for u16 {
    const LIT_BYTES: usize = 2;
    const MIN_MATCH: usize = 2;
    const HASH_LEN: usize = 2;
    #[inline(always)]
    fn hash(p: &[Self]) -> usize {
        mix(u64::from(p[0]) | (u64::from(p[1]) << 16))
    }
    #[inline(always)]
    fn write(self, dst: &mut [u8]) {
        dst.copy_from_slice(&self.to_be_bytes());
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Self {
        u16::from_be_bytes([b[0], b[1]])
    }
}

/// Palette index byte or alpha byte.
impl LzPixel for u8 {
    const LIT_BYTES: usize = 1;
    const MIN_MATCH: usize = 3;
    const HASH_LEN: usize = 3;
    #[inline(always)]
    fn hash(p: &[Self]) -> usize {
        mix(u64::from(p[0]) | (u64::from(p[1]) << 8) | (u64::from(p[2]) << 16))
    }
    #[inline(always)]
    fn write(self, dst: &mut [u8]) {
        dst[0] = self;
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Self {
        b[0]
    }
}

/// Appends `px` as literal runs of at most 32 pixels.
#[inline]
fn put_literals<P: LzPixel>(out: &mut Vec<u8>, px: &[P]) {
    let mut buf = [0u8; 1 + 32 * 3];
    for chunk in px.chunks(32) {
        buf[0] = lo8(chunk.len() - 1);
        let mut n = 1;
        for &p in chunk {
            p.write(&mut buf[n..n + P::LIT_BYTES]);
            n += P::LIT_BYTES;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Bytes a back-reference of `len` pixels at distance `dist` costs.
#[inline(always)]
fn match_cost<P: LzPixel>(len: usize, dist: usize) -> usize {
    let field = len - (P::MIN_MATCH - 1);
    let base = if dist <= MAX_NEAR { 2 } else { 4 };
    if field < 7 {
        base
    } else {
        base + 1 + (field - 7) / 255
    }
}

/// Appends a back-reference of `len` pixels at distance `dist` (1..=`MAX_FAR`).
#[inline]
fn put_match<P: LzPixel>(out: &mut Vec<u8>, len: usize, dist: usize) {
    let field = len - (P::MIN_MATCH - 1);
    let d = dist - 1;
    let (ctrl_dist, far) = if d < MAX_NEAR {
        (d >> 8, None)
    } else {
        (31, Some(d - MAX_NEAR))
    };
    if field < 7 {
        out.push(lo8((field << 5) | ctrl_dist));
    } else {
        out.push(lo8((7 << 5) | ctrl_dist));
        let mut rest = field - 7;
        while rest >= 255 {
            out.push(255);
            rest -= 255;
        }
        out.push(lo8(rest));
    }
    match far {
        None => out.push(lo8(d)),
        Some(f) => out.extend_from_slice(&[255, lo8(f >> 8), lo8(f)]),
    }
}

/// Length of the match between `px[r..]` and `px[i..]` (`r < i`; may overlap).
#[inline(always)]
fn match_len<P: LzPixel>(px: &[P], r: usize, i: usize) -> usize {
    let a = &px[r..];
    let b = &px[i..];
    let max = b.len();
    let mut k = 0;
    while k + 8 <= max && a[k..k + 8] == b[k..k + 8] {
        k += 8;
    }
    while k < max && a[k] == b[k] {
        k += 1;
    }
    k
}

/// Keeps the candidate of `len` pixels at `dist` in `best` if it saves more bytes.
#[inline(always)]
fn consider<P: LzPixel>(best: &mut (usize, usize, usize), len: usize, dist: usize) {
    if len >= P::MIN_MATCH {
        let gain = (len * P::LIT_BYTES).saturating_sub(match_cost::<P>(len, dist));
        if gain > best.0 {
            *best = (gain, len, dist);
        }
    }
}

/// Compresses one pass of pixels (`width` pixels per row, for the row-above
/// candidate).
fn compress<P: LzPixel>(px: &[P], width: usize, out: &mut Vec<u8>) {
    let n = px.len();
    if n == 0 {
        return;
    }
    let mut table = vec![0u32; 1 << HASH_BITS];
    let mut lit_start = 0usize;
    let mut i = 1usize;
    // Consecutive positions without a match: past 16, positions are skipped
    // (and sent as literals) with a growing step, as LZ4 does, which makes
    // photographic areas cheap at a small cost in ratio.
    let mut misses = 0usize;
    let hash_end = n.saturating_sub(P::HASH_LEN - 1);
    while i < hash_end {
        let cur = px[i];
        // (gain in bytes, length, distance) of the best candidate.
        let mut best = (0usize, 0usize, 0usize);
        if px[i - 1] == cur {
            consider::<P>(&mut best, match_len(px, i - 1, i), 1);
        }
        if best.1 < LONG_ENOUGH
            && width > 1
            && i >= width
            && px[i - width] == cur
            && width <= MAX_FAR
        {
            consider::<P>(&mut best, match_len(px, i - width, i), width);
        }
        let h = P::hash(&px[i..]);
        let cand = table[h] as usize;
        table[h] = u32::try_from(i).unwrap_or(0);
        if best.1 < LONG_ENOUGH
            && cand < i
            && i - cand <= MAX_FAR
            && px[cand] == cur
            && i - cand != 1
            && i - cand != width
        {
            consider::<P>(&mut best, match_len(px, cand, i), i - cand);
        }
        let (gain, best_len, best_dist) = best;
        if gain > 1 {
            put_literals(out, &px[lit_start..i]);
            put_match::<P>(out, best_len, best_dist);
            let end = i + best_len;
            // Remember the last positions of the match for later candidates.
            for j in end.saturating_sub(2).max(i + 1)..end.min(hash_end) {
                table[P::hash(&px[j..])] = u32::try_from(j).unwrap_or(0);
            }
            i = end;
            lit_start = i;
            misses = 0;
        } else {
            misses += 1;
            i += 1 + (misses >> 4).min(7);
        }
    }
    put_literals(out, &px[lit_start..]);
}

/// Reads bytes of a stream with bounds checks.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn be32(&mut self) -> Result<u32, CodecError> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(CodecError::Truncated)?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decompresses one pass filling all of `out`, exactly as spice-common's
/// `lz_decompress_tmpl.c` would, but with errors instead of asserts.
fn decompress<P: LzPixel>(rd: &mut Reader<'_>, out: &mut [P]) -> Result<(), CodecError> {
    let n = out.len();
    let mut op = 0usize;
    while op < n {
        let ctrl = usize::from(rd.byte()?);
        if ctrl >= 32 {
            let mut len = (ctrl >> 5) - 1;
            let mut ofs = (ctrl & 31) << 8;
            if len == 6 {
                loop {
                    let code = rd.byte()?;
                    len += usize::from(code);
                    if code != 255 {
                        break;
                    }
                }
            }
            let code = usize::from(rd.byte()?);
            ofs += code;
            if code == 255 && ofs - code == 31 << 8 {
                ofs = usize::from(rd.byte()?) << 8;
                ofs += usize::from(rd.byte()?);
                ofs += MAX_NEAR;
            }
            len += P::MIN_MATCH;
            ofs += 1;
            if ofs > op {
                return Err(CodecError::Corrupt(
                    "LZ reference before the start of the image",
                ));
            }
            if len > n - op {
                return Err(CodecError::Corrupt("LZ copy past the end of the image"));
            }
            let r = op - ofs;
            if ofs == 1 {
                let v = out[r];
                out[op..op + len].fill(v);
            } else if ofs >= len {
                out.copy_within(r..r + len, op);
            } else {
                for k in 0..len {
                    out[op + k] = out[r + k];
                }
            }
            op += len;
        } else {
            let cnt = ctrl + 1;
            if cnt > n - op {
                return Err(CodecError::Corrupt("LZ literals past the end of the image"));
            }
            let bytes = rd
                .data
                .get(rd.pos..rd.pos + cnt * P::LIT_BYTES)
                .ok_or(CodecError::Truncated)?;
            rd.pos += cnt * P::LIT_BYTES;
            for (dst, src) in out[op..op + cnt]
                .iter_mut()
                .zip(bytes.chunks_exact(P::LIT_BYTES))
            {
                *dst = P::get(src);
            }
            op += cnt;
        }
    }
    Ok(())
}

/// Compresses `px` as `bands` independent bands of whole rows, concatenated:
/// each band starts fresh (empty hash table, first pixel a literal) and only
/// references pixels of its own band, and every band ends with its literals
/// flushed. spice-common's decoder keeps no state between control items but
/// the output position (`lz_decompress_tmpl.c`: a reference is `op - ofs`,
/// checked only against the start of the image), so the concatenation decodes
/// exactly like one stream. Band 0 is compressed on the calling thread, the
/// others on scoped threads ([`super::on_threads`]).
fn compress_bands<P: LzPixel + Sync>(px: &[P], width: usize, bands: usize, out: &mut Vec<u8>) {
    let rows = px.len().checked_div(width).unwrap_or(0);
    if bands <= 1 || rows < 2 {
        compress(px, width, out);
        return;
    }
    let band_rows = rows.div_ceil(bands.min(rows));
    let chunks: Vec<&[P]> = px.chunks(band_rows * width).collect();
    for band in super::on_threads(&chunks, |band| {
        let mut v = Vec::with_capacity(band.len() + band.len() / 4 + 64);
        compress(band, width, &mut v);
        v
    }) {
        match band {
            Ok(v) => out.extend_from_slice(&v),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// Encodes `img` with its natural LZ type (RGBA → `RGBA`, palettes → `PLT*`...).
///
/// # Errors
/// An invalid [`ImageRef`], or [`CodecError::TooLarge`] above 1 GiB.
pub fn encode(img: &ImageRef<'_>) -> Result<Vec<u8>, CodecError> {
    encode_as(img, LzImageType::for_format(img.format), 1)
}

/// Images from this many bytes of pixels on are worth [`encode_parallel`]'s threads.
pub const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// Encodes `img` like [`encode`], but for RGB16/24/32 and RGBA images of at
/// least [`PARALLEL_MIN_BYTES`] on up to `threads` threads: the image is cut
/// into bands of whole rows that are compressed independently and
/// concatenated after the one header (RGBA: the alpha pass too). The result
/// is a valid LZ stream for every decoder, a little larger than [`encode`]'s
/// (each band starts without history). Other images, or `threads` ≤ 1, are
/// encoded as [`encode`] does.
///
/// # Errors
/// As [`encode`].
pub fn encode_parallel(img: &ImageRef<'_>, threads: usize) -> Result<Vec<u8>, CodecError> {
    let bytes = img.row_bytes().saturating_mul(img.rows());
    let rgb = matches!(
        img.format,
        PixelFormat::Rgb16 | PixelFormat::Rgb24 | PixelFormat::Rgb32 | PixelFormat::Rgba
    );
    let bands = if rgb && bytes >= PARALLEL_MIN_BYTES {
        threads.max(1)
    } else {
        1
    };
    encode_as(img, LzImageType::for_format(img.format), bands)
}

/// Encodes only the alpha bytes of an RGBA image as type `XXXA` (the alpha part
/// of `JPEG_ALPHA`).
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] unless `img` is RGBA.
pub fn encode_alpha(img: &ImageRef<'_>) -> Result<Vec<u8>, CodecError> {
    encode_as(img, LzImageType::Xxxa, 1)
}

/// Appends the 28-byte header.
fn put_header(
    out: &mut Vec<u8>,
    ty: LzImageType,
    img: &ImageRef<'_>,
    stride: usize,
) -> Result<(), CodecError> {
    let stride = u32::try_from(stride).map_err(|_| CodecError::TooLarge {
        bytes: u64::MAX,
        limit: 0,
    })?;
    for v in [
        LZ_MAGIC,
        LZ_VERSION,
        ty.as_u32(),
        img.width,
        img.height,
        stride,
        u32::from(img.top_down),
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// Encodes `img` as LZ type `ty` (which must fit the image's format); RGB
/// passes in `bands` bands (see [`compress_bands`]).
fn encode_as(img: &ImageRef<'_>, ty: LzImageType, bands: usize) -> Result<Vec<u8>, CodecError> {
    img.validate()?;
    let natural = LzImageType::for_format(img.format);
    if ty != natural && !(ty == LzImageType::Xxxa && img.format == PixelFormat::Rgba) {
        return Err(CodecError::UnsupportedFormat {
            codec: "LZ",
            format: img.format,
        });
    }
    let width = img.cols();
    let rows = img.rows();
    let row_bytes = img.row_bytes();
    let header_stride = if ty == LzImageType::Xxxa {
        width * 4
    } else {
        row_bytes
    };
    let total = u64::try_from(header_stride)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(img.height));
    if total > MAX_IMAGE_BYTES {
        return Err(CodecError::TooLarge {
            bytes: total,
            limit: usize::try_from(MAX_IMAGE_BYTES).unwrap_or(usize::MAX),
        });
    }
    let n = width * rows;
    let mut out = Vec::with_capacity(HEADER_LEN + n + n / 4 + 64);
    put_header(&mut out, ty, img, header_stride)?;
    match ty {
        LzImageType::Rgb32 | LzImageType::Rgba | LzImageType::Rgb24 => {
            if ty != LzImageType::Rgb24 && img.stride == width * 4 {
                // Packed 32-bit rows: match on the pixels in place.
                let (px, _) = img.pixels[..n * 4].as_chunks::<4>();
                compress_bands(px, width, bands, &mut out);
                if ty == LzImageType::Rgba {
                    let alpha = alpha_plane(img);
                    compress_bands(&alpha, width, bands, &mut out);
                }
                return Ok(out);
            }
            let mut px = vec![0u32; n];
            for (r, dst) in px.chunks_exact_mut(width).enumerate() {
                let row = img.row(r);
                if ty == LzImageType::Rgb24 {
                    for (d, c) in dst.iter_mut().zip(row.as_chunks::<3>().0) {
                        *d = u32::from_le_bytes([c[0], c[1], c[2], 0]);
                    }
                } else {
                    for (d, c) in dst.iter_mut().zip(row.as_chunks::<4>().0) {
                        *d = u32::from_le_bytes(*c) & 0x00ff_ffff;
                    }
                }
            }
            compress_bands(&px, width, bands, &mut out);
            if ty == LzImageType::Rgba {
                let alpha = alpha_plane(img);
                compress_bands(&alpha, width, bands, &mut out);
            }
        }
        LzImageType::Xxxa => {
            let alpha = alpha_plane(img);
            compress(&alpha, width, &mut out);
        }
        LzImageType::Rgb16 => {
            let mut px = vec![0u16; n];
            for (r, dst) in px.chunks_exact_mut(width).enumerate() {
                for (d, c) in dst.iter_mut().zip(img.row(r).as_chunks::<2>().0) {
                    *d = u16::from_le_bytes(*c) & 0x7fff;
                }
            }
            compress_bands(&px, width, bands, &mut out);
        }
        LzImageType::A8
        | LzImageType::Plt8
        | LzImageType::Plt4Le
        | LzImageType::Plt4Be
        | LzImageType::Plt1Le
        | LzImageType::Plt1Be => {
            let mut px = Vec::with_capacity(row_bytes * rows);
            for r in 0..rows {
                px.extend_from_slice(img.row(r));
            }
            compress(&px, row_bytes, &mut out);
        }
    }
    Ok(out)
}

/// The alpha bytes (byte 3) of an RGBA image, rows in stored order.
fn alpha_plane(img: &ImageRef<'_>) -> Vec<u8> {
    let width = img.cols();
    let mut a = vec![0u8; width * img.rows()];
    for (r, dst) in a.chunks_exact_mut(width).enumerate() {
        for (d, c) in dst.iter_mut().zip(img.row(r).as_chunks::<4>().0) {
            *d = c[3];
        }
    }
    a
}

/// What an LZ header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LzHeader {
    /// Image type.
    pub image_type: LzImageType,
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// Stride in bytes (for palette types it sets the decoded bytes per row).
    pub stride: u32,
    /// Whether the first row is the top row.
    pub top_down: bool,
}

/// Parses and validates the 28-byte header like `lz_decode_begin`/`lz_set_sizes`.
///
/// # Errors
/// [`CodecError::Truncated`], [`CodecError::BadMagic`], [`CodecError::BadVersion`],
/// [`CodecError::BadImageType`], [`CodecError::BadStride`], [`CodecError::BadDimensions`].
pub fn parse_header(data: &[u8]) -> Result<LzHeader, CodecError> {
    let mut rd = Reader { data, pos: 0 };
    let magic = rd.be32()?;
    if magic != LZ_MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = rd.be32()?;
    if version != LZ_VERSION {
        return Err(CodecError::BadVersion(version));
    }
    let image_type = LzImageType::from_u32(rd.be32()?)?;
    let width = rd.be32()?;
    let height = rd.be32()?;
    let stride = rd.be32()?;
    let top_down = rd.be32()? != 0;
    if width == 0 || height == 0 {
        return Err(CodecError::BadDimensions { width, height });
    }
    let stride_us = usize::try_from(stride).unwrap_or(usize::MAX);
    let w = usize::try_from(width).unwrap_or(usize::MAX);
    let fmt = image_type.pixel_format();
    let ok = if fmt.is_palette() {
        // spice-common also accepts shorter strides (and then fails decoding);
        // a valid stream has exactly the packed row size.
        stride_us == fmt.row_bytes(width)
    } else {
        let bpp = match image_type {
            LzImageType::Rgb16 => 2,
            LzImageType::Rgb24 => 3,
            LzImageType::A8 => 1,
            _ => 4,
        };
        w.checked_mul(bpp) == Some(stride_us)
    };
    if !ok {
        return Err(CodecError::BadStride {
            stride: stride_us,
            row_bytes: fmt.row_bytes(width),
        });
    }
    if u64::from(stride) * u64::from(height) > MAX_IMAGE_BYTES {
        return Err(CodecError::TooLarge {
            bytes: u64::from(stride) * u64::from(height),
            limit: usize::try_from(MAX_IMAGE_BYTES).unwrap_or(usize::MAX),
        });
    }
    Ok(LzHeader {
        image_type,
        width,
        height,
        stride,
        top_down,
    })
}

/// Decodes an LZ image with default limits.
///
/// # Errors
/// See [`decode_with_limits`].
pub fn decode(data: &[u8]) -> Result<DecodedImage, CodecError> {
    decode_with_limits(data, &DecodeLimits::default())
}

/// Decodes an LZ image into its native pixel format ([`LzImageType::pixel_format`]),
/// rows in stored order. RGB32 pad bytes come out 0; `XXXA` gives RGBA pixels
/// with zero colour bytes; palette images give their index bytes (see
/// [`palette_to_rgb32`]). Every input byte must be consumed.
///
/// # Errors
/// Header errors as [`parse_header`], [`CodecError::TooLarge`] against `limits`,
/// [`CodecError::Truncated`], [`CodecError::Corrupt`], [`CodecError::TrailingData`].
pub fn decode_with_limits(data: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, CodecError> {
    let hdr = parse_header(data)?;
    let format = hdr.image_type.pixel_format();
    let row_bytes = if format.is_palette() {
        usize::try_from(hdr.stride).unwrap_or(usize::MAX)
    } else {
        format.row_bytes(hdr.width)
    };
    let total = limits.check(hdr.width, hdr.height, row_bytes)?;
    let n = usize::try_from(u64::from(hdr.width) * u64::from(hdr.height)).map_err(|_| {
        CodecError::TooLarge {
            bytes: u64::MAX,
            limit: limits.max_bytes,
        }
    })?;
    let mut rd = Reader {
        data,
        pos: HEADER_LEN,
    };
    let mut pixels = Vec::new();
    match hdr.image_type {
        LzImageType::Rgb32 | LzImageType::Rgb24 | LzImageType::Rgba => {
            let mut px = vec![0u32; n];
            decompress(&mut rd, &mut px)?;
            let mut alpha = Vec::new();
            if hdr.image_type == LzImageType::Rgba {
                alpha = vec![0u8; n];
                decompress(&mut rd, &mut alpha)?;
            }
            pixels.reserve_exact(total);
            if hdr.image_type == LzImageType::Rgb24 {
                for p in &px {
                    pixels.extend_from_slice(&p.to_le_bytes()[..3]);
                }
            } else if alpha.is_empty() {
                for p in &px {
                    pixels.extend_from_slice(&p.to_le_bytes());
                }
            } else {
                for (p, a) in px.iter().zip(&alpha) {
                    let [b, g, r, _] = p.to_le_bytes();
                    pixels.extend_from_slice(&[b, g, r, *a]);
                }
            }
        }
        LzImageType::Xxxa => {
            let mut alpha = vec![0u8; n];
            decompress(&mut rd, &mut alpha)?;
            pixels.reserve_exact(total);
            for a in alpha {
                pixels.extend_from_slice(&[0, 0, 0, a]);
            }
        }
        LzImageType::Rgb16 => {
            let mut px = vec![0u16; n];
            decompress(&mut rd, &mut px)?;
            pixels.reserve_exact(total);
            for p in px {
                pixels.extend_from_slice(&p.to_le_bytes());
            }
        }
        LzImageType::A8
        | LzImageType::Plt8
        | LzImageType::Plt4Le
        | LzImageType::Plt4Be
        | LzImageType::Plt1Le
        | LzImageType::Plt1Be => {
            pixels = vec![0u8; total];
            decompress(&mut rd, &mut pixels)?;
        }
    }
    if rd.pos != data.len() {
        return Err(CodecError::TrailingData(data.len() - rd.pos));
    }
    Ok(DecodedImage {
        width: hdr.width,
        height: hdr.height,
        format,
        top_down: hdr.top_down,
        stride: row_bytes,
        pixels,
    })
}

/// Converts a decoded palette image to RGB32 (B, G, R, 0) like the client's
/// `TO_RGB32` decoders: 8 bpp indexes the palette directly, 4 bpp takes the
/// index modulo the palette size, 1 bpp uses entries 0 and 1. Palette entries
/// are xRGB `u32`s. Rows keep their order; padding pixels are dropped.
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for non-palette images, [`CodecError::BadPalette`]
/// when an index has no entry (where the C client would read out of bounds).
pub fn palette_to_rgb32(img: &DecodedImage, palette: &[u32]) -> Result<DecodedImage, CodecError> {
    let w = usize::try_from(img.width).unwrap_or(0);
    let h = usize::try_from(img.height).unwrap_or(0);
    let index = |row: &[u8], x: usize| -> usize {
        match img.format {
            PixelFormat::Plt1Le => usize::from((row[x / 8] >> (x % 8)) & 1),
            PixelFormat::Plt1Be => usize::from((row[x / 8] >> (7 - x % 8)) & 1),
            PixelFormat::Plt4Le => usize::from((row[x / 2] >> (4 * (x % 2))) & 0xf),
            PixelFormat::Plt4Be => usize::from((row[x / 2] >> (4 - 4 * (x % 2))) & 0xf),
            _ => usize::from(row[x]),
        }
    };
    if !img.format.is_palette() {
        return Err(CodecError::UnsupportedFormat {
            codec: "LZ palette conversion",
            format: img.format,
        });
    }
    let modulo = matches!(img.format, PixelFormat::Plt4Le | PixelFormat::Plt4Be);
    if palette.is_empty()
        || (matches!(img.format, PixelFormat::Plt1Le | PixelFormat::Plt1Be) && palette.len() < 2)
    {
        return Err(CodecError::BadPalette);
    }
    let mut pixels = Vec::with_capacity(w * h * 4);
    for r in 0..h {
        let row = img
            .pixels
            .get(r * img.stride..(r + 1) * img.stride)
            .ok_or(CodecError::BufferTooSmall)?;
        if row.len() < img.format.row_bytes(img.width) {
            return Err(CodecError::BufferTooSmall);
        }
        for x in 0..w {
            let mut i = index(row, x);
            if modulo {
                i %= palette.len();
            }
            let ent = *palette.get(i).ok_or(CodecError::BadPalette)?;
            let [b, g, r, _] = ent.to_le_bytes();
            pixels.extend_from_slice(&[b, g, r, 0]);
        }
    }
    Ok(DecodedImage {
        width: img.width,
        height: img.height,
        format: PixelFormat::Rgb32,
        top_down: img.top_down,
        stride: w * 4,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pixels of `img` as the decoder returns them: packed rows, RGB32 pad
    /// zeroed, RGB16 top bit cleared.
    pub(crate) fn expected(img: &ImageRef<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        for r in 0..img.rows() {
            let row = img.row(r);
            match img.format {
                PixelFormat::Rgb32 => {
                    for c in row.chunks_exact(4) {
                        v.extend_from_slice(&[c[0], c[1], c[2], 0]);
                    }
                }
                PixelFormat::Rgb16 => {
                    for c in row.chunks_exact(2) {
                        v.extend_from_slice(&[c[0], c[1] & 0x7f]);
                    }
                }
                _ => v.extend_from_slice(row),
            }
        }
        v
    }

    fn noisy(len: usize, seed: u32, levels: u32) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if (s >> 16).is_multiple_of(3) {
                    u8::try_from((s >> 20) % levels).unwrap()
                } else {
                    u8::try_from((i / 7) % 5).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn lz_round_trip_all_types() {
        let formats = [
            PixelFormat::Plt1Le,
            PixelFormat::Plt1Be,
            PixelFormat::Plt4Le,
            PixelFormat::Plt4Be,
            PixelFormat::Plt8,
            PixelFormat::Rgb16,
            PixelFormat::Rgb24,
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
            PixelFormat::A8,
        ];
        for format in formats {
            for (w, h) in [(1, 1), (2, 1), (3, 2), (13, 7), (100, 90), (33, 300)] {
                let stride = format.row_bytes(w) + 3;
                let px = noisy(stride * usize::try_from(h).unwrap(), w * 31 + h, 256);
                for top_down in [false, true] {
                    let img = ImageRef::new(&px, w, h, stride, format, top_down).unwrap();
                    let enc = encode(&img).unwrap();
                    let dec = decode(&enc).unwrap();
                    assert_eq!(dec.format, format);
                    assert_eq!(dec.top_down, top_down);
                    assert_eq!(dec.pixels, expected(&img), "{format:?} {w}x{h}");
                }
            }
        }
    }

    #[test]
    fn lz_xxxa_round_trip() {
        let (w, h) = (21u32, 9u32);
        let px = noisy(21 * 4 * 9, 5, 4);
        let img = ImageRef::new(&px, w, h, 84, PixelFormat::Rgba, true).unwrap();
        let dec = decode(&encode_alpha(&img).unwrap()).unwrap();
        let want: Vec<u8> = px.chunks_exact(4).flat_map(|c| [0, 0, 0, c[3]]).collect();
        assert_eq!(dec.pixels, want);
        let rgb = ImageRef::new(&px, w, h, 84, PixelFormat::Rgb32, true).unwrap();
        encode_alpha(&rgb).unwrap_err();
    }

    #[test]
    fn lz_long_runs_and_far_references() {
        // A flat image (one long run) and a repeating 70000-pixel pattern
        // (far references) in RGB32, RGB16 and bytes.
        let n = 150_000usize;
        for (format, w) in [
            (PixelFormat::Rgb32, 1000u32),
            (PixelFormat::Rgb16, 1000),
            (PixelFormat::A8, 1000),
        ] {
            let bpp = usize::try_from(format.bits_per_pixel() / 8).unwrap();
            let pattern: Vec<u8> = noisy(70_000 * bpp, 9, 256);
            let px: Vec<u8> = (0..n * bpp).map(|i| pattern[i % pattern.len()]).collect();
            let h = u32::try_from(n).unwrap() / w;
            let stride = format.row_bytes(w);
            let img = ImageRef::new(&px, w, h, stride, format, true).unwrap();
            let enc = encode(&img).unwrap();
            assert!(enc.len() < px.len() / 2, "{format:?} {}", enc.len());
            assert_eq!(decode(&enc).unwrap().pixels, expected(&img));
            let flat = vec![0x42u8; px.len()];
            let img = ImageRef::new(&flat, w, h, stride, format, false).unwrap();
            let enc = encode(&img).unwrap();
            assert!(enc.len() < 5000, "{format:?} {}", enc.len());
            assert_eq!(decode(&enc).unwrap().pixels, expected(&img));
        }
    }

    #[test]
    fn lz_palette_conversion() {
        let palette = [0x00ff_0000, 0x0000_ff00, 0x0000_00ff];
        // PLT4_BE 3x1: indices 1, 2, 0 → bytes 0x12, 0x00.
        let px = [0x12u8, 0x00];
        let img = ImageRef::new(&px, 3, 1, 2, PixelFormat::Plt4Be, true).unwrap();
        let dec = decode(&encode(&img).unwrap()).unwrap();
        let rgb = palette_to_rgb32(&dec, &palette).unwrap();
        assert_eq!(rgb.pixels, [0, 0xff, 0, 0, 0xff, 0, 0, 0, 0, 0, 0xff, 0]);
        // PLT1_LE 10x1: bits LSB first.
        let px = [0b0000_0101u8, 0b10];
        let img = ImageRef::new(&px, 10, 1, 2, PixelFormat::Plt1Le, true).unwrap();
        let dec = decode(&encode(&img).unwrap()).unwrap();
        let rgb = palette_to_rgb32(&dec, &palette).unwrap();
        let idx: Vec<u8> = rgb
            .pixels
            .chunks(4)
            .map(|c| u8::from(c[1] == 0xff))
            .collect();
        assert_eq!(idx, [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        // PLT8 with an index past the palette.
        let px = [7u8];
        let img = ImageRef::new(&px, 1, 1, 1, PixelFormat::Plt8, true).unwrap();
        let dec = decode(&encode(&img).unwrap()).unwrap();
        assert_eq!(
            palette_to_rgb32(&dec, &palette),
            Err(CodecError::BadPalette)
        );
    }

    #[test]
    fn lz_rejects_garbage() {
        let px = noisy(64 * 4 * 8, 3, 4);
        let img = ImageRef::new(&px, 64, 8, 256, PixelFormat::Rgba, true).unwrap();
        let enc = encode(&img).unwrap();
        decode(&enc).unwrap();
        for cut in 0..enc.len() {
            decode(&enc[..cut]).unwrap_err();
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(CodecError::TrailingData(1)));
        let mut bad = enc.clone();
        bad[3] ^= 1;
        assert!(matches!(decode(&bad), Err(CodecError::BadMagic(_))));
        let mut bad = enc.clone();
        bad[11] = 12;
        assert!(matches!(decode(&bad), Err(CodecError::BadImageType(12))));
        let mut bad = enc.clone();
        bad[23] ^= 4; // stride
        assert!(matches!(decode(&bad), Err(CodecError::BadStride { .. })));
        let mut bad = enc;
        bad[12..20].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]); // 65536x65536
        bad[20..24].copy_from_slice(&(65536u32 * 4).to_be_bytes());
        decode(&bad).unwrap_err();
        // A reference before the start.
        let mut hdr = Vec::new();
        let one =
            ImageRef::new(&[0, 0, 0, 0, 0, 0, 0, 0], 2, 1, 8, PixelFormat::Rgb32, true).unwrap();
        put_header(&mut hdr, LzImageType::Rgb32, &one, 8).unwrap();
        let mut s = hdr.clone();
        s.extend_from_slice(&[0x40, 0x05]);
        assert!(matches!(decode(&s), Err(CodecError::Corrupt(_))));
        let mut s = hdr;
        s.extend_from_slice(&[2, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(matches!(decode(&s), Err(CodecError::Corrupt(_))));
    }

    #[test]
    fn lz_bands_round_trip() {
        // Bands of whole rows, concatenated: every RGB type, band counts
        // from 1 to more bands than rows.
        for format in [
            PixelFormat::Rgb16,
            PixelFormat::Rgb24,
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
        ] {
            for (w, h) in [(1, 1), (3, 2), (13, 7), (100, 90), (33, 300)] {
                let stride = format.row_bytes(w);
                let px = noisy(stride * usize::try_from(h).unwrap(), w * 7 + h, 6);
                let img = ImageRef::new(&px, w, h, stride, format, h % 2 == 0).unwrap();
                let one = encode(&img).unwrap();
                for bands in [1, 2, 3, 4, 7, 500] {
                    let enc = encode_as(&img, LzImageType::for_format(format), bands).unwrap();
                    assert_eq!(enc[..HEADER_LEN], one[..HEADER_LEN]);
                    let dec = decode(&enc).unwrap();
                    assert_eq!(dec.pixels, expected(&img), "{format:?} {w}x{h} {bands}");
                    if bands == 1 {
                        assert_eq!(enc, one);
                    }
                }
            }
        }
    }

    #[test]
    fn lz_encode_parallel_large_images() {
        // 640x480 RGB32 (1.2 MB) and RGBA with a mix of flat areas, repeats
        // and noise; 300x200 stays on one thread (below the threshold).
        let (w, h) = (640u32, 480u32);
        let mut px = noisy(640 * 480 * 4, 77, 256);
        for (i, c) in px.chunks_exact_mut(4).enumerate() {
            let (x, y) = (i % 640, i / 640);
            if (x / 40 + y / 30) % 3 == 0 {
                c.copy_from_slice(&[0x30, 0x40, 0x50, 0xff]);
            } else if y % 50 < 10 {
                c.copy_from_slice(&[u8::try_from(x % 256).unwrap(), 1, 2, 3]);
            }
        }
        for format in [PixelFormat::Rgb32, PixelFormat::Rgba] {
            let img = ImageRef::new(&px, w, h, 2560, format, true).unwrap();
            let one = encode(&img).unwrap();
            for threads in [0, 1, 2, 3, 4, 8] {
                let enc = encode_parallel(&img, threads).unwrap();
                assert_eq!(decode(&enc).unwrap().pixels, expected(&img));
                if threads <= 1 {
                    assert_eq!(enc, one);
                } else {
                    assert_ne!(enc, one, "{threads} threads gave one band");
                    assert!(
                        enc.len() < one.len() * 21 / 20,
                        "{} vs {}",
                        enc.len(),
                        one.len()
                    );
                }
            }
        }
        let small = ImageRef::new(
            &px[..300 * 200 * 4],
            300,
            200,
            1200,
            PixelFormat::Rgb32,
            true,
        )
        .unwrap();
        assert_eq!(encode_parallel(&small, 4).unwrap(), encode(&small).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn lz_bands_decode_exactly(w in 1u32..40, h in 1u32..40, bands in 1usize..9,
                                   seed in 0u32..1000, levels in 1u32..256, fmt in 0usize..4) {
            let format = [PixelFormat::Rgb16, PixelFormat::Rgb24, PixelFormat::Rgb32, PixelFormat::Rgba][fmt];
            let stride = format.row_bytes(w);
            let px = noisy(stride * usize::try_from(h).unwrap(), seed, levels);
            let img = ImageRef::new(&px, w, h, stride, format, true).unwrap();
            let enc = encode_as(&img, LzImageType::for_format(format), bands).unwrap();
            proptest::prop_assert_eq!(decode(&enc).unwrap().pixels, expected(&img));
        }
    }

    proptest::proptest! {
        #[test]
        fn lz_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                   ty in 1u32..12, w in 1u32..20, h in 1u32..20) {
            let img = ImageRef { pixels: &[], width: w, height: h, stride: 0, format: PixelFormat::A8, top_down: true };
            let fmt = LzImageType::from_u32(ty).unwrap().pixel_format();
            let stride = if ty == 10 { usize::try_from(w).unwrap() * 4 } else { fmt.row_bytes(w) };
            let mut s = Vec::new();
            put_header(&mut s, LzImageType::from_u32(ty).unwrap(), &img, stride).unwrap();
            s.extend_from_slice(&data);
            let _ = decode(&s);
            let _ = decode(&data);
        }
    }
}
