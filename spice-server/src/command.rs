//! The command model shared by the QXL device and the display worker.
//!
//! # Primer
//!
//! A QXL guest driver talks to the device through rings of `QXLCommand`s in
//! guest memory. Each command points at a packed C structure (a drawable, a
//! surface command, a cursor command, ...) which in turn points at more
//! structures: images, palettes, clip lists, paths, glyph strings, all of them
//! possibly split over chains of `QXLDataChunk`s.
//!
//! The device (crate `devices`) reads each of those structures exactly once,
//! validates it, and builds the *owned* values defined here. Nothing in this
//! module refers to guest memory: once a command is decoded the guest may reuse
//! its buffers at once (copy-then-release), and this crate can render, encode
//! and cache it without any time-of-check/time-of-use hazard.
//!
//! The values keep the guest's own vocabulary (QXL and SPICE share most of it:
//! ROP descriptors, brush and clip types, bitmap formats) so that the display
//! channel can put them on the wire with little translation.
//!
//! The device reaches the display worker through [`DisplaySink`].

/// A rectangle, `top`/`left` inclusive and `bottom`/`right` exclusive, as
/// `QXLRect` and `SpiceRect` define it (note the field order on the wire and in
/// guest memory: top, left, bottom, right).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First row.
    pub top: i32,
    /// First column.
    pub left: i32,
    /// One past the last row.
    pub bottom: i32,
    /// One past the last column.
    pub right: i32,
}

impl Rect {
    /// A rectangle from its four edges.
    pub const fn new(left: i32, top: i32, right: i32, bottom: i32) -> Self {
        Self {
            top,
            left,
            bottom,
            right,
        }
    }

    /// True when `left <= right` and `top <= bottom`.
    pub const fn is_well_formed(&self) -> bool {
        self.left <= self.right && self.top <= self.bottom
    }

    /// True when the rectangle covers no pixel.
    pub const fn is_empty(&self) -> bool {
        self.left >= self.right || self.top >= self.bottom
    }

    /// Width in pixels (0 for an empty or malformed rectangle).
    pub fn width(&self) -> u32 {
        u32::try_from(i64::from(self.right) - i64::from(self.left)).unwrap_or(0)
    }

    /// Height in pixels (0 for an empty or malformed rectangle).
    pub fn height(&self) -> u32 {
        u32::try_from(i64::from(self.bottom) - i64::from(self.top)).unwrap_or(0)
    }

    /// The intersection of two rectangles, `None` when it is empty.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let r = Rect {
            top: self.top.max(other.top),
            left: self.left.max(other.left),
            bottom: self.bottom.min(other.bottom),
            right: self.right.min(other.right),
        };
        (!r.is_empty()).then_some(r)
    }
}

/// A point with 32-bit integer coordinates (`QXLPoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Point {
    /// Column.
    pub x: i32,
    /// Row.
    pub y: i32,
}

/// A point with 16-bit coordinates (`QXLPoint16`), used by cursors and composite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Point16 {
    /// Column.
    pub x: i16,
    /// Row.
    pub y: i16,
}

/// A point in 28.4 fixed point (`QXLPointFix`), used by paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PointFix {
    /// Column, 28.4 fixed point.
    pub x: i32,
    /// Row, 28.4 fixed point.
    pub y: i32,
}

/// A clip region: nothing, or a list of rectangles whose union is drawable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Clip {
    /// No clipping beyond the drawable's bounding box.
    #[default]
    None,
    /// Only the union of these rectangles may be drawn.
    Rects(Vec<Rect>),
}

/// A brush: what fills, text and strokes paint with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Brush {
    /// No brush (`SPICE_BRUSH_TYPE_NONE`).
    #[default]
    None,
    /// A solid colour, `x8r8g8b8` (or as the surface format dictates).
    Solid(u32),
    /// A tiled image, anchored at `pos`.
    Pattern {
        /// The pattern image.
        image: Box<Image>,
        /// Where the pattern's origin lies on the destination.
        pos: Point,
    },
}

/// A 1-bpp mask (`QXLQMask`) applied to a draw operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// `SPICE_MASK_FLAGS_INVERS` (1): draw where the mask is 0 instead of 1.
    pub flags: u8,
    /// Mask origin relative to the destination.
    pub pos: Point,
    /// The mask bitmap (1 bpp).
    pub bitmap: Box<Image>,
}

