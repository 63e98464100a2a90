//! Display-path benchmarks: the canvas and the worker on the demo scene.
//!
//! - canvas fill and copy of a 1920×1080 frame, each as a fraction of a
//!   `memcpy` of the same bytes in the same run (`ratio …` lines);
//! - the demo desktop's commands rendered by the canvas and marshalled into
//!   SPICE draw messages (commands/s), and pushed through the display worker
//!   thread (commands/s).

// Bench set-up uses fixed, valid inputs; numeric casts are on small constants.
#![allow(
    clippy::unwrap_used,
    missing_docs,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qxl_benches::ratio_to_memcpy;
use spice_server::canvas::{self, Pixels, Surface, SurfaceSource};
use spice_server::channel::display::draw_marshal::marshal_draw;
use spice_server::command::{
    BITMAP_TOP_DOWN, Bitmap, BitmapFormat, Brush, Command, CopyOp, DisplaySink, DrawOp, Drawable,
    Image, ImageData, Mask, Point, Rect, Ropd, ScaleMode, SurfaceCreate, SurfaceFormat,
};
use vmm_glue::scene::{DesktopScene, Scene};

struct NoSources;

impl SurfaceSource for NoSources {
    fn read(&self, _: u32, _: &Rect) -> Option<Pixels> {
        None
    }
}

fn draw(bbox: Rect, op: DrawOp) -> Drawable {
    Drawable::on_primary(bbox, op)
}

fn bench_canvas(c: &mut Criterion) {
    let (w, h) = (1920u32, 1080u32);
    let bytes = (w * h * 4) as usize;
    let full = Rect::new(0, 0, w as i32, h as i32);
    let mut surface = Surface::new(w, h, SurfaceFormat::Xrgb32).unwrap();
    let fill = draw(
        full,
        DrawOp::Fill {
            brush: Brush::Solid(0x0033_6699),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
    );
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let copy = draw(full, DrawOp::Copy(CopyOp::put(Image::rgb32(w, h, data))));
    let mut g = c.benchmark_group("canvas");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("fill_1920x1080", |b| {
        b.iter(|| black_box(canvas::draw(&mut surface, &fill, &NoSources)));
    });
    g.bench_function("copy_1920x1080", |b| {
        b.iter(|| black_box(canvas::draw(&mut surface, &copy, &NoSources)));
    });
    g.finish();
    ratio_to_memcpy("canvas_fill_1920x1080", bytes, || {
        black_box(canvas::draw(&mut surface, &fill, &NoSources));
    });
    ratio_to_memcpy("canvas_copy_1920x1080", bytes, || {
        black_box(canvas::draw(&mut surface, &copy, &NoSources));
    });
}

/// The demo desktop's draw commands for `frames` frames.
fn demo_commands(frames: u64) -> Vec<Drawable> {
    let mut scene = DesktopScene::new(1024, 768);
    let mut v = Vec::new();
    for n in 0..frames {
        for cmd in scene.frame(n).draws {
            if let Command::Draw(d) = cmd {
                v.push(d);
            }
        }
    }
    v
}

fn bench_demo_scene(c: &mut Criterion) {
    let cmds = demo_commands(60);
    let raw: usize = cmds
        .iter()
        .map(|d| d.bbox.width() as usize * d.bbox.height() as usize * 4)
        .sum();
    let mut surface = Surface::new(1024, 768, SurfaceFormat::Xrgb32).unwrap();
    let mut g = c.benchmark_group("demo_scene");
    g.throughput(Throughput::Elements(cmds.len() as u64));
    g.bench_function("canvas_render_60_frames", |b| {
        b.iter(|| {
            for d in &cmds {
                black_box(canvas::draw(&mut surface, d, &NoSources));
            }
        });
    });
    g.bench_function("marshal_lz4_60_frames", |b| {
        b.iter(|| {
            for d in &cmds {
                black_box(marshal_draw(d, true).unwrap());
            }
        });
    });
    let (mut display, _join) = spice_server::worker::spawn().unwrap();
    display.create_primary(SurfaceCreate {
        surface_id: 0,
        format: SurfaceFormat::Xrgb32,
        width: 1024,
        height: 768,
        stride: 4096,
        flags: 0,
        position: 0,
        initial: None,
    });
    g.bench_function("worker_60_frames", |b| {
        b.iter(|| {
            for d in &cmds {
                display.command(Command::Draw(d.clone()));
            }
            display.sync().unwrap();
        });
    });
    g.finish();
    let t = qxl_benches::median_ns(9, 1, || {
        for d in &cmds {
            black_box(marshal_draw(d, true).unwrap());
        }
    });
    let wire: usize = cmds
        .iter()
        .map(|d| marshal_draw(d, true).unwrap().1.len())
        .sum();
    println!(
        "demo scene: {} commands in 60 frames, {raw} bytes of raw damage, {wire} bytes as native LZ4 messages ({:.1} KB/frame, ratio {:.1}); marshal {:.0} commands/s",
        cmds.len(),
        wire as f64 / 60.0 / 1e3,
        raw as f64 / wire as f64,
        cmds.len() as f64 / t * 1e9
    );
}

fn bitmap(format: BitmapFormat, w: u32, h: u32, top_down: bool) -> Box<Image> {
    let stride = (w * format.bpp()).div_ceil(8);
    let data: Vec<u8> = (0..(stride * h) as usize)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    Box::new(Image {
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
            palette: None,
            data,
        }),
    })
}

