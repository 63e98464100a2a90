//! Images in the pixman formats spice-common's canvas works with, the bridge
//! to pixman, and the conversion of guest images into them (the equivalent of
//! `canvas_get_image` with `want_original` false or true).

use crate::codecs::PixelFormat;
use crate::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, IMAGE_FLAG_HIGH_BITS_SET, Image, ImageData, Rect,
    SurfaceFormat,
};

use super::{SurfaceSource, usize_of};

/// Largest image (in pixels) the canvas converts or allocates as scratch.
pub(super) const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// The pixman formats used by the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fmt {
    /// `PIXMAN_x8r8g8b8`.
    X8r8g8b8,
    /// `PIXMAN_a8r8g8b8`.
    A8r8g8b8,
    /// `PIXMAN_x1r5g5b5`.
    X1r5g5b5,
    /// `PIXMAN_a8`.
    A8,
    /// `PIXMAN_a1` (bit `x & 31` of each 32-bit word, as pixman on little-endian).
    A1,
}

impl Fmt {
    fn code(self) -> pixman::FormatCode {
        match self {
            Self::X8r8g8b8 => pixman::FormatCode::X8R8G8B8,
            Self::A8r8g8b8 => pixman::FormatCode::A8R8G8B8,
            Self::X1r5g5b5 => pixman::FormatCode::X1R5G5B5,
            Self::A8 => pixman::FormatCode::A8,
            Self::A1 => pixman::FormatCode::A1,
        }
    }

    const fn bpp(self) -> u32 {
        match self {
            Self::X8r8g8b8 | Self::A8r8g8b8 => 32,
            Self::X1r5g5b5 => 16,
            Self::A8 => 8,
            Self::A1 => 1,
        }
    }

    /// The format of a canvas surface (16-bit surfaces are kept as 32-bit: see the module docs).
    pub(super) const fn of_surface(f: SurfaceFormat) -> Self {
        match f {
            SurfaceFormat::Xrgb32 | SurfaceFormat::Rgb555 | SurfaceFormat::Rgb565 => Self::X8r8g8b8,
            SurfaceFormat::Argb32 => Self::A8r8g8b8,
            SurfaceFormat::A8 | SurfaceFormat::A1 => Self::A8,
        }
    }
}

/// An image in one pixman format. Pixel `(0, 0)` of the stored data is pixel
/// `(ox, oy)` of the image it was taken from (sources read partially).
#[derive(Debug, Clone)]
pub(super) struct Img {
    pub fmt: Fmt,
    pub w: u32,
    pub h: u32,
    /// Words per row.
    stride: usize,
    pub data: Vec<u32>,
    pub ox: i32,
    pub oy: i32,
}

