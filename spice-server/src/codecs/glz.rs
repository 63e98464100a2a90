//! SPICE GLZ (image type `GLZ_RGB` = 102): LZ with a dictionary shared across
//! the images sent to one client.
//!
//! # Stream (what spice-gtk's `decode-glz.c` reads)
//! A 33-byte big-endian header — magic `0x20205a4c`, version `0x00010001`, one
//! byte `type | top_down << 4` ([`LzImageType`]), width, height, stride, the
//! image id (`u64`) and `win_head_dist` (`u32`) — then control bytes over the
//! image's pixels in stored row order:
//!
//! * `ctrl < 32`: `ctrl + 1` literal pixels (RGB24/32/RGBA colour: 3 bytes B, G, R;
//!   RGB16: 2 bytes, high first; alpha: 1 byte).
//! * `ctrl ≥ 32`: a reference. Length field `ctrl >> 5` (7 → extended by bytes
//!   while each is 255), then bit 4 (`pixel_flag`) and the low 4 bits of the
//!   pixel offset; the next byte carries offset bits 4..12; the next byte `code`
//!   has `image_flag = code >> 6`. Short form (`pixel_flag == 0`): image
//!   distance `code & 63` plus `image_flag` bytes at bits 6, 14, 22. Long form:
//!   `code & 31` are offset bits 12..17, bit 5 says one more byte with offset
//!   bits 17..25 follows the `image_flag` little-endian image distance bytes.
//!   The copied length is the field (RGB24/32), field + 1 (RGB16) or field + 2
//!   (alpha). Image distance 0 is a back-reference inside the image at
//!   distance offset + 1; otherwise pixels are copied from image
//!   `id − image_distance` starting at pixel `offset`.
//!
//! `RGBA` is a colour pass over all pixels followed by an alpha pass. The
//! client decodes every image to 32-bit pixels (RGB16 expanded to 8 bits per
//! channel) and copies references from those.
//!
//! # Window (both sides must agree)
//! The client keeps decoded images by id and, after each image, drops those
//! older than `id − win_head_dist` of the newest image decoded without a gap.
//! The encoder ([`GlzDictionary`]) works exactly like spice-server's
//! `glz-encoder-dict.c` with one encoder: before encoding an image of `n`
//! pixels it evicts the oldest images until the window (in pixels, from
//! the client's `DISPLAY_INIT.glz_dictionary_window_size`) has room for `n`,
//! sends `win_head_dist = id − oldest kept id` (0 when nothing is kept), and
//! references only images it keeps, of the same pixel class (RGB24/RGB32
//! together, RGBA, RGB16 — the C encoder requires the same type).
//!
//! **Contract for callers:** once [`GlzDictionary::encode`] returns `Ok`, the
//! image is in the dictionary and later images may reference it, so it must
//! reach the client (as `GLZ_RGB` or wrapped as `ZLIB_GLZ_RGB`); a client
//! missing an image waits for it forever. Call [`GlzDictionary::reset`] when
//! that cannot be guaranteed any more.
//!
//! # Encoder
//! Greedy LZ77 over whole pixels like [`super::lz`]: per position the previous
//! pixel (a run), the pixel one row above, the same position in the newest
//! window image of the same class, and one hash-table candidate from anywhere
//! in the window; the candidate saving the most bytes wins. Long stretches
//! without matches are skipped with a growing step.

use std::collections::{HashMap, VecDeque};

use super::lz::{LZ_MAGIC, LZ_VERSION, LzImageType};
use super::{CodecError, DecodeLimits, DecodedImage, ImageRef, PixelFormat};

/// Size of the GLZ header in bytes.
pub const HEADER_LEN: usize = 33;
/// Largest window spice-server accepts (`LZ_MAX_WINDOW_SIZE`, pixels).
pub const MAX_WINDOW_PIXELS: u32 = 1 << 25;
/// Offsets must stay below this (`MAX_PIXEL_LONG_DISTANCE`).
const MAX_PIXEL_OFFSET: usize = 1 << 25;
/// Image distances must stay below this (`MAX_IMAGE_DIST` + 1).
const MAX_IMAGE_DIST: u64 = 1 << 24;
/// A candidate this long is taken without trying the others.
const LONG_ENOUGH: usize = 32;
/// Bits of the shared hash table index.
const HASH_BITS: u32 = 16;
/// Bits of the alpha pass's hash table index.
const ALPHA_HASH_BITS: u32 = 13;

/// Low 8 bits of `v`.
#[allow(clippy::cast_possible_truncation)] // Truncation to the low byte is the intent.
#[inline(always)]
const fn lo8(v: usize) -> u8 {
    v as u8
}

/// Low 8 bits of `v`.
#[allow(clippy::cast_possible_truncation)] // Truncation to the low byte is the intent.
#[inline(always)]
const fn lo8_64(v: u64) -> u8 {
    v as u8
}

/// Which images may reference each other (their decoded pixels agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// RGB24 and RGB32: colour in the low 24 bits.
    Rgb,
    /// RGBA: colour pass like RGB, plus alpha.
    Rgba,
    /// RGB16: the 15-bit value.
    Rgb16,
}

