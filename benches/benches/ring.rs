//! Ring decoding benchmarks: how fast guest commands become owned values.
//!
//! Goals (issue 2): at least 2 million small draw commands per second per core,
//! and bitmap decoding at ≥ 0.5 of a `memcpy` of the same bytes (measured in the
//! same run, printed as `ratio …` lines).

// Bench set-up uses fixed, valid inputs: unwraps cannot fail on guest data here, and
// numeric casts are on small constants.
#![allow(
    clippy::unwrap_used,
    missing_docs,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_lossless
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use devices::qxl::decode::{Limits, decode_command};
use devices::qxl::memslot::{MemSlot, MemSlots};
use devices::qxl::mock::encode::{GuestHeap, encode_command};
use qxl_benches::ratio_to_memcpy;
use spice_server::command::{Brush, Clip, Command, CopyOp, DrawOp, Drawable, Image, Rect, Ropd};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MEM: u64 = 64 << 20;

fn setup() -> (GuestMemoryMmap, MemSlots, GuestHeap) {
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), usize::try_from(MEM).unwrap())]).unwrap();
    let mut slots = MemSlots::new();
    slots
        .add(
            1,
            MemSlot {
                virt_start: 0,
                size: MEM,
                local_start: 0,
                generation: 0,
            },
        )
        .unwrap();
    let heap = GuestHeap::new(1, 0, 0, 0x1000, MEM);
    (mem, slots, heap)
}

fn drawable(bbox: Rect, clip: Clip, op: DrawOp) -> Command {
    Command::Draw(Drawable::on_primary(bbox, op).with_clip(clip))
}

fn small_fill(i: i32) -> Command {
    let r = Rect::new(i % 1000, i % 700, i % 1000 + 16, i % 700 + 16);
    drawable(
        r,
        Clip::None,
        DrawOp::Fill {
            brush: Brush::Solid(0xff00_8040),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
    )
}

/// A DRAW_COPY exactly as Linux `qxl_draw_dirty_fb` sends it: top-down 32-bit
/// bitmap in one chunk, one clip rect equal to the bbox.
fn frame_copy(w: u32, h: u32) -> Command {
    let data: Vec<u8> = (0..w * h * 4).map(|i| (i * 7 % 251) as u8).collect();
    let r = Rect::new(0, 0, w as i32, h as i32);
    drawable(
        r,
        Clip::Rects(vec![r]),
        DrawOp::Copy(CopyOp::put(Image::rgb32(w, h, data))),
    )
}

fn bench_decode(c: &mut Criterion) {
    let (mem, slots, mut heap) = setup();
    let limits = Limits::default();

    // Small fills: 1024 distinct commands, decoded in a loop.
    let fills: Vec<(u64, u32)> = (0..1024)
        .map(|i| {
            encode_command(
                &mem,
                &mut heap,
                &small_fill(i),
                u64::try_from(i + 1).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("ring_decode");
    g.throughput(Throughput::Elements(fills.len() as u64));
    g.bench_function("small_fill_x1024", |b| {
        b.iter(|| {
            for &(phys, ty) in &fills {
                black_box(decode_command(&mem, &slots, ty, phys, 0, &limits).unwrap());
            }
        });
    });

    // One full-frame bitmap copy (1024x768x4 = 3 MiB).
    let (w, h) = (1024u32, 768u32);
    let bytes = (w * h * 4) as usize;
    let (phys, ty) = encode_command(&mem, &mut heap, &frame_copy(w, h), 5000).unwrap();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bitmap_copy_1024x768", |b| {
        b.iter(|| black_box(decode_command(&mem, &slots, ty, phys, 0, &limits).unwrap()));
    });
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    g.bench_function("memcpy_1024x768x4", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
    });
    g.finish();

    // Same-run ratios for the goals.
    ratio_to_memcpy("bitmap_copy_decode_1024x768", bytes, || {
        black_box(decode_command(&mem, &slots, ty, phys, 0, &limits).unwrap());
    });
    let t = qxl_benches::median_ns(15, 3, || {
        for &(phys, ty) in &fills {
            black_box(decode_command(&mem, &slots, ty, phys, 0, &limits).unwrap());
        }
    });
    println!(
        "rate small_fill_decode: {:.2} M commands/s per core (goal >= 2)",
        fills.len() as f64 / t * 1e3
    );
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