impl Img {
    /// A zeroed image; `None` when too large.
    pub fn new(fmt: Fmt, w: u32, h: u32) -> Option<Self> {
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
            return None;
        }
        let stride = usize_of((w * fmt.bpp()).div_ceil(32));
        let len = stride.checked_mul(usize_of(h))?;
        Some(Self {
            fmt,
            w,
            h,
            stride,
            data: vec![0; len],
            ox: 0,
            oy: 0,
        })
    }

    /// Pixel value in the format's own terms (32-bit pixel, 16-bit pixel, alpha byte or bit).
    pub fn get(&self, x: u32, y: u32) -> u32 {
        if x >= self.w || y >= self.h {
            return 0;
        }
        let row = usize_of(y) * self.stride;
        let x = usize_of(x);
        let word = |i: usize| self.data.get(row + i).copied().unwrap_or(0);
        match self.fmt {
            Fmt::X8r8g8b8 | Fmt::A8r8g8b8 => word(x),
            Fmt::X1r5g5b5 => (word(x / 2) >> ((x % 2) * 16)) & 0xffff,
            Fmt::A8 => (word(x / 4) >> ((x % 4) * 8)) & 0xff,
            Fmt::A1 => (word(x / 32) >> (x % 32)) & 1,
        }
    }

    /// Stores a pixel value (truncated to the format's width, as spice's per-depth code does).
    pub fn set(&mut self, x: u32, y: u32, v: u32) {
        if x >= self.w || y >= self.h {
            return;
        }
        let row = usize_of(y) * self.stride;
        let x = usize_of(x);
        let (i, shift, mask) = match self.fmt {
            Fmt::X8r8g8b8 | Fmt::A8r8g8b8 => (x, 0, u32::MAX),
            Fmt::X1r5g5b5 => (x / 2, (x % 2) * 16, 0xffff),
            Fmt::A8 => (x / 4, (x % 4) * 8, 0xff),
            Fmt::A1 => (x / 32, x % 32, 1),
        };
        if let Some(w) = self.data.get_mut(row + i) {
            *w = (*w & !(mask << shift)) | ((v & mask) << shift);
        }
    }

    /// Row `y` of a 32-bit image (`None` for other formats or out of range).
    pub fn row(&self, y: u32) -> Option<&[u32]> {
        if !matches!(self.fmt, Fmt::X8r8g8b8 | Fmt::A8r8g8b8) || y >= self.h {
            return None;
        }
        let start = usize_of(y) * self.stride;
        self.data.get(start..start + usize_of(self.w))
    }

    /// The words of row `y`, whatever the format (`None` out of range).
    pub fn raw_row(&self, y: u32) -> Option<&[u32]> {
        if y >= self.h {
            return None;
        }
        let start = usize_of(y) * self.stride;
        self.data.get(start..start + self.stride)
    }

    /// Mutable row `y` of a 32-bit image.
    pub fn row_mut(&mut self, y: u32) -> Option<&mut [u32]> {
        if !matches!(self.fmt, Fmt::X8r8g8b8 | Fmt::A8r8g8b8) || y >= self.h {
            return None;
        }
        let start = usize_of(y) * self.stride;
        self.data.get_mut(start..start + usize_of(self.w))
    }

    /// A pixman image over this image's data.
    pub fn pix(&mut self) -> Option<pixman::Image<'_, 'static>> {
        let (w, h) = (usize_of(self.w), usize_of(self.h));
        // The pixman crate does not check the slice length itself.
        if self.data.len() < self.stride.checked_mul(h)? {
            return None;
        }
        pixman::Image::from_slice_mut(
            self.fmt.code(),
            w,
            h,
            &mut self.data,
            self.stride * 4,
            false,
        )
        .ok()
    }

    /// This image converted to `fmt` with pixman's SRC operator (as spice's
    /// `spice_bitmap_convert_to_pixman` and `canvas_get_image_internal` do).
    pub fn convert(mut self, fmt: Fmt) -> Option<Self> {
        if self.fmt == fmt {
            return Some(self);
        }
        let mut out = Self::new(fmt, self.w, self.h)?;
        out.ox = self.ox;
        out.oy = self.oy;
        let size = (i32::try_from(self.w).ok()?, i32::try_from(self.h).ok()?);
        {
            let src = self.pix()?;
            let mut dst = out.pix()?;
            dst.composite32(
                pixman::Operation::Src,
                &src,
                None,
                (0, 0),
                (0, 0),
                (0, 0),
                size,
            );
        }
        Some(out)
    }

    /// The alpha bits removed from the format (`get_image(force_opaque)`).
    pub fn opaque(mut self) -> Self {
        if self.fmt == Fmt::A8r8g8b8 {
            self.fmt = Fmt::X8r8g8b8;
        }
        self
    }
}