/// The GLZ image type, class, literal size and header stride factor for a format.
fn format_info(format: PixelFormat) -> Result<(LzImageType, Class, usize), CodecError> {
    Ok(match format {
        PixelFormat::Rgb32 => (LzImageType::Rgb32, Class::Rgb, 4),
        PixelFormat::Rgb24 => (LzImageType::Rgb24, Class::Rgb, 3),
        PixelFormat::Rgba => (LzImageType::Rgba, Class::Rgba, 4),
        PixelFormat::Rgb16 => (LzImageType::Rgb16, Class::Rgb16, 2),
        other => {
            return Err(CodecError::UnsupportedFormat {
                codec: "GLZ",
                format: other,
            });
        }
    })
}

/// One image of the encoder's window.
#[derive(Debug)]
struct WinImage {
    /// Image id.
    id: u64,
    /// Position of its first pixel in the stream of all pixels ever added.
    start: u64,
    /// Which images it may reference and be referenced by.
    class: Class,
    /// Pixels in stored order (`B | G << 8 | R << 16`, or the RGB16 value).
    px: Vec<u32>,
}

/// The server side of one GLZ dictionary (one per client and
/// `glz_dictionary_id`; share it between display channels behind a lock).
#[derive(Debug)]
pub struct GlzDictionary {
    /// Window size limit in pixels.
    limit: usize,
    /// Images the client may still hold, oldest first.
    window: VecDeque<WinImage>,
    /// Pixels in `window`.
    window_pixels: usize,
    /// Id of the next image.
    next_id: u64,
    /// Stream position of the next image's first pixel.
    next_pos: u64,
    /// Hash of two pixels → stream position + 1 (0 = empty).
    table: Vec<u64>,
    /// Pixel buffers of evicted images, reused.
    spare: Vec<Vec<u32>>,
}

impl GlzDictionary {
    /// A dictionary for a client window of `window_pixels` pixels (its
    /// `DISPLAY_INIT.glz_dictionary_window_size`), clamped to
    /// [`MAX_WINDOW_PIXELS`]. Ids start at 0, as a new client window expects.
    #[must_use]
    pub fn new(window_pixels: u32) -> Self {
        Self {
            limit: usize::try_from(window_pixels.min(MAX_WINDOW_PIXELS)).unwrap_or(0),
            window: VecDeque::new(),
            window_pixels: 0,
            next_id: 0,
            next_pos: 0,
            table: vec![0; 1 << HASH_BITS],
            spare: Vec::new(),
        }
    }

    /// The window size in pixels.
    #[must_use]
    pub fn window_limit(&self) -> usize {
        self.limit
    }

    /// Id the next encoded image gets.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Ids of the images later images may reference (oldest first).
    pub fn window_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.window.iter().map(|w| w.id)
    }

    /// Whether [`encode`](Self::encode) accepts `img`: an RGB16/24/32/RGBA image
    /// smaller than the window (spice-server's `image_encoders_compress_glz`
    /// test), with sizes the format can carry.
    #[must_use]
    pub fn can_encode(&self, img: &ImageRef<'_>) -> bool {
        format_info(img.format).is_ok()
            && img.validate().is_ok()
            && u64::from(img.width) * u64::from(img.height) < self.limit as u64
    }

    /// Forgets every image: later images reference nothing sent before. Ids keep
    /// counting, so a client window that lives on (spice-gtk keeps it for the
    /// whole session) releases the old images when it sees the next header
    /// (`win_head_dist` 0). A *new* client window needs a new dictionary (ids
    /// from 0).
    pub fn reset(&mut self) {
        while let Some(img) = self.window.pop_front() {
            self.spare.push(img.px);
        }
        self.window_pixels = 0;
        // Stale hash entries point below the next position: never valid again.
    }

    /// Encodes `img` as a GLZ image referencing the window, and adds it to the
    /// window (see the module's contract: the result must be sent).
    ///
    /// # Errors
    /// [`CodecError::UnsupportedFormat`] for palette/A8 images, an invalid
    /// [`ImageRef`], [`CodecError::TooLarge`] when the image has as many pixels
    /// as the window or more. Nothing changes on error.
    pub fn encode(&mut self, img: &ImageRef<'_>) -> Result<Vec<u8>, CodecError> {
        let (ty, class, bpp) = format_info(img.format)?;
        img.validate()?;
        let width = img.cols();
        let rows = img.rows();
        let n = width * rows;
        if n >= self.limit || u64::try_from(n).unwrap_or(u64::MAX) >= self.limit as u64 {
            return Err(CodecError::TooLarge {
                bytes: u64::try_from(n).unwrap_or(u64::MAX),
                limit: self.limit,
            });
        }
        let stride = u32::try_from(width * bpp).map_err(|_| CodecError::TooLarge {
            bytes: u64::MAX,
            limit: self.limit,
        })?;

        // Make room, exactly as glz_dictionary_window_get_new_head.
        while self.window_pixels + n > self.limit {
            let Some(old) = self.window.pop_front() else {
                break;
            };
            self.window_pixels -= old.px.len();
            self.spare.push(old.px);
        }
        let id = self.next_id;
        let head_dist = self.window.front().map_or(0, |w| id - w.id);
        let head_dist = u32::try_from(head_dist).map_err(|_| CodecError::TooLarge {
            bytes: u64::MAX,
            limit: self.limit,
        })?;

        let mut px = self.spare.pop().unwrap_or_default();
        px.clear();
        px.reserve_exact(n);
        load_pixels(img, &mut px);

        let mut out = Vec::with_capacity(HEADER_LEN + n + n / 4 + 64);
        out.extend_from_slice(&LZ_MAGIC.to_be_bytes());
        out.extend_from_slice(&LZ_VERSION.to_be_bytes());
        out.push(lo8_64(u64::from(ty.as_u32())) | (u8::from(img.top_down) << 4));
        for v in [img.width, img.height, stride] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&head_dist.to_be_bytes());

        let start = self.next_pos;
        let refs: Vec<WinRef<'_, u32>> = self
            .window
            .iter()
            .filter(|w| w.class == class && id - w.id < MAX_IMAGE_DIST)
            .map(|w| WinRef {
                start: w.start,
                dist: id - w.id,
                px: &w.px,
            })
            .collect();
        let mut enc = Compressor {
            table: &mut self.table,
            shift: 64 - HASH_BITS,
            start,
            refs: &refs,
        };
        if class == Class::Rgb16 {
            enc.compress::<Rgb16Px>(&px, width, &mut out);
        } else {
            enc.compress::<RgbPx>(&px, width, &mut out);
        }
        drop(refs);
        if class == Class::Rgba {
            let mut alpha = Vec::with_capacity(n);
            for r in 0..rows {
                alpha.extend(img.row(r).as_chunks::<4>().0.iter().map(|c| c[3]));
            }
            let mut table = vec![0u64; 1 << ALPHA_HASH_BITS];
            let mut enc = Compressor {
                table: &mut table,
                shift: 64 - ALPHA_HASH_BITS,
                start: 1,
                refs: &[],
            };
            enc.compress::<AlphaPx>(&alpha, width, &mut out);
        }

        self.next_id += 1;
        self.next_pos += u64::try_from(n).unwrap_or(u64::MAX);
        self.window_pixels += n;
        self.window.push_back(WinImage {
            id,
            start,
            class,
            px,
        });
        Ok(out)
    }
}

