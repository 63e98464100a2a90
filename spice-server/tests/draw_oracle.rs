//! The draw oracle: every draw type goes to spice-gtk as its *native* SPICE
//! message, spice-gtk renders it with spice-common's canvas, and the client's
//! primary surface (read byte for byte by the GObject probe) must equal our
//! canvas's `screenshot()`.
//!
//! One test function per draw type; each runs a list of variants (ROP
//! descriptors, brushes, clips, masks, scale modes, bitmap formats, glyph
//! depths, line styles...). A variant:
//! 1. resets the primary to a background picture (a native DRAW_COPY) and
//!    waits until the client shows it;
//! 2. sends the variant's draws, then a marker fill of the bottom-right pixel;
//! 3. waits until the client shows the marker (so it processed the draws);
//! 4. checks that the draws went out as native messages of their type (the
//!    server's per-type counters), and compares the client's primary with the
//!    canvas byte for byte.
//!
//! A test fails listing every variant that was not sent natively or whose
//! pixels differ, with a pixel-diff summary (count, bounding box, samples).
//! Failing tests are not ignored: a mismatch is a real difference between our
//! canvas and spice-common's.
#![allow(
    clippy::unwrap_used,
    clippy::tests_outside_test_module,
    missing_docs,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_lossless
)]

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{Harness, Probe, open_config, start};
use spice_server::codecs::{ImageRef, PixelFormat, quic};
use spice_server::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, Clip, Command, CopyOp, DisplaySink, DrawOp,
    Drawable, GlyphString, Image, ImageData, LINE_STYLED, LineAttr, Mask, PATH_BEGIN, PATH_BEZIER,
    PATH_CLOSE, PATH_END, Palette, Path, PathSeg, Point, Point16, PointFix, RasterGlyph, Rect,
    Ropd, STRING_RASTER_A1, STRING_RASTER_A4, STRING_RASTER_A8, ScaleMode, SurfaceCmd,
    SurfaceCreate, SurfaceFormat, Transform,
};

const W: u32 = 192;
const H: u32 = 128;
const T: Duration = Duration::from_secs(20);

const COPY_BITS: u16 = 104;
const DRAW_FILL: u16 = 302;
const DRAW_OPAQUE: u16 = 303;
const DRAW_COPY: u16 = 304;
const DRAW_BLEND: u16 = 305;
const DRAW_BLACKNESS: u16 = 306;
const DRAW_WHITENESS: u16 = 307;
const DRAW_INVERS: u16 = 308;
const DRAW_ROP3: u16 = 309;
const DRAW_STROKE: u16 = 310;
const DRAW_TEXT: u16 = 311;
const DRAW_TRANSPARENT: u16 = 312;
const DRAW_ALPHA_BLEND: u16 = 313;
const DRAW_COMPOSITE: u16 = 318;

// ---------------------------------------------------------------- builders

fn rect(l: i32, t: i32, r: i32, b: i32) -> Rect {
    Rect::new(l, t, r, b)
}

fn draw_on(surface_id: u32, bbox: Rect, clip: Clip, op: DrawOp) -> Command {
    Command::Draw(Drawable {
        surface_id,
        effect: 0,
        self_bitmap: None,
        bbox,
        clip,
        mm_time: 0,
        surfaces_dest: [-1; 3],
        surfaces_rects: [Rect::default(); 3],
        op,
    })
}

fn draw(bbox: Rect, clip: Clip, op: DrawOp) -> Command {
    draw_on(0, bbox, clip, op)
}

fn noclip() -> Clip {
    Clip::None
}

fn clips() -> Clip {
    Clip::Rects(vec![
        rect(10, 10, 70, 50),
        rect(50, 30, 150, 90),
        rect(120, 95, 180, 120),
    ])
}

/// A deterministic byte pattern.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

fn palette(n: usize, seed: u32) -> Palette {
    let b = bytes(n * 4, seed);
    Palette {
        unique: 0,
        entries: b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]))
            .collect(),
    }
}

fn bitmap_image(format: BitmapFormat, w: u32, h: u32, top_down: bool, seed: u32) -> Image {
    let stride = (w * format.bpp()).div_ceil(8).next_multiple_of(4);
    let mut data = bytes((stride * h) as usize, seed);
    if format == BitmapFormat::Rgb32 {
        for p in data.chunks_exact_mut(4) {
            p[3] = 0;
        }
    }
    let pal = format
        .has_palette()
        .then(|| palette(1 << format.bpp(), seed ^ 0x55));
    Image {
        id: 0,
        flags: 0,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format,
            flags: if top_down { BITMAP_TOP_DOWN } else { 0 },
            width: w,
            height: h,
            stride,
            palette: pal,
            data,
        }),
    }
}

/// A smooth RGB32 picture (gradients), top-down.
fn gradient(w: u32, h: u32, seed: u32) -> Image {
    let mut data = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[
                (x * 255 / w.max(1)) as u8 ^ (seed as u8),
                (y * 255 / h.max(1)) as u8,
                ((x + y) * 3 + seed) as u8,
                0,
            ]);
        }
    }
    Image {
        id: 0,
        flags: 0,
        width: w,
        height: h,
        data: ImageData::Bitmap(Bitmap {
            format: BitmapFormat::Rgb32,
            flags: BITMAP_TOP_DOWN,
            width: w,
            height: h,
            stride: w * 4,
            palette: None,
            data,
        }),
    }
}

fn rgba_image(w: u32, h: u32, seed: u32) -> Image {
    let mut img = bitmap_image(BitmapFormat::Rgba, w, h, true, seed);
    if let ImageData::Bitmap(b) = &mut img.data {
        // Premultiplied alpha: colour channels never exceed alpha.
        for p in b.data.chunks_exact_mut(4) {
            let a = p[3];
            for c in &mut p[..3] {
                *c = ((u16::from(*c) * u16::from(a)) / 255) as u8;
            }
        }
    }
    img
}

