//! The `auto` image codec choice against every lossless codec, on the desktop
//! screenshot corpus and on sub-rectangles of it.
//!
//! Items: every corpus image (BGRX top-down) in full (`full`), every whole
//! 256×256 tile on the grid (`tile256`), 64×64 tiles on a 192-pixel grid
//! (`tile64`) and four window-sized crops per image (`crop`). Each item is
//! copied out packed, as the server's damage path does. Per item, interleaved
//! over several runs (median kept): a `memcpy` of the item's pixels (the
//! scale), LZ, GLZ (single frame, empty dictionary), QUIC, LZ4, and `auto`:
//! `display::images::choose` with an `auto_glz` policy for a full-canvas client with
//! the LZ4 cap and a GLZ window, then the chosen codec (the time includes
//! `choose`).
//!
//! Printed per category and overall: total bytes of `auto` against the sum of
//! the per-item best lossless codec, total time of `auto` against the fastest
//! single codec over all items (and each codec's speed as a fraction of the
//! same-run `memcpy`), and the items where `auto` is more than 5 % larger than
//! the best. Then, per full image: LZ and JPEG on one core against
//! `lz::encode_parallel` / `jpeg::encode_parallel` on all cores.
//!
//! The `memcpy` here runs once per run between the encoders, so its source
//! is rarely in cache: it is slower than criterion's back-to-back `memcpy`
//! in the `codecs` bench, and the fractions of `memcpy` printed here come out
//! about 2.5 times those of the `codecs` bench. Compare within one bench.
//!
//! Not a criterion bench (`harness = false`, plain `main`): run with
//! `cargo bench -p qxl-benches --bench auto` (env `AUTO_RUNS`, default 5;
//! `AUTO_ONLY=<category>` to measure one category, `AUTO_ONLY=extras` for
//! the LZ/JPEG figures alone; `AUTO_CSV=<path>` writes every item's
//! statistics, sizes and times). `auto_lz` (LZ for synthetic images) is
//! measured next to `auto_glz`.

use qxl_benches::corpus;
use std::hint::black_box;
use std::time::Instant;

use spice_server::ImageCompression;
use spice_server::channel::display::images::{self, ClientDecoders, Codec, Policy, Use};
use spice_server::codecs::glz::GlzDictionary;
use spice_server::codecs::{ImageRef, PixelFormat, jpeg, lz, lz4, quic};

/// One measured item: packed BGRX pixels.
struct Item {
    category: &'static str,
    name: String,
    width: u32,
    height: u32,
    px: Vec<u8>,
}

impl Item {
    fn image(&self) -> ImageRef<'_> {
        let stride = usize::try_from(self.width).expect("width") * 4;
        ImageRef::new(
            &self.px,
            self.width,
            self.height,
            stride,
            PixelFormat::Rgb32,
            true,
        )
        .expect("image")
    }
}

/// The `w`×`h` rectangle at (`x`, `y`) of a `fw`-wide BGRX frame, packed.
fn crop(frame: &[u8], fw: u32, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
    let fw = usize::try_from(fw).expect("width");
    let (x, y, w, h) = [x, y, w, h]
        .map(|v| usize::try_from(v).expect("size"))
        .into();
    let mut v = Vec::with_capacity(w * h * 4);
    for r in y..y + h {
        v.extend_from_slice(&frame[(r * fw + x) * 4..(r * fw + x + w) * 4]);
    }
    v
}

/// The items of one corpus image, every category.
fn items_of(name: &str, w: u32, h: u32, px: &[u8]) -> Vec<Item> {
    let mut items = vec![Item {
        category: "full",
        name: name.to_owned(),
        width: w,
        height: h,
        px: px.to_vec(),
    }];
    for (category, size, step) in [("tile256", 256, 256), ("tile64", 64, 192)] {
        let mut y = 0;
        while y + size <= h {
            let mut x = 0;
            while x + size <= w {
                items.push(Item {
                    category,
                    name: format!("{name}@{x},{y}"),
                    width: size,
                    height: size,
                    px: crop(px, w, x, y, size, size),
                });
                x += step;
            }
            y += step;
        }
    }
    let windows = [
        (100, 80, 800, 600),
        (w - 1024 - 40, h - 768 - 10, 1024, 768),
        (w / 2 - 320, h / 2 - 240, 640, 480),
        (w / 3, h / 2, 300, 200),
    ];
    for (x, y, cw, ch) in windows {
        items.push(Item {
            category: "crop",
            name: format!("{name}@{x},{y}:{cw}x{ch}"),
            width: cw,
            height: ch,
            px: crop(px, w, x, y, cw, ch),
        });
    }
    items
}