/// Appends the pixels of `img` in stored order as `u32` match values.
fn load_pixels(img: &ImageRef<'_>, px: &mut Vec<u32>) {
    let width = img.cols();
    let rows = img.rows();
    let packed = img.stride == img.row_bytes();
    match img.format {
        PixelFormat::Rgb32 | PixelFormat::Rgba => {
            if packed {
                let (c, _) = img.pixels[..width * rows * 4].as_chunks::<4>();
                px.extend(c.iter().map(|c| u32::from_le_bytes(*c) & 0x00ff_ffff));
            } else {
                for r in 0..rows {
                    let (c, _) = img.row(r).as_chunks::<4>();
                    px.extend(c.iter().map(|c| u32::from_le_bytes(*c) & 0x00ff_ffff));
                }
            }
        }
        PixelFormat::Rgb24 => {
            for r in 0..rows {
                let (c, _) = img.row(r).as_chunks::<3>();
                px.extend(c.iter().map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0])));
            }
        }
        _ => {
            for r in 0..rows {
                let (c, _) = img.row(r).as_chunks::<2>();
                px.extend(c.iter().map(|c| u32::from(u16::from_le_bytes(*c) & 0x7fff)));
            }
        }
    }
}

/// A window image the current one may reference.
struct WinRef<'a, P> {
    /// Stream position of its first pixel.
    start: u64,
    /// Image distance from the current image (≥ 1).
    dist: u64,
    /// Its pixels.
    px: &'a [P],
}

/// How one kind of pixel is coded.
trait GlzPixel: Copy + Eq {
    /// The stored pixel.
    type P: Copy + Eq;
    /// Bytes of a literal.
    const LIT_BYTES: usize;
    /// Shortest copy (the length bias + 1).
    const MIN_MATCH: usize;
    /// Pixels hashed.
    const HASH_LEN: usize;
    /// Hash input of `p[..HASH_LEN]`.
    fn key(p: &[Self::P]) -> u64;
    /// Writes a literal.
    fn write(p: Self::P, dst: &mut [u8]);
}

/// RGB24/RGB32/RGBA colour pass.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RgbPx;
impl GlzPixel for RgbPx {
    type P = u32;
    const LIT_BYTES: usize = 3;
    const MIN_MATCH: usize = 1;
    const HASH_LEN: usize = 2;
    #[inline(always)]
    fn key(p: &[u32]) -> u64 {
        u64::from(p[0]) | (u64::from(p[1]) << 24)
    }
    #[inline(always)]
    fn write(p: u32, dst: &mut [u8]) {
        dst.copy_from_slice(&p.to_le_bytes()[..3]);
    }
}

