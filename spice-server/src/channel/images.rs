//! Images on the wire, per display client: which codec each image travels
//! as, and the client's pixmap and palette caches.
//!
//! # Primer
//!
//! Every image a display message carries (the source of a native draw, a
//! brush pattern, or an area of a surface sent as damage) goes through one
//! [`ClientImages`], which belongs to that client's writer thread. Decisions
//! are therefore made when the message is marshalled, in send order, and the
//! server's idea of the client's caches is always exactly what was sent.
//!
//! **Codec choice** ([`choose`]), after libspice-server's
//! `get_compression_for_bitmap` (compression.md §8):
//! * fewer than [`MIN_COMPRESS_BYTES`] bytes, or mode `off` → BITMAP;
//! * `quic` → QUIC where QUIC can carry the image (not palette, ≥ 3×3), else BITMAP;
//! * `auto_glz` / `auto_lz` → QUIC for photo-like images ([`ImageStats::is_photo`]:
//!   on about one pixel in 128 (32 to 4096 samples), an estimate of LZ's cost —
//!   literals for samples repeating neither their left nor their upper
//!   neighbour — against QUIC's — residual sizes against the neighbours' mean;
//!   within 2 % of the per-image best of QUIC and LZ on the screenshot corpus,
//!   its tiles and crops, see `benches/benches/auto.rs`), else GLZ
//!   (`auto_glz`) or LZ (`auto_lz`);
//! * `glz` → GLZ, `lz` → LZ, `lz4` → LZ4 (RGB images of clients with the cap);
//! * then the client's limits: GLZ only for images inside a drawable, with a
//!   GLZ window > 0 and a GLZ codec (else LZ); LZ4 only with
//!   `SPICE_DISPLAY_CAP_LZ4_COMPRESSION` and never for 24-bit images (else LZ);
//!   clients without spice-common's canvas (spice-html5) get only BITMAP and
//!   LZ_RGB for 32-bit/RGBA images;
//! * JPEG replaces QUIC when JPEG is enabled for the client and the use allows
//!   a lossy image (a plain copy onto the primary);
//! * if the encoder fails or the result is not smaller → BITMAP;
//! * LZ and LZ4 images of 512 KiB and more, and JPEG images of 256 Ki pixels
//!   and more, are encoded in bands of rows on up to [`MAX_ENCODE_THREADS`]
//!   threads ([`lz::encode_parallel`], [`lz4::encode_parallel`],
//!   [`jpeg::encode_parallel`]).
//!
//! **Pixmap cache** ([`PixmapCache`], compression.md §9): images the guest
//! marked cacheable (`QXL_IMAGE_CACHE`, keyed by its id) and any image of at
//! least [`CACHE_MIN_PIXELS`] (keyed by a 128-bit hash of its content) are
//! sent once with `CACHE_ME` and then as `FROM_CACHE` (`FROM_CACHE_LOSSLESS`
//! when JPEG is enabled for the client). Wire ids are assigned here, so guest
//! ids and content keys never collide. The capacity is the client's
//! `pixmap_cache_size` (pixels, from DISPLAY_INIT); an image costs
//! width × height. To make room the least recently used entries are evicted
//! and their ids sent in `INVAL_LIST` *before* the message that needs the
//! room ([`ClientImages::take_invalidations`]). Entries the current message
//! references are pinned: an entry is never evicted by the message that uses
//! it. Lossy (JPEG) images are never cached, so every entry is lossless.
//! spice-gtk's image cache *waits* for a missing id, so a `FROM_CACHE` is
//! only ever sent for an id the tracker holds.
//!
//! **Palette cache** ([`PaletteCache`]): 128 entries, keyed by the palette's
//! content (the guest's `unique` is not trusted); first use `PAL_CACHE_ME`
//! with the palette (its `unique` = our id), later `PAL_FROM_CACHE` + id;
//! evictions as `INVAL_PALETTE` before the message.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::Error;
use crate::codecs::glz::GlzDictionary;
use crate::codecs::zlib_glz::{self, GlzOutput};
use crate::codecs::{ImageRef, PixelFormat, jpeg, lz, lz4, quic};
use crate::command::{Bitmap, BitmapFormat, IMAGE_FLAG_CACHE, Image, ImageData, Palette};
use crate::server::ImageCompression;
use crate::wire::Writer;

/// `SPICE_IMAGE_TYPE_BITMAP`.
pub const IMAGE_TYPE_BITMAP: u8 = 0;
/// `SPICE_IMAGE_TYPE_QUIC`.
pub const IMAGE_TYPE_QUIC: u8 = 1;
/// `SPICE_IMAGE_TYPE_LZ_PLT`.
pub const IMAGE_TYPE_LZ_PLT: u8 = 100;
/// `SPICE_IMAGE_TYPE_LZ_RGB`.
pub const IMAGE_TYPE_LZ_RGB: u8 = 101;
/// `SPICE_IMAGE_TYPE_GLZ_RGB`.
pub const IMAGE_TYPE_GLZ_RGB: u8 = 102;
/// `SPICE_IMAGE_TYPE_FROM_CACHE`.
pub const IMAGE_TYPE_FROM_CACHE: u8 = 103;
/// `SPICE_IMAGE_TYPE_SURFACE`.
pub const IMAGE_TYPE_SURFACE: u8 = 104;
/// `SPICE_IMAGE_TYPE_JPEG`.
pub const IMAGE_TYPE_JPEG: u8 = 105;
/// `SPICE_IMAGE_TYPE_FROM_CACHE_LOSSLESS`.
pub const IMAGE_TYPE_FROM_CACHE_LOSSLESS: u8 = 106;
/// `SPICE_IMAGE_TYPE_ZLIB_GLZ_RGB`.
pub const IMAGE_TYPE_ZLIB_GLZ_RGB: u8 = 107;
/// `SPICE_IMAGE_TYPE_JPEG_ALPHA`.
pub const IMAGE_TYPE_JPEG_ALPHA: u8 = 108;
/// `SPICE_IMAGE_TYPE_LZ4`.
pub const IMAGE_TYPE_LZ4: u8 = 109;
/// `SPICE_IMAGE_FLAGS_CACHE_ME`.
pub const IMAGE_FLAGS_CACHE_ME: u8 = 1;
/// `SPICE_IMAGE_FLAGS_HIGH_BITS_SET`: spice-common ORs 0xff000000 into
/// every pixel of an image it decoded as x8r8g8b8.
pub const IMAGE_FLAGS_HIGH_BITS_SET: u8 = 2;
/// `SPICE_BITMAP_FLAGS_PAL_CACHE_ME`.
pub const BITMAP_FLAGS_PAL_CACHE_ME: u8 = 1;
/// `SPICE_BITMAP_FLAGS_PAL_FROM_CACHE`.
pub const BITMAP_FLAGS_PAL_FROM_CACHE: u8 = 2;
/// `SPICE_BITMAP_FLAGS_TOP_DOWN`.
pub const BITMAP_FLAGS_TOP_DOWN: u8 = 4;
/// `SPICE_RES_TYPE_PIXMAP` (INVAL_LIST entries).
pub const RES_TYPE_PIXMAP: u8 = 1;
/// Images smaller than this (bytes of pixel data) are sent uncompressed.
pub const MIN_COMPRESS_BYTES: usize = 256;
/// Images without the guest's cache flag are cached from this many pixels on.
pub const CACHE_MIN_PIXELS: u64 = 32 * 32;
/// Palettes a client caches (`CLIENT_PALETTE_CACHE_SIZE`).
pub const PALETTE_CACHE_ENTRIES: usize = 128;
/// Most threads one LZ or JPEG image is encoded on ([`lz::encode_parallel`],
/// [`jpeg::encode_parallel`]).
pub const MAX_ENCODE_THREADS: usize = 4;
/// Largest pixmap cache accepted from a client (pixels).
const MAX_CACHE_PIXELS: u64 = 1 << 32;

