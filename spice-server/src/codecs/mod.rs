//! Image codecs exactly as SPICE clients decode them.
//!
//! Every codec here has an encoder (what the server sends) and a decoder. The
//! decoders are test oracles and fuzz targets: they bounds-check everything the
//! stream claims (dimensions, strides, offsets, lengths), check the output size
//! against [`DecodeLimits`] *before* allocating, and return a [`CodecError`] on
//! any malformed input instead of panicking.
//!
//! # Formats (primer)
//!
//! * **LZ4** ([`lz4`], image type `LZ4` = 109). Two header bytes — `top_down`
//!   (0/1) and the `SpiceBitmapFmt` (16BIT 6, 24BIT 7, 32BIT 8, RGBA 9) — then
//!   blocks, each a big-endian `u32` compressed length followed by a raw LZ4
//!   *block* (not the frame format). The blocks form one *linked* stream: a
//!   block may reference the previous 64 KiB of already decoded output
//!   (spice-gtk decodes with one `LZ4_streamDecode_t`). Decoded rows are
//!   tightly packed native pixels in stored order.
//! * **LZ** ([`lz`], image types `LZ_PLT` = 100 and `LZ_RGB` = 101). SPICE's
//!   LZ77 variant over *pixels*: a 28-byte big-endian header (magic `"  ZL"`,
//!   version 1.1, [`lz::LzImageType`], width, height, stride, top_down) and a
//!   stream of control bytes: `ctrl < 32` is a literal run of `ctrl + 1`
//!   pixels, otherwise a back-reference (3-bit length, 13-bit or far 16-bit
//!   distance). Literal RGB pixels are 3 bytes B, G, R; RGB16 pixels 2 bytes,
//!   high byte first; palette/alpha pixels 1 byte. `RGBA` is an RGB32 pass
//!   followed by an alpha pass, `XXXA` the alpha pass alone.
//! * **QUIC** ([`quic`], image type `QUIC` = 1). SFALIC-derived lossless
//!   coder: little-endian 32-bit words read MSB first, a 5-word header (magic
//!   `"QUIC"`, version 0, type, width, height), then per channel
//!   prediction residuals Golomb-Rice coded with adaptive per-bucket code
//!   parameters, and MELCODE-coded runs. Rows are always visual top first.
//!
//! * **GLZ** ([`glz`], image type `GLZ_RGB` = 102). LZ whose references may
//!   also point into earlier images of a window shared by all images sent to a
//!   client ([`glz::GlzDictionary`]); a 33-byte header adds the image id and
//!   the distance to the oldest image referenced.
//! * **ZLIB_GLZ** ([`zlib_glz`], image type `ZLIB_GLZ_RGB` = 107). A GLZ image
//!   deflated into an RFC 1950 zlib stream, for low-bandwidth clients.
//! * **JPEG** / **JPEG_ALPHA** ([`jpeg`], image types 105 / 108). Baseline
//!   JFIF of the colour, rows top first; JPEG_ALPHA appends the alpha plane as
//!   an LZ `XXXA` image.
//!
//! Pixel layouts are those of `SpiceBitmap` (see [`PixelFormat`]).

pub mod glz;
pub mod jpeg;
pub mod jpeg_enc;
pub mod lz;
pub mod lz4;
pub mod quic;
pub mod zlib_glz;

/// Runs `f` on every item — the first on the calling thread, each other on a
/// scoped thread of its own — and returns the results in item order. A
/// thread that panicked gives `Err` with its panic (the caller resumes it or
/// turns it into an error); a panic on the calling thread unwinds at once.
/// The banded encoders ([`lz::encode_parallel`], [`lz4::encode_parallel`],
/// [`jpeg::encode_parallel`]) run their bands with it.
pub(crate) fn on_threads<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<std::thread::Result<R>> {
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = rest.iter().map(|it| s.spawn(move || f(it))).collect();
        let mut out = Vec::with_capacity(items.len());
        out.push(Ok(f(first)));
        out.extend(handles.into_iter().map(|h| h.join()));
        out
    })
}

