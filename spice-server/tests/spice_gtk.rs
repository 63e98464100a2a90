//! The server against the real spice-gtk client (spicy-screenshot and the
//! SpiceClientGLib GObject probe in tests/clients/spice_probe.py).
//!
//! These tests fail, never skip, when the client is not installed:
//! run `scripts/install-test-deps.sh` first.
#![allow(clippy::unwrap_used, clippy::tests_outside_test_module, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    Ev, Probe, bgrx_to_rgb, copy_rgb32, fill, open_config, scene, spicy_screenshot, start,
};
use spice_server::ServerConfig;
use spice_server::command::{DisplaySink, Rect};

const T: Duration = Duration::from_secs(20);

fn assert_same_rgb(client_rgb: &[u8], worker_bgrx: &[u8]) {
    let want = bgrx_to_rgb(worker_bgrx);
    assert_eq!(client_rgb.len(), want.len());
    let diff = client_rgb.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff, 0,
        "client picture differs from the worker's in {diff} bytes"
    );
}

#[test]
fn spicy_screenshot_matches_worker_screenshot() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let (w, hgt, bgrx) = h.display.screenshot(0).expect("primary exists");
    let shot = spicy_screenshot(h.port(), None, T);
    assert_eq!(
        shot.status,
        Some(0),
        "spicy-screenshot failed: {}",
        shot.stderr
    );
    let (pw, ph, rgb) = shot.ppm.expect("a PPM was written");
    assert_eq!((pw, ph), (w, hgt));
    assert_same_rgb(&rgb, &bgrx);
    eprintln!("spicy-screenshot: process start to PPM {:?}", shot.elapsed);
}