/// What one display client decodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientDecoders {
    /// spice-common's canvas (spice-gtk): every image type but those below.
    pub full_canvas: bool,
    /// `SPICE_DISPLAY_CAP_LZ4_COMPRESSION`.
    pub lz4: bool,
    /// `glz_dictionary_window_size` from DISPLAY_INIT (pixels; 0 = no GLZ).
    pub glz_window: u32,
}

/// The codec of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Uncompressed `BITMAP`.
    Bitmap,
    /// `QUIC`.
    Quic,
    /// `LZ_RGB` or `LZ_PLT`.
    Lz,
    /// `GLZ_RGB`.
    Glz,
    /// `JPEG` (`JPEG_ALPHA` for RGBA).
    Jpeg,
    /// `LZ4`.
    Lz4,
}

/// How an image is used, as far as the codec choice cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    /// The image belongs to a drawable (GLZ is only used for those).
    pub in_drawable: bool,
    /// A lossy copy on the client is acceptable (plain copy onto the primary).
    pub lossy_ok: bool,
}

/// The compression policy of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Mode (server configuration, or the client's PREFERRED_COMPRESSION).
    pub mode: ImageCompression,
    /// JPEG enabled for this client (`jpeg-wan-compression`).
    pub jpeg: bool,
    /// ZLIB_GLZ enabled for this client (`zlib-glz-wan-compression`).
    pub zlib_glz: bool,
    /// What the client decodes.
    pub client: ClientDecoders,
}

/// Cheap statistics of an image, on a sample grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Pixels sampled (each compared with its left and upper neighbour).
    pub samples: u32,
    /// Samples equal to their left or upper neighbour (what LZ codes as
    /// part of a run or a copy of the row above).
    pub repeats: u32,
    /// Estimated QUIC cost of the samples in bits: per channel the size of a
    /// Golomb-coded residual against the mean of the left and upper
    /// neighbours, nothing for samples equal to both (QUIC's run mode).
    pub quic_bits: u32,
}

impl ImageStats {
    /// Photo-like: QUIC is expected to code the image smaller than LZ.
    /// Estimates in bits over the samples: LZ pays a literal (3 bytes and a
    /// bit of run header) for every sample that repeats neither neighbour and
    /// [`LZ_REPEAT_BITS`] for the others; QUIC pays [`ImageStats::quic_bits`]
    /// scaled by [`QUIC_BITS_SCALE`] percent (its adaptive codes pay more than
    /// the ideal residual sizes) plus [`QUIC_SAMPLE_BITS`] a sample. Fitted on
    /// the screenshot corpus and its tiles and crops (`benches/benches/auto.rs`):
    /// the choice between QUIC and LZ comes within 2 % of the per-image best.
    #[must_use]
    pub fn is_photo(&self) -> bool {
        if self.samples < 16 {
            return false;
        }
        let samples = u64::from(self.samples);
        let repeats = u64::from(self.repeats);
        let lz = (samples - repeats) * LZ_LITERAL_BITS + repeats * LZ_REPEAT_BITS;
        let quic = u64::from(self.quic_bits) * QUIC_BITS_SCALE / 100 + samples * QUIC_SAMPLE_BITS;
        quic < lz
    }
}

/// Estimated LZ bits of a sample that repeats no neighbour (see [`ImageStats::is_photo`]).
pub const LZ_LITERAL_BITS: u64 = 25;
/// Estimated LZ bits of a sample that repeats a neighbour.
pub const LZ_REPEAT_BITS: u64 = 1;
/// Scale (percent) of [`ImageStats::quic_bits`] in the QUIC estimate.
pub const QUIC_BITS_SCALE: u64 = 120;
/// QUIC bits a sample costs on top of its residuals.
pub const QUIC_SAMPLE_BITS: u64 = 1;
/// Pixels sampled per image at most by [`image_stats`].
pub const MAX_STAT_SAMPLES: usize = 4096;
/// [`image_stats`] samples one pixel in this many (at least 32 samples).
pub const STAT_SAMPLE_EVERY: usize = 128;

