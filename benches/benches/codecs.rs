//! Image codec throughput on the desktop screenshot corpus.
//!
//! Per corpus image (BGRX top-down, as a QXL guest hands it over): the LZ4, LZ
//! and QUIC encoders in MB/s of raw input, next to a `memcpy` of the same frame
//! measured in the same run as the reference (compare encoder throughput as a
//! fraction of it). Compression ratios are printed once per image.
//!
//! Also: GLZ on a single frame with an empty dictionary (`glz`), ZLIB_GLZ
//! (`zlib_glz`), JPEG at quality 85 (`jpeg`), C liblz4's
//! `LZ4_compress_default` on the same frame as the LZ4 peer (`lz4_c`), and in
//! the `codecs/sequence` group GLZ over the whole corpus in one dictionary
//! (window of 4 Mi pixels, so frames reference and evict each other).
//! `lz4_par` is [`lz4::encode_parallel`] on every available core.
//!
//! Before the criterion groups, `cargo bench` prints a summary the README
//! quotes: per codec, the median over the corpus of (codec throughput / memcpy
//! throughput), each measured as the median of several runs interleaved with
//! memcpy runs, and the median compression ratio:
//!
//! ```text
//! summary <codec> speed_vs_memcpy=<x> ratio=<y>
//! ```
//!
//! `QXL_SUMMARY=quic,lz4` restricts the summary to those codecs, `QXL_SUMMARY=0`
//! skips it, `QXL_SUMMARY_IMAGES=photo,term` restricts it to the images whose
//! names contain one of those words, `QXL_SUMMARY_ONLY=1` skips the criterion
//! groups.

use qxl_benches::corpus;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use spice_server::codecs::glz::GlzDictionary;
use spice_server::codecs::{ImageRef, PixelFormat, jpeg, lz, lz4, quic, zlib_glz};

/// C liblz4 compressing `src` as one block (`LZ4_compress_default`, accel 1).
fn lz4_c(src: &[u8], dst: &mut Vec<u8>) -> usize {
    let n = i32::try_from(src.len()).expect("frame below 2 GiB");
    // SAFETY: LZ4_compressBound only computes a size.
    let bound = unsafe { lz4_sys::LZ4_compressBound(n) };
    dst.resize(usize::try_from(bound).expect("bound"), 0);
    let src_ptr = src.as_ptr().cast::<std::ffi::c_char>();
    let dst_ptr = dst.as_mut_ptr().cast::<std::ffi::c_char>();
    // SAFETY: `src` holds `n` readable bytes and `dst` `bound` writable bytes,
    // the capacity passed; liblz4 writes at most that and keeps no pointer.
    let written = unsafe { lz4_sys::LZ4_compress_default(src_ptr, dst_ptr, n, bound) };
    usize::try_from(written).expect("liblz4 failed")
}

