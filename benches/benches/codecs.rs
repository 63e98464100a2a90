//! Image codec throughput on the desktop screenshot corpus.
//!
//! Per corpus image (BGRX top-down, as a QXL guest hands it over): the LZ4, LZ
//! and QUIC encoders in MB/s of raw input, next to a `memcpy` of the same frame
//! measured in the same run as the reference (compare encoder throughput as a
//! fraction of it). Compression ratios are printed once per image.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spice_server::codecs::{ImageRef, PixelFormat, lz, lz4, quic};

/// Every corpus PNG as (name, width, height, BGRX pixels).
fn corpus() -> Vec<(String, u32, u32, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("screenshot corpus missing at {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let file = std::io::BufReader::new(std::fs::File::open(p).expect("open PNG"));
            let mut reader = png::Decoder::new(file).read_info().expect("PNG header");
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).expect("PNG frame");
            let samples = info.color_type.samples();
            let mut bgrx = Vec::with_capacity(buf.len() / samples * 4);
            for px in buf[..info.buffer_size()].chunks_exact(samples) {
                bgrx.extend_from_slice(&[px[2 % samples], px[1 % samples], px[0], 0]);
            }
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, info.width, info.height, bgrx)
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    for (name, w, h, px) in corpus() {
        let stride = usize::try_from(w).expect("width") * 4;
        let img = ImageRef::new(&px, w, h, stride, PixelFormat::Rgb32, true).expect("image");
        let raw = px.len();
        let sizes = [
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
        group.sample_size(10);
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
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