/// Colour of pixel `x` in a row, as (r, g, b).
fn rgb_at(row: &[u8], x: usize, f: PixelFormat) -> [u8; 3] {
    let get = |i: usize| row.get(i).copied().unwrap_or(0);
    match f {
        PixelFormat::Rgb16 => {
            let v = u16::from_le_bytes([get(2 * x), get(2 * x + 1)]);
            let c = |s: u16| {
                let five = u8::try_from((v >> s) & 0x1f).unwrap_or(0);
                (five << 3) | (five >> 2)
            };
            [c(10), c(5), c(0)]
        }
        PixelFormat::Rgb24 => [get(3 * x + 2), get(3 * x + 1), get(3 * x)],
        PixelFormat::Rgb32 | PixelFormat::Rgba => [get(4 * x + 2), get(4 * x + 1), get(4 * x)],
        _ => [0, 0, 0],
    }
}

/// Bits of a Golomb-style code for residual `r` (sign folded in).
fn residual_bits(r: i16) -> u32 {
    let m = r.unsigned_abs() * 2;
    if m == 0 { 1 } else { m.ilog2() + 2 }
}

/// Statistics of an RGB image (palette formats give zeros), from about one
/// pixel in [`STAT_SAMPLE_EVERY`] (at least 32, at most [`MAX_STAT_SAMPLES`])
/// on a grid whose columns shift from row to row.
#[must_use]
pub fn image_stats(img: &ImageRef<'_>) -> ImageStats {
    let mut st = ImageStats::default();
    if img.format.is_palette() || img.format == PixelFormat::A8 || img.validate().is_err() {
        return st;
    }
    let (w, h) = (img.cols(), img.rows());
    if w < 2 || h < 2 {
        return st;
    }
    let want = (w * h / STAT_SAMPLE_EVERY).clamp(32, MAX_STAT_SAMPLES);
    // ny rows of nx samples, in proportion to the image's shape.
    let ny = (want * h / w).isqrt().clamp(1, (h - 1).min(want));
    let nx = (want / ny).clamp(1, w - 1);
    let (sy, sx) = ((h - 1) / ny, (w - 1) / nx);
    let mut y = 1;
    let mut row_index = 0usize;
    while y < h {
        let (up, cur) = (img.row(y - 1), img.row(y));
        let mut x = 1 + (row_index * 7) % sx;
        while x < w {
            let c = rgb_at(cur, x, img.format);
            let l = rgb_at(cur, x - 1, img.format);
            let a = rgb_at(up, x, img.format);
            st.samples += 1;
            if c == l || c == a {
                st.repeats += 1;
            }
            if c != l || c != a {
                for k in 0..3 {
                    let pred = (u16::from(l[k]) + u16::from(a[k])) / 2;
                    let r = i16::from(c[k]) - i16::try_from(pred).unwrap_or(0);
                    st.quic_bits += residual_bits(r);
                }
            }
            x += sx;
        }
        y += sy;
        row_index += 1;
    }
    st
}

/// Whether QUIC can carry the image (spice-server's `can_quic_compress`).
fn quic_ok(img: &ImageRef<'_>) -> bool {
    !img.format.is_palette() && img.format != PixelFormat::A8 && img.width >= 3 && img.height >= 3
}

/// Whether spice-html5's LZ decoder handles this format (LZ_RGB RGB32/RGBA).
const fn limited_lz_ok(f: PixelFormat) -> bool {
    matches!(f, PixelFormat::Rgb32 | PixelFormat::Rgba)
}

/// Chooses the codec of one image for one client (see the module docs), and
/// why.
#[must_use]
pub fn choose(policy: &Policy, img: &ImageRef<'_>, usage: Use) -> (Codec, &'static str) {
    let bytes = img.stride.saturating_mul(img.rows());
    if bytes < MIN_COMPRESS_BYTES {
        return (Codec::Bitmap, "small");
    }
    let full = policy.client.full_canvas;
    if !full && !limited_lz_ok(img.format) {
        return (Codec::Bitmap, "format the client only takes as a bitmap");
    }
    // Not RGB16: the JPEG colours of 16-bit images came out ~25 dB off in
    // spice-gtk (5-to-8-bit expansion differs from the canvas's), see
    // tests/compression.rs.
    let jpeg_ok = policy.jpeg
        && usage.lossy_ok
        && full
        && !img.format.is_palette()
        && img.format != PixelFormat::Rgb16
        && quic_ok(img);
    let lz_like = |want: Codec, why: &'static str| -> (Codec, &'static str) {
        if !full {
            return (Codec::Lz, "LZ (the client has no GLZ/LZ4)");
        }
        match want {
            Codec::Glz if !usage.in_drawable => (Codec::Lz, "LZ (GLZ only for drawables)"),
            Codec::Glz if policy.client.glz_window == 0 => (Codec::Lz, "LZ (client GLZ window 0)"),
            Codec::Glz
                if !matches!(
                    img.format,
                    PixelFormat::Rgb16
                        | PixelFormat::Rgb24
                        | PixelFormat::Rgb32
                        | PixelFormat::Rgba
                ) =>
            {
                (Codec::Lz, "LZ (GLZ only for RGB formats)")
            }
            Codec::Lz4 if !policy.client.lz4 => (Codec::Lz, "LZ (client lacks the LZ4 cap)"),
            Codec::Lz4
                if !matches!(
                    img.format,
                    PixelFormat::Rgb16 | PixelFormat::Rgb32 | PixelFormat::Rgba
                ) =>
            {
                (Codec::Lz, "LZ (no LZ4 for this format)")
            }
            other => (other, why),
        }
    };
    match policy.mode {
        ImageCompression::Off => (Codec::Bitmap, "compression off"),
        ImageCompression::Quic => {
            if full && quic_ok(img) {
                if jpeg_ok {
                    (Codec::Jpeg, "JPEG (quic mode, lossy allowed)")
                } else {
                    (Codec::Quic, "quic mode")
                }
            } else {
                (Codec::Bitmap, "quic mode, QUIC cannot carry it")
            }
        }
        ImageCompression::AutoGlz | ImageCompression::AutoLz => {
            if full && quic_ok(img) && image_stats(img).is_photo() {
                if jpeg_ok {
                    return (Codec::Jpeg, "photo-like, lossy allowed");
                }
                return (Codec::Quic, "photo-like");
            }
            if policy.mode == ImageCompression::AutoGlz {
                lz_like(Codec::Glz, "synthetic")
            } else {
                lz_like(Codec::Lz, "synthetic")
            }
        }
        ImageCompression::Glz => lz_like(Codec::Glz, "glz mode"),
        ImageCompression::Lz => lz_like(Codec::Lz, "lz mode"),
        ImageCompression::Lz4 => lz_like(Codec::Lz4, "lz4 mode"),
    }
}

