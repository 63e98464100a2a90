//! [`VirtioInputSink`]: the SPICE inputs channel → virtio-input devices.
//!
//! # Primer
//!
//! The SPICE server calls an [`InputSink`] from its inputs thread with PC
//! scan codes and pointer state; the guest wants evdev events on its
//! virtio-input eventqs. This sink translates:
//!
//! - keys: scan code set 1 → `KEY_*` ([`devices::virtio_input::keymap`]),
//!   `EV_KEY code 1/0` to the keyboard;
//! - client mouse mode (absolute): the position on the primary surface is
//!   scaled to the tablet's `0..=32767` axes, `EV_ABS ABS_X/ABS_Y`;
//! - server mouse mode (relative): `EV_REL REL_X/REL_Y` to the mouse;
//! - the button mask: each changed bit is an `EV_KEY BTN_*` press/release
//!   edge; a rising UP/DOWN bit is a wheel step `EV_REL REL_WHEEL ±1`.
//!   Buttons go to whichever pointer device was used last;
//! - the client's lock keys: when they differ from the guest's LEDs the sink
//!   taps Caps/Num/Scroll Lock, as QEMU's spice input does.
//!
//! Each call becomes one batch (one `SYN_REPORT`). The devices are reached
//! through [`InputInjector`]s (in a VMM, `Mutex<VirtioMmio<..>>`), so the
//! sink is `Send` and never holds a device lock across calls.
//!
//! The other direction: [`led_observer`] builds the keyboard's LED observer,
//! which records the guest's lock state for the sink and reports it to the
//! client (`SpiceServer::set_keyboard_modifiers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use devices::virtio_input::config::ABS_MAX;
use devices::virtio_input::device::leds_to_spice_modifiers;
use devices::virtio_input::evdev::{
    ABS_X, ABS_Y, BTN_EXTRA, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, BTN_SIDE, EV_ABS, EV_KEY, EV_REL,
    REL_WHEEL, REL_X, REL_Y,
};
use devices::virtio_input::keymap::{self, KEY_CAPSLOCK, KEY_NUMLOCK, KEY_SCROLLLOCK};
use devices::virtio_input::{InputEvent, InputInjector, LedObserver};
use spice_server::InputSink;
use spice_server::inputs::{buttons, modifiers};

/// The primary surface size the tablet scales against (shared with whoever
/// learns about mode changes, e.g. the QXL glue).
#[derive(Debug, Clone)]
pub struct DisplaySize(Arc<AtomicU64>);

impl DisplaySize {
    /// A size of `width` × `height`.
    pub fn new(width: u32, height: u32) -> DisplaySize {
        let s = DisplaySize(Arc::new(AtomicU64::new(0)));
        s.set(width, height);
        s
    }

    /// Changes the size.
    pub fn set(&self, width: u32, height: u32) {
        self.0.store(
            (u64::from(width) << 32) | u64::from(height),
            Ordering::Release,
        );
    }

    /// `(width, height)`.
    pub fn get(&self) -> (u32, u32) {
        let v = self.0.load(Ordering::Acquire);
        let [h0, h1, h2, h3, w0, w1, w2, w3] = v.to_le_bytes();
        (
            u32::from_le_bytes([w0, w1, w2, w3]),
            u32::from_le_bytes([h0, h1, h2, h3]),
        )
    }
}

/// Scales `pos` on an axis of `len` pixels to `0..=ABS_MAX` (the last pixel
/// maps to `ABS_MAX`; positions beyond the surface are clamped).
pub fn scale_abs(pos: u32, len: u32) -> u32 {
    let last = u64::from(len.saturating_sub(1));
    if last == 0 {
        return 0;
    }
    let p = u64::from(pos).min(last);
    let v = p.saturating_mul(u64::from(ABS_MAX)) / last;
    u32::try_from(v).unwrap_or(ABS_MAX)
}

/// The keyboard's [`LedObserver`]: stores the guest's lock state (as SPICE
/// modifier bits) in `guest_modifiers` and calls `report` with it.
pub fn led_observer(
    guest_modifiers: Arc<AtomicU16>,
    report: impl Fn(u16) + Send + 'static,
) -> LedObserver {
    Box::new(move |leds| {
        let m = leds_to_spice_modifiers(leds);
        guest_modifiers.store(m, Ordering::Release);
        report(m);
    })
}

const BUTTON_MAP: [(u16, u16); 5] = [
    (buttons::LEFT, BTN_LEFT),
    (buttons::MIDDLE, BTN_MIDDLE),
    (buttons::RIGHT, BTN_RIGHT),
    (buttons::SIDE, BTN_SIDE),
    (buttons::EXTRA, BTN_EXTRA),
];