/// The pixman format spice gives a bitmap of `f` when it keeps the original
/// format (`spice_bitmap_format_to_pixman`).
const fn native_format(f: BitmapFormat, canvas: Fmt) -> Fmt {
    match f {
        BitmapFormat::OneBitLe
        | BitmapFormat::OneBitBe
        | BitmapFormat::FourBitLe
        | BitmapFormat::FourBitBe
        | BitmapFormat::EightBit => match canvas {
            Fmt::A8r8g8b8 => Fmt::A8r8g8b8,
            _ => Fmt::X8r8g8b8,
        },
        BitmapFormat::Rgb16 => Fmt::X1r5g5b5,
        BitmapFormat::Rgb24 | BitmapFormat::Rgb32 => Fmt::X8r8g8b8,
        BitmapFormat::Rgba => Fmt::A8r8g8b8,
        BitmapFormat::A8 => Fmt::A8,
    }
}

/// Whether [`BitmapRows`] decodes this format (the formats whose native
/// pixman format is 32-bit and whose pixels are taken as they are).
pub(super) const fn row_decodable(f: BitmapFormat) -> bool {
    matches!(
        f,
        BitmapFormat::Rgb32
            | BitmapFormat::Rgba
            | BitmapFormat::Rgb24
            | BitmapFormat::EightBit
            | BitmapFormat::FourBitLe
            | BitmapFormat::FourBitBe
            | BitmapFormat::OneBitLe
            | BitmapFormat::OneBitBe
    )
}

/// A validated bitmap whose rows decode to 32-bit pixels (formats of
/// [`row_decodable`]).
pub(super) struct BitmapRows<'a> {
    b: &'a Bitmap,
    pal: &'a [u32],
    stride: usize,
}

impl<'a> BitmapRows<'a> {
    /// `None` when [`bitmap_native`] would refuse the bitmap.
    pub fn new(b: &'a Bitmap) -> Option<Self> {
        if !row_decodable(b.format)
            || b.width == 0
            || b.height == 0
            || u64::from(b.width) * u64::from(b.height) > MAX_IMAGE_PIXELS
        {
            return None;
        }
        let bpp = u64::from(b.format.bpp());
        let min_stride = (u64::from(b.width) * bpp).div_ceil(8);
        if u64::from(b.stride) < min_stride
            || (b.data.len() as u64) < u64::from(b.stride) * u64::from(b.height)
        {
            return None;
        }
        Some(Self {
            b,
            pal: b.palette.as_ref().map_or(&[][..], |p| p.entries.as_slice()),
            stride: usize_of(b.stride),
        })
    }

    /// Decodes pixels `x0..x0 + out.len()` of image row `y` (0 = top).
    pub fn decode(&self, y: u32, x0: usize, out: &mut [u32]) {
        let src_row = if self.b.is_top_down() {
            y
        } else {
            self.b.height.saturating_sub(1).saturating_sub(y)
        };
        let Some(row) = self.b.data.get(usize_of(src_row) * self.stride..) else {
            return;
        };
        let n = out.len();
        let pal = |i: u8| self.pal.get(usize::from(i)).copied().unwrap_or(0);
        match self.b.format {
            BitmapFormat::Rgb32 | BitmapFormat::Rgba => {
                if let Some(src) = row.get(x0 * 4..(x0 + n) * 4) {
                    copy_le_words(out, src);
                }
            }
            BitmapFormat::Rgb24 => {
                if let Some(src) = row.get(x0 * 3..(x0 + n) * 3) {
                    for (o, c) in out.iter_mut().zip(src.chunks_exact(3)) {
                        *o = u32::from_le_bytes([c[0], c[1], c[2], 0]);
                    }
                }
            }
            BitmapFormat::EightBit => {
                if let Some(src) = row.get(x0..x0 + n) {
                    for (o, &i) in out.iter_mut().zip(src) {
                        *o = pal(i);
                    }
                }
            }
            f => {
                for (i, o) in out.iter_mut().enumerate() {
                    let vx = x0 + i;
                    let Some(&byte) = row.get(
                        vx / if matches!(f, BitmapFormat::FourBitLe | BitmapFormat::FourBitBe) {
                            2
                        } else {
                            8
                        },
                    ) else {
                        return;
                    };
                    let idx = match f {
                        BitmapFormat::FourBitBe => {
                            if vx.is_multiple_of(2) {
                                byte >> 4
                            } else {
                                byte & 0xf
                            }
                        }
                        BitmapFormat::FourBitLe => {
                            if vx.is_multiple_of(2) {
                                byte & 0xf
                            } else {
                                byte >> 4
                            }
                        }
                        BitmapFormat::OneBitBe => (byte >> (7 - vx % 8)) & 1,
                        _ => (byte >> (vx % 8)) & 1,
                    };
                    *o = pal(idx);
                }
            }
        }
    }
}

