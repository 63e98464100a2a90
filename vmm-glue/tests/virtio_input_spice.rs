//! End to end: the real spice-gtk client (GObject probe) types and points;
//! the SPICE server hands the input to `VirtioInputSink`, which feeds three
//! virtio-input devices behind virtio-mmio transports; a mock Linux driver
//! reads the evdev events off each eventq, in order. The guest's Caps Lock
//! LED goes the other way, back to the client as KEY_MODIFIERS.

// Test code: panics are the failure reports; the shared client harness has
// helpers this file does not use.
#![allow(clippy::unwrap_used, dead_code, missing_docs)]

#[path = "../../spice-server/tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use devices::qxl::IrqLine;
use devices::virtio_input::evdev::{
    ABS_X, ABS_Y, BTN_LEFT, EV_ABS, EV_KEY, EV_LED, EV_REL, LED_CAPSL, REL_WHEEL, REL_X, REL_Y,
};
use devices::virtio_input::keymap::{KEY_A, KEY_RIGHTCTRL};
use devices::virtio_input::mock::{MockInputDriver, mock_memory};
use devices::virtio_input::{
    InputConfig, InputEvent, InputInjector, InputKind, VirtioInput, VirtioMmio,
};
use spice_server::{ServerConfig, SpiceServer};
use vm_memory::GuestMemoryMmap;
use vmm_glue::input::{VirtioInputSink, led_observer, scale_abs};

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&self, _: bool) {}
}

type Transport = Mutex<VirtioMmio<GuestMemoryMmap, VirtioInput, NoIrq>>;

struct Guest {
    dev: Arc<Transport>,
    drv: MockInputDriver,
}

impl Guest {
    fn new(kind: InputKind) -> Guest {
        let mem = mock_memory();
        let mut drv = MockInputDriver::new(&mem);
        let mut t = VirtioMmio::new(mem, VirtioInput::new(InputConfig::new(kind)), NoIrq);
        drv.init(&mut t);
        Guest {
            dev: Arc::new(Mutex::new(t)),
            drv,
        }
    }

    fn injector(&self) -> Arc<dyn InputInjector> {
        Arc::clone(&self.dev) as Arc<dyn InputInjector>
    }

    /// Waits until the driver has read `n` events in total; returns them.
    fn wait_events(&mut self, n: usize) -> Vec<InputEvent> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            {
                let mut t = self.dev.lock().unwrap();
                self.drv.read_events(&mut t);
            }
            if self.drv.log.len() >= n {
                return self.drv.log.clone();
            }
            assert!(
                Instant::now() < deadline,
                "only {:?} of {n} events arrived",
                self.drv.log
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn send(p: &mut common::Probe, cmd: &str) {
    p.send(cmd);
    let r = p.wait_for("SENT", Duration::from_secs(10), |l| {
        l == "SENT" || l.starts_with("ERROR")
    });
    assert_eq!(r, "SENT", "{cmd}");
}

const SYN: InputEvent = InputEvent::syn();

#[test]
fn spice_gtk_input_reaches_the_guest_eventqs_in_order() {
    common::init_log();
    let mut kbd = Guest::new(InputKind::Keyboard);
    let mut tablet = Guest::new(InputKind::Tablet);
    let mut mouse = Guest::new(InputKind::Mouse);
    let sink = VirtioInputSink::new(
        Some(kbd.injector()),
        Some(tablet.injector()),
        Some(mouse.injector()),
    );
    sink.display_size().set(1024, 768);
    let server: Arc<OnceLock<Arc<SpiceServer>>> = Arc::new(OnceLock::new());
    let srv = Arc::clone(&server);
    kbd.dev
        .lock()
        .unwrap()
        .device_mut()
        .set_led_observer(led_observer(sink.guest_modifiers(), move |m| {
            if let Some(s) = srv.get() {
                s.set_keyboard_modifiers(m);
            }
        }));
    let (s, _display) = SpiceServer::start(
        ServerConfig {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            disable_ticketing: true,
            absolute_pointer: true,
            ..ServerConfig::default()
        },
        Box::new(sink),
    )
    .unwrap();
    let port = s.local_addr().port();
    let _ = server.set(Arc::new(s));

    let mut p = common::Probe::start(port, None, "main,inputs");
    p.wait_seen("OPENED inputs:0", Duration::from_secs(20));

    // Keyboard: A, then Right Ctrl (spice-gtk: 0x100 | code for E0 keys).
    for cmd in [
        "key_press 0x1e",
        "key_release 0x1e",
        "key_press 0x11d",
        "key_release 0x11d",
    ] {
        send(&mut p, cmd);
    }
    let key = |c, v| InputEvent::new(EV_KEY, c, v);
    assert_eq!(
        kbd.wait_events(8),
        [
            key(KEY_A, 1),
            SYN,
            key(KEY_A, 0),
            SYN,
            key(KEY_RIGHTCTRL, 1),
            SYN,
            key(KEY_RIGHTCTRL, 0),
            SYN
        ]
    );

    // Tablet (client mouse mode): a position, a left click, a wheel step up.
    for cmd in [
        "position 100 200 0 0",
        "button_press 1 1",
        "button_release 1 0",
        "button_press 4 8",
        "button_release 4 0",
        "position 1023 767 0 0",
    ] {
        send(&mut p, cmd);
    }
    let abs = |c, v| InputEvent::new(EV_ABS, c, v);
    // The wheel release changes no button: no event, no SYN.
    assert_eq!(
        tablet.wait_events(12),
        [
            abs(ABS_X, scale_abs(100, 1024)),
            abs(ABS_Y, scale_abs(200, 768)),
            SYN,
            key(BTN_LEFT, 1),
            SYN,
            key(BTN_LEFT, 0),
            SYN,
            InputEvent::signed(EV_REL, REL_WHEEL, 1),
            SYN,
            abs(ABS_X, 32767),
            abs(ABS_Y, 32767),
            SYN,
        ]
    );

    // Mouse (server mouse mode): relative motion.
    send(&mut p, "mouse_mode 1");
    p.wait_for("MOUSE_MODE 1", Duration::from_secs(10), |l| {
        l == "MOUSE_MODE 1"
    });
    send(&mut p, "motion 5 -3 0");
    assert_eq!(
        mouse.wait_events(3),
        [
            InputEvent::signed(EV_REL, REL_X, 5),
            InputEvent::signed(EV_REL, REL_Y, -3),
            SYN
        ]
    );

    // The guest turns Caps Lock on: the client hears KEY_MODIFIERS 4.
    {
        let mut t = kbd.dev.lock().unwrap();
        kbd.drv
            .send_status(&mut t, InputEvent::new(EV_LED, LED_CAPSL, 1));
    }
    p.wait_for("KEY_MODIFIERS 4", Duration::from_secs(10), |l| {
        l == "KEY_MODIFIERS 4"
    });
    assert_eq!(kbd.drv.log.len(), 8, "no stray keyboard events");
}