/// The pixel formats the codecs deal in (memory layouts of `SpiceBitmap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 1 bit palette index per pixel, the least significant bit is the leftmost pixel.
    Plt1Le,
    /// 1 bit palette index per pixel, the most significant bit is the leftmost pixel.
    Plt1Be,
    /// 4 bit palette index per pixel, the low nibble is the leftmost pixel.
    Plt4Le,
    /// 4 bit palette index per pixel, the high nibble is the leftmost pixel.
    Plt4Be,
    /// 8 bit palette index per pixel.
    Plt8,
    /// x1r5g5b5, little-endian `u16` (the top bit is ignored).
    Rgb16,
    /// Bytes B, G, R.
    Rgb24,
    /// Bytes B, G, R, X (the X byte is ignored by the encoders).
    Rgb32,
    /// Bytes B, G, R, A.
    Rgba,
    /// One alpha (or gray) byte per pixel.
    A8,
}

impl PixelFormat {
    /// Bits one pixel takes in memory.
    #[must_use]
    pub const fn bits_per_pixel(self) -> u32 {
        match self {
            Self::Plt1Le | Self::Plt1Be => 1,
            Self::Plt4Le | Self::Plt4Be => 4,
            Self::Plt8 | Self::A8 => 8,
            Self::Rgb16 => 16,
            Self::Rgb24 => 24,
            Self::Rgb32 | Self::Rgba => 32,
        }
    }

    /// Whether pixels are palette indices.
    #[must_use]
    pub const fn is_palette(self) -> bool {
        matches!(
            self,
            Self::Plt1Le | Self::Plt1Be | Self::Plt4Le | Self::Plt4Be | Self::Plt8
        )
    }

    /// Bytes needed for one row of `width` pixels, without padding
    /// (sub-byte formats round up to whole bytes).
    #[must_use]
    pub fn row_bytes(self, width: u32) -> usize {
        let bits = u64::from(width) * u64::from(self.bits_per_pixel());
        usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX)
    }
}

/// Caps a decoder applies to what a stream claims, before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest accepted decoded image, in bytes.
    pub max_bytes: usize,
}

impl Default for DecodeLimits {
    /// 16384 × 16384 pixels and 256 MiB of output.
    fn default() -> Self {
        Self {
            max_width: 16_384,
            max_height: 16_384,
            max_bytes: 256 << 20,
        }
    }
}

impl DecodeLimits {
    /// Checks `width` × `height` against the caps and returns the decoded size in
    /// bytes for rows of `row_bytes`.
    pub(crate) fn check(
        &self,
        width: u32,
        height: u32,
        row_bytes: usize,
    ) -> Result<usize, CodecError> {
        if width == 0 || height == 0 || width > self.max_width || height > self.max_height {
            return Err(CodecError::BadDimensions { width, height });
        }
        let h = usize::try_from(height).map_err(|_| CodecError::BadDimensions { width, height })?;
        let bytes = row_bytes.checked_mul(h).ok_or(CodecError::TooLarge {
            bytes: u64::MAX,
            limit: self.max_bytes,
        })?;
        if bytes > self.max_bytes {
            return Err(CodecError::TooLarge {
                bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
                limit: self.max_bytes,
            });
        }
        Ok(bytes)
    }
}

/// A borrowed image to encode.
#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    /// The pixel memory: `height` rows, `stride` bytes apart.
    pub pixels: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// Bytes from the start of one stored row to the start of the next.
    pub stride: usize,
    /// Layout of the pixels.
    pub format: PixelFormat,
    /// Whether the first stored row is the visual top row (`SPICE_BITMAP_FLAGS_TOP_DOWN`).
    pub top_down: bool,
}

impl<'a> ImageRef<'a> {
    /// Builds an image reference, checking that `pixels` holds every row.
    ///
    /// # Errors
    /// [`CodecError::BadDimensions`] for a zero width or height,
    /// [`CodecError::BadStride`] if `stride` is shorter than a row, and
    /// [`CodecError::BufferTooSmall`] if `pixels` is too short.
    pub fn new(
        pixels: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
        top_down: bool,
    ) -> Result<Self, CodecError> {
        let img = Self {
            pixels,
            width,
            height,
            stride,
            format,
            top_down,
        };
        img.validate()?;
        Ok(img)
    }