/// 128-bit content key.
fn content_key(parts: &[&[u8]], tag: u8) -> u128 {
    let mut a = DefaultHasher::new();
    let mut b = DefaultHasher::new();
    0x5a17_u16.hash(&mut b);
    tag.hash(&mut a);
    tag.hash(&mut b);
    for p in parts {
        a.write(p);
        b.write(p);
    }
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What identifies a cached image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// The guest's id of an image it marked cacheable.
    Guest(u64),
    /// A hash of the image's content.
    Content(u128),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    wire_id: u64,
    pixels: u64,
    tick: u64,
    /// Message that last referenced it (entries it references are pinned).
    used_in: u64,
    /// Message that added it (a second use in the same message is not a hit).
    added_in: u64,
}

/// Server-side copy of what a client's pixmap cache holds, LRU by pixels.
#[derive(Debug, Default)]
pub struct PixmapCache {
    capacity: u64,
    used: u64,
    entries: HashMap<CacheKey, Entry>,
    lru: BTreeMap<u64, CacheKey>,
    tick: u64,
    next_id: u64,
    /// Evicted wire ids the client has not been told about yet.
    evicted: Vec<u64>,
}

/// A pixmap cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The client holds it under this id.
    Hit(u64),
    /// Send it with CACHE_ME under this id.
    Add(u64),
    /// Send it without caching.
    NoCache,
}

impl PixmapCache {
    /// An empty cache of `capacity` pixels.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity: capacity.min(MAX_CACHE_PIXELS),
            next_id: 1,
            ..Self::default()
        }
    }

    /// Capacity in pixels.
    #[must_use]
    pub const fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Pixels in use.
    #[must_use]
    pub const fn used(&self) -> u64 {
        self.used
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything (the client's cache was cleared too); the capacity stays.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.lru.clear();
        self.used = 0;
        self.evicted.clear();
    }

    fn touch(&mut self, key: CacheKey, msg: u64) -> Option<u64> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(&key)?;
        self.lru.remove(&e.tick);
        e.tick = tick;
        e.used_in = msg;
        let id = e.wire_id;
        self.lru.insert(tick, key);
        Some(id)
    }

    /// Looks `key` up for message `msg`, adding it (and evicting unpinned LRU
    /// entries) on a miss when `cacheable`.
    pub fn lookup(&mut self, key: CacheKey, pixels: u64, msg: u64, cacheable: bool) -> Lookup {
        if let Some(e) = self.entries.get(&key) {
            if e.added_in == msg {
                return Lookup::NoCache;
            }
            return self.touch(key, msg).map_or(Lookup::NoCache, Lookup::Hit);
        }
        if !cacheable || pixels == 0 || pixels > self.capacity {
            return Lookup::NoCache;
        }
        // Room: evict least recently used entries not referenced by this message.
        let mut need = (self.used + pixels).saturating_sub(self.capacity);
        if need > 0 {
            let free: u64 = self
                .entries
                .values()
                .filter(|e| e.used_in != msg)
                .map(|e| e.pixels)
                .sum();
            if free < need {
                return Lookup::NoCache;
            }
            let order: Vec<(u64, CacheKey)> = self.lru.iter().map(|(t, k)| (*t, *k)).collect();
            for (t, k) in order {
                if need == 0 {
                    break;
                }
                let Some(e) = self.entries.get(&k).copied() else {
                    continue;
                };
                if e.used_in == msg {
                    continue;
                }
                self.lru.remove(&t);
                self.entries.remove(&k);
                self.used -= e.pixels;
                self.evicted.push(e.wire_id);
                need = need.saturating_sub(e.pixels);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.tick += 1;
        self.entries.insert(
            key,
            Entry {
                wire_id: id,
                pixels,
                tick: self.tick,
                used_in: msg,
                added_in: msg,
            },
        );
        self.lru.insert(self.tick, key);
        self.used += pixels;
        Lookup::Add(id)
    }

    /// Wire ids evicted since the last call (send them in INVAL_LIST first).
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }
}

/// Server-side copy of a client's palette cache (LRU, 128 entries).
#[derive(Debug, Default)]
pub struct PaletteCache {
    entries: HashMap<u128, Entry>,
    lru: BTreeMap<u64, u128>,
    tick: u64,
    next_id: u64,
    evicted: Vec<u64>,
}

impl PaletteCache {
    /// Forgets everything (the client cleared its palette cache).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.lru.clear();
        self.evicted.clear();
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a palette up for message `msg`: `Hit(id)`, `Add(id)` (send with
    /// PAL_CACHE_ME) or `NoCache` (added by this very message, or every
    /// entry is pinned by it).
    pub fn lookup(&mut self, key: u128, msg: u64) -> Lookup {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(&key) {
            if e.added_in == msg {
                return Lookup::NoCache;
            }
            self.lru.remove(&e.tick);
            e.tick = tick;
            e.used_in = msg;
            self.lru.insert(tick, key);
            return Lookup::Hit(e.wire_id);
        }
        while self.entries.len() >= PALETTE_CACHE_ENTRIES {
            let victim = self
                .lru
                .iter()
                .find(|(_, k)| self.entries.get(*k).is_some_and(|e| e.used_in != msg))
                .map(|(t, k)| (*t, *k));
            let Some((t, k)) = victim else {
                return Lookup::NoCache;
            };
            self.lru.remove(&t);
            if let Some(e) = self.entries.remove(&k) {
                self.evicted.push(e.wire_id);
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            key,
            Entry {
                wire_id: id,
                pixels: 1,
                tick,
                used_in: msg,
                added_in: msg,
            },
        );
        self.lru.insert(tick, key);
        Lookup::Add(id)
    }

    /// Ids evicted since the last call (send INVAL_PALETTE for each first).
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }
}

/// Counters of images sent, by image type (all clients together).
#[derive(Debug)]
pub struct ImageCounters {
    count: Vec<std::sync::atomic::AtomicU64>,
    bytes: Vec<std::sync::atomic::AtomicU64>,
}

impl Default for ImageCounters {
    fn default() -> Self {
        let v = || {
            (0..128)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect()
        };
        Self {
            count: v(),
            bytes: v(),
        }
    }
}

impl ImageCounters {
    fn slot(ty: u8) -> usize {
        usize::from(ty).min(127)
    }