/// `SpiceRopd`: the ROP descriptor of fills, copies and blends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ropd(pub u16);

impl Ropd {
    /// Invert the source before the operation.
    pub const INVERS_SRC: u16 = 1 << 0;
    /// Invert the brush before the operation.
    pub const INVERS_BRUSH: u16 = 1 << 1;
    /// Invert the destination before the operation.
    pub const INVERS_DEST: u16 = 1 << 2;
    /// Replace the destination.
    pub const OP_PUT: u16 = 1 << 3;
    /// OR into the destination.
    pub const OP_OR: u16 = 1 << 4;
    /// AND into the destination.
    pub const OP_AND: u16 = 1 << 5;
    /// XOR into the destination.
    pub const OP_XOR: u16 = 1 << 6;
    /// Paint black.
    pub const OP_BLACKNESS: u16 = 1 << 7;
    /// Paint white.
    pub const OP_WHITENESS: u16 = 1 << 8;
    /// Invert the destination.
    pub const OP_INVERS: u16 = 1 << 9;
    /// Invert the result.
    pub const INVERS_RES: u16 = 1 << 10;
}

/// Scaling filter of copies whose source and destination sizes differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScaleMode {
    /// `SPICE_IMAGE_SCALE_MODE_INTERPOLATE` (0).
    #[default]
    Interpolate = 0,
    /// `SPICE_IMAGE_SCALE_MODE_NEAREST` (1).
    Nearest = 1,
}

/// Bitmap pixel formats (`SpiceBitmapFmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BitmapFormat {
    /// 1 bpp, least significant bit first, palette.
    OneBitLe = 1,
    /// 1 bpp, most significant bit first, palette.
    OneBitBe = 2,
    /// 4 bpp, low nibble first, palette.
    FourBitLe = 3,
    /// 4 bpp, high nibble first, palette.
    FourBitBe = 4,
    /// 8 bpp, palette.
    EightBit = 5,
    /// 16 bpp, x555.
    Rgb16 = 6,
    /// 24 bpp, bytes B, G, R.
    Rgb24 = 7,
    /// 32 bpp, bytes B, G, R, X.
    Rgb32 = 8,
    /// 32 bpp, bytes B, G, R, A.
    Rgba = 9,
    /// 8 bpp alpha only.
    A8 = 10,
}

impl BitmapFormat {
    /// The format for a `SpiceBitmapFmt` value, `None` for INVALID and unknown values.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::OneBitLe,
            2 => Self::OneBitBe,
            3 => Self::FourBitLe,
            4 => Self::FourBitBe,
            5 => Self::EightBit,
            6 => Self::Rgb16,
            7 => Self::Rgb24,
            8 => Self::Rgb32,
            9 => Self::Rgba,
            10 => Self::A8,
            _ => return None,
        })
    }

    /// Bits per pixel.
    pub const fn bpp(self) -> u32 {
        match self {
            Self::OneBitLe | Self::OneBitBe => 1,
            Self::FourBitLe | Self::FourBitBe => 4,
            Self::EightBit | Self::A8 => 8,
            Self::Rgb16 => 16,
            Self::Rgb24 => 24,
            Self::Rgb32 | Self::Rgba => 32,
        }
    }

    /// True for the formats whose pixels are palette indices.
    pub const fn has_palette(self) -> bool {
        matches!(
            self,
            Self::OneBitLe | Self::OneBitBe | Self::FourBitLe | Self::FourBitBe | Self::EightBit
        )
    }
}

/// A colour table (`QXLPalette` / `SpicePalette`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Palette {
    /// Cache key chosen by the guest (0 = not cacheable).
    pub unique: u64,
    /// Entries, `x8r8g8b8`.
    pub entries: Vec<u32>,
}

/// `QXL_BITMAP_TOP_DOWN`: the first stored row is the top row.
pub const BITMAP_TOP_DOWN: u8 = 4;
/// `QXL_BITMAP_UNSTABLE`: the guest may change the pixels after release.
pub const BITMAP_UNSTABLE: u8 = 2;
/// `QXL_BITMAP_DIRECT`: pixels were stored contiguously rather than in chunks.
pub const BITMAP_DIRECT: u8 = 1;