/// Appends the events for a button mask change `old` → `new`.
fn button_edges(old: u16, new: u16, out: &mut Vec<InputEvent>) {
    let changed = old ^ new;
    for (bit, btn) in BUTTON_MAP {
        if changed & bit != 0 {
            out.push(InputEvent::new(EV_KEY, btn, u32::from(new & bit != 0)));
        }
    }
    let rising = changed & new;
    if rising & buttons::UP != 0 {
        out.push(InputEvent::signed(EV_REL, REL_WHEEL, 1));
    }
    if rising & buttons::DOWN != 0 {
        out.push(InputEvent::signed(EV_REL, REL_WHEEL, -1));
    }
}

/// An [`InputSink`] driving a virtio keyboard, tablet and mouse.
pub struct VirtioInputSink {
    keyboard: Option<Arc<dyn InputInjector>>,
    tablet: Option<Arc<dyn InputInjector>>,
    mouse: Option<Arc<dyn InputInjector>>,
    display: DisplaySize,
    guest_modifiers: Arc<AtomicU16>,
    tablet_buttons: u16,
    mouse_buttons: u16,
    absolute: bool,
}

impl std::fmt::Debug for VirtioInputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInputSink")
            .field("keyboard", &self.keyboard.is_some())
            .field("tablet", &self.tablet.is_some())
            .field("mouse", &self.mouse.is_some())
            .field("display", &self.display.get())
            .field("absolute", &self.absolute)
            .finish_non_exhaustive()
    }
}

impl VirtioInputSink {
    /// A sink for the given devices (any may be missing: its input is
    /// dropped), scaling against a 1024×768 display until told otherwise.
    pub fn new(
        keyboard: Option<Arc<dyn InputInjector>>,
        tablet: Option<Arc<dyn InputInjector>>,
        mouse: Option<Arc<dyn InputInjector>>,
    ) -> VirtioInputSink {
        VirtioInputSink {
            absolute: tablet.is_some(),
            keyboard,
            tablet,
            mouse,
            display: DisplaySize::new(1024, 768),
            guest_modifiers: Arc::new(AtomicU16::new(0)),
            tablet_buttons: 0,
            mouse_buttons: 0,
        }
    }

    /// The display size handle (update it when the primary surface changes).
    pub fn display_size(&self) -> DisplaySize {
        self.display.clone()
    }

    /// The guest's lock state as SPICE modifier bits; pass it to
    /// [`led_observer`] for the keyboard device.
    pub fn guest_modifiers(&self) -> Arc<AtomicU16> {
        Arc::clone(&self.guest_modifiers)
    }

    fn send(dev: Option<&Arc<dyn InputInjector>>, events: &[InputEvent]) {
        if let Some(d) = dev
            && !events.is_empty()
        {
            d.inject(events);
        }
    }

    fn key(&self, scancode: u32, down: bool) {
        match keymap::translate(scancode) {
            Some(k) => Self::send(
                self.keyboard.as_ref(),
                &[InputEvent::new(EV_KEY, k.code, u32::from(down))],
            ),
            None => log::debug!("virtio-input: unknown scan code {scancode:#x}"),
        }
    }

    fn tap(&self, key: u16) {
        Self::send(self.keyboard.as_ref(), &[InputEvent::new(EV_KEY, key, 1)]);
        Self::send(self.keyboard.as_ref(), &[InputEvent::new(EV_KEY, key, 0)]);
    }
}

impl InputSink for VirtioInputSink {
    fn key_down(&mut self, scancode: u32) {
        self.key(scancode, true);
    }

    fn key_up(&mut self, scancode: u32) {
        self.key(scancode, false);
    }

    fn pointer_absolute(&mut self, x: u32, y: u32, mask: u16, _display: u8) {
        self.absolute = true;
        let (w, h) = self.display.get();
        let mut evs = vec![
            InputEvent::new(EV_ABS, ABS_X, scale_abs(x, w)),
            InputEvent::new(EV_ABS, ABS_Y, scale_abs(y, h)),
        ];
        button_edges(self.tablet_buttons, mask, &mut evs);
        self.tablet_buttons = mask;
        Self::send(self.tablet.as_ref(), &evs);
    }

    fn pointer_relative(&mut self, dx: i32, dy: i32, mask: u16) {
        self.absolute = false;
        let mut evs = Vec::with_capacity(4);
        if dx != 0 {
            evs.push(InputEvent::signed(EV_REL, REL_X, dx));
        }
        if dy != 0 {
            evs.push(InputEvent::signed(EV_REL, REL_Y, dy));
        }
        button_edges(self.mouse_buttons, mask, &mut evs);
        self.mouse_buttons = mask;
        Self::send(self.mouse.as_ref(), &evs);
    }

    fn buttons(&mut self, mask: u16) {
        let mut evs = Vec::with_capacity(4);
        if self.absolute {
            button_edges(self.tablet_buttons, mask, &mut evs);
            self.tablet_buttons = mask;
            Self::send(self.tablet.as_ref(), &evs);
        } else {
            button_edges(self.mouse_buttons, mask, &mut evs);
            self.mouse_buttons = mask;
            Self::send(self.mouse.as_ref(), &evs);
        }
    }

