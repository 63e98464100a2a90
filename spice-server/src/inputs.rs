//! The interface through which client keyboard and mouse input reaches the VMM.
//!
//! # Primer
//!
//! SPICE clients send keys as PC XT **scan code set 1** codes: the make code
//! for a press, make | 0x80 for a release, extended keys with an 0xE0 prefix
//! byte. On the wire a code is up to four bytes packed little-endian into a
//! u32 (Right Ctrl down = `0x1DE0`); [`InputSink::key_down`] and
//! [`InputSink::key_up`] receive that u32 as sent.
//!
//! Pointer input comes in two mouse modes: *server* mode sends relative
//! motion (the guest draws its own cursor), *client* mode sends absolute
//! positions on a display (needs an absolute device in the guest, e.g. a
//! virtio tablet). Buttons travel as a mask (LEFT 1, MIDDLE 2, RIGHT 4, UP 8,
//! DOWN 16, SIDE 32, EXTRA 64); a wheel step is a press+release of UP or DOWN.
//!
//! Every method is called from a network thread, in the order the client sent
//! the messages; implementations must not block for long.
//!
//! The other direction, the guest's keyboard LEDs, goes through
//! `SpiceServer::set_keyboard_modifiers`, which the server reports to the client
//! in `INPUTS_INIT` and `KEY_MODIFIERS`.

/// Mouse button mask bits (`SPICE_MOUSE_BUTTON_MASK_*`).
pub mod buttons {
    /// Left button.
    pub const LEFT: u16 = 1 << 0;
    /// Middle button.
    pub const MIDDLE: u16 = 1 << 1;
    /// Right button.
    pub const RIGHT: u16 = 1 << 2;
    /// Wheel up.
    pub const UP: u16 = 1 << 3;
    /// Wheel down.
    pub const DOWN: u16 = 1 << 4;
    /// Side button.
    pub const SIDE: u16 = 1 << 5;
    /// Extra button.
    pub const EXTRA: u16 = 1 << 6;
}

/// Keyboard lock modifiers (`SPICE_KEYBOARD_MODIFIER_FLAGS_*`).
pub mod modifiers {
    /// Scroll lock.
    pub const SCROLL_LOCK: u16 = 1;
    /// Num lock.
    pub const NUM_LOCK: u16 = 2;
    /// Caps lock.
    pub const CAPS_LOCK: u16 = 4;
}

/// Receives the client's input. Implemented by the VMM (e.g. a virtio-input
/// keyboard and tablet).
pub trait InputSink: Send {
    /// A key was pressed: scan code set 1 bytes packed little-endian.
    fn key_down(&mut self, scancode: u32);

    /// A key was released: scan code set 1 bytes packed little-endian (the
    /// release code, make | 0x80, as the client sent it).
    fn key_up(&mut self, scancode: u32);

    /// Absolute pointer position on `display` (client mouse mode), with the
    /// current button mask.
    fn pointer_absolute(&mut self, x: u32, y: u32, buttons: u16, display: u8);

    /// Relative pointer motion (server mouse mode), with the current button mask.
    fn pointer_relative(&mut self, dx: i32, dy: i32, buttons: u16);

    /// The button mask changed (press or release; wheel steps are UP/DOWN bits).
    fn buttons(&mut self, mask: u16);

    /// The client's lock-key state (see [`modifiers`]).
    fn modifiers(&mut self, modifiers: u16);
}

/// An [`InputSink`] that drops everything (for display-only servers).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInput;

impl InputSink for NoInput {
    fn key_down(&mut self, _: u32) {}
    fn key_up(&mut self, _: u32) {}
    fn pointer_absolute(&mut self, _: u32, _: u32, _: u16, _: u8) {}
    fn pointer_relative(&mut self, _: i32, _: i32, _: u16) {}
    fn buttons(&mut self, _: u16) {}
    fn modifiers(&mut self, _: u16) {}
}