fn quic_image(w: u32, h: u32, seed: u32) -> Image {
    let g = gradient(w, h, seed);
    let ImageData::Bitmap(b) = &g.data else {
        unreachable!()
    };
    let r = ImageRef::new(&b.data, w, h, (w * 4) as usize, PixelFormat::Rgb32, true).unwrap();
    Image {
        data: ImageData::Quic(quic::encode(&r).unwrap()),
        ..g
    }
}

fn surface_image(id: u32, w: u32, h: u32) -> Image {
    Image {
        id: 0,
        flags: 0,
        width: w,
        height: h,
        data: ImageData::Surface(id),
    }
}

fn mask(format: BitmapFormat, w: u32, h: u32, invers: bool, pos: Point) -> Mask {
    Mask {
        flags: u8::from(invers),
        pos,
        bitmap: Box::new(bitmap_image(format, w, h, true, 77)),
    }
}

fn solid(c: u32) -> Brush {
    Brush::Solid(c)
}

fn pattern(format: BitmapFormat, x: i32, y: i32) -> Brush {
    Brush::Pattern {
        image: Box::new(bitmap_image(format, 8, 8, true, 9)),
        pos: Point { x, y },
    }
}

fn copy_op(src: Image, src_area: Rect, rop: u16, scale: ScaleMode, mask: Option<Mask>) -> CopyOp {
    CopyOp {
        src: Box::new(src),
        src_area,
        rop: Ropd(rop),
        scale_mode: scale,
        mask,
    }
}

fn full(img: &Image) -> Rect {
    rect(0, 0, img.width as i32, img.height as i32)
}

fn pfix(x: i32, y: i32) -> PointFix {
    PointFix {
        x: x * 16,
        y: y * 16,
    }
}

fn glyphs(bpp: u32, flags: u16) -> GlyphString {
    let mut v = Vec::new();
    for i in 0..5 {
        let (w, h) = (7 + i as u16, 11u16);
        let row = (u32::from(w) * bpp).div_ceil(8) as usize;
        v.push(RasterGlyph {
            render_pos: Point {
                x: 20 + i * 14,
                y: 40,
            },
            glyph_origin: Point { x: 0, y: -10 },
            width: w,
            height: h,
            data: bytes(row * usize::from(h), 31 + i as u32),
        });
    }
    GlyphString { flags, glyphs: v }
}

fn put() -> u16 {
    Ropd::OP_PUT
}

// ---------------------------------------------------------------- the oracle

/// What one variant showed.
struct Outcome {
    name: String,
    native: u64,
    want_native: u64,
    /// Draws that must *not* go out natively (the client would abort): they
    /// must reach it as images instead.
    fallback: bool,
    diff: Option<String>,
}

struct Oracle {
    h: Harness,
    probe: Probe,
    marker: u32,
    results: Vec<Outcome>,
    kind: &'static str,
}

/// Compares two BGRX frames; `None` when identical, else a summary.
fn diff_summary(want: &[u8], got: &[u8]) -> Option<String> {
    if want == got {
        return None;
    }
    if want.len() != got.len() {
        return Some(format!(
            "sizes differ: canvas {} client {}",
            want.len(),
            got.len()
        ));
    }
    let mut n = 0usize;
    let mut xbyte_only = 0usize;
    let (mut l, mut t, mut r, mut b) = (u32::MAX, u32::MAX, 0u32, 0u32);
    let mut samples = String::new();
    let mut max_delta = 0u8;
    for (i, (a, c)) in want.chunks_exact(4).zip(got.chunks_exact(4)).enumerate() {
        if a == c {
            continue;
        }
        if a[..3] == c[..3] {
            xbyte_only += 1;
        }
        for k in 0..3 {
            max_delta = max_delta.max(a[k].abs_diff(c[k]));
        }
        n += 1;
        let (x, y) = ((i as u32) % W, (i as u32) / W);
        l = l.min(x);
        t = t.min(y);
        r = r.max(x);
        b = b.max(y);
        if n <= 4 {
            let _ = write!(
                samples,
                " ({x},{y}) canvas={:08x} client={:08x}",
                u32::from_le_bytes([a[0], a[1], a[2], a[3]]),
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            );
        }
    }
    Some(format!(
        "{n} pixels differ ({xbyte_only} only in the X byte, max RGB delta {max_delta}) in x {l}..={r} y {t}..={b};{samples}"
    ))
}

impl Oracle {
    fn new(kind: &'static str) -> Oracle {
        Self::with_config(kind, open_config())
    }

    fn with_config(kind: &'static str, config: spice_server::ServerConfig) -> Oracle {
        let mut h = start(config);
        h.display.create_primary(common::primary(W, H));
        // An off-screen surface for SURFACE sources: surface 1, 64x48.
        h.display
            .command(Command::Surface(SurfaceCmd::Create(SurfaceCreate {
                surface_id: 1,
                format: SurfaceFormat::Xrgb32,
                width: 64,
                height: 48,
                stride: 64 * 4,
                flags: 0,
                position: 0,
                initial: None,
            })));
        let g = gradient(64, 48, 99);
        h.display.command(draw_on(
            1,
            full(&g),
            noclip(),
            DrawOp::Copy(copy_op(
                g.clone(),
                full(&g),
                put(),
                ScaleMode::Nearest,
                None,
            )),
        ));
        h.display.sync().unwrap();
        let probe = Probe::start(h.port(), None, "display");
        let mut o = Oracle {
            h,
            probe,
            marker: 0,
            results: Vec::new(),
            kind,
        };
        o.probe.wait_seen("MARK", T);
        o
    }

    fn send(&mut self, c: Command) {
        self.h.display.command(c);
    }