/// Little-endian 32-bit words from bytes (`src.len() == 4 * out.len()`).
fn copy_le_words(out: &mut [u32], src: &[u8]) {
    #[cfg(target_endian = "little")]
    {
        use zerocopy::IntoBytes;
        let dst = out.as_mut_bytes();
        if dst.len() == src.len() {
            dst.copy_from_slice(src);
        }
    }
    #[cfg(not(target_endian = "little"))]
    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// The bitmap's pixels in its native pixman format.
fn bitmap_native(b: &Bitmap, canvas: Fmt) -> Option<Img> {
    let fmt = native_format(b.format, canvas);
    let mut img = Img::new(fmt, b.width, b.height)?;
    let bpp = u64::from(b.format.bpp());
    let min_stride = (u64::from(b.width) * bpp).div_ceil(8);
    if u64::from(b.stride) < min_stride
        || (b.data.len() as u64) < u64::from(b.stride) * u64::from(b.height)
    {
        return None;
    }
    if let Some(rows) = BitmapRows::new(b) {
        // 32-bit native formats: rows of `stride == width` words.
        let w = usize_of(b.width);
        for (y, out) in (0..b.height).zip(img.data.chunks_exact_mut(img.stride)) {
            rows.decode(y, 0, out.get_mut(..w)?);
        }
        return Some(img);
    }
    let stride = usize_of(b.stride);
    #[cfg(target_endian = "little")]
    if matches!(b.format, BitmapFormat::Rgb16 | BitmapFormat::A8) {
        // 16-bit and 8-bit pixels are packed into the words little-endian:
        // an image row's bytes are the bitmap row's bytes.
        use zerocopy::IntoBytes;
        let n = usize_of(b.width) * usize_of(b.format.bpp() / 8);
        let img_stride = img.stride;
        for (y, out) in (0..b.height).zip(img.data.chunks_exact_mut(img_stride)) {
            let src_row = if b.is_top_down() { y } else { b.height - 1 - y };
            let start = usize_of(src_row) * stride;
            let src = b.data.get(start..start + n)?;
            out.as_mut_bytes().get_mut(..n)?.copy_from_slice(src);
        }
        return Some(img);
    }
    for y in 0..b.height {
        let src_row = if b.is_top_down() { y } else { b.height - 1 - y };
        let row = b.data.get(usize_of(src_row) * stride..)?;
        for x in 0..b.width {
            let vx = usize_of(x);
            let v = match b.format {
                BitmapFormat::Rgb16 => {
                    let p = row.get(vx * 2..vx * 2 + 2)?;
                    u32::from(u16::from_le_bytes([p[0], p[1]]))
                }
                BitmapFormat::A8 => u32::from(*row.get(vx)?),
                // Decoded by `BitmapRows` above.
                _ => return None,
            };
            img.set(x, y, v);
        }
    }
    Some(img)
}

/// A 1-bpp bitmap as a `PIXMAN_a1` image (`canvas_get_bitmap_mask`); `None`
/// for non-1-bpp bitmaps (spice refuses those as masks).
pub(super) fn bitmap_mask(b: &Bitmap) -> Option<Img> {
    let be = match b.format {
        BitmapFormat::OneBitBe => true,
        BitmapFormat::OneBitLe => false,
        _ => return None,
    };
    let mut img = Img::new(Fmt::A1, b.width, b.height)?;
    let stride = usize_of(b.stride);
    if stride < usize_of(b.width.div_ceil(8)) || b.data.len() < stride * usize_of(b.height) {
        return None;
    }
    for y in 0..b.height {
        let src_row = if b.is_top_down() { y } else { b.height - 1 - y };
        let row = b.data.get(usize_of(src_row) * stride..)?;
        for x in 0..b.width {
            let byte = *row.get(usize_of(x / 8))?;
            let bit = if be {
                (byte >> (7 - x % 8)) & 1
            } else {
                (byte >> (x % 8)) & 1
            };
            img.set(x, y, u32::from(bit));
        }
    }
    Some(img)
}

/// How an image is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// Converted to the canvas's format (`want_original` false).
    Canvas,
    /// In its own format (`want_original` true, alpha blending).
    Original,
}

