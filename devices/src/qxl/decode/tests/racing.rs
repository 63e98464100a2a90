//! `racing_guest_*`: a guest that rewrites every byte the device reads, right
//! after the read (CVE-2015-3247, CVE-2021-4207). The decoder must hand on the
//! values of its first (and only) read, and must never read a byte twice.

use std::cell::RefCell;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use spice_server::command::{
    Brush, Clip, Command, Cursor, CursorCmd, CursorType, DrawOp, GlyphString, Head, LINE_STYLED,
    LineAttr, MonitorsConfig, Path, PathSeg, Point, Point16, PointFix, RasterGlyph, Rect,
    STRING_RASTER_A4, SurfaceCmd, SurfaceCreate, SurfaceFormat,
};

use super::{Fx, bitmap_image, copy_of, drawable, palette_image, pattern};
use crate::error::Result;
use crate::qxl::decode::{decode_command, decode_monitors_config};
use crate::qxl::guest::GuestView;
use crate::qxl::mock::encode::{EncodeOptions, encode_monitors_config};

/// A guest that inverts every byte the device has just read.
struct RacingGuest<'a> {
    inner: &'a GuestMemoryMmap,
    reads: RefCell<Vec<(u64, u64)>>,
}

impl<'a> RacingGuest<'a> {
    fn new(inner: &'a GuestMemoryMmap) -> Self {
        Self {
            inner,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// Assert that no byte was read twice.
    fn assert_single_fetch(&self) {
        let mut r = self.reads.borrow().clone();
        assert!(!r.is_empty());
        r.sort_unstable();
        for w in r.windows(2) {
            let (a, alen) = w[0];
            let (b, _) = w[1];
            assert!(
                a + alen <= b,
                "bytes read twice: {a:#x}+{alen:#x} and {b:#x}"
            );
        }
    }
}

impl GuestView for RacingGuest<'_> {
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<()> {
        self.inner.read_bytes(addr, buf)?;
        self.reads
            .borrow_mut()
            .push((addr.0, u64::try_from(buf.len()).unwrap()));
        let flipped: Vec<u8> = buf.iter().map(|b| !b).collect();
        self.inner.write_bytes(addr, &flipped)
    }

    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<()> {
        self.inner.write_bytes(addr, buf)
    }

    fn fetch_or_u32(&self, addr: GuestAddress, bits: u32) -> Result<u32> {
        self.inner.fetch_or_u32(addr, bits)
    }
}

/// Encode `cmd`, decode it through a racing guest, compare, and check single fetch.
fn race(cmd: &Command, opts: &EncodeOptions) {
    let mut fx = Fx::new();
    let (phys, ty) = fx.encode(cmd, opts);
    let racing = RacingGuest::new(&fx.mem);
    let got = decode_command(&racing, &fx.slots, ty, phys, 0, &fx.limits).unwrap();
    assert_eq!(&got.command, cmd);
    racing.assert_single_fetch();
}

fn split() -> EncodeOptions {
    EncodeOptions {
        chunk_size: Some(5),
        ..EncodeOptions::default()
    }
}

#[test]
fn racing_guest_copy_with_chunked_bitmap_and_clip() {
    let mut d = drawable(copy_of(bitmap_image(5, 3)));
    d.clip = Clip::Rects(vec![Rect::new(0, 0, 2, 2), Rect::new(1, 1, 3, 3)]);
    race(&Command::Draw(d.clone()), &EncodeOptions::default());
    race(&Command::Draw(d), &split());
}

#[test]
fn racing_guest_palette_and_pattern_brush() {
    let d = drawable(DrawOp::Fill {
        brush: Brush::Pattern {
            image: Box::new(palette_image(3, 3)),
            pos: Point { x: 1, y: 2 },
        },
        rop: spice_server::command::Ropd(8),
        mask: Some(spice_server::command::Mask {
            flags: 1,
            pos: Point { x: 0, y: 0 },
            bitmap: Box::new(bitmap_image(2, 2)),
        }),
    });
    race(&Command::Draw(d), &split());
}

#[test]
fn racing_guest_stroke_and_text() {
    let stroke = drawable(DrawOp::Stroke {
        path: Path {
            segments: vec![PathSeg {
                flags: 1,
                points: vec![PointFix { x: 16, y: 32 }, PointFix { x: 48, y: 64 }],
            }],
        },
        attr: LineAttr {
            flags: LINE_STYLED,
            join_style: 1,
            end_style: 2,
            width: 16,
            miter_limit: 160,
            style: vec![16, 32, 48],
        },
        brush: Brush::Solid(0xff00ff),
        fore_mode: 8,
        back_mode: 8,
    });
    race(&Command::Draw(stroke), &split());
    let text = drawable(DrawOp::Text {
        string: GlyphString {
            flags: STRING_RASTER_A4,
            glyphs: vec![RasterGlyph {
                render_pos: Point { x: 3, y: 4 },
                glyph_origin: Point { x: 0, y: -7 },
                width: 5,
                height: 7,
                data: pattern(21),
            }],
        },
        back_area: Rect::new(0, 0, 10, 10),
        fore_brush: Brush::Solid(1),
        back_brush: Brush::None,
        fore_mode: 8,
        back_mode: 8,
    });
    race(&Command::Draw(text), &split());
}

#[test]
fn racing_guest_cursor_header_read_once() {
    // CVE-2021-4207: width/height validated, then re-read for the copy.
    let shape = Cursor {
        unique: 0,
        kind: CursorType::Alpha,
        width: 64,
        height: 64,
        hot_spot_x: 1,
        hot_spot_y: 2,
        data: pattern(64 * 64 * 4),
    };
    let cmd = Command::Cursor(CursorCmd::Set {
        position: Point16 { x: 10, y: 20 },
        visible: true,
        shape,
    });
    race(&cmd, &EncodeOptions::default());
    race(
        &cmd,
        &EncodeOptions {
            chunk_size: Some(4096),
            ..EncodeOptions::default()
        },
    );
}

#[test]
fn racing_guest_surface_create_keep_data() {
    let px = pattern(16 * 4 * 4);
    for stride in [64, -64] {
        race(
            &Command::Surface(SurfaceCmd::Create(SurfaceCreate {
                surface_id: 7,
                format: SurfaceFormat::Xrgb32,
                width: 16,
                height: 4,
                stride,
                flags: 1,
                position: 0,
                initial: Some(px.clone()),
            })),
            &EncodeOptions::default(),
        );
    }
}

#[test]
fn racing_guest_message() {
    race(
        &Command::Message(b"hello from a racing guest".to_vec()),
        &EncodeOptions::default(),
    );
}

#[test]
fn racing_guest_monitors_config_count_read_once() {
    // CVE-2015-3247: count changed while the heads were copied.
    let mut fx = Fx::new();
    let cfg = MonitorsConfig {
        max_allowed: 4,
        heads: (0..3)
            .map(|i| Head {
                id: i,
                surface_id: 0,
                width: 640,
                height: 480,
                x: 640 * i,
                y: 0,
                flags: 0,
            })
            .collect(),
    };
    let p = encode_monitors_config(&fx.mem, &mut fx.heap, &cfg).unwrap();
    let racing = RacingGuest::new(&fx.mem);
    assert_eq!(
        decode_monitors_config(&racing, &fx.slots, p, &fx.limits).unwrap(),
        cfg
    );
    racing.assert_single_fetch();
}