/// The lossless codecs compared (and `auto`).
const CODECS: [&str; 4] = ["lz", "glz", "quic", "lz4"];

/// Median of `v` (sorted in place).
fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Nanoseconds `f` takes, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let t = Instant::now();
    let r = black_box(f());
    (u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX), r)
}

#[allow(clippy::cast_precision_loss)] // Byte counts and nanoseconds far below 2^52.
fn f(v: u64) -> f64 {
    v as f64
}

/// Measurements of one item.
struct Row {
    category: &'static str,
    name: String,
    memcpy: u64,
    /// (bytes, ns) per entry of [`CODECS`].
    codecs: [(u64, u64); 4],
    auto: (u64, u64),
    auto_codec: Codec,
    /// `auto_lz` (bytes, ns) and its choice.
    auto_lz: (u64, u64),
    auto_lz_codec: Codec,
    stats: images::ImageStats,
}

fn encode_with(codec: Codec, img: &ImageRef<'_>, dict: &mut GlzDictionary) -> Vec<u8> {
    match codec {
        Codec::Lz => lz::encode(img).expect("lz"),
        Codec::Glz => {
            dict.reset();
            dict.encode(img).expect("glz")
        }
        Codec::Quic => quic::encode(img).expect("quic"),
        Codec::Lz4 => lz4::encode(img).expect("lz4"),
        Codec::Bitmap => img.pixels.to_vec(),
        Codec::Jpeg => unreachable!("lossless policy"),
    }
}

fn measure(item: &Item, runs: usize, policy: &Policy, dict: &mut GlzDictionary) -> Row {
    let lz_policy = Policy {
        mode: ImageCompression::AutoLz,
        ..*policy
    };
    let img = item.image();
    let usage = Use {
        in_drawable: true,
        lossy_ok: false,
    };
    let mut dst = vec![0u8; item.px.len()];
    let mut memcpy = Vec::new();
    let mut times: [Vec<u64>; 4] = Default::default();
    let mut sizes = [0u64; 4];
    let mut auto_t = Vec::new();
    let mut auto_bytes = 0;
    let mut auto_codec = Codec::Bitmap;
    let mut auto_lz_t = Vec::new();
    let mut auto_lz_bytes = 0;
    let mut auto_lz_codec = Codec::Bitmap;
    for _ in 0..runs {
        let (t, ()) = timed(|| dst.copy_from_slice(black_box(&item.px)));
        memcpy.push(t);
        for (k, c) in [Codec::Lz, Codec::Glz, Codec::Quic, Codec::Lz4]
            .into_iter()
            .enumerate()
        {
            let (t, out) = timed(|| encode_with(c, black_box(&img), dict));
            times[k].push(t);
            sizes[k] = u64::try_from(out.len()).expect("size");
        }
        let (t, (c, out)) = timed(|| {
            let (c, _) = images::choose(policy, black_box(&img), usage);
            (c, encode_with(c, &img, dict))
        });
        auto_t.push(t);
        auto_bytes = u64::try_from(out.len()).expect("size");
        auto_codec = c;
        let (t, (c, out)) = timed(|| {
            let (c, _) = images::choose(&lz_policy, black_box(&img), usage);
            (c, encode_with(c, &img, dict))
        });
        auto_lz_t.push(t);
        auto_lz_bytes = u64::try_from(out.len()).expect("size");
        auto_lz_codec = c;
    }
    let mut codecs = [(0, 0); 4];
    for k in 0..4 {
        codecs[k] = (sizes[k], median(&mut times[k]));
    }
    Row {
        category: item.category,
        name: item.name.clone(),
        memcpy: median(&mut memcpy),
        codecs,
        auto: (auto_bytes, median(&mut auto_t)),
        auto_codec,
        auto_lz: (auto_lz_bytes, median(&mut auto_lz_t)),
        auto_lz_codec,
        stats: images::image_stats(&img),
    }
}