/// RGB16 (15-bit values in a `u32`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Rgb16Px;
impl GlzPixel for Rgb16Px {
    type P = u32;
    const LIT_BYTES: usize = 2;
    const MIN_MATCH: usize = 2;
    const HASH_LEN: usize = 2;
    #[inline(always)]
    fn key(p: &[u32]) -> u64 {
        u64::from(p[0]) | (u64::from(p[1]) << 16)
    }
    #[inline(always)]
    fn write(p: u32, dst: &mut [u8]) {
        dst.copy_from_slice(&p.to_be_bytes()[2..]);
    }
}

/// RGBA alpha pass.
#[derive(Clone, Copy, PartialEq, Eq)]
struct AlphaPx;
impl GlzPixel for AlphaPx {
    type P = u8;
    const LIT_BYTES: usize = 1;
    const MIN_MATCH: usize = 3;
    const HASH_LEN: usize = 3;
    #[inline(always)]
    fn key(p: &[u8]) -> u64 {
        u64::from(p[0]) | (u64::from(p[1]) << 8) | (u64::from(p[2]) << 16)
    }
    #[inline(always)]
    fn write(p: u8, dst: &mut [u8]) {
        dst[0] = p;
    }
}

/// Bytes of a reference with length field `field`, image distance
/// `image_dist` and coded pixel offset `pd`.
#[inline(always)]
fn ref_cost(field: usize, image_dist: u64, pd: usize) -> usize {
    let len_bytes = if field < 7 { 0 } else { 1 + (field - 7) / 255 };
    let rest = if pd < 4096 {
        match image_dist {
            0..64 => 1,
            64..16_384 => 2,
            16_384..4_194_304 => 3,
            _ => 4,
        }
    } else {
        let d = match image_dist {
            0 => 1,
            1..256 => 2,
            256..65_536 => 3,
            _ => 4,
        };
        d + usize::from(pd >= 1 << 17)
    };
    2 + len_bytes + rest
}

/// Appends a reference (see the module docs for the layout).
fn put_ref(out: &mut Vec<u8>, field: usize, image_dist: u64, pd: usize) {
    let short = pd < 4096;
    let flag = if short { 0 } else { 16 };
    out.push(lo8((field.min(7) << 5) | flag | (pd & 15)));
    if field >= 7 {
        let mut rest = field - 7;
        while rest >= 255 {
            out.push(255);
            rest -= 255;
        }
        out.push(lo8(rest));
    }
    out.push(lo8(pd >> 4));
    if short {
        let d = image_dist;
        let low = lo8_64(d & 0x3f);
        match d {
            0..64 => out.push(low),
            64..16_384 => out.extend_from_slice(&[0x40 | low, lo8_64(d >> 6)]),
            16_384..4_194_304 => {
                out.extend_from_slice(&[0x80 | low, lo8_64(d >> 6), lo8_64(d >> 14)]);
            }
            _ => out.extend_from_slice(&[
                0xc0 | low,
                lo8_64(d >> 6),
                lo8_64(d >> 14),
                lo8_64(d >> 22),
            ]),
        }
    } else {
        let long = pd >= 1 << 17;
        let ctl = (if long { 32 } else { 0 }) | lo8((pd >> 12) & 31);
        let d = image_dist.to_le_bytes();
        match image_dist {
            0 => out.push(ctl),
            1..256 => out.extend_from_slice(&[0x40 | ctl, d[0]]),
            256..65_536 => out.extend_from_slice(&[0x80 | ctl, d[0], d[1]]),
            _ => out.extend_from_slice(&[0xc0 | ctl, d[0], d[1], d[2]]),
        }
        if long {
            out.push(lo8(pd >> 17));
        }
    }
}