    /// Counts one image of type `ty` taking `bytes` on the wire.
    pub fn add(&self, ty: u8, bytes: usize) {
        let i = Self::slot(ty);
        if let (Some(c), Some(b)) = (self.count.get(i), self.bytes.get(i)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b.fetch_add(
                u64::try_from(bytes).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Images of type `ty` sent so far and their bytes (descriptor included).
    #[must_use]
    pub fn sent(&self, ty: u8) -> (u64, u64) {
        let i = Self::slot(ty);
        let load = |v: &Vec<std::sync::atomic::AtomicU64>| {
            v.get(i)
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
        };
        (load(&self.count), load(&self.bytes))
    }
}

/// What the X bytes of 32-bit pixels hold.
enum XBytes {
    Zero,
    Ff,
    Mixed,
}

fn x_bytes(px: &[u8]) -> XBytes {
    let mut zero = true;
    let mut ff = true;
    for p in px.chunks_exact(4) {
        zero &= p[3] == 0;
        ff &= p[3] == 0xff;
        if !zero && !ff {
            return XBytes::Mixed;
        }
    }
    if zero { XBytes::Zero } else { XBytes::Ff }
}

/// Pixel bytes of a bitmap prepared for encoding: palette formats in their
/// wire (big-endian) form, rows tightly packed.
struct Prepared {
    data: Vec<u8>,
    format: PixelFormat,
    stride: usize,
}

const fn pixel_format(f: BitmapFormat) -> Option<PixelFormat> {
    Some(match f {
        BitmapFormat::OneBitLe | BitmapFormat::OneBitBe => PixelFormat::Plt1Be,
        BitmapFormat::FourBitLe | BitmapFormat::FourBitBe => PixelFormat::Plt4Be,
        BitmapFormat::EightBit => PixelFormat::Plt8,
        BitmapFormat::Rgb16 => PixelFormat::Rgb16,
        BitmapFormat::Rgb24 => PixelFormat::Rgb24,
        BitmapFormat::Rgb32 => PixelFormat::Rgb32,
        BitmapFormat::Rgba => PixelFormat::Rgba,
        BitmapFormat::A8 => return None,
    })
}

fn prepare(b: &Bitmap) -> Option<Prepared> {
    let format = pixel_format(b.format)?;
    let row = format.row_bytes(b.width);
    let stride = usize::try_from(b.stride).ok()?;
    let h = usize::try_from(b.height).ok()?;
    let need = stride.checked_mul(h)?;
    let src = b.data.get(..need)?;
    let mut data = Vec::with_capacity(row.checked_mul(h)?);
    for r in src.chunks_exact(stride.max(1)).take(h) {
        data.extend_from_slice(r.get(..row)?);
    }
    let data = match super::draw_marshal::le_to_be(b.format, &data) {
        std::borrow::Cow::Owned(v) => v,
        std::borrow::Cow::Borrowed(_) => data,
    };
    Some(Prepared {
        data,
        format,
        stride: row,
    })
}

/// Palette entries as sent: padded with zeros to the format's index range.
fn palette_entries(p: &Palette, f: BitmapFormat) -> Vec<u32> {
    let want = if f.has_palette() {
        1usize << f.bpp()
    } else {
        0
    };
    let n = p.entries.len().max(want).min(usize::from(u16::MAX));
    (0..n)
        .map(|i| p.entries.get(i).copied().unwrap_or(0))
        .collect()
}

/// One client's image state: policy, caches, counters.
#[derive(Debug)]
pub struct ClientImages {
    /// Compression policy.
    pub policy: Policy,
    /// The client's pixmap cache.
    pub pixmaps: PixmapCache,
    /// The client's palette cache.
    pub palettes: PaletteCache,
    /// Message counter (pins cache entries per message).
    msg: u64,
    /// Cache images at all (spice-gtk; the others are not verified).
    pub caching: bool,
    /// The GLZ dictionary mirroring the client's window (`None` until a
    /// window size is known, or when it is 0).
    pub glz: Option<GlzDictionary>,
}

impl ClientImages {
    /// State for a new client.
    #[must_use]
    pub fn new(policy: Policy, cache_pixels: u64) -> Self {
        Self {
            caching: policy.client.full_canvas,
            policy,
            pixmaps: PixmapCache::new(cache_pixels),
            palettes: PaletteCache::default(),
            msg: 0,
            glz: None,
        }
    }

    /// Starts marshalling a new message.
    pub fn begin_message(&mut self) {
        self.msg += 1;
    }

    /// Pixmap ids and palette ids the client must drop before the message
    /// just marshalled.
    pub fn take_invalidations(&mut self) -> (Vec<u64>, Vec<u64>) {
        (self.pixmaps.take_evicted(), self.palettes.take_evicted())
    }

    fn cache_lookup(&mut self, key: Option<CacheKey>, w: u32, h: u32) -> Lookup {
        match key {
            Some(k) if self.caching => {
                let px = u64::from(w) * u64::from(h);
                let big = px >= CACHE_MIN_PIXELS || matches!(k, CacheKey::Guest(_));
                self.pixmaps.lookup(k, px, self.msg, big)
            }
            _ => Lookup::NoCache,
        }
    }

    fn put_from_cache(&self, w: &mut Writer, id: u64, width: u32, height: u32) -> u8 {
        let ty = if self.policy.jpeg {
            IMAGE_TYPE_FROM_CACHE_LOSSLESS
        } else {
            IMAGE_TYPE_FROM_CACHE
        };
        w.u64(id).u8(ty).u8(0).u32(width).u32(height);
        ty
    }

    /// Writes a palette reference for a bitmap/LZ_PLT: returns the palette
    /// flags and writes nothing when the palette goes by pointer (the caller
    /// then writes the pointer and later the palette with [`put_palette`]).
    fn palette_ref(&mut self, entries: &[u32]) -> (u8, Option<u64>, u64) {
        if !self.caching {
            return (0, None, 0);
        }
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        match self.palettes.lookup(content_key(&[&bytes], 2), self.msg) {
            Lookup::Hit(id) => (BITMAP_FLAGS_PAL_FROM_CACHE, Some(id), id),
            Lookup::Add(id) => (BITMAP_FLAGS_PAL_CACHE_ME, None, id),
            Lookup::NoCache => (0, None, 0),
        }
    }

    /// Writes `img` (descriptor and data) for a message; returns the image type used.
    ///
    /// `mask`: a QMask bitmap (sent as is, never cached or compressed).
    pub fn put_image(
        &mut self,
        w: &mut Writer,
        img: &Image,
        usage: Use,
        mask: bool,
        counters: Option<&ImageCounters>,
    ) -> Result<u8, Error> {
        let start = w.len();
        let ty = self.put_image_inner(w, img, usage, mask)?;
        if let Some(c) = counters {
            c.add(ty, w.len().saturating_sub(start));
        }
        Ok(ty)
    }

    fn put_image_inner(
        &mut self,
        w: &mut Writer,
        img: &Image,
        usage: Use,
        mask: bool,
    ) -> Result<u8, Error> {
        match &img.data {
            ImageData::Surface(id) => {
                w.u64(0)
                    .u8(IMAGE_TYPE_SURFACE)
                    .u8(0)
                    .u32(img.width)
                    .u32(img.height)
                    .u32(*id);
                Ok(IMAGE_TYPE_SURFACE)
            }
            ImageData::Quic(data) => {
                let key = if img.flags & IMAGE_FLAG_CACHE != 0 {
                    Some(CacheKey::Guest(img.id))
                } else {
                    Some(CacheKey::Content(content_key(&[data], 1)))
                };
                let (cid, flags) = match self.cache_lookup(key, img.width, img.height) {
                    Lookup::Hit(id) => return Ok(self.put_from_cache(w, id, img.width, img.height)),
                    Lookup::Add(id) => (id, IMAGE_FLAGS_CACHE_ME),
                    Lookup::NoCache => (0, 0),
                };
                w.u64(cid)
                    .u8(IMAGE_TYPE_QUIC)
                    .u8(flags)
                    .u32(img.width)
                    .u32(img.height);
                w.u32(len_u32(data.len())?).bytes(data);
                Ok(IMAGE_TYPE_QUIC)
            }
            ImageData::Bitmap(b) if mask => {
                super::draw_marshal::put_bitmap_plain(w, 0, 0, b, true, None)?;
                Ok(IMAGE_TYPE_BITMAP)
            }
            ImageData::Bitmap(b) => self.put_bitmap(w, img, b, usage),
        }
    }

    fn put_bitmap(
        &mut self,
        w: &mut Writer,
        img: &Image,
        b: &Bitmap,
        usage: Use,
    ) -> Result<u8, Error> {
        let Some(p) = prepare(b) else {
            super::draw_marshal::put_bitmap_plain(w, 0, 0, b, false, None)?;
            return Ok(IMAGE_TYPE_BITMAP);
        };
        let top_down = b.is_top_down();
        // The X byte of 32-bit pixels: BITMAP and LZ4 carry it, the other
        // codecs decode it as 0 (or 0xff with HIGH_BITS_SET). Clients copy
        // it into x8r8g8b8 surfaces, so keep it exact.
        let mut format = p.format;
        let mut high_bits = false;
        let mut byte_exact = false;
        if format == PixelFormat::Rgb32 {
            match x_bytes(&p.data) {
                XBytes::Zero => {}
                XBytes::Ff => high_bits = true,
                // Damage is a plain copy: an a8r8g8b8 image is copied as is.
                XBytes::Mixed if !usage.in_drawable => format = PixelFormat::Rgba,
                XBytes::Mixed => byte_exact = true,
            }
        }
        let r = ImageRef::new(&p.data, b.width, b.height, p.stride, format, top_down)
            .map_err(|_| Error::Malformed("bitmap size"))?;
        let (mut codec, why) = choose(&self.policy, &r, usage);
        if byte_exact && !matches!(codec, Codec::Bitmap | Codec::Lz4) {
            codec = if self.policy.client.lz4 && self.policy.client.full_canvas {
                Codec::Lz4
            } else {
                Codec::Bitmap
            };
        }
        let hb = if high_bits && !matches!(codec, Codec::Bitmap | Codec::Lz4) {
            IMAGE_FLAGS_HIGH_BITS_SET
        } else {
            0
        };
        log::trace!(
            "image {}x{} {:?}: {codec:?} ({why})",
            b.width,
            b.height,
            p.format
        );
        let pal = b
            .palette
            .as_ref()
            .filter(|_| b.format.has_palette())
            .map(|pl| palette_entries(pl, b.format));
        let key = if img.flags & IMAGE_FLAG_CACHE != 0 {
            Some(CacheKey::Guest(img.id))
        } else {
            let pal_bytes: Vec<u8> = pal.iter().flatten().flat_map(|e| e.to_le_bytes()).collect();
            let hdr = [
                p.format.bits_per_pixel().to_le_bytes(),
                b.width.to_le_bytes(),
                b.height.to_le_bytes(),
                u32::from(top_down).to_le_bytes(),
            ]
            .concat();
            Some(CacheKey::Content(content_key(
                &[&hdr, &p.data, &pal_bytes],
                0,
            )))
        };
        let lossy = codec == Codec::Jpeg;
        let (cid, flags) = if lossy {
            (0, 0)
        } else {
            match self.cache_lookup(key, b.width, b.height) {
                Lookup::Hit(id) => return Ok(self.put_from_cache(w, id, b.width, b.height)),
                Lookup::Add(id) => (id, IMAGE_FLAGS_CACHE_ME),
                Lookup::NoCache => (0, 0),
            }
        };
        if codec == Codec::Glz {
            // Once encoded, a GLZ image must reach the client (its window).
            if let Some(dict) = self.glz.as_mut().filter(|d| d.can_encode(&r)) {
                match dict.encode(&r) {
                    Ok(glz) => {
                        let out = if self.policy.zlib_glz {
                            zlib_glz::wrap(glz, zlib_glz::DEFAULT_LEVEL)
                        } else {
                            GlzOutput::Glz(glz)
                        };
                        let (ty, extra) = match &out {
                            GlzOutput::Glz(_) => (IMAGE_TYPE_GLZ_RGB, None),
                            GlzOutput::ZlibGlz { glz_data_size, .. } => {
                                (IMAGE_TYPE_ZLIB_GLZ_RGB, Some(*glz_data_size))
                            }
                        };
                        // spice-gtk's GLZ decoder leaves X = 0 where
                        // spice-common's RGB16 paths give 0xff.
                        let hb = if r.format == PixelFormat::Rgb16 {
                            IMAGE_FLAGS_HIGH_BITS_SET
                        } else {
                            hb
                        };
                        w.u64(cid).u8(ty).u8(flags | hb).u32(b.width).u32(b.height);
                        if let Some(n) = extra {
                            w.u32(n);
                        }
                        let d = out.data();
                        w.u32(len_u32(d.len())?).bytes(d);
                        return Ok(ty);
                    }
                    Err(e) => log::debug!("GLZ encoding failed, using LZ: {e}"),
                }
            }
            codec = Codec::Lz;
        }
        if codec == Codec::Jpeg && r.format == PixelFormat::Rgba {
            match jpeg::encode_alpha_parallel(&r, jpeg::DEFAULT_QUALITY, encode_threads()) {
                Ok(ja) => {
                    w.u64(cid)
                        .u8(IMAGE_TYPE_JPEG_ALPHA)
                        .u8(flags)
                        .u32(b.width)
                        .u32(b.height);
                    w.u8(ja.flags)
                        .u32(ja.jpeg_size)
                        .u32(len_u32(ja.data.len())?)
                        .bytes(&ja.data);
                    return Ok(IMAGE_TYPE_JPEG_ALPHA);
                }
                Err(e) => log::debug!("JPEG_ALPHA encoding failed: {e}"),
            }
            codec = Codec::Quic;
        }
        let enc = encode(codec, &r);
        let raw = p.data.len();
        match enc.filter(|(_, d)| d.len() < raw) {
            Some((Codec::Lz, d)) if p.format.is_palette() => {
                let entries = pal.unwrap_or_default();
                w.u64(cid)
                    .u8(IMAGE_TYPE_LZ_PLT)
                    .u8(flags | hb)
                    .u32(b.width)
                    .u32(b.height);
                let (pflags, from_cache, pid) = self.palette_ref(&entries);
                let tflags = if top_down { BITMAP_FLAGS_TOP_DOWN } else { 0 };
                w.u8(tflags | pflags).u32(len_u32(d.len())?);
                match from_cache {
                    Some(id) => {
                        w.u64(id).bytes(&d);
                    }
                    None => {
                        let slot = w.ptr();
                        w.bytes(&d);
                        w.fill_ptr(slot)?;
                        put_palette(w, pid, &entries)?;
                    }
                }
                Ok(IMAGE_TYPE_LZ_PLT)
            }
            Some((c, d)) => {
                let ty = match c {
                    Codec::Quic => IMAGE_TYPE_QUIC,
                    Codec::Lz => IMAGE_TYPE_LZ_RGB,
                    Codec::Lz4 => IMAGE_TYPE_LZ4,
                    Codec::Glz => IMAGE_TYPE_GLZ_RGB,
                    Codec::Jpeg => IMAGE_TYPE_JPEG,
                    Codec::Bitmap => IMAGE_TYPE_BITMAP,
                };
                w.u64(cid).u8(ty).u8(flags | hb).u32(b.width).u32(b.height);
                w.u32(len_u32(d.len())?).bytes(&d);
                Ok(ty)
            }
            None => {
                let pal_ref = match &pal {
                    Some(entries) => {
                        let (pflags, from_cache, pid) = self.palette_ref(entries);
                        Some((pflags, from_cache, pid, entries.as_slice()))
                    }
                    None => None,
                };
                super::draw_marshal::put_bitmap_plain(w, cid, flags, b, false, pal_ref)?;
                Ok(IMAGE_TYPE_BITMAP)
            }
        }
    }

    /// Writes an image of canvas pixels (top-down, `width * 4` bytes a row,
    /// BGRX or BGRA when `rgba`) for damage or a surface's content; returns
    /// the image type used. `lossy_ok`: the target is the primary.
    #[allow(clippy::too_many_arguments)]
    pub fn put_pixels(
        &mut self,
        w: &mut Writer,
        width: u32,
        height: u32,
        pixels: &[u8],
        rgba: bool,
        lossy_ok: bool,
        counters: Option<&ImageCounters>,
    ) -> Result<u8, Error> {
        let stride = usize::try_from(width)
            .ok()
            .and_then(|v| v.checked_mul(4))
            .ok_or(Error::Malformed("width"))?;
        let format = if rgba {
            BitmapFormat::Rgba
        } else {
            BitmapFormat::Rgb32
        };
        let img = Image {
            id: 0,
            flags: 0,
            width,
            height,
            data: ImageData::Bitmap(Bitmap {
                format,
                flags: crate::command::BITMAP_TOP_DOWN,
                width,
                height,
                stride: u32::try_from(stride).map_err(|_| Error::Malformed("stride"))?,
                palette: None,
                data: pixels.to_vec(),
            }),
        };
        self.put_image(
            w,
            &img,
            Use {
                in_drawable: false,
                lossy_ok,
            },
            false,
            counters,
        )
    }
}

/// Writes a palette {unique, num_ents, ents}.
pub fn put_palette(w: &mut Writer, unique: u64, entries: &[u32]) -> Result<(), Error> {
    let n = u16::try_from(entries.len()).map_err(|_| Error::Malformed("palette size"))?;
    w.u64(unique).u16(n);
    for e in entries {
        w.u32(*e);
    }
    Ok(())
}

fn len_u32(n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::Malformed("image size"))
}

/// Threads [`lz::encode_parallel`], [`lz4::encode_parallel`] and
/// [`jpeg::encode_parallel`] may use for one large image: the machine's
/// parallelism, at most [`MAX_ENCODE_THREADS`].
fn encode_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_ENCODE_THREADS))
    })
}

