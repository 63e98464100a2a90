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
