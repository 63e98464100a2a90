//! Shared helpers for the benchmarks in `benches/benches/`.
//!
//! Criterion measures each function on its own; the project's goals are
//! *ratios* measured in the same run (e.g. bitmap decoding as a fraction of a
//! `memcpy` of the same bytes), so the helpers here time two closures
//! interleaved, take medians, and print the ratio.

// Bench arithmetic converts counts to f64 for reporting; precision loss there is harmless.
#![allow(clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::Instant;

/// Median wall time in nanoseconds of `samples` runs of `f`, each run repeated
/// `reps` times.
pub fn median_ns(samples: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps.max(1) {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / reps.max(1) as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Time `work` and a `memcpy` of `bytes` bytes interleaved (so both see the
/// same machine state), and return `memcpy time / work time`: the fraction of
/// memcpy speed that `work` reaches. Prints one line for the bench log.
pub fn ratio_to_memcpy(name: &str, bytes: usize, mut work: impl FnMut()) -> f64 {
    let src = vec![0x5au8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut w = Vec::new();
    let mut m = Vec::new();
    for _ in 0..15 {
        w.push(median_ns(1, 3, &mut work));
        m.push(median_ns(1, 3, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }));
    }
    w.sort_by(f64::total_cmp);
    m.sort_by(f64::total_cmp);
    let (wn, mn) = (w[w.len() / 2], m[m.len() / 2]);
    let ratio = if wn > 0.0 { mn / wn } else { 0.0 };
    let mbps = |ns: f64| bytes as f64 / ns * 1e3;
    println!(
        "ratio {name}: {ratio:.3} of memcpy ({:.0} MB/s vs memcpy {:.0} MB/s, {bytes} bytes, medians of 15)",
        mbps(wn),
        mbps(mn)
    );
    ratio
}

/// Every PNG of the screenshot corpus (`../shared/corpus/`, beside the
/// checkout) as (name, width, height, BGRX pixels, top-down), in name order.
///
/// # Panics
/// If the corpus is missing or a PNG does not decode: the benches need it.
pub fn corpus() -> Vec<(String, u32, u32, Vec<u8>)> {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"));
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
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