/// An uncompressed bitmap, copied out of guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Pixel format.
    pub format: BitmapFormat,
    /// `QXL_BITMAP_*` flags as the guest gave them (see [`BITMAP_TOP_DOWN`]).
    pub flags: u8,
    /// Width in pixels (non-zero).
    pub width: u32,
    /// Height in pixels (non-zero).
    pub height: u32,
    /// Bytes per stored row, at least `ceil(width * bpp / 8)`.
    pub stride: u32,
    /// Colour table, present for palette formats used as images.
    pub palette: Option<Palette>,
    /// `height * stride` bytes, rows in stored order (bottom-up unless
    /// [`BITMAP_TOP_DOWN`] is set).
    pub data: Vec<u8>,
}

impl Bitmap {
    /// True when the first stored row is the top row.
    pub const fn is_top_down(&self) -> bool {
        self.flags & BITMAP_TOP_DOWN != 0
    }
}

impl Image {
    /// An uncompressed, uncached image of top-down 32-bit pixels
    /// (`BitmapFormat::Rgb32`, rows `width * 4` bytes apart), owning `data`:
    /// what Linux's `drm/qxl` sends for framebuffer damage. For host-made
    /// images (scenes, tests); `data` should hold `width * 4 * height` bytes.
    pub fn rgb32(width: u32, height: u32, data: Vec<u8>) -> Image {
        Image {
            id: 0,
            flags: 0,
            width,
            height,
            data: ImageData::Bitmap(Bitmap {
                format: BitmapFormat::Rgb32,
                flags: BITMAP_TOP_DOWN,
                width,
                height,
                stride: width.saturating_mul(4),
                palette: None,
                data,
            }),
        }
    }
}

impl CopyOp {
    /// A plain copy (ROP PUT, nearest scaling, no mask) of the whole of `src`.
    pub fn put(src: Image) -> CopyOp {
        let (w, h) = (
            i32::try_from(src.width).unwrap_or(i32::MAX),
            i32::try_from(src.height).unwrap_or(i32::MAX),
        );
        CopyOp {
            src: Box::new(src),
            src_area: Rect::new(0, 0, w, h),
            rop: Ropd(Ropd::OP_PUT),
            scale_mode: ScaleMode::Nearest,
            mask: None,
        }
    }
}

/// `QXL_IMAGE_CACHE`: the guest allows the server to cache this image by id.
pub const IMAGE_FLAG_CACHE: u8 = 1;
/// `QXL_IMAGE_HIGH_BITS_SET`: alpha/high bits of 32-bit pixels are meaningful.
pub const IMAGE_FLAG_HIGH_BITS_SET: u8 = 2;

/// The pixels of an image, in one of the three forms a guest may supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    /// An uncompressed bitmap (`SPICE_IMAGE_TYPE_BITMAP`).
    Bitmap(Bitmap),
    /// A QUIC stream compressed by the guest (`SPICE_IMAGE_TYPE_QUIC`).
    Quic(Vec<u8>),
    /// The contents of another surface (`SPICE_IMAGE_TYPE_SURFACE`).
    Surface(u32),
}

/// An image with its descriptor (`QXLImage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The guest's cache key (`QXL_SET_IMAGE_ID(group, unique)`).
    pub id: u64,
    /// `QXL_IMAGE_*` flags, see [`IMAGE_FLAG_CACHE`].
    pub flags: u8,
    /// Width from the descriptor.
    pub width: u32,
    /// Height from the descriptor.
    pub height: u32,
    /// The pixels.
    pub data: ImageData,
}

/// Path segment flag: the segment starts a figure.
pub const PATH_BEGIN: u32 = 1 << 0;
/// Path segment flag: the segment ends a figure.
pub const PATH_END: u32 = 1 << 1;
/// Path segment flag: the figure is closed.
pub const PATH_CLOSE: u32 = 1 << 3;
/// Path segment flag: the points are cubic Bézier control points.
pub const PATH_BEZIER: u32 = 1 << 4;

/// One segment of a path (`QXLPathSeg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSeg {
    /// `PATH_*` flags.
    pub flags: u32,
    /// The points, 28.4 fixed point.
    pub points: Vec<PointFix>,
}

/// A path for strokes (`QXLPath`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    /// Segments in order.
    pub segments: Vec<PathSeg>,
}