    /// Fills the marker pixel with a new colour and waits until the client
    /// shows it; returns the client's primary then, or `None` on timeout.
    fn settle(&mut self) -> Option<Vec<u8>> {
        self.marker += 1;
        let colour = (self.marker.wrapping_mul(0x9e37_79b9) >> 8) | 0x0000_0001;
        let (x, y) = (W as i32 - 1, H as i32 - 1);
        self.send(common::fill(rect(x, y, x + 1, y + 1), colour));
        self.h.display.sync().unwrap();
        let at = ((H - 1) * W + (W - 1)) as usize * 4;
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let got = self.probe.dump();
            if got.len() > at + 3 && got[at..at + 3] == colour.to_le_bytes()[..3] {
                return Some(got);
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        None
    }

    fn reconnect(&mut self) {
        self.probe = Probe::start(self.h.port(), None, "display");
        self.probe.wait_seen("MARK", T);
    }

    fn background(&mut self) {
        let g = gradient(W, H, 0);
        self.send(draw(
            full(&g),
            noclip(),
            DrawOp::Copy(copy_op(
                g.clone(),
                full(&g),
                put(),
                ScaleMode::Nearest,
                None,
            )),
        ));
        if self.settle().is_none() {
            self.reconnect();
            let _ = self.settle();
        }
    }

    /// Runs one variant: `cmds` are expected to go out as native `ty` messages
    /// and to change the picture.
    fn variant(&mut self, name: &str, ty: u16, cmds: Vec<Command>) {
        self.run(name, ty, cmds, false, true);
    }

    /// A variant whose draws legitimately change no pixel.
    fn variant_no_change(&mut self, name: &str, ty: u16, cmds: Vec<Command>) {
        self.run(name, ty, cmds, false, false);
    }

    /// A variant the server must *not* send natively (images instead).
    fn variant_fallback(&mut self, name: &str, ty: u16, cmds: Vec<Command>) {
        self.run(name, ty, cmds, true, true);
    }

    fn run(&mut self, name: &str, ty: u16, cmds: Vec<Command>, fallback: bool, changes: bool) {
        self.background();
        let (_, _, bg) = self.h.display.screenshot(0).unwrap();
        let want_native = if fallback { 0 } else { cmds.len() as u64 };
        let before = self.h.display.messages_sent(ty);
        for c in cmds {
            self.send(c);
        }
        let got = self.settle();
        let native = self.h.display.messages_sent(ty) - before;
        let native = if ty == DRAW_FILL {
            // The marker is a DRAW_FILL too (it may or may not be counted yet).
            native.min(want_native)
        } else {
            native
        };
        let (_, _, want) = self.h.display.screenshot(0).unwrap();
        let mut diff = match got {
            Some(got) => diff_summary(&want, &got),
            None => {
                let tail: Vec<String> = self.probe.log.iter().rev().take(5).cloned().collect();
                self.reconnect();
                Some(format!(
                    "the client never showed the marker (it disconnected or aborted); probe log tail {tail:?}"
                ))
            }
        };
        if diff.is_none() && changes {
            // Only the marker pixel changed: the draw did nothing on the canvas.
            let at = ((H - 1) * W + (W - 1)) as usize * 4;
            if want[..at] == bg[..at] {
                diff = Some(
                    "the draw changed no pixel of the canvas (the test proves nothing)".into(),
                );
            }
        }
        self.results.push(Outcome {
            name: name.to_owned(),
            native,
            want_native,
            fallback,
            diff,
        });
    }

    /// Prints the table and fails when any variant was not native or differs.
    fn finish(self) {
        let mut report = format!("== draw oracle: {} ==\n", self.kind);
        let mut bad = 0;
        for o in &self.results {
            let native_ok = if o.fallback {
                o.native == 0
            } else {
                o.native >= o.want_native
            };
            let ok = native_ok && o.diff.is_none();
            if !ok {
                bad += 1;
            }
            let _ = writeln!(
                report,
                "{} {:<44} native {}/{}{}{}",
                if ok { "PASS" } else { "FAIL" },
                o.name,
                o.native,
                o.want_native,
                if o.fallback {
                    " (must fall back to images)"
                } else {
                    ""
                },
                o.diff.as_ref().map_or(String::new(), |d| format!(" — {d}"))
            );
        }
        let _ = writeln!(
            report,
            "{}: {} of {} variants pass",
            self.kind,
            self.results.len() - bad,
            self.results.len()
        );
        eprint!("{report}");
        assert_eq!(bad, 0, "\n{report}");
    }
}

// ---------------------------------------------------------------- the tests

const ROPDS: [(&str, u16); 12] = [
    ("PUT", Ropd::OP_PUT),
    ("OR", Ropd::OP_OR),
    ("AND", Ropd::OP_AND),
    ("XOR", Ropd::OP_XOR),
    ("BLACKNESS", Ropd::OP_BLACKNESS),
    ("WHITENESS", Ropd::OP_WHITENESS),
    ("INVERS", Ropd::OP_INVERS),
    ("INVERS_SRC|PUT", Ropd::INVERS_SRC | Ropd::OP_PUT),
    ("INVERS_BRUSH|PUT", Ropd::INVERS_BRUSH | Ropd::OP_PUT),
    ("INVERS_DEST|AND", Ropd::INVERS_DEST | Ropd::OP_AND),
    ("INVERS_RES|OR", Ropd::INVERS_RES | Ropd::OP_OR),
    (
        "INVERS_SRC|INVERS_DEST|XOR",
        Ropd::INVERS_SRC | Ropd::INVERS_DEST | Ropd::OP_XOR,
    ),
];

#[test]
fn oracle_draw_fill() {
    let mut o = Oracle::new("DRAW_FILL");
    let bbox = rect(12, 8, 170, 110);
    let fill = |brush: Brush, rop: u16, clip: Clip, mask: Option<Mask>| {
        draw(
            bbox,
            clip,
            DrawOp::Fill {
                brush,
                rop: Ropd(rop),
                mask,
            },
        )
    };
    for (name, rop) in ROPDS {
        o.variant(
            &format!("solid {name}"),
            DRAW_FILL,
            vec![fill(solid(0x00c0_4020), rop, noclip(), None)],
        );
    }
    o.variant(
        "solid PUT, clip rects",
        DRAW_FILL,
        vec![fill(solid(0x0033_99ff), put(), clips(), None)],
    );
    o.variant(
        "pattern 32-bit PUT",
        DRAW_FILL,
        vec![fill(
            pattern(BitmapFormat::Rgb32, 0, 0),
            put(),
            noclip(),
            None,
        )],
    );
    o.variant(
        "pattern 32-bit XOR at (3,5), clip rects",
        DRAW_FILL,
        vec![fill(
            pattern(BitmapFormat::Rgb32, 3, 5),
            Ropd::OP_XOR,
            clips(),
            None,
        )],
    );
    o.variant(
        "pattern 8-bit palette PUT",
        DRAW_FILL,
        vec![fill(
            pattern(BitmapFormat::EightBit, -2, 1),
            put(),
            noclip(),
            None,
        )],
    );
    o.variant(
        "pattern 1-bit palette OR",
        DRAW_FILL,
        vec![fill(
            pattern(BitmapFormat::OneBitBe, 0, 0),
            Ropd::OP_OR,
            noclip(),
            None,
        )],
    );
    o.variant(
        "solid PUT, mask 1BIT_BE",
        DRAW_FILL,
        vec![fill(
            solid(0x00ff_ff00),
            put(),
            noclip(),
            Some(mask(
                BitmapFormat::OneBitBe,
                158,
                102,
                false,
                Point::default(),
            )),
        )],
    );
    o.variant(
        "solid XOR, mask 1BIT_LE inverted at (4,2)",
        DRAW_FILL,
        vec![fill(
            solid(0x0000_ff00),
            Ropd::OP_XOR,
            noclip(),
            Some(mask(
                BitmapFormat::OneBitLe,
                60,
                40,
                true,
                Point { x: 4, y: 2 },
            )),
        )],
    );
    o.variant(
        "bbox partly off the surface",
        DRAW_FILL,
        vec![draw(
            rect(-20, 100, 250, 200),
            noclip(),
            DrawOp::Fill {
                brush: solid(0x0012_3456),
                rop: Ropd(put()),
                mask: None,
            },
        )],
    );
    o.finish();
}

fn opaque(
    src: Image,
    area: Rect,
    brush: Brush,
    rop: u16,
    scale: ScaleMode,
    m: Option<Mask>,
) -> Command {
    draw(
        rect(20, 16, 84, 64),
        noclip(),
        DrawOp::Opaque {
            src: Box::new(src),
            src_area: area,
            brush,
            rop: Ropd(rop),
            scale_mode: scale,
            mask: m,
        },
    )
}

#[test]
fn oracle_draw_opaque() {
    let mut o = Oracle::new("DRAW_OPAQUE");
    let src = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 3);
    for (name, rop) in [
        ("PUT", put()),
        ("OR|INVERS_BRUSH", Ropd::OP_OR | Ropd::INVERS_BRUSH),
        ("AND", Ropd::OP_AND),
        ("XOR|INVERS_SRC", Ropd::OP_XOR | Ropd::INVERS_SRC),
    ] {
        o.variant(
            &format!("32-bit, solid brush, {name}"),
            DRAW_OPAQUE,
            vec![opaque(
                src.clone(),
                full(&src),
                solid(0x00a0_50f0),
                rop,
                ScaleMode::Nearest,
                None,
            )],
        );
    }
    o.variant(
        "32-bit, pattern brush, PUT",
        DRAW_OPAQUE,
        vec![opaque(
            src.clone(),
            full(&src),
            pattern(BitmapFormat::Rgb32, 1, 1),
            put(),
            ScaleMode::Nearest,
            None,
        )],
    );
    o.variant(
        "scaled nearest (32x24 -> 64x48)",
        DRAW_OPAQUE,
        vec![opaque(
            src.clone(),
            rect(0, 0, 32, 24),
            solid(0),
            put(),
            ScaleMode::Nearest,
            None,
        )],
    );
    o.variant(
        "mask 1BIT_BE",
        DRAW_OPAQUE,
        vec![opaque(
            src.clone(),
            full(&src),
            solid(0x0011_2233),
            put(),
            ScaleMode::Nearest,
            Some(mask(
                BitmapFormat::OneBitBe,
                64,
                48,
                false,
                Point::default(),
            )),
        )],
    );
    o.finish();
}

