//! Property tests: encode → decode round trips over generated commands, and
//! "decoding random guest memory never panics and stays within its caps".

use proptest::prelude::*;

use spice_server::command::{
    BITMAP_DIRECT, BITMAP_TOP_DOWN, BITMAP_UNSTABLE, Bitmap, BitmapFormat, Brush,
    COMPOSITE_HAS_MASK, COMPOSITE_HAS_MASK_TRANSFORM, COMPOSITE_HAS_SRC_TRANSFORM, Clip, Command,
    CopyOp, Cursor, CursorCmd, CursorType, DrawOp, Drawable, GlyphString, Image, ImageData,
    LINE_STYLED, LineAttr, Mask, Palette, Path, PathSeg, Point, Point16, PointFix, RasterGlyph,
    Rect, Ropd, STRING_RASTER_A1, STRING_RASTER_A4, STRING_RASTER_A8, ScaleMode, SurfaceCmd,
    SurfaceCreate, SurfaceFormat, Transform, UpdateCmd,
};

use super::Fx;
use crate::qxl::chunks::{ChunkStart, read_chunks};
use crate::qxl::decode::{Limits, cursor_data_size, decode_command, decode_monitors_config};
use crate::qxl::guest::GuestView;
use crate::qxl::memslot::make_phys;
use crate::qxl::mock::encode::EncodeOptions;

fn rect() -> impl Strategy<Value = Rect> {
    (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(
        |(top, left, bottom, right)| Rect {
            top,
            left,
            bottom,
            right,
        },
    )
}

fn point() -> impl Strategy<Value = Point> {
    (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y })
}

fn point16() -> impl Strategy<Value = Point16> {
    (any::<i16>(), any::<i16>()).prop_map(|(x, y)| Point16 { x, y })
}

fn bitmap(is_mask: bool) -> impl Strategy<Value = Image> {
    (
        1u8..=10,
        1u32..=9,
        1u32..=4,
        0u32..=3,
        prop::sample::select(vec![
            0u8,
            BITMAP_TOP_DOWN,
            BITMAP_UNSTABLE,
            BITMAP_DIRECT,
            7,
        ]),
        any::<bool>(),
        prop::collection::vec(any::<u32>(), 0..5),
        any::<u64>(),
        0u8..4,
    )
        .prop_flat_map(move |(f, w, h, extra, flags, want_pal, ents, id, iflags)| {
            let format = BitmapFormat::from_u8(f).unwrap();
            let stride = u32::try_from((u64::from(w) * u64::from(format.bpp())).div_ceil(8))
                .unwrap()
                + extra;
            let need_pal = format.has_palette() && !is_mask;
            let palette = (need_pal || want_pal).then(|| Palette {
                unique: id ^ 1,
                entries: ents.clone(),
            });
            prop::collection::vec(any::<u8>(), usize::try_from(stride * h).unwrap()).prop_map(
                move |data| Image {
                    id,
                    flags: iflags,
                    width: w,
                    height: h,
                    data: ImageData::Bitmap(Bitmap {
                        format,
                        flags,
                        width: w,
                        height: h,
                        stride,
                        palette: palette.clone(),
                        data,
                    }),
                },
            )
        })
}

fn image(is_mask: bool) -> impl Strategy<Value = Image> {
    prop_oneof![
        3 => bitmap(is_mask),
        1 => (any::<u64>(), 1u32..100, 1u32..100, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(id, w, h, q)| Image { id, flags: 0, width: w, height: h, data: ImageData::Quic(q) }),
        1 => (any::<u64>(), any::<u32>(), any::<u32>(), 0u32..1024)
            .prop_map(|(id, w, h, s)| Image { id, flags: 1, width: w, height: h, data: ImageData::Surface(s) }),
    ]
}

fn brush() -> impl Strategy<Value = Brush> {
    prop_oneof![
        Just(Brush::None),
        any::<u32>().prop_map(Brush::Solid),
        (image(false), point()).prop_map(|(i, pos)| Brush::Pattern {
            image: Box::new(i),
            pos
        }),
    ]
}

