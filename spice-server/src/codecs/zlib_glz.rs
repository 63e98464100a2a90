//! ZLIB_GLZ_RGB (image type 107): a GLZ image deflated into an RFC 1950 zlib
//! stream, for low-bandwidth clients.
//!
//! On the wire (`SpiceZlibGlzRGBData`): `glz_data_size` (`u32`, the size of the
//! GLZ image once inflated), `data_size` (`u32`) and `data_size` bytes of zlib
//! stream (spice-gtk `decode-zlib.c` inflates with `Z_FINISH` into a buffer of
//! `glz_data_size` bytes, then decodes the GLZ image as usual).
//!
//! spice-server (`image_encoders_compress_glz`) wraps only GLZ output of at
//! least [`MIN_GLZ_SIZE_FOR_ZLIB`] bytes, at zlib level 3
//! ([`DEFAULT_LEVEL`]), and sends plain GLZ when deflate does not shrink it;
//! [`encode`] does the same. Deflate runs in pure Rust (`miniz_oxide`).

use std::io::Read;

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use super::glz::{GlzDecoderWindow, GlzDictionary};
use super::{CodecError, DecodedImage, ImageRef};

/// GLZ images shorter than this are never wrapped (`MIN_GLZ_SIZE_FOR_ZLIB`).
pub const MIN_GLZ_SIZE_FOR_ZLIB: usize = 100;
/// spice-server's zlib level (`ZLIB_DEFAULT_COMPRESSION_LEVEL`).
pub const DEFAULT_LEVEL: u32 = 3;

/// What to send for a GLZ-encoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlzOutput {
    /// Image type `GLZ_RGB`: the GLZ image (`LZ_RGBData.data`).
    Glz(Vec<u8>),
    /// Image type `ZLIB_GLZ_RGB`.
    ZlibGlz {
        /// `glz_data_size`: bytes of the inflated GLZ image.
        glz_data_size: u32,
        /// The zlib stream (`data_size` = its length).
        data: Vec<u8>,
    },
}

impl GlzOutput {
    /// Bytes of payload either way.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        match self {
            Self::Glz(d) | Self::ZlibGlz { data: d, .. } => d,
        }
    }
}

/// Deflates a GLZ image at `level` (0–9) into a zlib stream.
///
/// # Errors
/// Never in practice (writing into a `Vec` cannot fail); reported as
/// [`CodecError::Corrupt`] if the compressor does.
pub fn deflate(glz: &[u8], level: u32) -> Result<Vec<u8>, CodecError> {
    use std::io::Write;
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(glz.len() / 2 + 64),
        Compression::new(level.min(9)),
    );
    enc.write_all(glz)
        .map_err(|_| CodecError::Corrupt("deflate failed"))?;
    enc.finish()
        .map_err(|_| CodecError::Corrupt("deflate failed"))
}

/// GLZ-encodes `img` into `dict` and, like spice-server, wraps the result in
/// zlib (level [`DEFAULT_LEVEL`]) when it is at least
/// [`MIN_GLZ_SIZE_FOR_ZLIB`] bytes and deflate shrinks it. Either way the
/// image is in the dictionary and must be sent (see [`super::glz`]).
///
/// # Errors
/// As [`GlzDictionary::encode`] (nothing changes then).
pub fn encode(dict: &mut GlzDictionary, img: &ImageRef<'_>) -> Result<GlzOutput, CodecError> {
    let glz = dict.encode(img)?;
    Ok(wrap(glz, DEFAULT_LEVEL))
}

/// Wraps an already encoded GLZ image if that pays off (see [`encode`]).
#[must_use]
pub fn wrap(glz: Vec<u8>, level: u32) -> GlzOutput {
    if glz.len() < MIN_GLZ_SIZE_FOR_ZLIB {
        return GlzOutput::Glz(glz);
    }
    let Ok(glz_data_size) = u32::try_from(glz.len()) else {
        return GlzOutput::Glz(glz);
    };
    match deflate(&glz, level) {
        Ok(data) if data.len() < glz.len() => GlzOutput::ZlibGlz {
            glz_data_size,
            data,
        },
        _ => GlzOutput::Glz(glz),
    }
}

/// Inflates a ZLIB_GLZ payload into the GLZ image, which must be exactly
/// `glz_data_size` bytes (the client inflates into a buffer of that size).
///
/// # Errors
/// [`CodecError::Corrupt`] for a bad zlib stream or one that inflates to a
/// different size, [`CodecError::TooLarge`] above `max_bytes`.
pub fn inflate(data: &[u8], glz_data_size: u32, max_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let want = usize::try_from(glz_data_size).unwrap_or(usize::MAX);
    if want > max_bytes {
        return Err(CodecError::TooLarge {
            bytes: u64::from(glz_data_size),
            limit: max_bytes,
        });
    }
    let mut out = Vec::with_capacity(want);
    // Read one byte more than announced to detect longer streams.
    let mut dec = ZlibDecoder::new(data).take(u64::from(glz_data_size) + 1);
    dec.read_to_end(&mut out)
        .map_err(|_| CodecError::Corrupt("bad zlib stream"))?;
    if out.len() != want {
        return Err(CodecError::Corrupt(
            "zlib stream does not inflate to glz_data_size",
        ));
    }
    Ok(out)
}

/// Decodes a ZLIB_GLZ_RGB image into the client window `window`.
///
/// # Errors
/// As [`inflate`] (with the window's byte limit) and [`GlzDecoderWindow::decode`].
pub fn decode(
    window: &mut GlzDecoderWindow,
    glz_data_size: u32,
    data: &[u8],
) -> Result<DecodedImage, CodecError> {
    let glz = inflate(data, glz_data_size, window.max_bytes())?;
    window.decode(&glz)
}

/// Decodes a marshalled `SpiceZlibGlzRGBData` (`glz_data_size` and
/// `data_size` little-endian `u32`s, then the stream).
///
/// # Errors
/// [`CodecError::Truncated`] / [`CodecError::TrailingData`] when `data_size`
/// disagrees with the bytes given, otherwise as [`decode`].
pub fn decode_wire(window: &mut GlzDecoderWindow, wire: &[u8]) -> Result<DecodedImage, CodecError> {
    let hdr = wire.get(..8).ok_or(CodecError::Truncated)?;
    let glz_data_size = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let data_size =
        usize::try_from(u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]])).unwrap_or(usize::MAX);
    let rest = &wire[8..];
    if rest.len() < data_size {
        return Err(CodecError::Truncated);
    }
    if rest.len() > data_size {
        return Err(CodecError::TrailingData(rest.len() - data_size));
    }
    decode(window, glz_data_size, rest)
}