/// Encodes with `codec`; `None` when the codec cannot or fails (the caller
/// then sends a bitmap). Large LZ, LZ4 and JPEG images are encoded in bands
/// on up to [`MAX_ENCODE_THREADS`] threads.
fn encode(codec: Codec, r: &ImageRef<'_>) -> Option<(Codec, Vec<u8>)> {
    let res = match codec {
        Codec::Bitmap | Codec::Glz => return None,
        Codec::Jpeg => jpeg::encode_parallel(r, jpeg::DEFAULT_QUALITY, encode_threads()),
        Codec::Quic => quic::encode(r),
        Codec::Lz => lz::encode_parallel(r, encode_threads()),
        Codec::Lz4 => lz4::encode_parallel(r, encode_threads()),
    };
    match res {
        Ok(d) => Some((codec, d)),
        Err(e) => {
            log::debug!("{codec:?} encoding failed, sending a bitmap: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: ImageCompression) -> Policy {
        Policy {
            mode,
            jpeg: false,
            zlib_glz: false,
            client: ClientDecoders {
                full_canvas: true,
                lz4: true,
                glz_window: 1 << 20,
            },
        }
    }

    fn photo(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let n = (x * 7 + y * 13) % 5;
                v.extend_from_slice(&[
                    u8::try_from((x + n) % 256).unwrap_or(0),
                    u8::try_from((y * 2 + n) % 256).unwrap_or(0),
                    u8::try_from((x + y + n) % 256).unwrap_or(0),
                    0,
                ]);
            }
        }
        v
    }

    fn ui(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let c = if (x / 16 + y / 9) % 3 == 0 {
                    0xff
                } else {
                    0x20
                };
                v.extend_from_slice(&[c, c, 0x80, 0]);
            }
        }
        v
    }

    #[test]
    fn auto_picks_quic_for_photos_and_lz_for_ui() {
        let (w, h) = (128u32, 64u32);
        let p = photo(w, h);
        let u = ui(w, h);
        let rp = ImageRef::new(&p, w, h, 512, PixelFormat::Rgb32, true)
            .unwrap_or_else(|e| panic!("{e}"));
        let ru = ImageRef::new(&u, w, h, 512, PixelFormat::Rgb32, true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(image_stats(&rp).is_photo(), "{:?}", image_stats(&rp));
        assert!(!image_stats(&ru).is_photo(), "{:?}", image_stats(&ru));
        let d = Use {
            in_drawable: true,
            lossy_ok: false,
        };
        assert_eq!(
            choose(&policy(ImageCompression::AutoLz), &rp, d).0,
            Codec::Quic
        );
        assert_eq!(
            choose(&policy(ImageCompression::AutoLz), &ru, d).0,
            Codec::Lz
        );
        assert_eq!(choose(&policy(ImageCompression::Lz4), &ru, d).0, Codec::Lz4);
        let mut no_lz4 = policy(ImageCompression::Lz4);
        no_lz4.client.lz4 = false;
        assert_eq!(choose(&no_lz4, &ru, d).0, Codec::Lz);
        let mut html5 = policy(ImageCompression::AutoGlz);
        html5.client = ClientDecoders::default();
        assert_eq!(choose(&html5, &rp, d).0, Codec::Lz);
        assert_eq!(
            choose(&policy(ImageCompression::Off), &rp, d).0,
            Codec::Bitmap
        );
    }

    #[test]
    fn image_stats_sample_a_bounded_share() {
        for (w, h, lo, hi) in [
            (64u32, 64u32, 32u32, 40u32),
            (256, 256, 400, 700),
            (1920, 1080, 3000, 5000),
            (4000, 3, 32, 100),
            (3, 4000, 32, 100),
        ] {
            let p = photo(w, h);
            let r = ImageRef::new(&p, w, h, 4 * w as usize, PixelFormat::Rgb32, true)
                .unwrap_or_else(|e| panic!("{e}"));
            let st = image_stats(&r);
            assert!(
                (lo..=hi).contains(&st.samples),
                "{w}x{h}: {} samples",
                st.samples
            );
            assert!(st.is_photo(), "{w}x{h}: {st:?}");
        }
    }

    #[test]
    fn pixmap_cache_evicts_lru_and_pins_the_message() {
        let mut c = PixmapCache::new(100);
        assert_eq!(c.lookup(CacheKey::Guest(1), 40, 1, true), Lookup::Add(1));
        assert_eq!(c.lookup(CacheKey::Guest(2), 40, 2, true), Lookup::Add(2));
        assert_eq!(c.lookup(CacheKey::Guest(1), 40, 3, true), Lookup::Hit(1));
        // 3 needs room: 2 is the least recently used
        assert_eq!(c.lookup(CacheKey::Guest(3), 40, 4, true), Lookup::Add(3));
        assert_eq!(c.take_evicted(), vec![2]);
        // a message using 1 and 3 cannot make room for 4 by evicting them
        assert_eq!(c.lookup(CacheKey::Guest(1), 40, 5, true), Lookup::Hit(1));
        assert_eq!(c.lookup(CacheKey::Guest(3), 40, 5, true), Lookup::Hit(3));
        assert_eq!(c.lookup(CacheKey::Guest(4), 40, 5, true), Lookup::NoCache);
        assert!(c.take_evicted().is_empty());
        // too large for the cache at all
        assert_eq!(c.lookup(CacheKey::Guest(5), 101, 6, true), Lookup::NoCache);
        // added in this message: a second use is not a hit
        assert_eq!(c.lookup(CacheKey::Guest(6), 10, 7, true), Lookup::Add(4));
        assert_eq!(c.lookup(CacheKey::Guest(6), 10, 7, true), Lookup::NoCache);
        assert!(c.used() <= c.capacity());
    }

    #[test]
    fn palette_cache_is_bounded() {
        let mut c = PaletteCache::default();
        for k in 0..200u128 {
            assert!(matches!(
                c.lookup(k, u64::try_from(k).unwrap_or(0)),
                Lookup::Add(_)
            ));
        }
        assert_eq!(c.entries.len(), PALETTE_CACHE_ENTRIES);
        assert_eq!(c.take_evicted().len(), 200 - PALETTE_CACHE_ENTRIES);
        assert!(matches!(c.lookup(199, 1000), Lookup::Hit(_)));
    }
}