fn copy_cmd(bbox: Rect, clip: Clip, op: CopyOp) -> Command {
    draw(bbox, clip, DrawOp::Copy(op))
}

#[test]
fn oracle_draw_copy() {
    let mut o = Oracle::new("DRAW_COPY");
    let at = |w: u32, h: u32| rect(30, 20, 30 + w as i32, 20 + h as i32);
    for (name, fmt, td) in [
        ("1BIT_LE palette", BitmapFormat::OneBitLe, true),
        ("1BIT_BE palette", BitmapFormat::OneBitBe, false),
        ("4BIT_LE palette", BitmapFormat::FourBitLe, true),
        ("4BIT_BE palette", BitmapFormat::FourBitBe, true),
        ("8BIT palette, bottom-up", BitmapFormat::EightBit, false),
        ("16BIT", BitmapFormat::Rgb16, true),
        ("24BIT bottom-up", BitmapFormat::Rgb24, false),
        ("32BIT", BitmapFormat::Rgb32, true),
        ("32BIT bottom-up", BitmapFormat::Rgb32, false),
        ("RGBA", BitmapFormat::Rgba, true),
    ] {
        let img = bitmap_image(fmt, 61, 37, td, 5);
        o.variant(
            &format!("{name} 61x37"),
            DRAW_COPY,
            vec![copy_cmd(
                at(61, 37),
                noclip(),
                copy_op(img.clone(), full(&img), put(), ScaleMode::Nearest, None),
            )],
        );
    }
    let big = gradient(120, 90, 7);
    o.variant(
        "32BIT 120x90 (LZ4 on the wire)",
        DRAW_COPY,
        vec![copy_cmd(
            at(120, 90),
            noclip(),
            copy_op(big.clone(), full(&big), put(), ScaleMode::Nearest, None),
        )],
    );
    let q = quic_image(80, 60, 3);
    o.variant(
        "QUIC from the guest",
        DRAW_COPY,
        vec![copy_cmd(
            at(80, 60),
            noclip(),
            copy_op(q.clone(), full(&q), put(), ScaleMode::Nearest, None),
        )],
    );
    o.variant(
        "SURFACE 1 source area",
        DRAW_COPY,
        vec![copy_cmd(
            at(40, 30),
            noclip(),
            copy_op(
                surface_image(1, 64, 48),
                rect(10, 8, 50, 38),
                put(),
                ScaleMode::Nearest,
                None,
            ),
        )],
    );
    let img = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 8);
    o.variant(
        "src_area sub-rectangle",
        DRAW_COPY,
        vec![copy_cmd(
            at(30, 20),
            noclip(),
            copy_op(
                img.clone(),
                rect(17, 9, 47, 29),
                put(),
                ScaleMode::Nearest,
                None,
            ),
        )],
    );
    for (name, area, w, h, mode) in [
        (
            "scale up x2 nearest",
            rect(0, 0, 32, 24),
            64,
            48,
            ScaleMode::Nearest,
        ),
        (
            "scale down /2 nearest",
            rect(0, 0, 64, 48),
            32,
            24,
            ScaleMode::Nearest,
        ),
        (
            "scale up x2.5 interpolate",
            rect(0, 0, 32, 24),
            80,
            60,
            ScaleMode::Interpolate,
        ),
        (
            "scale down interpolate",
            rect(0, 0, 64, 48),
            40,
            30,
            ScaleMode::Interpolate,
        ),
    ] {
        let g = gradient(64, 48, 11);
        o.variant(
            name,
            DRAW_COPY,
            vec![copy_cmd(
                at(w, h),
                noclip(),
                copy_op(g.clone(), area, put(), mode, None),
            )],
        );
    }
    o.variant(
        "clip rects",
        DRAW_COPY,
        vec![copy_cmd(
            rect(0, 0, 192, 128),
            clips(),
            copy_op(
                gradient(192, 128, 50),
                rect(0, 0, 192, 128),
                put(),
                ScaleMode::Nearest,
                None,
            ),
        )],
    );
    o.variant(
        "mask 1BIT_BE",
        DRAW_COPY,
        vec![copy_cmd(
            at(64, 48),
            noclip(),
            copy_op(
                img.clone(),
                full(&img),
                put(),
                ScaleMode::Nearest,
                Some(mask(
                    BitmapFormat::OneBitBe,
                    64,
                    48,
                    false,
                    Point::default(),
                )),
            ),
        )],
    );
    o.variant(
        "mask 1BIT_LE inverted at (5,3)",
        DRAW_COPY,
        vec![copy_cmd(
            at(64, 48),
            noclip(),
            copy_op(
                img.clone(),
                full(&img),
                put(),
                ScaleMode::Nearest,
                Some(mask(
                    BitmapFormat::OneBitLe,
                    40,
                    30,
                    true,
                    Point { x: 5, y: 3 },
                )),
            ),
        )],
    );
    for (name, rop) in ROPDS {
        o.variant(
            &format!("ropd {name}"),
            DRAW_COPY,
            vec![copy_cmd(
                at(64, 48),
                noclip(),
                copy_op(img.clone(), full(&img), rop, ScaleMode::Nearest, None),
            )],
        );
    }
    o.finish();
}

