//! `qxl-vmm`: the reference VMM of qxl-spice.
//!
//! ```text
//! qxl-vmm demo [--spice port=5900,addr=127.0.0.1,password=…,disable-ticketing=on,
//!                       image-compression=…,streaming-video=…]
//!              [--port N] [--addr IP] [--password P] [--disable-ticketing]
//!              [--scene desktop|slideshow:DIR] [--size WxH] [--frames N] [--fps N]
//! qxl-vmm replay FILE[.zst] [same SPICE options] [--speed X|--fast] [--frames N]
//! qxl-vmm boot --kernel PATH [--initrd PATH] [--cmdline STR] [--mem MiB]
//!              [same SPICE options] [--serial stdout|FILE] [--progress-timeout SECS]
//!              [--no-input]
//! ```
//!
//! `boot` runs a Linux kernel (bzImage or PVH ELF) under KVM with the QXL
//! device at 00:02.0, a 16550 console on COM1 and (unless `--no-input`) a
//! virtio-input keyboard, tablet and mouse on virtio-mmio (see
//! `vmm_glue::boot`), and serves its display and input until the guest
//! powers off or Ctrl-C.
//!
//! `replay` plays a real guest's `SPICE_REPLAY` recording (zstd-compressed or
//! not) through the device (see `vmm_glue::record_replay`) and keeps serving
//! the last frame until Ctrl-C.
//!
//! `demo` runs the real QXL device driven by a built-in synthetic guest and
//! serves it over SPICE until Ctrl-C. Connect with
//! `remote-viewer spice://127.0.0.1:5900` or `spicy -h 127.0.0.1 -p 5900`.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm_glue::cli::{SpiceOptions, flag_number as number, flag_value as value, stop_on_ctrl_c};
use vmm_glue::demo::{Demo, DemoOptions};
use vmm_glue::error::{Error, Result};
use vmm_glue::scene::{DesktopScene, Scene, SlideshowScene};

const USAGE: &str = "usage: qxl-vmm demo [--spice key=value,...] [--port N] [--addr IP] \
[--password P] [--disable-ticketing] [--image-compression MODE] [--scene desktop|slideshow:DIR] \
[--size WxH] [--frames N] [--fps N]
       qxl-vmm replay FILE[.zst] [same SPICE options] [--speed X|--fast] [--frames N]
       qxl-vmm boot --kernel PATH [--initrd PATH] [--cmdline STR] [--mem MiB] [same SPICE options] \
[--serial stdout|FILE] [--no-input]";

fn demo(args: &[String]) -> Result<()> {
    let mut spice = SpiceOptions::default();
    let mut scene_name = "desktop".to_owned();
    let (mut width, mut height) = (1024u32, 768u32);
    let mut frames = None;
    let mut fps = 30;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if spice.take_flag(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--scene" => value(&mut it, a)?.clone_into(&mut scene_name),
            "--size" => {
                let v = value(&mut it, a)?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| Error::Usage(format!("--size {v}: expected WxH")))?;
                (width, height) = (number(w, a)?, number(h, a)?);
                if !(64..=8192).contains(&width) || !(64..=8192).contains(&height) {
                    return Err(Error::Usage("--size: 64..8192 each way".into()));
                }
            }
            "--frames" => frames = Some(number(value(&mut it, a)?, a)?),
            "--fps" => fps = number::<u32>(value(&mut it, a)?, a)?.clamp(1, 240),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(Error::Usage(format!("unknown option {other}\n{USAGE}"))),
        }
    }
    let scene: Box<dyn Scene> = match scene_name.split_once(':') {
        None if scene_name == "desktop" => Box::new(DesktopScene::new(width, height)),
        Some(("slideshow", dir)) => Box::new(SlideshowScene::load(&PathBuf::from(dir), 90)?),
        _ => {
            return Err(Error::Usage(format!(
                "--scene {scene_name}: desktop or slideshow:DIR"
            )));
        }
    };
    let server = spice.local_server_config()?;
    let addr = (server.addr, server.port);
    let demo = Demo::start(
        DemoOptions {
            server,
            fps,
            frames,
        },
        scene,
    )?;
    stop_on_ctrl_c(demo.stop_flag())?;
    eprintln!(
        "qxl-vmm demo: serving SPICE on {}:{} — connect with `remote-viewer spice://{}:{}`; Ctrl-C stops",
        addr.0, addr.1, addr.0, addr.1
    );
    let res = demo.wait();
    eprintln!("qxl-vmm demo: stopped");
    res
}

fn boot(args: &[String]) -> Result<()> {
    use vmm_glue::boot::{BootOptions, SerialOut};
    let mut spice = SpiceOptions::default();
    let mut progress = None;
    let mut no_input = false;
    let (mut kernel, mut initrd, mut cmdline, mut mem, mut serial) =
        (None, None, None, 512, SerialOut::Stdout);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if spice.take_flag(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--no-input" => no_input = true,
            "--kernel" => kernel = Some(PathBuf::from(value(&mut it, a)?)),
            "--initrd" => initrd = Some(PathBuf::from(value(&mut it, a)?)),
            "--cmdline" => cmdline = Some(value(&mut it, a)?.to_owned()),
            "--mem" => mem = number(value(&mut it, a)?, a)?,
            "--progress-timeout" => progress = Some(number::<u64>(value(&mut it, a)?, a)?),
            "--serial" => {
                serial = match value(&mut it, a)? {
                    "stdout" => SerialOut::Stdout,
                    path => SerialOut::File(PathBuf::from(path)),
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(Error::Usage(format!("unknown option {other}\n{USAGE}"))),
        }
    }
    let kernel = kernel.ok_or_else(|| Error::Usage(format!("boot needs --kernel\n{USAGE}")))?;
    let mut opts = BootOptions::new(kernel, spice.local_server_config()?);
    opts.initrd = initrd;
    if let Some(c) = cmdline {
        opts.cmdline = c;
    }
    opts.mem_mib = mem;
    opts.serial = serial;
    opts.virtio_input = !no_input;
    if let Some(secs) = progress {
        opts.first_output_timeout = std::time::Duration::from_secs(secs);
        opts.stall_timeout = std::time::Duration::from_secs(secs);
    }
    let mut vm = vmm_glue::boot::start(opts)?;
    stop_on_ctrl_c(vm.stop_flag())?;
    if let Some(addr) = vm.spice_addr() {
        eprintln!(
            "qxl-vmm boot: serving SPICE on {addr} — connect with `remote-viewer spice://{addr}`"
        );
    }
    let report = vm.wait()?;
    eprintln!(
        "qxl-vmm boot: {} after {:.1} s ({} console lines, {} exits)",
        report.end,
        report.elapsed.as_secs_f64(),
        report.console_lines,
        report.exits
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("replay") => vmm_glue::record_replay::replay_command(&args[1..]),
        Some("boot") => boot(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return if args.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Some(other) => Err(Error::Usage(format!("unknown command {other}\n{USAGE}"))),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qxl-vmm: {e}");
            ExitCode::FAILURE
        }
    }
}