/// Waits until the client's primary equals the worker's screenshot, byte for byte.
fn converge(p: &mut Probe, h: &common::Harness) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, _, want) = h.display.screenshot(0).expect("primary");
    loop {
        let got = p.dump();
        if got == want {
            return got;
        }
        if Instant::now() > deadline {
            let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            panic!(
                "client primary never matched: {diff} bytes differ (len {} vs {})",
                got.len(),
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn probe_matches(config: ServerConfig) {
    let mut h = start(config);
    scene(&mut h.display);
    let mut p = Probe::start(h.port(), None, "display,inputs,cursor");
    let prim = p.wait_for("PRIMARY", T, |l| l.starts_with("PRIMARY "));
    assert_eq!(prim, "PRIMARY 640 480 2560 32");
    let timing = p.wait_for("TIMING", T, |l| l.starts_with("TIMING "));
    p.wait_seen("MARK", T);
    eprintln!("probe {timing}");
    converge(&mut p, &h);

    // Live updates after the client joined: fills, a copy, and an update
    // larger than a pixel-exact merge would allow to hide.
    h.display
        .command(fill(Rect::new(0, 0, 640, 20), 0x00ff_ff00));
    for i in 0..50 {
        h.display.command(fill(
            Rect::new(10 + i * 11, 300, 18 + i * 11, 340),
            0x0010_0000 * (i.cast_unsigned() % 16),
        ));
    }
    h.display
        .command(copy_rgb32(Rect::new(330, 380, 630, 470), 300, 90));
    h.display.sync().unwrap();
    converge(&mut p, &h);

    // 100 more updates, one DRAW_COPY each (the next is sent only once the
    // client showed the previous one): far beyond twice the ACK window (20),
    // so the stream only keeps flowing if spice-gtk's ACKs are handled right.
    for i in 0..100u32 {
        let x = i32::try_from(i % 60).unwrap() * 10;
        let y = 400 + i32::try_from(i / 60).unwrap() * 10;
        h.display
            .command(fill(Rect::new(x, y, x + 7, y + 7), 0x0000_0101 * i));
        let want = format!("INVALIDATE {x} {y} 7 7");
        p.wait_for(&want, T, |l| l == want);
    }
    converge(&mut p, &h);
}

#[test]
fn gobject_probe_primary_matches_worker_byte_for_byte() {
    probe_matches(open_config());
}

#[test]
fn gobject_probe_matches_with_uncompressed_bitmaps() {
    probe_matches(ServerConfig {
        image_compression: spice_server::ImageCompression::Off,
        ..open_config()
    });
}

fn password_config(pw: &str) -> ServerConfig {
    ServerConfig {
        password: Some(pw.into()),
        ..ServerConfig::default()
    }
}

#[test]
fn password_right_and_wrong() {
    let mut h = start(password_config("s3cret-pw"));
    scene(&mut h.display);
    let bad = spicy_screenshot(h.port(), Some("wrong"), T);
    assert_eq!(
        bad.status,
        Some(1),
        "wrong password must fail: {}",
        bad.stderr
    );
    assert!(bad.ppm.is_none());
    assert!(
        bad.stderr.contains("main channel event: 23"),
        "{}",
        bad.stderr
    );
    let none = spicy_screenshot(h.port(), None, T);
    assert_eq!(none.status, Some(1), "missing password must fail");
    let good = spicy_screenshot(h.port(), Some("s3cret-pw"), T);
    assert_eq!(good.status, Some(0), "right password: {}", good.stderr);
    let (_, _, bgrx) = h.display.screenshot(0).unwrap();
    assert_same_rgb(&good.ppm.unwrap().2, &bgrx);
}

#[test]
fn password_expires() {
    let mut h = start(ServerConfig {
        ticket_expiry: Some(Duration::from_millis(300)),
        ..password_config("pw")
    });
    scene(&mut h.display);
    std::thread::sleep(Duration::from_millis(400));
    let late = spicy_screenshot(h.port(), Some("pw"), T);
    assert_eq!(late.status, Some(1), "an expired ticket must fail");
    h.server.set_password(Some("pw2"), None).unwrap();
    let ok = spicy_screenshot(h.port(), Some("pw2"), T);
    assert_eq!(ok.status, Some(0), "{}", ok.stderr);
}

#[test]
fn no_ticketing_accepts_any_password() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let s = spicy_screenshot(h.port(), Some("anything at all"), T);
    assert_eq!(s.status, Some(0), "{}", s.stderr);
}

#[test]
fn ticketing_without_password_refuses_everyone() {
    let mut h = start(ServerConfig::default());
    scene(&mut h.display);
    let s = spicy_screenshot(h.port(), None, T);
    assert_eq!(s.status, Some(1));
}

#[test]
fn new_client_replaces_old_one() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let mut a = Probe::start(h.port(), None, "display,inputs,cursor");
    a.wait_seen("MARK", T);
    a.wait_seen("OPENED inputs:0", T);
    let first_session = h.server.session_id();
    let mut b = Probe::start(h.port(), None, "display,inputs,cursor");
    b.wait_seen("MARK", T);
    // The old client's channels are closed by the server.
    a.wait_for("old session closed", T, |l| {
        l == "DISCONNECTED" || (l.starts_with("EVENT ") && !l.ends_with(" 0"))
    });
    assert_ne!(h.server.session_id(), first_session);
    // The new client is fully functional.
    b.wait_seen("OPENED inputs:0", T);
    converge(&mut b, &h);
    let deadline = Instant::now() + T;
    while h.server.connection_count() != 4 {
        assert!(
            Instant::now() < deadline,
            "connections: {}",
            h.server.connection_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn garbage_at_link_is_dropped_then_a_real_client_connects() {
    let mut h = start(ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..open_config()
    });
    scene(&mut h.display);
    let addr = h.server.local_addr();

    // Not SPICE at all: the server answers INVALID_MAGIC and closes.
    let mut g = TcpStream::connect(addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    assert!(buf.len() >= 20 && &buf[..4] == b"REDQ", "{buf:?}");
    assert_eq!(
        &buf[16..20],
        &2u32.to_le_bytes(),
        "SPICE_LINK_ERR_INVALID_MAGIC"
    );

    // A silent client is dropped after the handshake timeout...
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // ...while a real client connects meanwhile.
    let s = spicy_screenshot(h.port(), None, T);
    assert_eq!(s.status, Some(0), "{}", s.stderr);
    let t = Instant::now();
    let n = silent.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(4));

    // Random bytes with a valid magic and an absurd size.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hdr = b"REDQ".to_vec();
    hdr.extend_from_slice(&2u32.to_le_bytes());
    hdr.extend_from_slice(&2u32.to_le_bytes());
    hdr.extend_from_slice(&u32::MAX.to_le_bytes());
    big.write_all(&hdr).unwrap();
    let mut buf = Vec::new();
    let _ = big.read_to_end(&mut buf);
    assert_eq!(
        &buf[16..20],
        &3u32.to_le_bytes(),
        "SPICE_LINK_ERR_INVALID_DATA"
    );

    let s = spicy_screenshot(h.port(), None, T);
    assert_eq!(s.status, Some(0), "{}", s.stderr);
}

#[test]
fn probe_inputs_reach_the_sink_in_order() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let mut p = Probe::start(h.port(), None, "display,inputs");
    p.wait_seen("OPENED inputs:0", T);
    let cmds = [
        "key_press 0x1e",
        "key_release 0x1e",
        "key_press 0x11d",
        "key_release 0x11d",
        "motion 5 -3 0",
        "position 100 200 0 0",
        "button_press 1 1",
        "button_release 1 0",
        "button_press 4 0",
        "button_release 4 0",
    ];
    for c in cmds {
        p.send(c);
        p.wait_for("SENT", T, |l| l == "SENT" || l.starts_with("ERROR"));
    }
    let want = vec![
        Ev::KeyDown(0x1e),
        Ev::KeyUp(0x9e),
        Ev::KeyDown(0x1de0),
        Ev::KeyUp(0x9de0),
        Ev::Rel(5, -3, 0),
        Ev::Abs(100, 200, 0, 0),
        Ev::Buttons(1),
        Ev::Buttons(0),
        Ev::Buttons(8),
        Ev::Buttons(0),
    ];
    let got = wait_inputs(&h, want.len());
    assert_eq!(got, want);

    // MOUSE_MOTION_ACK: spice-gtk stops sending after 8 un-acked motions;
    // all 40 steps only arrive if the server acks every 4.
    for _ in 0..40 {
        p.send("motion 1 0 0");
        p.wait_for("SENT", T, |l| l == "SENT");
    }
    let deadline = Instant::now() + T;
    loop {
        let dx: i32 = h
            .inputs
            .events()
            .iter()
            .filter_map(|e| {
                if let Ev::Rel(dx, _, _) = e {
                    Some(*dx)
                } else {
                    None
                }
            })
            .sum();
        if dx == 45 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relative motion total {dx}, want 45"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_inputs(h: &common::Harness, n: usize) -> Vec<Ev> {
    let deadline = Instant::now() + T;
    loop {
        let got: Vec<Ev> = h
            .inputs
            .events()
            .into_iter()
            .filter(|e| !matches!(e, Ev::Modifiers(_)))
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alpha_cursor(w: u16, h: u16, seed: u8) -> spice_server::command::Cursor {
    spice_server::command::Cursor {
        unique: 0,
        kind: spice_server::command::CursorType::Alpha,
        width: w,
        height: h,
        hot_spot_x: 1,
        hot_spot_y: 2,
        data: (0..usize::from(w) * usize::from(h) * 4)
            .map(|i| u8::try_from(i % 200).unwrap() ^ seed)
            .collect(),
    }
}

/// spice-gtk hands out cursor pixels as R,G,B,A; ALPHA cursors travel as B,G,R,A.
fn hex_rgba(bgra: &[u8]) -> String {
    bgra.chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn probe_sees_cursor_init_set_move_hide_reset() {
    use spice_server::command::{Command, CursorCmd, Point16};
    let mut h = start(open_config());
    scene(&mut h.display);
    let c1 = alpha_cursor(4, 4, 0);
    h.display.command(Command::Cursor(CursorCmd::Set {
        position: Point16 { x: 10, y: 20 },
        visible: true,
        shape: c1.clone(),
    }));
    let mut p = Probe::start(h.port(), None, "display,cursor");
    let set = p.wait_for("CURSOR_SET", T, |l| l.starts_with("CURSOR_SET"));
    assert_eq!(set, format!("CURSOR_SET 4 4 1 2 {}", hex_rgba(&c1.data)));
    p.wait_seen("OPENED cursor:0", T);

    h.display.command(Command::Cursor(CursorCmd::Move {
        position: Point16 { x: 30, y: 40 },
    }));
    p.wait_for("CURSOR_MOVE", T, |l| l == "CURSOR_MOVE 30 40");
    h.display.command(Command::Cursor(CursorCmd::Hide));
    p.wait_for("CURSOR_HIDE", T, |l| l == "CURSOR_HIDE");
    let c2 = alpha_cursor(8, 3, 0x5a);
    h.display.command(Command::Cursor(CursorCmd::Set {
        position: Point16 { x: 1, y: 1 },
        visible: true,
        shape: c2.clone(),
    }));
    let set = p.wait_for("CURSOR_SET", T, |l| l.starts_with("CURSOR_SET"));
    assert_eq!(set, format!("CURSOR_SET 8 3 1 2 {}", hex_rgba(&c2.data)));
    // A device reset clears the cursor; later shapes still reach the client.
    h.display.reset();
    p.wait_for("CURSOR_RESET", T, |l| l == "CURSOR_RESET");
    h.display.command(Command::Cursor(CursorCmd::Set {
        position: Point16 { x: 1, y: 1 },
        visible: true,
        shape: c1.clone(),
    }));
    let set = p.wait_for("CURSOR_SET", T, |l| l.starts_with("CURSOR_SET"));
    assert_eq!(set, format!("CURSOR_SET 4 4 1 2 {}", hex_rgba(&c1.data)));
}

#[test]
fn device_reset_and_a_new_primary_reach_the_client() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let mut p = Probe::start(h.port(), None, "display");
    p.wait_seen("MARK", T);
    converge(&mut p, &h);
    h.display.reset();
    p.wait_for("PRIMARY_DESTROY", T, |l| l == "PRIMARY_DESTROY");
    h.display.create_primary(common::primary(800, 600));
    h.display
        .command(fill(Rect::new(100, 100, 700, 500), 0x0033_6699));
    h.display
        .command(copy_rgb32(Rect::new(0, 0, 120, 80), 120, 80));
    let prim = p.wait_for("PRIMARY", T, |l| l.starts_with("PRIMARY "));
    assert_eq!(prim, "PRIMARY 800 600 3200 32");
    h.display.sync().unwrap();
    converge(&mut p, &h);
}

#[test]
fn client_mouse_mode_when_the_vmm_has_an_absolute_pointer() {
    let mut h = start(ServerConfig {
        absolute_pointer: true,
        ..open_config()
    });
    scene(&mut h.display);
    let mut p = Probe::start(h.port(), None, "display,inputs");
    p.wait_seen("MOUSE_MODE 2", T);
    p.wait_seen("OPENED inputs:0", T);
    p.send("position 320 240 0 0");
    p.wait_for("SENT", T, |l| l == "SENT");
    assert_eq!(wait_inputs(&h, 1), vec![Ev::Abs(320, 240, 0, 0)]);
    p.send("mouse_mode 1");
    p.wait_for("MOUSE_MODE 1", T, |l| l == "MOUSE_MODE 1");
    p.send("mouse_mode 2");
    p.wait_for("MOUSE_MODE 2", T, |l| l == "MOUSE_MODE 2");
}

#[test]
fn server_mouse_mode_only_without_an_absolute_pointer() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let mut p = Probe::start(h.port(), None, "display");
    p.wait_seen("MOUSE_MODE 1", T);
    p.send("mouse_mode 2");
    p.wait_for("SENT", T, |l| l == "SENT");
    p.wait_seen("MARK", T);
    let tail = p.drain(Duration::from_millis(300));
    assert!(!tail.iter().any(|l| l == "MOUSE_MODE 2"), "{tail:?}");
}

#[test]
fn guest_keyboard_leds_reach_the_client() {
    let mut h = start(open_config());
    scene(&mut h.display);
    h.server.set_keyboard_modifiers(2); // NUM_LOCK, reported in INPUTS_INIT
    let mut p = Probe::start(h.port(), None, "display,inputs");
    p.wait_seen("OPENED inputs:0", T);
    p.wait_seen("KEY_MODIFIERS 2", T);
    h.server.set_keyboard_modifiers(4 | 1); // CAPS_LOCK | SCROLL_LOCK
    p.wait_for("KEY_MODIFIERS 5", T, |l| l == "KEY_MODIFIERS 5");
}

#[test]
fn guest_monitors_config_reaches_the_client() {
    use spice_server::command::{DisplaySink, Head, MonitorsConfig};
    let mut h = start(open_config());
    scene(&mut h.display);
    let head = |id: u32, x: u32, w: u32| Head {
        id,
        surface_id: 0,
        width: w,
        height: 480,
        x,
        y: 0,
        flags: 0,
    };
    // Sent before the client joins: a late joiner gets the current config.
    h.display.monitors_config(MonitorsConfig {
        max_allowed: 4,
        heads: vec![head(0, 0, 320), head(1, 320, 320)],
    });
    let mut p = Probe::start(h.port(), None, "display");
    p.wait_for("MONITORS max=4", T, |l| l == "MONITORS max=4");
    // A config the guest does not allow (more heads than max_allowed) is ignored;
    // a later valid one arrives.
    h.display.monitors_config(MonitorsConfig {
        max_allowed: 1,
        heads: vec![head(0, 0, 320), head(1, 320, 320)],
    });
    h.display.monitors_config(MonitorsConfig {
        max_allowed: 2,
        heads: vec![head(0, 0, 640)],
    });
    p.wait_for("MONITORS max=2", T, |l| l == "MONITORS max=2");
    let seen: Vec<_> = p.log.iter().filter(|l| l.starts_with("MONITORS")).collect();
    // spice-gtk starts at max=1; after max=4 arrived, the refused config
    // (max_allowed 1) must not show up.
    let after: Vec<&str> = seen
        .iter()
        .map(|l| l.as_str())
        .skip_while(|l| *l != "MONITORS max=4")
        .collect();
    assert_eq!(after, ["MONITORS max=4", "MONITORS max=2"], "{seen:?}");
    eprintln!("client saw: {seen:?}");
}