/// Other draw types on a 512×512 area of a 1920×1080 surface (throughput in
/// destination bytes): where the direct paths do not reach.
fn bench_canvas_other(c: &mut Criterion) {
    let mut surface = Surface::new(1920, 1080, SurfaceFormat::Xrgb32).unwrap();
    let (w, h) = (512u32, 512u32);
    let area = Rect::new(64, 64, 64 + w as i32, 64 + h as i32);
    let src_area = Rect::new(0, 0, w as i32, h as i32);
    let mask = || {
        Some(Mask {
            flags: 0,
            pos: Point { x: 0, y: 0 },
            bitmap: bitmap(BitmapFormat::OneBitBe, w, h, true),
        })
    };
    let cases: Vec<(&str, DrawOp)> = vec![
        (
            "fill_masked_512",
            DrawOp::Fill {
                brush: Brush::Solid(0x0012_3456),
                rop: Ropd(Ropd::OP_PUT),
                mask: mask(),
            },
        ),
        (
            "copy_24bit_bottom_up_512",
            DrawOp::Copy(CopyOp {
                src: bitmap(BitmapFormat::Rgb24, w, h, false),
                src_area,
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Nearest,
                mask: None,
            }),
        ),
        (
            "copy_16bit_512",
            DrawOp::Copy(CopyOp {
                src: bitmap(BitmapFormat::Rgb16, w, h, true),
                src_area,
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Nearest,
                mask: None,
            }),
        ),
        (
            "copy_masked_512",
            DrawOp::Copy(CopyOp {
                src: bitmap(BitmapFormat::Rgb32, w, h, true),
                src_area,
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Nearest,
                mask: mask(),
            }),
        ),
        (
            "copy_scaled_512",
            DrawOp::Copy(CopyOp {
                src: bitmap(BitmapFormat::Rgb32, w / 2, h / 2, true),
                src_area: Rect::new(0, 0, w as i32 / 2, h as i32 / 2),
                rop: Ropd(Ropd::OP_PUT),
                scale_mode: ScaleMode::Interpolate,
                mask: None,
            }),
        ),
        (
            "opaque_512",
            DrawOp::Opaque {
                src: bitmap(BitmapFormat::Rgb32, w, h, true),
                src_area,
                brush: Brush::Solid(0x0080_8080),
                rop: Ropd(Ropd::OP_AND),
                scale_mode: ScaleMode::Nearest,
                mask: None,
            },
        ),
        (
            "rop3_512",
            DrawOp::Rop3 {
                src: bitmap(BitmapFormat::Rgb32, w, h, true),
                src_area,
                brush: Brush::Solid(0x00ff_00ff),
                rop3: 0xca,
                scale_mode: ScaleMode::Nearest,
                mask: None,
            },
        ),
        (
            "transparent_512",
            DrawOp::Transparent {
                src: bitmap(BitmapFormat::Rgb32, w, h, true),
                src_area,
                src_color: 0x0012_3456,
                true_color: 0x0012_3456,
            },
        ),
        (
            "alpha_blend_512",
            DrawOp::AlphaBlend {
                alpha_flags: 0,
                alpha: 0x80,
                src: bitmap(BitmapFormat::Rgba, w, h, true),
                src_area,
            },
        ),
        (
            "copy_bits_scroll_1920x1080",
            DrawOp::CopyBits {
                src_pos: Point { x: 0, y: 16 },
            },
        ),
    ];
    let mut g = c.benchmark_group("canvas_other");
    for (name, op) in cases {
        let bbox = if name.starts_with("copy_bits") {
            Rect::new(0, 0, 1920, 1080 - 16)
        } else {
            area
        };
        g.throughput(Throughput::Bytes(
            u64::from(bbox.width()) * u64::from(bbox.height()) * 4,
        ));
        let d = draw(bbox, op);
        g.bench_function(name, |b| {
            b.iter(|| black_box(canvas::draw(&mut surface, &d, &NoSources)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench_canvas, bench_canvas_other, bench_demo_scene);
criterion_main!(benches);
