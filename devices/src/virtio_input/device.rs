//! [`VirtioInput`]: the eventq/statusq state machine of one input device.
//!
//! # Event flow
//!
//! The host [`inject`](VirtioInput::inject)s a batch (say `EV_KEY KEY_A 1`);
//! the device appends it and a `SYN_REPORT` to a bounded FIFO, then moves
//! events from the FIFO into the driver's eventq buffers, one event per
//! buffer, until either runs out. Whatever is left waits for the next queue
//! notification (the driver posting buffers). When the FIFO cannot take a
//! whole batch the batch is dropped and counted: a guest that stops reading
//! loses input, the host never grows.
//!
//! The statusq is drained on every notification; `EV_LED` events update the
//! LED state, which a [`LedObserver`] hears about when it changes.

use std::collections::VecDeque;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemory};

use super::config::{CONFIG_SIZE, InputConfig};
use super::evdev::{EV_LED, EV_SYN, LED_CAPSL, LED_NUML, LED_SCROLLL, SYN_REPORT};
use super::mmio::VirtioDevice;
use super::{VIRTIO_F_VERSION_1, VIRTIO_ID_INPUT};

/// Index of the eventq.
pub const EVENTQ: usize = 0;
/// Index of the statusq.
pub const STATUSQ: usize = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 64;
/// Default capacity of the host-side event FIFO (events, `SYN`s included).
pub const DEFAULT_PENDING_CAP: usize = 256;
/// Size of `virtio_input_event`.
pub const EVENT_SIZE: usize = 8;

/// `virtio_input_event`: an evdev event without its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InputEvent {
    /// `EV_*`.
    pub ty: u16,
    /// The code within the type (`KEY_*`, `ABS_*`, …).
    pub code: u16,
    /// The value (1 press / 0 release, a position, a delta).
    pub value: u32,
}

impl InputEvent {
    /// An event.
    pub const fn new(ty: u16, code: u16, value: u32) -> InputEvent {
        InputEvent { ty, code, value }
    }

    /// An event with a signed value (relative motion).
    pub const fn signed(ty: u16, code: u16, value: i32) -> InputEvent {
        InputEvent {
            ty,
            code,
            value: u32::from_le_bytes(value.to_le_bytes()),
        }
    }

    /// `EV_SYN SYN_REPORT 0`.
    pub const fn syn() -> InputEvent {
        InputEvent::new(EV_SYN, SYN_REPORT, 0)
    }

    /// The value as a signed number.
    pub const fn signed_value(&self) -> i32 {
        i32::from_le_bytes(self.value.to_le_bytes())
    }