/// Appends `px` as literal runs of at most 32 pixels.
#[inline]
fn put_literals<G: GlzPixel>(out: &mut Vec<u8>, px: &[G::P]) {
    let mut buf = [0u8; 1 + 32 * 3];
    for chunk in px.chunks(32) {
        buf[0] = lo8(chunk.len() - 1);
        let mut n = 1;
        for &p in chunk {
            G::write(p, &mut buf[n..n + G::LIT_BYTES]);
            n += G::LIT_BYTES;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Length of the common prefix of `a` and `b`.
#[inline(always)]
fn common<P: Copy + Eq>(a: &[P], b: &[P]) -> usize {
    let max = a.len().min(b.len());
    let (a, b) = (&a[..max], &b[..max]);
    let mut k = 0;
    while k + 8 <= max && a[k..k + 8] == b[k..k + 8] {
        k += 8;
    }
    while k < max && a[k] == b[k] {
        k += 1;
    }
    k
}

/// Best candidate so far: (bytes saved, length, image distance, coded offset).
type Best = (usize, usize, u64, usize);

/// Keeps a candidate in `best` if it saves more bytes.
#[inline(always)]
fn consider<G: GlzPixel>(best: &mut Best, len: usize, image_dist: u64, pd: usize) {
    if len >= G::MIN_MATCH && pd < MAX_PIXEL_OFFSET {
        let field = len - (G::MIN_MATCH - 1);
        let gain = (len * G::LIT_BYTES).saturating_sub(ref_cost(field, image_dist, pd));
        if gain > best.0 {
            *best = (gain, len, image_dist, pd);
        }
    }
}

/// The matching state of one pass.
struct Compressor<'t, 'r, 'p, P> {
    /// Hash → stream position + 1.
    table: &'t mut [u64],
    /// `64 − table bits`.
    shift: u32,
    /// Stream position of the current image's first pixel.
    start: u64,
    /// Window images of the same class, oldest first.
    refs: &'r [WinRef<'p, P>],
}

impl<P: Copy + Eq> Compressor<'_, '_, '_, P> {
    /// Compresses `px` (`width` pixels a row) into `out`.
    fn compress<G: GlzPixel<P = P>>(&mut self, px: &[P], width: usize, out: &mut Vec<u8>) {
        let n = px.len();
        let refs = self.refs;
        let prev = refs.last();
        let start = self.start;
        let shift = self.shift;
        let mut lit_start = 0usize;
        let mut i = 0usize;
        let mut misses = 0usize;
        let hash_end = n.saturating_sub(G::HASH_LEN - 1);
        let hash = |k: u64| -> usize {
            usize::try_from(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift).unwrap_or(0)
        };
        while i < hash_end {
            let cur = px[i];
            let mut best: Best = (0, 0, 0, 0);
            if i > 0 && px[i - 1] == cur {
                consider::<G>(&mut best, common(&px[i - 1..], &px[i..]), 0, 0);
            }
            if best.1 < LONG_ENOUGH && width > 1 && i >= width && px[i - width] == cur {
                consider::<G>(&mut best, common(&px[i - width..], &px[i..]), 0, width - 1);
            }
            if best.1 < LONG_ENOUGH
                && let Some(p) = prev
                && p.px.get(i) == Some(&cur)
            {
                consider::<G>(&mut best, common(&p.px[i..], &px[i..]), p.dist, i);
            }
            let h = hash(G::key(&px[i..]));
            let cand = self.table[h];
            let pos = start + u64::try_from(i).unwrap_or(0);
            self.table[h] = pos + 1;
            if best.1 < LONG_ENOUGH && cand != 0 {
                let cand = cand - 1;
                if cand >= start {
                    let c = usize::try_from(cand - start).unwrap_or(usize::MAX);
                    if c < i && px[c] == cur && i - c != 1 && i - c != width {
                        consider::<G>(&mut best, common(&px[c..], &px[i..]), 0, i - c - 1);
                    }
                } else {
                    let k = refs.partition_point(|r| r.start <= cand);
                    if k > 0 {
                        let r = &refs[k - 1];
                        let off = usize::try_from(cand - r.start).unwrap_or(usize::MAX);
                        if off < r.px.len()
                            && r.px[off] == cur
                            && !(prev.is_some_and(|p| p.dist == r.dist) && off == i)
                        {
                            consider::<G>(&mut best, common(&r.px[off..], &px[i..]), r.dist, off);
                        }
                    }
                }
            }
            let (gain, len, image_dist, pd) = best;
            if gain > 1 {
                put_literals::<G>(out, &px[lit_start..i]);
                put_ref(out, len - (G::MIN_MATCH - 1), image_dist, pd);
                let end = i + len;
                for j in end.saturating_sub(2).max(i + 1)..end.min(hash_end) {
                    let h = hash(G::key(&px[j..]));
                    self.table[h] = start + u64::try_from(j).unwrap_or(0) + 1;
                }
                i = end;
                lit_start = i;
                misses = 0;
            } else {
                misses += 1;
                i += 1 + (misses >> 4).min(7);
            }
        }
        put_literals::<G>(out, &px[lit_start..]);
    }
}

// ---------------------------------------------------------------------------
// Decoder (the client's window, as spice-gtk's decode-glz.c keeps it).

/// What a GLZ header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlzHeader {
    /// Image type (RGB16, RGB24, RGB32 or RGBA here).
    pub image_type: LzImageType,
    /// Whether the first stored row is the top row.
    pub top_down: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// Stride in bytes as sent.
    pub stride: u32,
    /// Image id.
    pub id: u64,
    /// `id − win_head_dist` is the oldest image the encoder may reference.
    pub win_head_dist: u32,
}

/// Parses a GLZ header.
///
/// # Errors
/// [`CodecError::Truncated`], [`CodecError::BadMagic`], [`CodecError::BadVersion`],
/// [`CodecError::BadImageType`] (palette types are rejected: this server never
/// sends them), [`CodecError::BadDimensions`].
pub fn parse_header(data: &[u8]) -> Result<GlzHeader, CodecError> {
    let h = data.get(..HEADER_LEN).ok_or(CodecError::Truncated)?;
    let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let magic = be32(0);
    if magic != LZ_MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = be32(4);
    if version != LZ_VERSION {
        return Err(CodecError::BadVersion(version));
    }
    let t = u32::from(h[8] & 0x0f);
    let image_type = match LzImageType::from_u32(t)? {
        ty @ (LzImageType::Rgb16 | LzImageType::Rgb24 | LzImageType::Rgb32 | LzImageType::Rgba) => {
            ty
        }
        _ => return Err(CodecError::BadImageType(t)),
    };
    let width = be32(9);
    let height = be32(13);
    if width == 0 || height == 0 {
        return Err(CodecError::BadDimensions { width, height });
    }
    let id = (u64::from(be32(21)) << 32) | u64::from(be32(25));
    Ok(GlzHeader {
        image_type,
        top_down: h[8] >> 4 != 0,
        width,
        height,
        stride: be32(17),
        id,
        win_head_dist: be32(29),
    })
}