/// Prints the totals of `rows` under `title`; returns (bytes over best, time
/// over fastest) of `auto_glz` and of `auto_lz`.
fn report(title: &str, rows: &[&Row], verbose: bool) -> ((f64, f64), (f64, f64)) {
    let memcpy: u64 = rows.iter().map(|r| r.memcpy).sum();
    let best: u64 = rows
        .iter()
        .map(|r| r.codecs.iter().map(|c| c.0).min().unwrap_or(0))
        .sum();
    let auto_bytes: u64 = rows.iter().map(|r| r.auto.0).sum();
    let auto_time: u64 = rows.iter().map(|r| r.auto.1).sum();
    println!("== {title}: {} items", rows.len());
    let mut fastest = u64::MAX;
    for (k, name) in CODECS.iter().enumerate() {
        let b: u64 = rows.iter().map(|r| r.codecs[k].0).sum();
        let t: u64 = rows.iter().map(|r| r.codecs[k].1).sum();
        let wins = rows
            .iter()
            .filter(|r| r.codecs.iter().map(|c| c.0).min() == Some(r.codecs[k].0))
            .count();
        fastest = fastest.min(t);
        println!(
            "  {name:5} bytes {b:>10} ({:.3} of best)  time {:>8.2} ms  {:.4} of memcpy  best for {wins} items",
            f(b) / f(best),
            f(t) / 1e6,
            f(memcpy) / f(t)
        );
    }
    let bytes_ratio = f(auto_bytes) / f(best);
    let time_ratio = f(auto_time) / f(fastest);
    println!(
        "  auto  bytes {auto_bytes:>10} ({bytes_ratio:.3} of best)  time {:>8.2} ms  {:.4} of memcpy  {time_ratio:.2}x the fastest codec",
        f(auto_time) / 1e6,
        f(memcpy) / f(auto_time),
    );
    let lz_bytes: u64 = rows.iter().map(|r| r.auto_lz.0).sum();
    let lz_time: u64 = rows.iter().map(|r| r.auto_lz.1).sum();
    let mut lz_picks = std::collections::BTreeMap::new();
    for r in rows {
        *lz_picks
            .entry(format!("{:?}", r.auto_lz_codec))
            .or_insert(0) += 1;
    }
    println!(
        "  auto_lz bytes {lz_bytes:>8} ({:.3} of best)  time {:>8.2} ms  {:.4} of memcpy  {:.2}x the fastest codec  picked {lz_picks:?}",
        f(lz_bytes) / f(best),
        f(lz_time) / 1e6,
        f(memcpy) / f(lz_time),
        f(lz_time) / f(fastest),
    );
    let mut picks = std::collections::BTreeMap::new();
    for r in rows {
        *picks.entry(format!("{:?}", r.auto_codec)).or_insert(0) += 1;
    }
    println!("  auto picked {picks:?}");
    let wrong: Vec<&&Row> = rows
        .iter()
        .filter(|r| {
            let b = r.codecs.iter().map(|c| c.0).min().unwrap_or(0);
            f(r.auto.0) > f(b) * 1.05
        })
        .collect();
    let lost: u64 = wrong
        .iter()
        .map(|r| r.auto.0 - r.codecs.iter().map(|c| c.0).min().unwrap_or(0))
        .sum();
    println!(
        "  auto >5% over best on {} items ({lost} bytes lost there)",
        wrong.len()
    );
    if verbose {
        for r in wrong {
            let (k, b) = r
                .codecs
                .iter()
                .enumerate()
                .min_by_key(|c| c.1.0)
                .map(|(k, c)| (k, c.0))
                .unwrap_or((0, 0));
            println!(
                "    {} {}: auto {:?} {} bytes, best {} {b} ({:.2}x)",
                r.category,
                r.name,
                r.auto_codec,
                r.auto.0,
                CODECS[k],
                f(r.auto.0) / f(b)
            );
        }
    }
    (
        (bytes_ratio, time_ratio),
        (f(lz_bytes) / f(best), f(lz_time) / f(fastest)),
    )
}

/// Writes every row as CSV (for tuning the choice offline).
fn write_csv(path: &str, rows: &[Row]) {
    use std::fmt::Write as _;
    let mut s = String::from(
        "category,name,samples,repeats,quic_bits,lz,glz,quic,lz4,lz_t,glz_t,quic_t,lz4_t,memcpy_t,auto,auto_t,auto_lz,auto_lz_t\n",
    );
    for r in rows {
        let st = r.stats;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.category,
            r.name.replace(',', ";"),
            st.samples,
            st.repeats,
            st.quic_bits,
            r.codecs[0].0,
            r.codecs[1].0,
            r.codecs[2].0,
            r.codecs[3].0,
            r.codecs[0].1,
            r.codecs[1].1,
            r.codecs[2].1,
            r.codecs[3].1,
            r.memcpy,
            r.auto.0,
            r.auto.1,
            r.auto_lz.0,
            r.auto_lz.1
        );
    }
    std::fs::write(path, s).expect("write CSV");
}