/// Line attribute flag: the style starts with a gap.
pub const LINE_START_WITH_GAP: u8 = 1 << 2;
/// Line attribute flag: the line is dashed by `style`.
pub const LINE_STYLED: u8 = 1 << 3;

/// How a stroke is drawn (`QXLLineAttr`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineAttr {
    /// `LINE_*` flags.
    pub flags: u8,
    /// Join style (not sent on the SPICE wire).
    pub join_style: u8,
    /// End style (not sent on the SPICE wire).
    pub end_style: u8,
    /// Line width, 28.4 fixed point.
    pub width: i32,
    /// Miter limit, 28.4 fixed point.
    pub miter_limit: i32,
    /// Dash lengths, 28.4 fixed point (non-empty only when styled).
    pub style: Vec<i32>,
}

/// Glyph string flag: 1 bpp glyphs.
pub const STRING_RASTER_A1: u16 = 1;
/// Glyph string flag: 4 bpp glyphs.
pub const STRING_RASTER_A4: u16 = 2;
/// Glyph string flag: 8 bpp glyphs.
pub const STRING_RASTER_A8: u16 = 4;
/// Glyph string flag: glyph rows are stored top-down.
pub const STRING_RASTER_TOP_DOWN: u16 = 8;

/// One rasterised glyph (`QXLRasterGlyph`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RasterGlyph {
    /// Where the glyph origin is placed on the destination.
    pub render_pos: Point,
    /// Offset from the glyph's top-left corner to its origin.
    pub glyph_origin: Point,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// `height * ceil(width * bpp / 8)` bytes of coverage.
    pub data: Vec<u8>,
}

/// A string of rasterised glyphs (`QXLString`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlyphString {
    /// `STRING_*` flags; exactly one of A1, A4 and A8 is set.
    pub flags: u16,
    /// The glyphs.
    pub glyphs: Vec<RasterGlyph>,
}

impl GlyphString {
    /// Bits per pixel of the glyphs (1, 4 or 8), `None` when the flags name none or several.
    pub const fn bpp(&self) -> Option<u32> {
        match self.flags & (STRING_RASTER_A1 | STRING_RASTER_A4 | STRING_RASTER_A8) {
            STRING_RASTER_A1 => Some(1),
            STRING_RASTER_A4 => Some(4),
            STRING_RASTER_A8 => Some(8),
            _ => None,
        }
    }
}

/// A 2×3 affine transform in 16.16 fixed point (`QXLTransform`: t00 t01 t02 t10 t11 t12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Transform(pub [u32; 6]);

/// Source, area and mask shared by COPY and BLEND (`QXLCopy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// The source image.
    pub src: Box<Image>,
    /// The area of the source to copy into the bounding box (scaled if sizes differ).
    pub src_area: Rect,
    /// ROP descriptor.
    pub rop: Ropd,
    /// Scaling filter.
    pub scale_mode: ScaleMode,
    /// Optional mask.
    pub mask: Option<Mask>,
}

/// Composite flags: the operator is in bits 0..8.
pub const COMPOSITE_OP_MASK: u32 = 0xff;
/// Composite flag set by the decoder when a mask is present (spice's `HAS_MASK`).
pub const COMPOSITE_HAS_MASK: u32 = 1 << 19;
/// Composite flag set by the decoder when a source transform is present.
pub const COMPOSITE_HAS_SRC_TRANSFORM: u32 = 1 << 20;
/// Composite flag set by the decoder when a mask transform is present.
pub const COMPOSITE_HAS_MASK_TRANSFORM: u32 = 1 << 21;