fn mask() -> impl Strategy<Value = Option<Mask>> {
    prop::option::of(
        (any::<u8>(), point(), image(true)).prop_map(|(flags, pos, b)| Mask {
            flags,
            pos,
            bitmap: Box::new(b),
        }),
    )
}

fn scale() -> impl Strategy<Value = ScaleMode> {
    prop_oneof![Just(ScaleMode::Interpolate), Just(ScaleMode::Nearest)]
}

/// A COPY/BLEND whose source area passes spice-server's checks.
fn copy_op() -> impl Strategy<Value = CopyOp> {
    (
        image(false),
        any::<u16>(),
        scale(),
        mask(),
        any::<[u16; 4]>(),
    )
        .prop_map(|(src, rop, scale_mode, mask, r)| {
            let (w, h) = match &src.data {
                ImageData::Bitmap(b) => (b.width, b.height),
                _ => (1000, 1000),
            };
            let w = i32::try_from(w).unwrap();
            let h = i32::try_from(h).unwrap();
            let l = i32::from(r[0]) % (w + 1);
            let t = i32::from(r[1]) % (h + 1);
            let right = l + i32::from(r[2]) % (w - l + 1);
            let bottom = t + i32::from(r[3]) % (h - t + 1);
            CopyOp {
                src: Box::new(src),
                src_area: Rect::new(l, t, right, bottom),
                rop: Ropd(rop),
                scale_mode,
                mask,
            }
        })
}

fn path() -> impl Strategy<Value = Path> {
    prop::collection::vec(
        (
            any::<u32>(),
            prop::collection::vec(
                (any::<i32>(), any::<i32>()).prop_map(|(x, y)| PointFix { x, y }),
                0..5,
            ),
        )
            .prop_map(|(flags, points)| PathSeg { flags, points }),
        0..5,
    )
    .prop_map(|segments| Path { segments })
}

fn line_attr() -> impl Strategy<Value = LineAttr> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<i32>(),
        any::<i32>(),
        prop::collection::vec(any::<i32>(), 0..6),
    )
        .prop_map(
            |(flags, join_style, end_style, width, miter_limit, style)| LineAttr {
                flags,
                join_style,
                end_style,
                width,
                miter_limit,
                style: if flags & LINE_STYLED != 0 {
                    style
                } else {
                    vec![]
                },
            },
        )
}

fn string() -> impl Strategy<Value = GlyphString> {
    (
        prop::sample::select(vec![
            (STRING_RASTER_A1, 1u32),
            (STRING_RASTER_A4, 4),
            (STRING_RASTER_A8, 8),
        ]),
        any::<bool>(),
        prop::collection::vec((point(), point(), 0u16..12, 0u16..6), 0..5),
    )
        .prop_flat_map(|((flag, bpp), top_down, gs)| {
            let glyphs: Vec<_> = gs
                .into_iter()
                .map(|(render_pos, glyph_origin, width, height)| {
                    let n = usize::from(height)
                        * usize::try_from((u32::from(width) * bpp).div_ceil(8)).unwrap();
                    prop::collection::vec(any::<u8>(), n).prop_map(move |data| RasterGlyph {
                        render_pos,
                        glyph_origin,
                        width,
                        height,
                        data,
                    })
                })
                .collect();
            let flags = flag | if top_down { 8 } else { 0 };
            glyphs.prop_map(move |glyphs| GlyphString { flags, glyphs })
        })
}

fn transform() -> impl Strategy<Value = Option<Transform>> {
    prop::option::of(any::<[u32; 6]>().prop_map(Transform))
}