/// LZ and JPEG on one core against `encode_parallel` on all cores, per full image.
fn full_frame_extras(frames: &[(String, u32, u32, Vec<u8>)], runs: usize) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "== full frames, fraction of memcpy: LZ and JPEG q85 on one core vs encode_parallel({threads})"
    );
    let mut figs: [Vec<f64>; 4] = Default::default();
    let q = jpeg::DEFAULT_QUALITY;
    for (name, w, h, px) in frames {
        let stride = usize::try_from(*w).expect("width") * 4;
        let img = ImageRef::new(px, *w, *h, stride, PixelFormat::Rgb32, true).expect("image");
        let mut dst = vec![0u8; px.len()];
        let mut m = Vec::new();
        let mut t: [Vec<u64>; 4] = Default::default();
        let mut sizes = [0usize; 4];
        for _ in 0..runs {
            m.push(timed(|| dst.copy_from_slice(black_box(px))).0);
            let encoders: [&dyn Fn() -> Vec<u8>; 4] = [
                &|| lz::encode(black_box(&img)).expect("lz"),
                &|| lz::encode_parallel(black_box(&img), threads).expect("lz"),
                &|| jpeg::encode(black_box(&img), q).expect("jpeg"),
                &|| jpeg::encode_parallel(black_box(&img), q, threads).expect("jpeg"),
            ];
            for (k, e) in encoders.iter().enumerate() {
                let (ns, out) = timed(e);
                t[k].push(ns);
                sizes[k] = out.len();
            }
        }
        let m = f(median(&mut m));
        let r: Vec<f64> = t.iter_mut().map(|v| m / f(median(v))).collect();
        println!(
            "  {name:36} lz {:.4} lz_par {:.4} ({:.2}x; {} vs {} bytes)  jpeg {:.4} jpeg_par {:.4} ({:.2}x; {} vs {} bytes)",
            r[0],
            r[1],
            r[1] / r[0],
            sizes[1],
            sizes[0],
            r[2],
            r[3],
            r[3] / r[2],
            sizes[3],
            sizes[2]
        );
        for (v, x) in figs.iter_mut().zip(r) {
            v.push(x);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b, c, d] = &mut figs;
    println!(
        "  median: lz {:.4}  lz_par {:.4}  jpeg {:.4}  jpeg_par {:.4} of memcpy",
        med(a),
        med(b),
        med(c),
        med(d)
    );
}

fn main() {
    let runs: usize = std::env::var("AUTO_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("AUTO_ONLY").ok();
    let frames = corpus();
    let policy = Policy {
        mode: ImageCompression::AutoGlz,
        jpeg: false,
        zlib_glz: false,
        client: ClientDecoders {
            full_canvas: true,
            lz4: true,
            glz_window: 4 << 20,
        },
    };
    let mut dict = GlzDictionary::new(4 << 20);
    let mut rows = Vec::new();
    for (name, w, h, px) in &frames {
        for item in items_of(name, *w, *h, px) {
            if only
                .as_deref()
                .is_some_and(|o| o != item.category && o != "extras")
            {
                continue;
            }
            if only.as_deref() == Some("extras") {
                continue;
            }
            rows.push(measure(&item, runs, &policy, &mut dict));
        }
    }
    let mut summary = Vec::new();
    for cat in ["full", "tile256", "tile64", "crop"] {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.category == cat).collect();
        if !sel.is_empty() {
            summary.push((cat, report(cat, &sel, cat != "tile64")));
        }
    }
    if !rows.is_empty() {
        let all: Vec<&Row> = rows.iter().collect();
        summary.push(("all", report("all items", &all, false)));
    }
    println!("== summary (targets: bytes <= 1.05 of best, time <= 1.5x the fastest codec)");
    for (cat, ((b, t), (lb, lt))) in summary {
        println!(
            "  {cat:8} auto_glz: bytes {b:.3} of best, time {t:.2}x the fastest;  auto_lz: bytes {lb:.3}, time {lt:.2}x"
        );
    }
    if let Ok(path) = std::env::var("AUTO_CSV") {
        write_csv(&path, &rows);
    }
    if only.is_none() || only.as_deref() == Some("extras") {
        full_frame_extras(&frames, runs);
    }
}