/// One decoded image of the client window.
#[derive(Debug, Clone)]
struct DecImage {
    /// Its header's `win_head_dist`.
    win_head_dist: u32,
    /// Decoded 32-bit pixels (`B | G << 8 | R << 16 | pad << 24`), stored order.
    px: Vec<u32>,
}

/// The client's GLZ window (spice-gtk `SpiceGlzDecoderWindow`): a test oracle
/// that decodes GLZ images exactly as the client does, checks every reference
/// and releases images by the same rule.
#[derive(Debug, Default, Clone)]
pub struct GlzDecoderWindow {
    /// Decoded images by id.
    images: HashMap<u64, DecImage>,
    /// Lowest id not yet released.
    oldest: u64,
    /// First id not yet received (all below it were).
    tail_gap: u64,
    /// Caps on each image.
    limits: DecodeLimits,
}

impl GlzDecoderWindow {
    /// An empty window (as after `glz_decoder_window_new`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty window applying `limits` to every image.
    #[must_use]
    pub fn with_limits(limits: DecodeLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Largest decoded image accepted, in bytes.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.limits.max_bytes
    }

    /// Ids of the images held, ascending.
    #[must_use]
    pub fn ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.images.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Pixels held in the window.
    #[must_use]
    pub fn pixels(&self) -> usize {
        self.images.values().map(|i| i.px.len()).sum()
    }

    /// Decodes one GLZ image (the whole of `data` must be consumed), adds it to
    /// the window and releases old images like the client. The result is what
    /// the client draws: RGB32 (`B, G, R, pad`) for RGB16/24/32 sources — RGB16
    /// expanded to 8 bits per channel — or RGBA, rows in stored order.
    ///
    /// # Errors
    /// Header errors as [`parse_header`], [`CodecError::TooLarge`] against the
    /// limits, [`CodecError::Truncated`], [`CodecError::TrailingData`],
    /// [`CodecError::Corrupt`] for any reference outside the image, to an image
    /// not held, or older than the header's `win_head_dist` allows, or a
    /// duplicate id. The window is unchanged on error.
    pub fn decode(&mut self, data: &[u8]) -> Result<DecodedImage, CodecError> {
        let hdr = parse_header(data)?;
        let bytes = self
            .limits
            .check(hdr.width, hdr.height, 4 * hdr.width as usize)?;
        let n = bytes / 4;
        if u64::from(hdr.win_head_dist) > hdr.id {
            return Err(CodecError::Corrupt("GLZ win_head_dist beyond image 0"));
        }
        if self.images.contains_key(&hdr.id) {
            return Err(CodecError::Corrupt("GLZ image id already in the window"));
        }
        let mut rd = In {
            data,
            pos: HEADER_LEN,
        };
        let mut px = vec![0u32; n];
        let ctx = Ctx {
            window: &self.images,
            id: hdr.id,
            head_dist: hdr.win_head_dist,
        };
        match hdr.image_type {
            LzImageType::Rgb16 => decode_pass::<1>(&mut rd, &mut px, &ctx)?,
            LzImageType::Rgba => {
                decode_pass::<0>(&mut rd, &mut px, &ctx)?;
                decode_pass::<2>(&mut rd, &mut px, &ctx)?;
            }
            _ => decode_pass::<0>(&mut rd, &mut px, &ctx)?,
        }
        if rd.pos != data.len() {
            return Err(CodecError::TrailingData(data.len() - rd.pos));
        }
        let mut pixels = Vec::with_capacity(bytes);
        for p in &px {
            pixels.extend_from_slice(&p.to_le_bytes());
        }
        self.images.insert(
            hdr.id,
            DecImage {
                win_head_dist: hdr.win_head_dist,
                px,
            },
        );
        while self.images.contains_key(&self.tail_gap) && self.tail_gap <= hdr.id {
            self.tail_gap += 1;
        }
        if let Some(newest) = self
            .tail_gap
            .checked_sub(1)
            .and_then(|t| self.images.get(&t).map(|i| (t, i.win_head_dist)))
        {
            let target = newest.0 - u64::from(newest.1);
            if target > self.oldest {
                self.images.retain(|&k, _| k >= target);
                self.oldest = target;
            }
        }
        Ok(DecodedImage {
            width: hdr.width,
            height: hdr.height,
            format: if hdr.image_type == LzImageType::Rgba {
                PixelFormat::Rgba
            } else {
                PixelFormat::Rgb32
            },
            top_down: hdr.top_down,
            stride: 4 * hdr.width as usize,
            pixels,
        })
    }
}

