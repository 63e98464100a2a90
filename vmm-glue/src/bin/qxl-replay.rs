//! `qxl-replay`: drive a fresh QXL device from replay files.
//!
//! ```text
//! qxl-replay FILE...
//! ```
//!
//! Each file (format: `devices::qxl::replay`) is played through a new device;
//! the tool prints what the device decoded and every expectation that failed,
//! and exits non-zero if any file is malformed or any expectation failed.
//!
//! A file whose first line (after zstd decompression, if it is compressed) is
//! `SPICE_REPLAY 1` is a libspice-server recording instead: it is replayed
//! through a new device with `vmm_glue::record_replay` as fast as possible,
//! and the tool prints a summary of the recording and of what the device
//! decoded.

use std::collections::BTreeMap;
use std::process::ExitCode;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use devices::qxl::replay;
use spice_server::command::{
    AreaPixels, Command, DisplaySink, DrawOp, MonitorsConfig, Rect, SurfaceCmd, SurfaceCreate,
};
use vmm_glue::record_replay::{self, RecordReplayer, ReplayOptions};

/// Counts what the device hands to the display side.
#[derive(Debug, Default)]
struct CountingSink {
    counts: BTreeMap<&'static str, u64>,
}

impl CountingSink {
    fn bump(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }
}

impl DisplaySink for CountingSink {
    fn command(&mut self, cmd: Command) {
        self.bump(match &cmd {
            Command::Draw(d) => match d.op {
                DrawOp::Nop => "draw nop",
                DrawOp::Fill { .. } => "draw fill",
                DrawOp::Opaque { .. } => "draw opaque",
                DrawOp::Copy(_) => "draw copy",
                DrawOp::Blend(_) => "draw blend",
                DrawOp::CopyBits { .. } => "draw copy_bits",
                DrawOp::Blackness { .. } => "draw blackness",
                DrawOp::Whiteness { .. } => "draw whiteness",
                DrawOp::Invers { .. } => "draw invers",
                DrawOp::Rop3 { .. } => "draw rop3",
                DrawOp::Stroke { .. } => "draw stroke",
                DrawOp::Text { .. } => "draw text",
                DrawOp::Transparent { .. } => "draw transparent",
                DrawOp::AlphaBlend { .. } => "draw alpha_blend",
                DrawOp::Composite { .. } => "draw composite",
            },
            Command::Update(_) => "update",
            Command::Message(_) => "message",
            Command::Surface(SurfaceCmd::Create(_)) => "surface create",
            Command::Surface(SurfaceCmd::Destroy { .. }) => "surface destroy",
            Command::Cursor(_) => "cursor",
        });
    }

    fn create_primary(&mut self, _: SurfaceCreate) {
        self.bump("create primary");
    }

    fn destroy_primary(&mut self) {
        self.bump("destroy primary");
    }

    fn destroy_surface_wait(&mut self, _: u32) {
        self.bump("destroy surface wait");
    }

    fn destroy_all_surfaces(&mut self) {
        self.bump("destroy all surfaces");
    }

    fn update_area(&mut self, _: u32, _: Rect) -> Option<AreaPixels> {
        self.bump("update area");
        None
    }

    fn flush_surfaces(&mut self) {
        self.bump("flush surfaces");
    }

    fn monitors_config(&mut self, _: MonitorsConfig) {
        self.bump("monitors config");
    }

    fn reset(&mut self) {
        self.bump("reset");
    }
}

/// Replay a `SPICE_REPLAY` recording through a fresh device and print a summary.
fn spice_record(f: &str) -> bool {
    let res = record_replay::open_recording(Path::new(f)).and_then(|mut reader| {
        let mut replayer = RecordReplayer::new(CountingSink::default())?;
        let stats = record_replay::replay_events(
            &mut reader,
            &mut replayer,
            &ReplayOptions::default(),
            &AtomicBool::new(false),
        )?;
        Ok((stats, reader.offset(), replayer))
    });
    match res {
        Ok((stats, bytes, replayer)) => {
            println!("{f}: SPICE_REPLAY recording, {bytes} bytes decompressed");
            println!("  {}", stats.summary());
            for (m, n) in &stats.messages_by_type {
                println!("  worker message {m:?}: {n}");
            }
            for (what, n) in &replayer.driver().sink().counts {
                println!("  device decoded {what}: {n}");
            }
            println!(
                "  device metrics: {:?}",
                replayer.driver().device().metrics().snapshot()
            );
            stats.guest_bugs == 0
        }
        Err(e) => {
            eprintln!("{f}: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f == "-h" || f == "--help") {
        eprintln!(
            "usage: qxl-replay FILE...   (QXL replay files, see devices::qxl::replay, \
             or SPICE_REPLAY recordings, plain or .zst)"
        );
        return ExitCode::from(2);
    }
    let mut ok = true;
    for f in &files {
        if record_replay::is_spice_record(Path::new(f)) {
            ok &= spice_record(f);
            continue;
        }
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{f}: {e}");
                ok = false;
                continue;
            }
        };
        match replay::play(&data, CountingSink::default()) {
            Ok((report, dev)) => {
                let m = dev.metrics().snapshot();
                println!(
                    "{f}: {} records, {} port writes, {} memory writes ({} bytes), {} expectations, {} failed, {} rejected",
                    report.records,
                    report.io_writes,
                    report.mem_writes,
                    report.mem_bytes,
                    report.expectations,
                    report.failures.len(),
                    report.rejected
                );
                for (what, n) in &dev.sink().counts {
                    println!("  {what}: {n}");
                }
                println!("  device metrics: {m:?}");
                for fail in &report.failures {
                    println!("  FAILED: {fail}");
                }
                ok &= report.failures.is_empty();
            }
            Err(e) => {
                eprintln!("{f}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