#[test]
fn oracle_copy_bits() {
    let mut o = Oracle::new("COPY_BITS");
    for (name, bbox, src, clip) in [
        (
            "right, no overlap",
            rect(100, 10, 180, 60),
            (5, 5),
            noclip(),
        ),
        (
            "overlap down-right",
            rect(20, 20, 140, 100),
            (10, 12),
            noclip(),
        ),
        ("overlap up-left", rect(10, 12, 130, 92), (20, 20), noclip()),
        (
            "source partly off-surface",
            rect(0, 0, 60, 40),
            (150, 100),
            noclip(),
        ),
        ("clip rects", rect(0, 0, 190, 125), (2, 3), clips()),
    ] {
        o.variant(
            name,
            COPY_BITS,
            vec![draw(
                bbox,
                clip,
                DrawOp::CopyBits {
                    src_pos: Point { x: src.0, y: src.1 },
                },
            )],
        );
    }
    o.finish();
}

#[test]
fn oracle_draw_blend() {
    let mut o = Oracle::new("DRAW_BLEND");
    let img = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 21);
    let bbox = rect(40, 30, 104, 78);
    for (name, rop) in ROPDS {
        o.variant(
            &format!("ropd {name}"),
            DRAW_BLEND,
            vec![draw(
                bbox,
                noclip(),
                DrawOp::Blend(copy_op(
                    img.clone(),
                    full(&img),
                    rop,
                    ScaleMode::Nearest,
                    None,
                )),
            )],
        );
    }
    o.variant(
        "OR, scaled interpolate",
        DRAW_BLEND,
        vec![draw(
            rect(10, 10, 110, 90),
            noclip(),
            DrawOp::Blend(copy_op(
                img.clone(),
                full(&img),
                Ropd::OP_OR,
                ScaleMode::Interpolate,
                None,
            )),
        )],
    );
    o.variant(
        "XOR, mask, clip",
        DRAW_BLEND,
        vec![draw(
            bbox,
            clips(),
            DrawOp::Blend(copy_op(
                img.clone(),
                full(&img),
                Ropd::OP_XOR,
                ScaleMode::Nearest,
                Some(mask(
                    BitmapFormat::OneBitBe,
                    64,
                    48,
                    false,
                    Point::default(),
                )),
            )),
        )],
    );
    o.finish();
}

fn rop_only(o: &mut Oracle, ty: u16, make: fn(Option<Mask>) -> DrawOp) {
    o.variant(
        "plain",
        ty,
        vec![draw(rect(20, 10, 150, 100), noclip(), make(None))],
    );
    o.variant(
        "clip rects",
        ty,
        vec![draw(rect(0, 0, 192, 128), clips(), make(None))],
    );
    o.variant(
        "mask 1BIT_BE",
        ty,
        vec![draw(
            rect(20, 10, 84, 58),
            noclip(),
            make(Some(mask(
                BitmapFormat::OneBitBe,
                64,
                48,
                false,
                Point::default(),
            ))),
        )],
    );
    o.variant(
        "mask 1BIT_LE inverted at (3,7)",
        ty,
        vec![draw(
            rect(20, 10, 84, 58),
            noclip(),
            make(Some(mask(
                BitmapFormat::OneBitLe,
                50,
                30,
                true,
                Point { x: 3, y: 7 },
            ))),
        )],
    );
}