    /// The 8 little-endian bytes of the guest ABI.
    pub fn to_bytes(self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[0..2].copy_from_slice(&self.ty.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Parses the guest ABI.
    pub const fn from_bytes(b: [u8; EVENT_SIZE]) -> InputEvent {
        InputEvent {
            ty: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Hears the keyboard LED state (a bitmap of `LED_*` bit numbers) when the
/// guest changes it.
pub type LedObserver = Box<dyn Fn(u16) + Send>;

/// Converts an LED bitmap to SPICE's `inputs::modifiers` bits.
pub fn leds_to_spice_modifiers(leds: u16) -> u16 {
    use spice_server::inputs::modifiers::{CAPS_LOCK, NUM_LOCK, SCROLL_LOCK};
    let mut m = 0;
    for (led, bit) in [
        (LED_NUML, NUM_LOCK),
        (LED_CAPSL, CAPS_LOCK),
        (LED_SCROLLL, SCROLL_LOCK),
    ] {
        if leds & (1 << led) != 0 {
            m |= bit;
        }
    }
    m
}

/// Counters (observability; never read by the state machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioInputMetrics {
    /// Events written into eventq buffers.
    pub events_delivered: u64,
    /// Events dropped because the FIFO was full (whole batches, `SYN` included).
    pub events_dropped: u64,
    /// Batches dropped.
    pub batches_dropped: u64,
    /// Eventq chains returned unused (no writable 8-byte descriptor, bad address).
    pub bad_event_buffers: u64,
    /// Statusq events read.
    pub status_events: u64,
    /// Statusq chains that held no readable 8-byte event.
    pub bad_status_buffers: u64,
}

/// One virtio-input device: its config space, the bounded event FIFO, the
/// LED state.
pub struct VirtioInput {
    config: InputConfig,
    pending: VecDeque<InputEvent>,
    cap: usize,
    leds: u16,
    led_observer: Option<LedObserver>,
    metrics: VirtioInputMetrics,
}

impl std::fmt::Debug for VirtioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInput")
            .field("kind", &self.config.kind())
            .field("pending", &self.pending.len())
            .field("cap", &self.cap)
            .field("leds", &self.leds)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl VirtioInput {
    /// A device with `config` and a FIFO of [`DEFAULT_PENDING_CAP`] events.
    pub fn new(config: InputConfig) -> VirtioInput {
        VirtioInput::with_capacity(config, DEFAULT_PENDING_CAP)
    }

    /// A device whose FIFO holds at most `cap` events (at least 2).
    pub fn with_capacity(config: InputConfig, cap: usize) -> VirtioInput {
        let cap = cap.max(2);
        VirtioInput {
            config,
            pending: VecDeque::with_capacity(cap),
            cap,
            leds: 0,
            led_observer: None,
            metrics: VirtioInputMetrics::default(),
        }
    }

    /// Registers the observer of the guest's LED changes.
    pub fn set_led_observer(&mut self, observer: LedObserver) {
        self.led_observer = Some(observer);
    }

    /// The config space.
    pub const fn config(&self) -> &InputConfig {
        &self.config
    }

    /// The counters.
    pub const fn metrics(&self) -> VirtioInputMetrics {
        self.metrics
    }

    /// The LED bitmap last set by the guest.
    pub const fn leds(&self) -> u16 {
        self.leds
    }

    /// Events waiting for eventq buffers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Appends `events` and a `SYN_REPORT` to the FIFO (or drops them all
    /// when they do not fit), then fills the eventq (`queues[EVENTQ]`, if
    /// present and ready). Returns whether the driver must be interrupted.
    pub fn inject<M: GuestMemory>(
        &mut self,
        events: &[InputEvent],
        mem: &M,
        queues: &mut [Queue],
    ) -> bool {
        let need = events.len().saturating_add(1);
        let free = self.cap.saturating_sub(self.pending.len());
        if need > free {
            self.metrics.events_dropped = self
                .metrics
                .events_dropped
                .saturating_add(u64::try_from(need).unwrap_or(u64::MAX));
            self.metrics.batches_dropped = self.metrics.batches_dropped.saturating_add(1);
            if self.metrics.batches_dropped.is_power_of_two() {
                log::warn!(
                    "virtio-input {:?}: guest not reading events, {} batches dropped",
                    self.config.kind(),
                    self.metrics.batches_dropped
                );
            }
        } else {
            self.pending.extend(events.iter().copied());
            self.pending.push_back(InputEvent::syn());
        }
        self.fill_eventq(mem, queues)
    }

    /// Moves pending events into the driver's eventq buffers. Returns whether
    /// the driver must be interrupted.
    pub fn fill_eventq<M: GuestMemory>(&mut self, mem: &M, queues: &mut [Queue]) -> bool {
        let Some(q) = queues.get_mut(EVENTQ) else {
            return false;
        };
        if !q.ready() || self.pending.is_empty() {
            return false;
        }
        let mut used = false;
        // Each turn either consumes an event or a bad chain; bad chains are
        // bounded by the queue size per call (the avail index check).
        let budget = self.pending.len().saturating_add(usize::from(q.size()));
        for _ in 0..budget {
            let Some(&ev) = self.pending.front() else {
                break;
            };
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let target = chain
                .writable()
                .find(|d| usize::try_from(d.len()).is_ok_and(|l| l >= EVENT_SIZE))
                .map(|d| d.addr());
            let written = target.is_some_and(|a| mem.write_slice(&ev.to_bytes(), a).is_ok());
            let len = if written {
                self.pending.pop_front();
                self.metrics.events_delivered = self.metrics.events_delivered.saturating_add(1);
                8
            } else {
                self.metrics.bad_event_buffers = self.metrics.bad_event_buffers.saturating_add(1);
                0
            };
            if let Err(e) = q.add_used(mem, head, len) {
                log::debug!("virtio-input: add_used failed: {e}");
            }
            used = true;
        }
        used && q.needs_notification(mem).unwrap_or(true)
    }

    /// Reads the statusq (`queues[STATUSQ]`): `EV_LED` events update the LED
    /// state. Returns whether the driver must be interrupted.
    pub fn process_statusq<M: GuestMemory>(&mut self, mem: &M, queues: &mut [Queue]) -> bool {
        let Some(q) = queues.get_mut(STATUSQ) else {
            return false;
        };
        if !q.ready() {
            return false;
        }
        let before = self.leds;
        let mut used = false;
        for _ in 0..q.size() {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut buf = [0u8; EVENT_SIZE];
            let read = chain
                .readable()
                .find(|d| usize::try_from(d.len()).is_ok_and(|l| l >= EVENT_SIZE))
                .is_some_and(|d| mem.read_slice(&mut buf, d.addr()).is_ok());
            if read {
                self.metrics.status_events = self.metrics.status_events.saturating_add(1);
                let ev = InputEvent::from_bytes(buf);
                if ev.ty == EV_LED && ev.code < 16 {
                    if ev.value != 0 {
                        self.leds |= 1 << ev.code;
                    } else {
                        self.leds &= !(1 << ev.code);
                    }
                }
            } else {
                self.metrics.bad_status_buffers = self.metrics.bad_status_buffers.saturating_add(1);
            }
            if let Err(e) = q.add_used(mem, head, 0) {
                log::debug!("virtio-input: add_used failed: {e}");
            }
            used = true;
        }
        if self.leds != before
            && let Some(o) = &self.led_observer
        {
            o(self.leds);
        }
        used && q.needs_notification(mem).unwrap_or(true)
    }
}

impl<M: GuestMemory> VirtioDevice<M> for VirtioInput {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_INPUT
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn config_size(&self) -> u64 {
        CONFIG_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn activate(&mut self, mem: &M, queues: &mut [Queue]) -> bool {
        let a = self.fill_eventq(mem, queues);
        let b = self.process_statusq(mem, queues);
        a || b
    }

    fn queue_notify(&mut self, mem: &M, queues: &mut [Queue], index: u32) -> bool {
        match index {
            0 => self.fill_eventq(mem, queues),
            1 => self.process_statusq(mem, queues),
            _ => false,
        }
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.leds = 0;
        self.config.reset();
    }
}