/// Reads bytes with bounds checks.
struct In<'a> {
    /// The stream.
    data: &'a [u8],
    /// Next byte.
    pos: usize,
}

impl In<'_> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
}

/// What a pass needs to resolve references.
struct Ctx<'a> {
    /// Decoded images.
    window: &'a HashMap<u64, DecImage>,
    /// Current image id.
    id: u64,
    /// Its `win_head_dist`.
    head_dist: u32,
}

/// Expands an RGB16 literal (high byte `hi`, low byte `lo`) as the client does.
fn rgb16_to_32(hi: u8, lo: u8) -> u32 {
    let g = (((hi << 6) | (lo >> 2)) & !7) | ((((hi << 6) | (lo >> 2)) & !7) >> 5);
    let r = ((hi << 1) & !7) | ((hi >> 4) & 7);
    let b = (lo << 3) | ((lo >> 2) & 7);
    u32::from_le_bytes([b, g, r, 0])
}

/// Decodes one pass. `KIND` 0 = RGB colour (3-byte literals, whole-pixel
/// copies), 1 = RGB16 to RGB32, 2 = alpha (byte 3 only).
fn decode_pass<const KIND: u8>(
    rd: &mut In<'_>,
    out: &mut [u32],
    ctx: &Ctx<'_>,
) -> Result<(), CodecError> {
    let n = out.len();
    let mut op = 0usize;
    while op < n {
        let ctrl = usize::from(rd.byte()?);
        if ctrl >= 32 {
            let mut len = ctrl >> 5;
            let pixel_flag = (ctrl >> 4) & 1;
            let mut ofs = ctrl & 0x0f;
            if len == 7 {
                loop {
                    let c = rd.byte()?;
                    len += usize::from(c);
                    if c != 255 {
                        break;
                    }
                }
            }
            ofs += usize::from(rd.byte()?) << 4;
            let code = rd.byte()?;
            let image_flag = code >> 6;
            let mut image_dist: u64 = 0;
            if pixel_flag == 0 {
                image_dist = u64::from(code & 0x3f);
                for k in 0..image_flag {
                    image_dist += u64::from(rd.byte()?) << (6 + 8 * u32::from(k));
                }
            } else {
                ofs += usize::from(code & 0x1f) << 12;
                for k in 0..image_flag {
                    image_dist += u64::from(rd.byte()?) << (8 * u32::from(k));
                }
                if (code >> 5) & 1 != 0 {
                    ofs += usize::from(rd.byte()?) << 17;
                }
            }
            len += match KIND {
                1 => 1,
                2 => 2,
                _ => 0,
            };
            if len > n - op {
                return Err(CodecError::Corrupt("GLZ copy past the end of the image"));
            }
            if image_dist == 0 {
                let dist = ofs + 1;
                if dist > op {
                    return Err(CodecError::Corrupt(
                        "GLZ reference before the start of the image",
                    ));
                }
                let r = op - dist;
                for k in 0..len {
                    let v = out[r + k];
                    copy_px::<KIND>(&mut out[op + k], v);
                }
            } else {
                if image_dist > u64::from(ctx.head_dist) {
                    return Err(CodecError::Corrupt(
                        "GLZ reference older than the header's window head",
                    ));
                }
                let src = ctx
                    .id
                    .checked_sub(image_dist)
                    .and_then(|id| ctx.window.get(&id))
                    .ok_or(CodecError::Corrupt(
                        "GLZ reference to an image not in the window",
                    ))?;
                let s = src
                    .px
                    .get(ofs..)
                    .and_then(|s| s.get(..len))
                    .ok_or(CodecError::Corrupt(
                        "GLZ reference past the end of its image",
                    ))?;
                for (d, &v) in out[op..op + len].iter_mut().zip(s) {
                    copy_px::<KIND>(d, v);
                }
            }
            op += len;
        } else {
            let cnt = ctrl + 1;
            if cnt > n - op {
                return Err(CodecError::Corrupt(
                    "GLZ literals past the end of the image",
                ));
            }
            let lit = match KIND {
                1 => 2,
                2 => 1,
                _ => 3,
            };
            let bytes = rd
                .data
                .get(rd.pos..rd.pos + cnt * lit)
                .ok_or(CodecError::Truncated)?;
            rd.pos += cnt * lit;
            for (d, c) in out[op..op + cnt].iter_mut().zip(bytes.chunks_exact(lit)) {
                *d = match KIND {
                    1 => rgb16_to_32(c[0], c[1]),
                    2 => (*d & 0x00ff_ffff) | (u32::from(c[0]) << 24),
                    _ => u32::from_le_bytes([c[0], c[1], c[2], 0]),
                };
            }
            op += cnt;
        }
    }
    Ok(())
}