fn codecs(c: &mut Criterion) {
    for (name, w, h, px) in corpus() {
        let stride = usize::try_from(w).expect("width") * 4;
        let img = ImageRef::new(&px, w, h, stride, PixelFormat::Rgb32, true).expect("image");
        let raw = px.len();
        let mut glz_dict = GlzDictionary::new(4 << 20);
        let mut c_buf = Vec::new();
        let glz_frame = glz_dict.encode(&img).expect("glz");
        glz_dict.reset();
        let sizes = [
            ("glz", glz_frame.len()),
            (
                "zlib_glz",
                zlib_glz::deflate(&glz_frame, zlib_glz::DEFAULT_LEVEL)
                    .expect("zlib")
                    .len(),
            ),
            (
                "jpeg",
                jpeg::encode(&img, jpeg::DEFAULT_QUALITY)
                    .expect("jpeg")
                    .len(),
            ),
            ("lz4_c", lz4_c(&px, &mut c_buf)),
            ("lz4", lz4::encode(&img).expect("lz4").len()),
            ("lz", lz::encode(&img).expect("lz").len()),
            ("quic", quic::encode(&img).expect("quic").len()),
        ];
        for (codec, size) in sizes {
            #[allow(clippy::cast_precision_loss)] // Ratios of sizes far below 2^52.
            let ratio = raw as f64 / size as f64;
            println!("ratio {name} {codec} {ratio:.2} ({size} bytes of {raw})");
        }

        let mut group = c.benchmark_group(format!("codecs/{name}"));
        group.throughput(Throughput::Bytes(u64::try_from(raw).expect("size")));
        // Short windows keep the whole bench (9 codecs x 8 images) to a few
        // minutes; the summary above is what the README quotes.
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_millis(1500));
        let mut dst = vec![0u8; raw];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&px));
                black_box(&dst);
            });
        });
        group.bench_function("lz4", |b| b.iter(|| lz4::encode(black_box(&img))));
        group.bench_function("lz", |b| b.iter(|| lz::encode(black_box(&img))));
        group.bench_function("quic", |b| b.iter(|| quic::encode(black_box(&img))));
        group.bench_function("lz4_c", |b| b.iter(|| lz4_c(black_box(&px), &mut c_buf)));
        group.bench_function("lz4_par", |b| {
            b.iter(|| lz4::encode_parallel(black_box(&img), threads()));
        });
        group.bench_function("glz", |b| {
            b.iter(|| {
                glz_dict.reset();
                glz_dict.encode(black_box(&img))
            });
        });
        group.bench_function("zlib_glz", |b| {
            b.iter(|| {
                glz_dict.reset();
                zlib_glz::encode(&mut glz_dict, black_box(&img))
            });
        });
        group.bench_function("jpeg", |b| {
            b.iter(|| jpeg::encode(black_box(&img), jpeg::DEFAULT_QUALITY));
        });
        group.finish();
    }
    sequence(c);
}

/// GLZ over the whole corpus in order with one long-lived dictionary.
fn sequence(c: &mut Criterion) {
    let frames = corpus();
    let imgs: Vec<ImageRef<'_>> = frames
        .iter()
        .map(|(_, w, h, px)| {
            let stride = usize::try_from(*w).expect("width") * 4;
            ImageRef::new(px, *w, *h, stride, PixelFormat::Rgb32, true).expect("image")
        })
        .collect();
    let raw: usize = imgs.iter().map(|i| i.pixels.len()).sum();
    let mut dict = GlzDictionary::new(4 << 20);
    // Two passes: the second one is what a steady state looks like.
    let mut size = 0;
    for _ in 0..2 {
        size = imgs
            .iter()
            .map(|i| dict.encode(i).expect("glz").len())
            .sum::<usize>();
    }
    #[allow(clippy::cast_precision_loss)] // Ratios of sizes far below 2^52.
    let ratio = raw as f64 / size as f64;
    println!("ratio sequence glz {ratio:.2} ({size} bytes of {raw})");
    let mut group = c.benchmark_group("codecs/sequence");
    group.throughput(Throughput::Bytes(u64::try_from(raw).expect("size")));
    group.sample_size(10);
    let mut dst: Vec<Vec<u8>> = frames.iter().map(|f| vec![0u8; f.3.len()]).collect();
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            for (d, f) in dst.iter_mut().zip(&frames) {
                d.copy_from_slice(black_box(&f.3));
            }
            black_box(&dst);
        });
    });
    group.bench_function("glz", |b| {
        b.iter(|| {
            for i in &imgs {
                black_box(dict.encode(black_box(i)).expect("glz"));
            }
        });
    });
    group.finish();
}

/// Every core the machine offers.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The codecs of the summary, in print order.
const SUMMARY_CODECS: [&str; 8] = [
    "lz4", "lz4_par", "lz4_c", "lz", "glz", "quic", "jpeg", "zlib_glz",
];