#[test]
fn oracle_draw_blackness() {
    let mut o = Oracle::new("DRAW_BLACKNESS");
    rop_only(&mut o, DRAW_BLACKNESS, |mask| DrawOp::Blackness { mask });
    o.finish();
}

#[test]
fn oracle_draw_whiteness() {
    let mut o = Oracle::new("DRAW_WHITENESS");
    rop_only(&mut o, DRAW_WHITENESS, |mask| DrawOp::Whiteness { mask });
    o.finish();
}

#[test]
fn oracle_draw_invers() {
    let mut o = Oracle::new("DRAW_INVERS");
    rop_only(&mut o, DRAW_INVERS, |mask| DrawOp::Invers { mask });
    o.finish();
}

#[test]
fn oracle_draw_rop3() {
    let mut o = Oracle::new("DRAW_ROP3");
    let img = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 41);
    let bbox = rect(30, 20, 94, 68);
    let rop3 = |rop3: u8, brush: Brush, scale: ScaleMode, area: Rect, m: Option<Mask>| {
        draw(
            bbox,
            noclip(),
            DrawOp::Rop3 {
                src: Box::new(img.clone()),
                src_area: area,
                brush,
                rop3,
                scale_mode: scale,
                mask: m,
            },
        )
    };
    for code in [0xb8u8, 0xe2, 0x96, 0xca, 0x1e, 0x6c, 0x01, 0xfe, 0x8e, 0x17] {
        o.variant(
            &format!("rop3 0x{code:02x}, solid brush"),
            DRAW_ROP3,
            vec![rop3(
                code,
                solid(0x0070_c030),
                ScaleMode::Nearest,
                full(&img),
                None,
            )],
        );
    }
    // Codes of fewer than three operands: spice-common aborts on them, so the
    // server sends the canvas's result as images.
    for code in [
        0x00u8, 0xff, 0xcc, 0x33, 0xf0, 0x0f, 0x5a, 0x66, 0x88, 0xee, 0x55,
    ] {
        o.variant_fallback(
            &format!("rop3 0x{code:02x} (2-operand)"),
            DRAW_ROP3,
            vec![rop3(
                code,
                solid(0x0070_c030),
                ScaleMode::Nearest,
                full(&img),
                None,
            )],
        );
    }
    for code in [0xb8u8, 0x1e, 0xe2] {
        o.variant(
            &format!("rop3 0x{code:02x}, pattern brush"),
            DRAW_ROP3,
            vec![rop3(
                code,
                pattern(BitmapFormat::Rgb32, 2, 3),
                ScaleMode::Nearest,
                full(&img),
                None,
            )],
        );
    }
    o.variant(
        "rop3 0x96 scaled nearest",
        DRAW_ROP3,
        vec![rop3(
            0x96,
            solid(0x0011_2233),
            ScaleMode::Nearest,
            rect(0, 0, 32, 24),
            None,
        )],
    );
    o.variant(
        "rop3 0xca mask",
        DRAW_ROP3,
        vec![rop3(
            0xca,
            solid(0x00f0_0f55),
            ScaleMode::Nearest,
            full(&img),
            Some(mask(
                BitmapFormat::OneBitBe,
                64,
                48,
                false,
                Point::default(),
            )),
        )],
    );
    o.finish();
}

fn stroke(path: Vec<PathSeg>, attr: LineAttr, brush: Brush, fore: u16) -> Command {
    draw(
        rect(0, 0, W as i32, H as i32),
        noclip(),
        DrawOp::Stroke {
            path: Path { segments: path },
            attr,
            brush,
            fore_mode: fore,
            back_mode: Ropd::OP_PUT,
        },
    )
}

fn seg(flags: u32, pts: &[(i32, i32)]) -> PathSeg {
    PathSeg {
        flags,
        points: pts.iter().map(|&(x, y)| pfix(x, y)).collect(),
    }
}

#[test]
fn oracle_draw_stroke() {
    let mut o = Oracle::new("DRAW_STROKE");
    let thin = LineAttr::default();
    let be = PATH_BEGIN | PATH_END;
    o.variant(
        "horizontal, vertical, diagonal lines",
        DRAW_STROKE,
        vec![
            stroke(
                vec![seg(be, &[(10, 10), (180, 10)])],
                thin.clone(),
                solid(0x00ff_0000),
                put(),
            ),
            stroke(
                vec![seg(be, &[(20, 5), (20, 120)])],
                thin.clone(),
                solid(0x0000_ff00),
                put(),
            ),
            stroke(
                vec![seg(be, &[(30, 20), (170, 115)])],
                thin.clone(),
                solid(0x0000_00ff),
                put(),
            ),
            stroke(
                vec![seg(be, &[(170, 20), (40, 90)])],
                thin.clone(),
                solid(0x00ff_ffff),
                put(),
            ),
        ],
    );
    o.variant(
        "closed polyline",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(
                be | PATH_CLOSE,
                &[(40, 30), (150, 40), (120, 110), (30, 90)],
            )],
            thin.clone(),
            solid(0x00ff_ff00),
            put(),
        )],
    );
    o.variant(
        "bezier",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(
                be | PATH_BEZIER,
                &[(10, 100), (60, 0), (120, 128), (180, 20)],
            )],
            thin.clone(),
            solid(0x0000_ffff),
            put(),
        )],
    );
    o.variant(
        "two figures",
        DRAW_STROKE,
        vec![stroke(
            vec![
                seg(be, &[(5, 5), (60, 60)]),
                seg(be, &[(100, 5), (150, 60), (180, 10)]),
            ],
            thin.clone(),
            solid(0x00ff_00ff),
            put(),
        )],
    );
    o.variant(
        "XOR fore mode",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(be, &[(10, 60), (180, 64)])],
            thin.clone(),
            solid(0x00ff_ffff),
            Ropd::OP_XOR,
        )],
    );
    o.variant(
        "styled (dashes)",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(be, &[(10, 30), (180, 30), (180, 100)])],
            LineAttr {
                flags: LINE_STYLED,
                style: vec![5 * 16, 3 * 16],
                ..LineAttr::default()
            },
            solid(0x00ff_8000),
            put(),
        )],
    );
    o.variant(
        "wide line (width 5)",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(be, &[(20, 50), (170, 80)])],
            LineAttr {
                width: 5 * 16,
                ..LineAttr::default()
            },
            solid(0x0080_ff80),
            put(),
        )],
    );
    o.variant(
        "pattern brush",
        DRAW_STROKE,
        vec![stroke(
            vec![seg(be, &[(10, 70), (180, 75)])],
            thin,
            pattern(BitmapFormat::Rgb32, 0, 0),
            put(),
        )],
    );
    o.finish();
}