    /// Checks the invariants [`ImageRef::new`] establishes (fields are public).
    ///
    /// # Errors
    /// As [`ImageRef::new`].
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.width == 0 || self.height == 0 {
            return Err(CodecError::BadDimensions {
                width: self.width,
                height: self.height,
            });
        }
        let row = self.row_bytes();
        if self.stride < row {
            return Err(CodecError::BadStride {
                stride: self.stride,
                row_bytes: row,
            });
        }
        let h = usize::try_from(self.height - 1).map_err(|_| CodecError::BufferTooSmall)?;
        let need = self
            .stride
            .checked_mul(h)
            .and_then(|v| v.checked_add(row))
            .ok_or(CodecError::BufferTooSmall)?;
        if self.pixels.len() < need {
            return Err(CodecError::BufferTooSmall);
        }
        Ok(())
    }

    /// Bytes of one row without padding.
    #[must_use]
    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.width)
    }

    /// Stored row `index` (0 = first in memory), without padding.
    ///
    /// # Panics
    /// If the image does not [`validate`](Self::validate) or `index >= height`.
    #[must_use]
    pub fn row(&self, index: usize) -> &'a [u8] {
        let start = index * self.stride;
        &self.pixels[start..start + self.row_bytes()]
    }

    /// Number of rows as `usize`.
    #[must_use]
    pub fn rows(&self) -> usize {
        usize::try_from(self.height).unwrap_or(0)
    }

    /// Number of pixels per row as `usize`.
    #[must_use]
    pub fn cols(&self) -> usize {
        usize::try_from(self.width).unwrap_or(0)
    }
}

/// A decoded image: tightly packed rows (`stride == format.row_bytes(width)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// Layout of `pixels`.
    pub format: PixelFormat,
    /// Whether the first row of `pixels` is the visual top row.
    pub top_down: bool,
    /// Bytes per row.
    pub stride: usize,
    /// `stride * height` bytes.
    pub pixels: Vec<u8>,
}

impl DecodedImage {
    /// A borrowed view of this image, e.g. to encode it again.
    #[must_use]
    pub fn as_image_ref(&self) -> ImageRef<'_> {
        ImageRef {
            pixels: &self.pixels,
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: self.format,
            top_down: self.top_down,
        }
    }
}

/// Every way encoding or decoding an image can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec cannot carry this pixel format (e.g. QUIC and palettes).
    #[error("{codec} does not support pixel format {format:?}")]
    UnsupportedFormat {
        /// The codec asked.
        codec: &'static str,
        /// The format it was given.
        format: PixelFormat,
    },
    /// Width or height is zero or over the decoder's [`DecodeLimits`].
    #[error("bad image dimensions {width}x{height}")]
    BadDimensions {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
    },
    /// The decoded image would exceed [`DecodeLimits::max_bytes`].
    #[error("decoded image of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes the stream asks for.
        bytes: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A stride shorter than a row, or one the format forbids.
    #[error("bad stride {stride} for rows of {row_bytes} bytes")]
    BadStride {
        /// The stride given or claimed.
        stride: usize,
        /// Bytes a row needs.
        row_bytes: usize,
    },
    /// The pixel buffer of an [`ImageRef`] is shorter than its dimensions need.
    #[error("pixel buffer too small for the image dimensions")]
    BufferTooSmall,
    /// The stream does not start with the codec's magic number.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// The stream has an unsupported version.
    #[error("unsupported version {0:#010x}")]
    BadVersion(u32),
    /// The stream's image type is unknown or invalid here.
    #[error("unsupported image type {0}")]
    BadImageType(u32),
    /// The stream ends before the image is complete.
    #[error("compressed data truncated")]
    Truncated,
    /// The stream has bytes left after the image is complete.
    #[error("{0} trailing bytes after the image")]
    TrailingData(usize),
    /// The stream is malformed (a reference before the start of the image, a run
    /// or copy past its end, an impossible code...).
    #[error("corrupt compressed data: {0}")]
    Corrupt(&'static str),
    /// A palette image was decoded to RGB without a usable palette.
    #[error("palette missing or too small for the image's indices")]
    BadPalette,
    /// The LZ4 block decoder rejected a block.
    #[error("LZ4 block error: {0}")]
    Lz4(String),
}