    fn modifiers(&mut self, m: u16) {
        let guest = self.guest_modifiers.load(Ordering::Acquire);
        let differ = guest ^ m;
        for (bit, key) in [
            (modifiers::CAPS_LOCK, KEY_CAPSLOCK),
            (modifiers::NUM_LOCK, KEY_NUMLOCK),
            (modifiers::SCROLL_LOCK, KEY_SCROLLLOCK),
        ] {
            if differ & bit != 0 {
                self.tap(key);
            }
        }
        // Until the guest reports its LEDs, assume the taps took effect.
        self.guest_modifiers.store(m, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use devices::virtio_input::evdev::EV_SYN;

    #[derive(Default)]
    struct Rec(Mutex<Vec<InputEvent>>);

    impl InputInjector for Rec {
        fn inject(&self, events: &[InputEvent]) {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(events);
                v.push(InputEvent::new(EV_SYN, 0, 0));
            }
        }
    }

    impl Rec {
        fn take(&self) -> Vec<InputEvent> {
            self.0
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default()
        }
    }

    fn sink() -> (VirtioInputSink, Arc<Rec>, Arc<Rec>, Arc<Rec>) {
        let (k, t, m) = (
            Arc::new(Rec::default()),
            Arc::new(Rec::default()),
            Arc::new(Rec::default()),
        );
        let s = VirtioInputSink::new(
            Some(Arc::clone(&k) as Arc<dyn InputInjector>),
            Some(Arc::clone(&t) as Arc<dyn InputInjector>),
            Some(Arc::clone(&m) as Arc<dyn InputInjector>),
        );
        (s, k, t, m)
    }

    const SYN: InputEvent = InputEvent::syn();

    #[test]
    fn scaling() {
        assert_eq!(scale_abs(0, 1024), 0);
        assert_eq!(scale_abs(1023, 1024), ABS_MAX);
        assert_eq!(scale_abs(5000, 1024), ABS_MAX);
        assert_eq!(scale_abs(7, 0), 0);
        assert_eq!(scale_abs(u32::MAX, u32::MAX), ABS_MAX);
        let d = DisplaySize::new(800, 600);
        assert_eq!(d.get(), (800, 600));
    }

    #[test]
    fn keys_buttons_wheel_and_locks() {
        let (mut s, k, t, m) = sink();
        s.key_down(0x1de0);
        s.key_up(0x9de0);
        s.key_down(0x2ae0); // fake shift: nothing
        assert_eq!(
            k.take(),
            [
                InputEvent::new(EV_KEY, 97, 1),
                SYN,
                InputEvent::new(EV_KEY, 97, 0),
                SYN
            ]
        );
        s.display_size().set(1025, 769);
        s.pointer_absolute(512, 768, buttons::LEFT, 0);
        s.buttons(buttons::LEFT | buttons::UP);
        s.buttons(0);
        assert_eq!(
            t.take(),
            [
                InputEvent::new(EV_ABS, ABS_X, ABS_MAX / 2),
                InputEvent::new(EV_ABS, ABS_Y, ABS_MAX),
                InputEvent::new(EV_KEY, BTN_LEFT, 1),
                SYN,
                InputEvent::signed(EV_REL, REL_WHEEL, 1),
                SYN,
                InputEvent::new(EV_KEY, BTN_LEFT, 0),
                SYN
            ]
        );
        s.pointer_relative(-3, 0, buttons::RIGHT);
        s.buttons(buttons::DOWN);
        assert_eq!(
            m.take(),
            [
                InputEvent::signed(EV_REL, REL_X, -3),
                InputEvent::new(EV_KEY, BTN_RIGHT, 1),
                SYN,
                InputEvent::new(EV_KEY, BTN_RIGHT, 0),
                InputEvent::signed(EV_REL, REL_WHEEL, -1),
                SYN
            ]
        );
        assert!(t.take().is_empty());
        // Client has Caps Lock on, guest has nothing: tap Caps Lock once.
        s.modifiers(modifiers::CAPS_LOCK);
        s.modifiers(modifiers::CAPS_LOCK);
        assert_eq!(
            k.take(),
            [
                InputEvent::new(EV_KEY, KEY_CAPSLOCK, 1),
                SYN,
                InputEvent::new(EV_KEY, KEY_CAPSLOCK, 0),
                SYN
            ]
        );
        let seen = Arc::new(AtomicU16::new(0));
        let seen2 = Arc::clone(&seen);
        let o = led_observer(s.guest_modifiers(), move |v| {
            seen2.store(v, Ordering::SeqCst)
        });
        o(1 << 0); // LED_NUML
        assert_eq!(seen.load(Ordering::SeqCst), modifiers::NUM_LOCK);
        assert_eq!(
            s.guest_modifiers().load(Ordering::SeqCst),
            modifiers::NUM_LOCK
        );
    }
}