/// What a drawable does: one variant per `QXL_DRAW_*` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrawOp {
    /// `QXL_DRAW_NOP`.
    Nop,
    /// `QXL_DRAW_FILL`: paint the bounding box with a brush.
    Fill {
        /// The brush.
        brush: Brush,
        /// ROP descriptor.
        rop: Ropd,
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_OPAQUE`: copy an image, combining it with a brush.
    Opaque {
        /// The source image.
        src: Box<Image>,
        /// Source area.
        src_area: Rect,
        /// The brush.
        brush: Brush,
        /// ROP descriptor.
        rop: Ropd,
        /// Scaling filter.
        scale_mode: ScaleMode,
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_COPY`.
    Copy(CopyOp),
    /// `QXL_DRAW_BLEND`.
    Blend(CopyOp),
    /// `QXL_DRAW_COPY_BITS`: copy within the target surface from `src_pos` to the bounding box.
    CopyBits {
        /// Top-left corner of the source area.
        src_pos: Point,
    },
    /// `QXL_DRAW_BLACKNESS`.
    Blackness {
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_WHITENESS`.
    Whiteness {
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_INVERS`.
    Invers {
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_ROP3`: a ternary raster operation of source, brush and destination.
    Rop3 {
        /// The source image.
        src: Box<Image>,
        /// Source area.
        src_area: Rect,
        /// The brush.
        brush: Brush,
        /// The ROP3 code (Windows ternary raster operation index).
        rop3: u8,
        /// Scaling filter.
        scale_mode: ScaleMode,
        /// Optional mask.
        mask: Option<Mask>,
    },
    /// `QXL_DRAW_STROKE`: draw a path.
    Stroke {
        /// The path.
        path: Path,
        /// Line attributes.
        attr: LineAttr,
        /// The brush.
        brush: Brush,
        /// Foreground ROP descriptor.
        fore_mode: u16,
        /// Background ROP descriptor.
        back_mode: u16,
    },
    /// `QXL_DRAW_TEXT`: draw a glyph string.
    Text {
        /// The glyphs.
        string: GlyphString,
        /// Area painted with the back brush first (may be empty).
        back_area: Rect,
        /// Brush for glyph pixels.
        fore_brush: Brush,
        /// Brush for the back area.
        back_brush: Brush,
        /// Foreground ROP descriptor.
        fore_mode: u16,
        /// Background ROP descriptor.
        back_mode: u16,
    },
    /// `QXL_DRAW_TRANSPARENT`: copy, skipping source pixels of one colour.
    Transparent {
        /// The source image.
        src: Box<Image>,
        /// Source area.
        src_area: Rect,
        /// The transparent colour in source terms.
        src_color: u32,
        /// The same colour as true colour.
        true_color: u32,
    },
    /// `QXL_DRAW_ALPHA_BLEND`: blend the source with a constant (and per-pixel) alpha.
    AlphaBlend {
        /// `SPICE_ALPHA_FLAGS_*` (DEST_HAS_ALPHA 1, SRC_SURFACE_HAS_ALPHA 2).
        alpha_flags: u16,
        /// Constant alpha.
        alpha: u8,
        /// The source image.
        src: Box<Image>,
        /// Source area.
        src_area: Rect,
    },
    /// `QXL_DRAW_COMPOSITE`: a Render-style composite.
    Composite {
        /// Operator, filters, repeats, component alpha, and `COMPOSITE_HAS_*` bits.
        flags: u32,
        /// The source image.
        src: Box<Image>,
        /// Optional source transform.
        src_transform: Option<Transform>,
        /// Optional mask image.
        mask: Option<Box<Image>>,
        /// Optional mask transform.
        mask_transform: Option<Transform>,
        /// Source origin.
        src_origin: Point16,
        /// Mask origin.
        mask_origin: Point16,
    },
}

impl DrawOp {
    /// The `QXL_DRAW_*` type number of this operation.
    pub const fn type_id(&self) -> u8 {
        match self {
            Self::Nop => 0,
            Self::Fill { .. } => 1,
            Self::Opaque { .. } => 2,
            Self::Copy(_) => 3,
            Self::CopyBits { .. } => 4,
            Self::Blend(_) => 5,
            Self::Blackness { .. } => 6,
            Self::Whiteness { .. } => 7,
            Self::Invers { .. } => 8,
            Self::Rop3 { .. } => 9,
            Self::Stroke { .. } => 10,
            Self::Text { .. } => 11,
            Self::Transparent { .. } => 12,
            Self::AlphaBlend { .. } => 13,
            Self::Composite { .. } => 14,
        }
    }
}

/// A draw command (`QXLDrawable`, or `QXLCompatDrawable` in compat mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawable {
    /// Target surface (0 = primary).
    pub surface_id: u32,
    /// `QXLEffectType` hint.
    pub effect: u8,
    /// Area to capture before drawing, when the guest asked for a self bitmap.
    pub self_bitmap: Option<Rect>,
    /// Bounding box of the operation on the target surface.
    pub bbox: Rect,
    /// Clip region.
    pub clip: Clip,
    /// Guest multimedia time (informational).
    pub mm_time: u32,
    /// Surfaces this drawable reads from (−1 = none).
    pub surfaces_dest: [i32; 3],
    /// Areas of those surfaces that are read.
    pub surfaces_rects: [Rect; 3],
    /// The operation.
    pub op: DrawOp,
}

impl Drawable {
    /// A drawable on the primary surface with no clip, no self bitmap, no
    /// source surfaces and the OPAQUE effect: what most drivers send.
    pub fn on_primary(bbox: Rect, op: DrawOp) -> Self {
        Self {
            surface_id: 0,
            effect: 1,
            self_bitmap: None,
            bbox,
            clip: Clip::None,
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op,
        }
    }

    /// The same drawable with `clip`.
    #[must_use]
    pub fn with_clip(mut self, clip: Clip) -> Self {
        self.clip = clip;
        self
    }
}

/// Surface pixel formats (`SpiceSurfaceFmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SurfaceFormat {
    /// 1 bpp alpha.
    A1 = 1,
    /// 8 bpp alpha.
    A8 = 8,
    /// 16 bpp x555.
    Rgb555 = 16,
    /// 32 bpp xRGB.
    Xrgb32 = 32,
    /// 16 bpp 565.
    Rgb565 = 80,
    /// 32 bpp ARGB.
    Argb32 = 96,
}

impl SurfaceFormat {
    /// The format for a `SpiceSurfaceFmt` value.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::A1,
            8 => Self::A8,
            16 => Self::Rgb555,
            32 => Self::Xrgb32,
            80 => Self::Rgb565,
            96 => Self::Argb32,
            _ => return None,
        })
    }

    /// Bits per pixel.
    pub const fn bpp(self) -> u32 {
        match self {
            Self::A1 => 1,
            Self::A8 => 8,
            Self::Rgb555 | Self::Rgb565 => 16,
            Self::Xrgb32 | Self::Argb32 => 32,
        }
    }
}