fn text(s: GlyphString, back_area: Rect, fore: Brush, back: Brush, fore_mode: u16) -> Command {
    draw(
        rect(10, 20, 110, 60),
        noclip(),
        DrawOp::Text {
            string: s,
            back_area,
            fore_brush: fore,
            back_brush: back,
            fore_mode,
            back_mode: Ropd::OP_PUT,
        },
    )
}

#[test]
fn oracle_draw_text() {
    let mut o = Oracle::new("DRAW_TEXT");
    for (name, bpp, flag) in [
        ("A1", 1, STRING_RASTER_A1),
        ("A4", 4, STRING_RASTER_A4),
        ("A8", 8, STRING_RASTER_A8),
    ] {
        // A8 text is rendered server-side (spice-common reads past A8 glyphs).
        let run = if bpp == 8 {
            Oracle::variant_fallback
        } else {
            Oracle::variant
        };
        run(
            &mut o,
            &format!("{name} glyphs, solid fore"),
            DRAW_TEXT,
            vec![text(
                glyphs(bpp, flag),
                Rect::default(),
                solid(0x00ff_ff00),
                Brush::None,
                put(),
            )],
        );
    }
    o.variant(
        "A1 glyphs with back area and back brush",
        DRAW_TEXT,
        vec![text(
            glyphs(1, STRING_RASTER_A1),
            rect(15, 25, 100, 55),
            solid(0x0000_0000),
            solid(0x00e0_e0e0),
            put(),
        )],
    );
    o.variant(
        "A1 glyphs, pattern fore brush",
        DRAW_TEXT,
        vec![text(
            glyphs(1, STRING_RASTER_A1),
            Rect::default(),
            pattern(BitmapFormat::Rgb32, 0, 0),
            Brush::None,
            put(),
        )],
    );
    o.variant_fallback(
        "A8 glyphs, XOR fore mode",
        DRAW_TEXT,
        vec![text(
            glyphs(8, STRING_RASTER_A8),
            Rect::default(),
            solid(0x00ff_ffff),
            Brush::None,
            Ropd::OP_XOR,
        )],
    );
    o.finish();
}

#[test]
fn oracle_draw_transparent() {
    let mut o = Oracle::new("DRAW_TRANSPARENT");
    let key = 0x0010_2030u32;
    let mut img = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 61);
    if let ImageData::Bitmap(b) = &mut img.data {
        for (i, p) in b.data.chunks_exact_mut(4).enumerate() {
            if (i / 7) % 3 == 0 {
                p.copy_from_slice(&key.to_le_bytes());
            }
        }
    }
    let tr = |src: Image, area: Rect, bbox: Rect, src_color: u32| {
        draw(
            bbox,
            noclip(),
            DrawOp::Transparent {
                src: Box::new(src),
                src_area: area,
                src_color,
                true_color: src_color,
            },
        )
    };
    o.variant(
        "32-bit with a key colour",
        DRAW_TRANSPARENT,
        vec![tr(img.clone(), full(&img), rect(30, 20, 94, 68), key)],
    );
    o.variant(
        "32-bit scaled",
        DRAW_TRANSPARENT,
        vec![tr(img.clone(), full(&img), rect(10, 10, 138, 106), key)],
    );
    let p8 = bitmap_image(BitmapFormat::EightBit, 40, 30, true, 62);
    let key8 = if let ImageData::Bitmap(b) = &p8.data {
        b.palette.as_ref().unwrap().entries[usize::from(b.data[0])]
    } else {
        0
    };
    o.variant(
        "8-bit palette, key = first pixel's colour",
        DRAW_TRANSPARENT,
        vec![tr(p8.clone(), full(&p8), rect(50, 40, 90, 70), key8)],
    );
    o.finish();
}

#[test]
fn oracle_draw_alpha_blend() {
    let mut o = Oracle::new("DRAW_ALPHA_BLEND");
    let img = bitmap_image(BitmapFormat::Rgb32, 64, 48, true, 71);
    let rgba = rgba_image(64, 48, 72);
    let ab = |src: &Image, flags: u16, alpha: u8, bbox: Rect| {
        draw(
            bbox,
            noclip(),
            DrawOp::AlphaBlend {
                alpha_flags: flags,
                alpha,
                src: Box::new(src.clone()),
                src_area: full(src),
            },
        )
    };
    let bbox = rect(30, 20, 94, 68);
    for a in [255u8, 128, 1] {
        o.variant(
            &format!("32-bit, constant alpha {a}"),
            DRAW_ALPHA_BLEND,
            vec![ab(&img, 0, a, bbox)],
        );
    }
    o.variant_no_change(
        "32-bit, constant alpha 0",
        DRAW_ALPHA_BLEND,
        vec![ab(&img, 0, 0, bbox)],
    );
    o.variant(
        "RGBA source with SRC_SURFACE_HAS_ALPHA, alpha 255",
        DRAW_ALPHA_BLEND,
        vec![ab(&rgba, 2, 255, bbox)],
    );
    o.variant(
        "RGBA source with SRC_SURFACE_HAS_ALPHA, alpha 100",
        DRAW_ALPHA_BLEND,
        vec![ab(&rgba, 2, 100, bbox)],
    );
    o.variant(
        "32-bit scaled (bilinear), alpha 200",
        DRAW_ALPHA_BLEND,
        vec![ab(&img, 0, 200, rect(10, 10, 150, 110))],
    );
    o.finish();
}

