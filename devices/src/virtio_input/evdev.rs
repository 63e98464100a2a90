//! Linux evdev numbers (`include/uapi/linux/input-event-codes.h`) used by the
//! virtio-input devices.

/// Event type: synchronisation.
pub const EV_SYN: u16 = 0x00;
/// Event type: keys and buttons.
pub const EV_KEY: u16 = 0x01;
/// Event type: relative axes.
pub const EV_REL: u16 = 0x02;
/// Event type: absolute axes.
pub const EV_ABS: u16 = 0x03;
/// Event type: miscellaneous.
pub const EV_MSC: u16 = 0x04;
/// Event type: LEDs.
pub const EV_LED: u16 = 0x11;
/// Event type: autorepeat.
pub const EV_REP: u16 = 0x14;

/// `SYN_REPORT`: ends a group of events.
pub const SYN_REPORT: u16 = 0;

/// Relative X.
pub const REL_X: u16 = 0x00;
/// Relative Y.
pub const REL_Y: u16 = 0x01;
/// Vertical wheel.
pub const REL_WHEEL: u16 = 0x08;

/// Absolute X.
pub const ABS_X: u16 = 0x00;
/// Absolute Y.
pub const ABS_Y: u16 = 0x01;

/// Left mouse button.
pub const BTN_LEFT: u16 = 0x110;
/// Right mouse button.
pub const BTN_RIGHT: u16 = 0x111;
/// Middle mouse button.
pub const BTN_MIDDLE: u16 = 0x112;
/// Side mouse button.
pub const BTN_SIDE: u16 = 0x113;
/// Extra mouse button.
pub const BTN_EXTRA: u16 = 0x114;

/// Num Lock LED.
pub const LED_NUML: u16 = 0x00;
/// Caps Lock LED.
pub const LED_CAPSL: u16 = 0x01;
/// Scroll Lock LED.
pub const LED_SCROLLL: u16 = 0x02;

/// Autorepeat delay.
pub const REP_DELAY: u16 = 0x00;
/// Autorepeat period.
pub const REP_PERIOD: u16 = 0x01;

/// `BUS_VIRTUAL`.
pub const BUS_VIRTUAL: u16 = 0x06;

/// Largest key code (`KEY_MAX`).
pub const KEY_MAX: u16 = 0x2ff;