fn draw_op() -> impl Strategy<Value = DrawOp> {
    prop_oneof![
        Just(DrawOp::Nop),
        (brush(), any::<u16>(), mask()).prop_map(|(brush, rop, mask)| DrawOp::Fill {
            brush,
            rop: Ropd(rop),
            mask
        }),
        (image(false), rect(), brush(), any::<u16>(), scale(), mask()).prop_map(
            |(src, src_area, brush, rop, scale_mode, mask)| DrawOp::Opaque {
                src: Box::new(src),
                src_area,
                brush,
                rop: Ropd(rop),
                scale_mode,
                mask
            }
        ),
        copy_op().prop_map(DrawOp::Copy),
        copy_op().prop_map(DrawOp::Blend),
        point().prop_map(|src_pos| DrawOp::CopyBits { src_pos }),
        mask().prop_map(|mask| DrawOp::Blackness { mask }),
        mask().prop_map(|mask| DrawOp::Whiteness { mask }),
        mask().prop_map(|mask| DrawOp::Invers { mask }),
        (image(false), rect(), brush(), any::<u8>(), scale(), mask()).prop_map(
            |(src, src_area, brush, rop3, scale_mode, mask)| DrawOp::Rop3 {
                src: Box::new(src),
                src_area,
                brush,
                rop3,
                scale_mode,
                mask
            }
        ),
        (path(), line_attr(), brush(), any::<u16>(), any::<u16>()).prop_map(
            |(path, attr, brush, fore_mode, back_mode)| DrawOp::Stroke {
                path,
                attr,
                brush,
                fore_mode,
                back_mode
            }
        ),
        (
            string(),
            rect(),
            brush(),
            brush(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(
                |(string, back_area, fore_brush, back_brush, fore_mode, back_mode)| DrawOp::Text {
                    string,
                    back_area,
                    fore_brush,
                    back_brush,
                    fore_mode,
                    back_mode
                }
            ),
        (image(false), rect(), any::<u32>(), any::<u32>()).prop_map(
            |(src, src_area, src_color, true_color)| {
                DrawOp::Transparent {
                    src: Box::new(src),
                    src_area,
                    src_color,
                    true_color,
                }
            }
        ),
        (any::<u16>(), any::<u8>(), image(false), rect()).prop_map(
            |(alpha_flags, alpha, src, src_area)| {
                DrawOp::AlphaBlend {
                    alpha_flags,
                    alpha,
                    src: Box::new(src),
                    src_area,
                }
            }
        ),
        (
            any::<u32>(),
            image(false),
            transform(),
            prop::option::of(image(false)),
            transform(),
            point16(),
            point16()
        )
            .prop_map(
                |(flags, src, src_transform, mask, mask_transform, src_origin, mask_origin)| {
                    let mask_transform = if mask.is_some() { mask_transform } else { None };
                    let mut flags = flags
                        & !(COMPOSITE_HAS_MASK
                            | COMPOSITE_HAS_SRC_TRANSFORM
                            | COMPOSITE_HAS_MASK_TRANSFORM);
                    if mask.is_some() {
                        flags |= COMPOSITE_HAS_MASK;
                    }
                    if src_transform.is_some() {
                        flags |= COMPOSITE_HAS_SRC_TRANSFORM;
                    }
                    if mask_transform.is_some() {
                        flags |= COMPOSITE_HAS_MASK_TRANSFORM;
                    }
                    DrawOp::Composite {
                        flags,
                        src: Box::new(src),
                        src_transform,
                        mask: mask.map(Box::new),
                        mask_transform,
                        src_origin,
                        mask_origin,
                    }
                }
            ),
    ]
}

fn surface_dep() -> impl Strategy<Value = i32> {
    prop_oneof![Just(-1i32), 0i32..1024]
}

fn drawable() -> impl Strategy<Value = Drawable> {
    (
        0u32..1024,
        any::<u8>(),
        prop::option::of(rect()),
        rect(),
        prop_oneof![
            Just(Clip::None),
            prop::collection::vec(rect(), 0..6).prop_map(Clip::Rects)
        ],
        any::<u32>(),
        [surface_dep(), surface_dep(), surface_dep()],
        [rect(), rect(), rect()],
        draw_op(),
    )
        .prop_map(
            |(
                surface_id,
                effect,
                self_bitmap,
                bbox,
                clip,
                mm_time,
                surfaces_dest,
                surfaces_rects,
                op,
            )| {
                let self_bitmap = if matches!(op, DrawOp::Copy(_) | DrawOp::Blend(_)) {
                    None
                } else {
                    self_bitmap
                };
                Drawable {
                    surface_id,
                    effect,
                    self_bitmap,
                    bbox,
                    clip,
                    mm_time,
                    surfaces_dest,
                    surfaces_rects,
                    op,
                }
            },
        )
}

fn cursor_cmd() -> impl Strategy<Value = CursorCmd> {
    let kinds = vec![
        CursorType::Alpha,
        CursorType::Mono,
        CursorType::Color4,
        CursorType::Color8,
        CursorType::Color16,
        CursorType::Color24,
        CursorType::Color32,
    ];
    prop_oneof![
        (
            point16(),
            any::<bool>(),
            prop::sample::select(kinds),
            0u16..20,
            0u16..20,
            any::<u64>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_flat_map(|(position, visible, kind, w, h, unique, hx, hy)| {
                let n = usize::try_from(cursor_data_size(kind, w, h)).unwrap();
                prop::collection::vec(any::<u8>(), n).prop_map(move |data| CursorCmd::Set {
                    position,
                    visible,
                    shape: Cursor {
                        unique,
                        kind,
                        width: w,
                        height: h,
                        hot_spot_x: hx,
                        hot_spot_y: hy,
                        data,
                    },
                })
            }),
        point16().prop_map(|position| CursorCmd::Move { position }),
        Just(CursorCmd::Hide),
        (any::<u16>(), any::<u16>())
            .prop_map(|(length, frequency)| CursorCmd::Trail { length, frequency }),
    ]
}

fn surface_cmd() -> impl Strategy<Value = SurfaceCmd> {
    let formats = vec![
        SurfaceFormat::A1,
        SurfaceFormat::A8,
        SurfaceFormat::Rgb555,
        SurfaceFormat::Xrgb32,
        SurfaceFormat::Rgb565,
        SurfaceFormat::Argb32,
    ];
    prop_oneof![
        (
            0u32..1024,
            prop::sample::select(formats),
            0u32..40,
            0u32..10,
            0i32..3,
            any::<bool>(),
            any::<bool>()
        )
            .prop_flat_map(|(surface_id, format, width, height, extra, neg, keep)| {
                let row = i32::try_from((width * format.bpp()).div_ceil(8).div_ceil(4) * 4)
                    .unwrap()
                    + 4 * extra;
                let stride = if neg { -row } else { row };
                let n = usize::try_from(height * row.unsigned_abs()).unwrap();
                prop::collection::vec(any::<u8>(), n).prop_map(move |px| {
                    SurfaceCmd::Create(SurfaceCreate {
                        surface_id,
                        format,
                        width,
                        height,
                        stride,
                        flags: u32::from(keep),
                        position: 0,
                        initial: keep.then_some(px),
                    })
                })
            }),
        (0u32..1024).prop_map(|surface_id| SurfaceCmd::Destroy { surface_id }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => drawable().prop_map(Command::Draw),
        1 => (rect(), any::<u32>(), 0u32..1024).prop_map(|(area, update_id, surface_id)| Command::Update(UpdateCmd { area, update_id, surface_id })),
        1 => prop::collection::vec(1u8..=255, 0..64).prop_map(Command::Message),
        1 => surface_cmd().prop_map(Command::Surface),
        2 => cursor_cmd().prop_map(Command::Cursor),
    ]
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    // Bitmaps are written DIRECT when the model's flags say so (the generator
    // sets that flag at random), so `direct_bitmaps` stays off here.
    prop::option::of(0usize..40).prop_map(|chunk_size| EncodeOptions {
        chunk_size,
        ..EncodeOptions::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_every_command(cmd in command(), opts in options()) {
        let mut fx = Fx::new();
        let got = fx.roundtrip_with(&cmd, &opts);
        prop_assert_eq!(got, Ok(cmd));
    }

    #[test]
    fn roundtrip_drawables_split_into_single_byte_chunks(d in drawable()) {
        let mut fx = Fx::new();
        let opts = EncodeOptions { chunk_size: Some(1), ..EncodeOptions::default() };
        let cmd = Command::Draw(d);
        prop_assert_eq!(fx.roundtrip_with(&cmd, &opts), Ok(cmd));
    }
}

/// Limits small enough that a random-memory decode allocates little.
fn small_limits() -> Limits {
    Limits {
        max_chunks: 256,
        max_chunk_data: 1 << 20,
        max_image_bytes: 1 << 20,
        max_bitmap_dim: 4096,
        max_command_bytes: 4 << 20,
        max_cursor_dim: 256,
        max_cursor_bytes: 1 << 20,
        max_clip_rects: 4096,
        max_path_segments: 4096,
        max_path_points: 1 << 16,
        max_glyphs: 4096,
        max_message_len: 100_000,
        max_monitors: 16,
        n_surfaces: 1024,
    }
}

/// An address that is usually inside slot 1's first 64 KiB and sometimes anything.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..0x1_0000).prop_map(|o| make_phys(super::SLOT, super::GEN, o)),
        1 => (0u64..0x1_0000).prop_map(|o| make_phys(super::SLOT2, 0, o)),
        1 => any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes in the first 64 KiB of slot 1 (sprinkled with plausible
    /// pointers), decoded as any command at any address: never a panic, never
    /// an allocation past the caps (bounded by `max_command_bytes`).
    #[test]
    fn decode_never_panics_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0x1_0000),
        ptrs in prop::collection::vec((0usize..0xfff8, addr()), 0..64),
        ty in 0u32..7,
        phys in addr(),
        flags in 0u32..4,
    ) {
        let fx = Fx::new();
        fx.write(make_phys(super::SLOT, super::GEN, 0), &bytes);
        for (off, p) in ptrs {
            fx.write(make_phys(super::SLOT, super::GEN, u64::try_from(off).unwrap()), &p.to_le_bytes());
        }
        let limits = small_limits();
        let _ = decode_command(&fx.mem, &fx.slots, ty, phys, flags, &limits);
        let _ = decode_monitors_config(&fx.mem, &fx.slots, phys, &limits);
        let _ = read_chunks(&fx.mem, &fx.slots, ChunkStart::Pointer(phys), None, &limits);
    }

    /// A random chunk graph: the walker always terminates within its caps.
    #[test]
    fn chunks_random_graph_terminates(
        nodes in prop::collection::vec((0u32..64, 0usize..16), 1..16),
        start in 0usize..16,
    ) {
        let fx = Fx::new();
        let at = |i: usize| make_phys(super::SLOT, super::GEN, 0x1000 + 0x100 * u64::try_from(i).unwrap());
        for (i, (size, next)) in nodes.iter().enumerate() {
            let next = if *next >= nodes.len() { 0 } else { at(*next) };
            fx.write(at(i), &crate::qxl::mock::encode::chunk_header(*size, 0, next));
        }
        let limits = Limits { max_chunks: 64, max_chunk_data: 1024, ..Limits::default() };
        if let Ok(v) = read_chunks(&fx.mem, &fx.slots, ChunkStart::Pointer(at(start)), None, &limits) {
            prop_assert!(v.len() <= 1024);
        }
    }
}

/// A guest view that counts the bytes the decoder copies.
struct Counting<'a> {
    inner: &'a vm_memory::GuestMemoryMmap,
    read: std::cell::Cell<usize>,
}

impl GuestView for Counting<'_> {
    fn read_bytes(
        &self,
        addr: vm_memory::GuestAddress,
        buf: &mut [u8],
    ) -> crate::error::Result<()> {
        self.read.set(self.read.get() + buf.len());
        self.inner.read_bytes(addr, buf)
    }

    fn write_bytes(&self, addr: vm_memory::GuestAddress, buf: &[u8]) -> crate::error::Result<()> {
        self.inner.write_bytes(addr, buf)
    }

    fn fetch_or_u32(&self, addr: vm_memory::GuestAddress, bits: u32) -> crate::error::Result<u32> {
        self.inner.fetch_or_u32(addr, bits)
    }
}

/// Heap bytes owned by a decoded value (an upper-bound estimate: every
/// `Box`/`Vec` element counted at its in-memory size).
mod deep {
    use std::mem::size_of;

    use spice_server::command::{
        Brush, Clip, Command, CursorCmd, DrawOp, GlyphString, Image, ImageData, Mask, Path,
        SurfaceCmd,
    };

    pub fn image(i: &Image) -> usize {
        size_of::<Image>()
            + match &i.data {
                ImageData::Bitmap(b) => {
                    b.data.len() + b.palette.as_ref().map_or(0, |p| 4 * p.entries.len())
                }
                ImageData::Quic(q) => q.len(),
                ImageData::Surface(_) => 0,
            }
    }

    fn brush(b: &Brush) -> usize {
        match b {
            Brush::Pattern { image: i, .. } => image(i),
            _ => 0,
        }
    }

    fn mask(m: Option<&Mask>) -> usize {
        m.map_or(0, |m| image(&m.bitmap))
    }

    fn path(p: &Path) -> usize {
        p.segments
            .iter()
            .map(|s| size_of::<spice_server::command::PathSeg>() + 8 * s.points.len())
            .sum()
    }

    fn string(s: &GlyphString) -> usize {
        s.glyphs
            .iter()
            .map(|g| size_of::<spice_server::command::RasterGlyph>() + g.data.len())
            .sum()
    }

    pub fn command(c: &Command) -> usize {
        match c {
            Command::Draw(d) => {
                let clip = match &d.clip {
                    Clip::Rects(r) => 16 * r.len(),
                    Clip::None => 0,
                };
                clip + match &d.op {
                    DrawOp::Fill {
                        brush: b, mask: m, ..
                    } => brush(b) + mask(m.as_ref()),
                    DrawOp::Opaque {
                        src,
                        brush: b,
                        mask: m,
                        ..
                    }
                    | DrawOp::Rop3 {
                        src,
                        brush: b,
                        mask: m,
                        ..
                    } => image(src) + brush(b) + mask(m.as_ref()),
                    DrawOp::Copy(c) | DrawOp::Blend(c) => image(&c.src) + mask(c.mask.as_ref()),
                    DrawOp::Blackness { mask: m }
                    | DrawOp::Whiteness { mask: m }
                    | DrawOp::Invers { mask: m } => mask(m.as_ref()),
                    DrawOp::Stroke {
                        path: p,
                        attr,
                        brush: b,
                        ..
                    } => path(p) + 4 * attr.style.len() + brush(b),
                    DrawOp::Text {
                        string: s,
                        fore_brush,
                        back_brush,
                        ..
                    } => string(s) + brush(fore_brush) + brush(back_brush),
                    DrawOp::Transparent { src, .. } | DrawOp::AlphaBlend { src, .. } => image(src),
                    DrawOp::Composite { src, mask: m, .. } => {
                        image(src) + m.as_ref().map_or(0, |m| image(m))
                    }
                    DrawOp::Nop | DrawOp::CopyBits { .. } => 0,
                }
            }
            Command::Message(m) => m.len(),
            Command::Surface(SurfaceCmd::Create(c)) => c.initial.as_ref().map_or(0, Vec::len),
            Command::Cursor(CursorCmd::Set { shape, .. }) => shape.data.len(),
            _ => 0,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// What a decoded command owns is at most a small multiple of what was
    /// read from the guest (THREATS: "never allocates more than N× input").
    #[test]
    fn decode_output_bounded_by_input(cmd in command(), opts in options()) {
        let mut fx = Fx::new();
        let (phys, ty) = fx.encode(&cmd, &opts);
        let counting = Counting { inner: &fx.mem, read: std::cell::Cell::new(0) };
        let got = decode_command(&counting, &fx.slots, ty, phys, 0, &fx.limits).unwrap();
        let read = counting.read.get();
        let owned = deep::command(&got.command);
        prop_assert!(owned <= 8 * read + 64, "owned {} read {}", owned, read);
    }

    /// The same bound on random memory, whenever the decode succeeds.
    #[test]
    fn decode_random_output_bounded_by_input(
        bytes in prop::collection::vec(any::<u8>(), 0x1_0000),
        ptrs in prop::collection::vec((0usize..0xfff8, addr()), 0..64),
        ty in 1u32..6,
        phys in addr(),
    ) {
        let fx = Fx::new();
        fx.write(make_phys(super::SLOT, super::GEN, 0), &bytes);
        for (off, p) in ptrs {
            fx.write(make_phys(super::SLOT, super::GEN, u64::try_from(off).unwrap()), &p.to_le_bytes());
        }
        let counting = Counting { inner: &fx.mem, read: std::cell::Cell::new(0) };
        if let Ok(d) = decode_command(&counting, &fx.slots, ty, phys, 0, &small_limits()) {
            let owned = deep::command(&d.command);
            prop_assert!(owned <= 8 * counting.read.get() + 64);
        }
    }
}
