//! virtio-input: the guest keyboard, tablet and mouse the SPICE inputs channel drives.
//!
//! # Primer on virtio-input (virtio spec 1.2 §5.8)
//!
//! A virtio-input device (device type 18) is an evdev device on a virtqueue.
//! The driver learns what the device can emit from its **config space**: it
//! writes `select`/`subsel` and reads back `size` and a 128-byte union:
//!
//! | select | subsel | union holds |
//! |---|---|---|
//! | `ID_NAME` (1) | 0 | the device name (no NUL) |
//! | `ID_SERIAL` (2) | 0 | a serial string |
//! | `ID_DEVIDS` (3) | 0 | `{bustype, vendor, product, version}` le16 each |
//! | `PROP_BITS` (0x10) | 0 | the `INPUT_PROP_*` bitmap |
//! | `EV_BITS` (0x11) | an `EV_*` type | the bitmap of codes of that type |
//! | `ABS_INFO` (0x12) | an `ABS_*` axis | `{min, max, fuzz, flat, res}` le32 each |
//!
//! `size` 0 means "nothing there". Linux refuses a device without
//! `VIRTIO_F_VERSION_1`.
//!
//! Queue 0, the **eventq**, carries device → driver events: the driver posts
//! device-writable 8-byte buffers and the device fills each with one
//! `virtio_input_event {le16 type, le16 code, le32 value}`, exactly the evdev
//! `input_event` without its timestamp. A group of events ends with
//! `EV_SYN/SYN_REPORT`, which is when the guest's input core delivers them.
//! Queue 1, the **statusq**, carries driver → device events, in practice
//! `EV_LED` for the keyboard lock LEDs.
//!
//! # What this module holds
//!
//! - [`evdev`]: the Linux event type and code numbers used here.
//! - [`keymap`]: PC scan code set 1 (as SPICE sends it) → `KEY_*`.
//! - [`config`]: the config space of a keyboard, a tablet and a mouse.
//! - [`device`]: [`VirtioInput`], the event/status queue state machine with a
//!   bounded host-side event buffer.
//! - [`mmio`]: [`VirtioMmio`], the virtio-mmio (version 2) transport as a
//!   register state machine.
//! - `mock` (feature `test-utils`): a driver that plays Linux' `virtio_input`
//!   against the transport over `virtio-queue`'s `MockSplitQueue` layout.
//!
//! # Threat model
//!
//! The guest owns the queues and every descriptor in them. A chain that is too
//! short, read-only, out of memory or cyclic is returned with length 0 and
//! counted; it never panics or loops. A guest that posts no buffers cannot
//! make the host buffer grow: pending events are capped (CVE-2020-27173 is the
//! serial-FIFO version of that flood) and the overflow is dropped whole
//! batches at a time, and counted.

pub mod config;
pub mod device;
pub mod evdev;
pub mod keymap;
pub mod mmio;
#[cfg(any(test, feature = "test-utils"))]
pub mod mock;

pub use config::{InputConfig, InputKind};
pub use device::{InputEvent, LedObserver, VirtioInput, VirtioInputMetrics};
pub use mmio::{VirtioDevice, VirtioMmio};

/// The virtio device type of an input device.
pub const VIRTIO_ID_INPUT: u32 = 18;

/// Feature bit: the device conforms to virtio 1.0 or later (bit 32).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Something that accepts a batch of events for a guest input device and
/// delivers it (a [`VirtioMmio`] behind a mutex, or a test recorder).
///
/// A batch is delivered with a trailing `SYN_REPORT`; implementations may drop
/// whole batches when the guest is not consuming them.
pub trait InputInjector: Send + Sync {
    /// Queues `events` (without the `SYN_REPORT`) for the guest.
    fn inject(&self, events: &[InputEvent]);
}

impl<M, I> InputInjector for std::sync::Mutex<VirtioMmio<M, VirtioInput, I>>
where
    M: vm_memory::GuestMemory + Send,
    I: crate::qxl::IrqLine + Send,
{
    fn inject(&self, events: &[InputEvent]) {
        let mut t = self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.with_device(|dev, mem, queues| dev.inject(events, mem, queues));
    }
}
#[cfg(test)]
mod tests;