/// The image `img` as spice's canvas would obtain it. `area` is the part the
/// draw reads (sources of other surfaces are fetched for that area only when
/// the whole surface is not available). `canvas` is the target's format.
pub(super) fn get_image(
    img: &Image,
    area: Option<&Rect>,
    want: Want,
    canvas: Fmt,
    sources: &dyn SurfaceSource,
) -> Option<Img> {
    let (bitmap_fmt, native) = match &img.data {
        ImageData::Bitmap(b) => (b.format, bitmap_native(b, canvas)?),
        ImageData::Quic(data) => {
            let d = crate::codecs::quic::decode(data).ok()?;
            if d.width != img.width || d.height != img.height {
                return None;
            }
            let format = match d.format {
                PixelFormat::Rgb16 => BitmapFormat::Rgb16,
                PixelFormat::Rgb24 => BitmapFormat::Rgb24,
                PixelFormat::Rgb32 => BitmapFormat::Rgb32,
                PixelFormat::Rgba => BitmapFormat::Rgba,
                PixelFormat::A8 => BitmapFormat::A8,
                _ => return None,
            };
            let b = Bitmap {
                format,
                flags: if d.top_down { BITMAP_TOP_DOWN } else { 0 },
                width: d.width,
                height: d.height,
                stride: u32::try_from(d.stride).ok()?,
                palette: None,
                data: d.pixels,
            };
            (format, bitmap_native(&b, canvas)?)
        }
        ImageData::Surface(id) => return surface_image(*id, img, area, sources),
    };
    let mut out = match want {
        Want::Original => native,
        Want::Canvas => {
            let target = if bitmap_fmt == BitmapFormat::Rgba {
                Fmt::A8r8g8b8
            } else {
                Fmt::X8r8g8b8
            };
            if native.fmt == Fmt::A8r8g8b8 && target == Fmt::X8r8g8b8 {
                // Compatible: the alpha bits are simply ignored.
                Img {
                    fmt: target,
                    ..native
                }
            } else {
                native.convert(target)?
            }
        }
    };
    if img.flags & IMAGE_FLAG_HIGH_BITS_SET != 0 && out.fmt == Fmt::X8r8g8b8 {
        for v in &mut out.data {
            *v |= 0xff00_0000;
        }
    }
    Some(out)
}

/// Another surface as an image in that surface's format.
fn surface_image(
    id: u32,
    img: &Image,
    area: Option<&Rect>,
    sources: &dyn SurfaceSource,
) -> Option<Img> {
    let full = Rect::new(
        0,
        0,
        i32::try_from(img.width).ok()?,
        i32::try_from(img.height).ok()?,
    );
    let (r, px) = match sources.read(id, &full) {
        Some(p) => (full, p),
        None => {
            let a = *area?;
            (a, sources.read(id, &a)?)
        }
    };
    let fmt = sources.format(id).map_or(Fmt::X8r8g8b8, Fmt::of_surface);
    let mut out = Img::new(fmt, px.width, px.height)?;
    out.ox = r.left;
    out.oy = r.top;
    for y in 0..px.height {
        for x in 0..px.width {
            let v = px.get(x, y);
            out.set(x, y, if fmt == Fmt::A8 { v >> 24 } else { v });
        }
    }
    Some(out)
}