/// `QXL_SURF_FLAG_KEEP_DATA`: the surface memory already holds valid pixels.
pub const SURFACE_FLAG_KEEP_DATA: u32 = 1;

/// A surface being created: the primary (id 0, from `CREATE_PRIMARY`) or an
/// off-screen surface (from `QXL_CMD_SURFACE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurfaceCreate {
    /// Surface id (0 = primary).
    pub surface_id: u32,
    /// Pixel format.
    pub format: SurfaceFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The guest's stride: negative means the rows are stored bottom-up.
    pub stride: i32,
    /// `QXL_SURF_FLAG_*` flags.
    pub flags: u32,
    /// Primary only: the `position` field of `QXLSurfaceCreate`.
    pub position: u32,
    /// When [`SURFACE_FLAG_KEEP_DATA`] is set: the surface's initial pixels,
    /// `height` rows of `|stride|` bytes, **top row first** whatever the sign of
    /// `stride`.
    pub initial: Option<Vec<u8>>,
}

/// A surface command from the command ring (`QXLSurfaceCmd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SurfaceCmd {
    /// Create an off-screen surface.
    Create(SurfaceCreate),
    /// Destroy a surface.
    Destroy {
        /// The surface id.
        surface_id: u32,
    },
}

/// Cursor shape types (`SpiceCursorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CursorType {
    /// 32-bit BGRA with alpha.
    Alpha = 0,
    /// AND mask then XOR mask, 1 bpp each.
    Mono = 1,
    /// 4 bpp colour with a 16-entry palette and an AND mask.
    Color4 = 2,
    /// 8 bpp colour (palette) and an AND mask.
    Color8 = 3,
    /// 16 bpp colour and an AND mask.
    Color16 = 4,
    /// 24 bpp colour and an AND mask.
    Color24 = 5,
    /// 32 bpp colour and an AND mask.
    Color32 = 6,
}

impl CursorType {
    /// The type for a `SpiceCursorType` value.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Alpha,
            1 => Self::Mono,
            2 => Self::Color4,
            3 => Self::Color8,
            4 => Self::Color16,
            5 => Self::Color24,
            6 => Self::Color32,
            _ => return None,
        })
    }
}