/// `SPICE_COMPOSITE_*` flag helpers.
const OP_SRC: u32 = 1;
const OP_OVER: u32 = 3;
const OP_ADD: u32 = 12;
const REPEAT_NORMAL: u32 = 1 << 14;

#[test]
fn oracle_draw_composite() {
    let mut o = Oracle::new("DRAW_COMPOSITE");
    let rgba = rgba_image(48, 32, 81);
    let mask_img = rgba_image(48, 32, 82);
    let comp = |flags: u32, mask: Option<Box<Image>>, st: Option<Transform>, bbox: Rect| {
        draw(
            bbox,
            noclip(),
            DrawOp::Composite {
                flags,
                src: Box::new(rgba.clone()),
                src_transform: st,
                mask,
                mask_transform: None,
                src_origin: Point16 { x: 0, y: 0 },
                mask_origin: Point16 { x: 0, y: 0 },
            },
        )
    };
    let bbox = rect(40, 30, 88, 62);
    for (name, op) in [("SRC", OP_SRC), ("OVER", OP_OVER), ("ADD", OP_ADD)] {
        o.variant(
            &format!("op {name}"),
            DRAW_COMPOSITE,
            vec![comp(op, None, None, bbox)],
        );
    }
    o.variant(
        "OVER with an RGBA mask",
        DRAW_COMPOSITE,
        vec![comp(OP_OVER, Some(Box::new(mask_img)), None, bbox)],
    );
    o.variant(
        "OVER, repeat normal over a larger box",
        DRAW_COMPOSITE,
        vec![comp(
            OP_OVER | REPEAT_NORMAL,
            None,
            None,
            rect(10, 10, 170, 110),
        )],
    );
    // 16.16 fixed point: scale the source by 1/2 (dest 2x larger).
    let half = Transform([0x8000, 0, 0, 0, 0x8000, 0]);
    o.variant(
        "SRC with a scaling source transform",
        DRAW_COMPOSITE,
        vec![comp(OP_SRC, None, Some(half), rect(20, 20, 116, 84))],
    );
    o.finish();
}

/// The same bitmap formats with image compression off: every image travels
/// as a BITMAP (the other copy test gets LZ4 for the larger RGB images).
#[test]
fn oracle_draw_copy_uncompressed_bitmaps() {
    let mut o = Oracle::with_config(
        "DRAW_COPY (BITMAP only)",
        spice_server::ServerConfig {
            image_compression: spice_server::ImageCompression::Off,
            ..open_config()
        },
    );
    for (name, fmt, td) in [
        ("1BIT_LE palette", BitmapFormat::OneBitLe, true),
        ("4BIT_BE palette", BitmapFormat::FourBitBe, false),
        ("8BIT palette", BitmapFormat::EightBit, true),
        ("16BIT bottom-up", BitmapFormat::Rgb16, false),
        ("24BIT", BitmapFormat::Rgb24, true),
        ("24BIT bottom-up", BitmapFormat::Rgb24, false),
        ("32BIT", BitmapFormat::Rgb32, true),
        ("RGBA bottom-up", BitmapFormat::Rgba, false),
    ] {
        let img = bitmap_image(fmt, 61, 37, td, 5);
        o.variant(
            &format!("{name} 61x37"),
            DRAW_COPY,
            vec![copy_cmd(
                rect(30, 20, 91, 57),
                noclip(),
                copy_op(img.clone(), full(&img), put(), ScaleMode::Nearest, None),
            )],
        );
    }
    o.finish();
}

/// Backpressure: a burst far larger than the client's queue. Draws beyond the
/// queue cap become damage (sent as images from the canvas), later draws keep
/// becoming damage until it is flushed, and the client still ends up with
/// exactly the canvas — with non-idempotent draws (XOR, INVERS, COPY_BITS)
/// that would show any draw applied twice or lost.
#[test]
fn collapse_under_backpressure_stays_exact() {
    let mut o = Oracle::new("collapse");
    o.background();
    let fills_before = o.h.display.messages_sent(DRAW_FILL);
    let copies_before = o.h.display.messages_sent(DRAW_COPY);
    let n = 20_000;
    for i in 0..n {
        let x = (i * 7) % 180;
        let y = (i * 13) % 120;
        let c = match i % 5 {
            0 | 1 => draw(
                rect(x, y, x + 9, y + 6),
                noclip(),
                DrawOp::Fill {
                    brush: solid(0x0010_2040_u32.wrapping_mul(i as u32 + 1) & 0x00ff_ffff),
                    rop: Ropd(Ropd::OP_XOR),
                    mask: None,
                },
            ),
            2 => draw(
                rect(x, y, x + 5, y + 5),
                noclip(),
                DrawOp::Invers { mask: None },
            ),
            3 => draw(
                rect(x, y, x + 12, y + 8),
                noclip(),
                DrawOp::CopyBits {
                    src_pos: Point {
                        x: (x + 3) % 180,
                        y: (y + 2) % 120,
                    },
                },
            ),
            _ => draw(
                rect(x, y, x + 6, y + 4),
                clips(),
                DrawOp::Fill {
                    brush: pattern(BitmapFormat::Rgb32, 1, 2),
                    rop: Ropd(Ropd::OP_XOR),
                    mask: None,
                },
            ),
        };
        o.send(c);
    }
    let got = o.settle().expect("the client keeps up after the burst");
    let (_, _, want) = o.h.display.screenshot(0).unwrap();
    let fills = o.h.display.messages_sent(DRAW_FILL) - fills_before;
    let copies = o.h.display.messages_sent(DRAW_COPY) - copies_before;
    eprintln!("collapse: {n} draws -> {fills} native DRAW_FILLs, {copies} image DRAW_COPYs");
    if let Some(d) = diff_summary(&want, &got) {
        panic!("after collapsing, the client differs from the canvas: {d}");
    }
    assert!(
        copies > 0 && fills < u64::try_from(n).unwrap(),
        "the burst never collapsed ({fills} fills, {copies} copies): the test proves nothing"
    );
}