/// Median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Median wall time of `f` over `runs` runs, each run preceded by a memcpy of
/// `px` whose times are returned too: (codec, memcpy).
fn timed(runs: usize, px: &[u8], dst: &mut [u8], mut f: impl FnMut() -> usize) -> (f64, f64) {
    let (mut codec, mut copy) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // The memcpy reference as criterion sees it, hot: the fastest of a few
        // back-to-back copies.
        let mut best = f64::MAX;
        for _ in 0..4 {
            let t = Instant::now();
            dst.copy_from_slice(black_box(px));
            black_box(&dst);
            best = best.min(t.elapsed().as_secs_f64());
        }
        copy.push(best);
        let t = Instant::now();
        black_box(f());
        codec.push(t.elapsed().as_secs_f64());
    }
    (median(&mut codec), median(&mut copy))
}

/// The README summary: see the module docs.
fn summary() {
    let only = std::env::var("QXL_SUMMARY").unwrap_or_default();
    if only == "0" {
        return;
    }
    let selected: Vec<&str> = SUMMARY_CODECS
        .iter()
        .copied()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o == *c))
        .collect();
    let mut speeds: Vec<Vec<f64>> = vec![Vec::new(); selected.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); selected.len()];
    let images = std::env::var("QXL_SUMMARY_IMAGES").unwrap_or_default();
    for (name, w, h, px) in corpus() {
        if !images.is_empty() && !images.split(',').any(|i| name.contains(i)) {
            continue;
        }
        let stride = usize::try_from(w).expect("width") * 4;
        let img = ImageRef::new(&px, w, h, stride, PixelFormat::Rgb32, true).expect("image");
        let mut dst = vec![0u8; px.len()];
        let mut c_buf = Vec::new();
        let mut dict = GlzDictionary::new(4 << 20);
        let mut line = format!("summary-image {name}");
        for (k, codec) in selected.iter().enumerate() {
            let mut run = || -> usize {
                match *codec {
                    "lz4" => lz4::encode(&img).expect("lz4").len(),
                    "lz4_par" => lz4::encode_parallel(&img, threads()).expect("lz4").len(),
                    "lz4_c" => lz4_c(&px, &mut c_buf),
                    "lz" => lz::encode(&img).expect("lz").len(),
                    "glz" => {
                        dict.reset();
                        dict.encode(&img).expect("glz").len()
                    }
                    "quic" => quic::encode(&img).expect("quic").len(),
                    "jpeg" => jpeg::encode(&img, jpeg::DEFAULT_QUALITY)
                        .expect("jpeg")
                        .len(),
                    _ => {
                        dict.reset();
                        match zlib_glz::encode(&mut dict, &img).expect("zlib_glz") {
                            zlib_glz::GlzOutput::Glz(v)
                            | zlib_glz::GlzOutput::ZlibGlz { data: v, .. } => v.len(),
                        }
                    }
                }
            };
            let size = run();
            // About 0.3 s per codec and image, at least 5 runs.
            let t = Instant::now();
            run();
            let once = t.elapsed().max(Duration::from_micros(1));
            let runs = usize::try_from(Duration::from_millis(300).as_nanos() / once.as_nanos())
                .unwrap_or(5)
                .clamp(5, 201)
                | 1;
            let (codec_s, copy_s) = timed(runs, &px, &mut dst, run);
            let speed = copy_s / codec_s;
            #[allow(clippy::cast_precision_loss)] // Sizes far below 2^52.
            let ratio = px.len() as f64 / size as f64;
            speeds[k].push(speed);
            ratios[k].push(ratio);
            line.push_str(&format!(" {codec}={speed:.4}/{ratio:.2}"));
        }
        println!("{line}");
    }
    for (k, codec) in selected.iter().enumerate() {
        let speed = median(&mut speeds[k]);
        let ratio = median(&mut ratios[k]);
        println!("summary {codec} speed_vs_memcpy={speed:.4} ratio={ratio:.2}");
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not and only
    // smoke-runs the criterion groups.
    if std::env::args().any(|a| a == "--bench") {
        summary();
        if std::env::var("QXL_SUMMARY_ONLY").is_ok_and(|v| v == "1") {
            return;
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

criterion_group!(benches, codecs);