/// A cursor shape (`QXLCursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Cache key (0 = never cache).
    pub unique: u64,
    /// Pixel type.
    pub kind: CursorType,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot column.
    pub hot_spot_x: u16,
    /// Hot spot row.
    pub hot_spot_y: u16,
    /// Pixel data, exactly the size the type and dimensions imply.
    pub data: Vec<u8>,
}

/// A cursor command from the cursor ring (`QXLCursorCmd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCmd {
    /// Set a new shape at a position.
    Set {
        /// Position (hot spot) on the primary surface.
        position: Point16,
        /// Whether the cursor is shown.
        visible: bool,
        /// The shape.
        shape: Cursor,
    },
    /// Move the cursor.
    Move {
        /// New position.
        position: Point16,
    },
    /// Hide the cursor.
    Hide,
    /// Cursor trail settings.
    Trail {
        /// Trail length.
        length: u16,
        /// Trail frequency.
        frequency: u16,
    },
}

/// A `QXL_CMD_UPDATE` command (deprecated; no driver in use emits it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateCmd {
    /// Area to bring up to date.
    pub area: Rect,
    /// Id to report back.
    pub update_id: u32,
    /// Surface.
    pub surface_id: u32,
}

/// One head of a monitors configuration (`QXLHead`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Head {
    /// Head index.
    pub id: u32,
    /// Surface the head shows.
    pub surface_id: u32,
    /// Width (0 = disabled).
    pub width: u32,
    /// Height (0 = disabled).
    pub height: u32,
    /// Column of the head within the surface.
    pub x: u32,
    /// Row of the head within the surface.
    pub y: u32,
    /// Flags.
    pub flags: u32,
}

/// A guest monitors configuration (`QXLMonitorsConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorsConfig {
    /// Maximum number of heads the guest allows (0 = not given).
    pub max_allowed: u16,
    /// The heads.
    pub heads: Vec<Head>,
}

/// A decoded guest command, from either ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `QXL_CMD_DRAW`.
    Draw(Drawable),
    /// `QXL_CMD_UPDATE`.
    Update(UpdateCmd),
    /// `QXL_CMD_MESSAGE`: the text, without its NUL.
    Message(Vec<u8>),
    /// `QXL_CMD_SURFACE`.
    Surface(SurfaceCmd),
    /// `QXL_CMD_CURSOR` (cursor ring).
    Cursor(CursorCmd),
}

/// Pixels of a surface area, rendered by the display worker for `UPDATE_AREA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaPixels {
    /// The area these pixels cover (within the surface).
    pub area: Rect,
    /// Bytes per row in `data`.
    pub stride: usize,
    /// Rows top-down, `area.height()` of them, in the surface's format.
    pub data: Vec<u8>,
}

/// What the QXL device hands to the display side.
///
/// The device calls these methods from the context that processes the guest's
/// port writes; an implementation must not block on the network. Each call
/// carries only owned data.
pub trait DisplaySink {
    /// A command was decoded from the command ring or the cursor ring.
    fn command(&mut self, cmd: Command);

    /// The guest created the primary surface (`CREATE_PRIMARY[_ASYNC]`, or a compat mode set).
    fn create_primary(&mut self, surface: SurfaceCreate);

    /// The guest destroyed the primary surface.
    fn destroy_primary(&mut self);

    /// The guest waits until `surface_id` is no longer used (`DESTROY_SURFACE_WAIT[_ASYNC]`):
    /// finish every pending command that touches it.
    fn destroy_surface_wait(&mut self, surface_id: u32);

    /// The guest destroyed every surface (`DESTROY_ALL_SURFACES[_ASYNC]`).
    fn destroy_all_surfaces(&mut self);

    /// Render every pending command intersecting `area` of `surface_id` and return
    /// the resulting pixels, so that the device can write them into the guest's
    /// surface memory (`UPDATE_AREA[_ASYNC]`). `None` when the surface is unknown.
    fn update_area(&mut self, surface_id: u32, area: Rect) -> Option<AreaPixels>;

    /// Render every surface up to date (`FLUSH_SURFACES_ASYNC`).
    fn flush_surfaces(&mut self);

    /// The guest sent its monitors configuration (`MONITORS_CONFIG_ASYNC`).
    fn monitors_config(&mut self, config: MonitorsConfig);

    /// The device was reset: forget every surface, cursor and cached image.
    fn reset(&mut self);
}