/// Copies a referenced pixel: whole pixels, or only the alpha byte in the alpha pass.
#[inline(always)]
fn copy_px<const KIND: u8>(d: &mut u32, v: u32) {
    if KIND == 2 {
        *d = (*d & 0x00ff_ffff) | (v & 0xff00_0000);
    } else {
        *d = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(px: &[u8], w: u32, h: u32, f: PixelFormat, td: bool) -> ImageRef<'_> {
        ImageRef::new(px, w, h, f.row_bytes(w), f, td).unwrap()
    }

    #[test]
    fn ref_encodings_round_trip() {
        for &(field, dist, pd) in &[
            (1usize, 0u64, 0usize),
            (6, 0, 4095),
            (7, 0, 4096),
            (300, 0, (1 << 17) - 1),
            (8, 0, 1 << 17),
            (2, 1, 0),
            (2, 63, 4095),
            (2, 64, 100),
            (2, 16_383, 100),
            (2, 16_384, 100),
            (2, 4_194_304, 5),
            (2, 255, 5000),
            (2, 256, 5000),
            (2, 65_536, (1 << 25) - 1),
        ] {
            let mut out = Vec::new();
            put_ref(&mut out, field, dist, pd);
            assert_eq!(out.len(), ref_cost(field, dist, pd), "{field} {dist} {pd}");
            // Parse it back with the decoder's field logic.
            let mut rd = In { data: &out, pos: 0 };
            let ctrl = usize::from(rd.byte().unwrap());
            let mut len = ctrl >> 5;
            let pf = (ctrl >> 4) & 1;
            let mut ofs = ctrl & 15;
            if len == 7 {
                loop {
                    let c = rd.byte().unwrap();
                    len += usize::from(c);
                    if c != 255 {
                        break;
                    }
                }
            }
            ofs += usize::from(rd.byte().unwrap()) << 4;
            let code = rd.byte().unwrap();
            let mut d = 0u64;
            if pf == 0 {
                d = u64::from(code & 63);
                for k in 0..code >> 6 {
                    d += u64::from(rd.byte().unwrap()) << (6 + 8 * u32::from(k));
                }
            } else {
                ofs += usize::from(code & 31) << 12;
                for k in 0..code >> 6 {
                    d += u64::from(rd.byte().unwrap()) << (8 * u32::from(k));
                }
                if code & 32 != 0 {
                    ofs += usize::from(rd.byte().unwrap()) << 17;
                }
            }
            assert_eq!((len, d, ofs, rd.pos), (field, dist, pd, out.len()));
        }
    }

    #[test]
    fn rgb16_expansion_matches_bit_replication() {
        for v in [0u16, 0x7fff, 0x1234, 0x4210, 0x001f, 0x03e0, 0x7c00] {
            let [hi, lo] = v.to_be_bytes();
            let [b, g, r, pad] = rgb16_to_32(hi, lo).to_le_bytes();
            let c = |x: u16| {
                let x = u8::try_from(x & 31).unwrap();
                (x << 3) | (x >> 2)
            };
            assert_eq!((b, g, r, pad), (c(v), c(v >> 5), c(v >> 10), 0), "{v:#x}");
        }
    }

    #[test]
    fn repeated_image_references_the_previous_one() {
        let w = 64u32;
        let h = 32u32;
        let px: Vec<u8> = (0..w * h * 4)
            .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761u32) >> 24).unwrap())
            .collect();
        let mut dict = GlzDictionary::new(1 << 20);
        let mut win = GlzDecoderWindow::new();
        let a = dict
            .encode(&img(&px, w, h, PixelFormat::Rgb32, true))
            .unwrap();
        let b = dict
            .encode(&img(&px, w, h, PixelFormat::Rgb32, true))
            .unwrap();
        assert!(b.len() < 64, "second copy is {} bytes", b.len());
        let da = win.decode(&a).unwrap();
        let db = win.decode(&b).unwrap();
        assert_eq!(da, db);
        assert_eq!(win.ids(), vec![0, 1]);
    }

    #[test]
    fn eviction_agrees_with_the_client_window() {
        let w = 40u32;
        let h = 25u32; // 1000 pixels; window of 3500 holds 3 images.
        let mut dict = GlzDictionary::new(3500);
        let mut win = GlzDecoderWindow::new();
        for k in 0..10u32 {
            let px: Vec<u8> = (0..w * h * 4)
                .map(|i| u8::try_from(((i / 4) % 97 + k % 3) % 256).unwrap())
                .collect();
            let e = dict
                .encode(&img(&px, w, h, PixelFormat::Rgb32, true))
                .unwrap();
            win.decode(&e).unwrap();
            let enc: Vec<u64> = dict.window_ids().collect();
            let held = win.ids();
            assert!(
                enc.iter().all(|id| held.contains(id)),
                "{enc:?} vs {held:?}"
            );
            assert!(enc.len() <= 3);
        }
        assert!(win.ids().len() <= 4);
    }

    #[test]
    fn too_large_and_palette_are_refused_without_side_effects() {
        let mut dict = GlzDictionary::new(100);
        let px = vec![0u8; 400];
        assert!(matches!(
            dict.encode(&img(&px, 10, 10, PixelFormat::Rgb32, true)),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            dict.encode(&img(&px, 10, 10, PixelFormat::Plt8, true)),
            Err(CodecError::UnsupportedFormat { .. })
        ));
        assert_eq!(dict.next_id(), 0);
    }
}
