//! `qxl-vmm`: the reference VMM of qxl-spice.
//!
//! ```text
//! qxl-vmm demo [--spice port=5900,addr=127.0.0.1,password=…,disable-ticketing=on,
//!                       image-compression=…,streaming-video=…]
//!              [--port N] [--addr IP] [--password P] [--disable-ticketing]
//!              [--scene desktop|slideshow:DIR] [--size WxH] [--frames N] [--fps N]
//! qxl-vmm replay FILE[.zst] [same SPICE options] [--speed X|--fast] [--frames N]
//! ```
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
use std::sync::atomic::Ordering;

use vmm_glue::cli::SpiceOptions;
use vmm_glue::demo::{Demo, DemoOptions};
use vmm_glue::error::{Error, Result};
use vmm_glue::scene::{DesktopScene, Scene, SlideshowScene};

const USAGE: &str = "usage: qxl-vmm demo [--spice key=value,...] [--port N] [--addr IP] \
[--password P] [--disable-ticketing] [--image-compression MODE] [--scene desktop|slideshow:DIR] \
[--size WxH] [--frames N] [--fps N]
       qxl-vmm replay FILE[.zst] [same SPICE options] [--speed X|--fast] [--frames N]";

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str> {
    it.next()
        .map(String::as_str)
        .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::Usage(format!("{flag} {s}: not a number")))
}

fn demo(args: &[String]) -> Result<()> {
    let mut spice = SpiceOptions::default();
    let mut scene_name = "desktop".to_owned();
    let (mut width, mut height) = (1024u32, 768u32);
    let mut frames = None;
    let mut fps = 30;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--spice" => spice.set_list(value(&mut it, a)?)?,
            "--port" | "--addr" | "--password" | "--image-compression" | "--streaming-video" => {
                spice.set(a.trim_start_matches("--"), value(&mut it, a)?)?;
            }
            "--disable-ticketing" => spice.disable_ticketing = true,
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
    // The demo serves a synthetic desktop on loopback: without a password it
    // runs without ticketing rather than refusing to start.
    if spice.password.is_none() {
        spice.disable_ticketing = true;
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
    let server = spice.server_config()?;
    let addr = (server.addr, server.port);
    let demo = Demo::start(
        DemoOptions {
            server,
            fps,
            frames,
        },
        scene,
    )?;
    let stop = demo.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    eprintln!(
        "qxl-vmm demo: serving SPICE on {}:{} — connect with `remote-viewer spice://{}:{}`; Ctrl-C stops",
        addr.0, addr.1, addr.0, addr.1
    );
    let res = demo.wait();
    eprintln!("qxl-vmm demo: stopped");
    res
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("replay") => vmm_glue::record_replay::replay_command(&args[1..]),
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
