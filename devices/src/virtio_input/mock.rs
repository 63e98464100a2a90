//! A guest driver for tests: plays Linux' `virtio_input` against a
//! [`VirtioMmio`] transport (feature `test-utils`).
//!
//! It lays its two split queues out in a 1 MiB [`GuestMemoryMmap`] (its own
//! layout: `virtio-queue` 0.18's `MockSplitQueue` places the used ring by
//! counting avail ring *elements* instead of bytes, so for queues of 64 the
//! used ring overlaps the second half of the avail ring), writes registers the way the
//! Linux virtio-mmio + virtio-input drivers do (reset, ACKNOWLEDGE, DRIVER,
//! features, FEATURES_OK, queues, DRIVER_OK), posts one 8-byte writable
//! buffer per eventq descriptor, and reads events back from the used ring,
//! reposting each buffer like `virtinput_recv_events` does.

use std::sync::atomic::{Ordering, fence};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::config::{CFG_ID_NAME, UNION_OFFSET};
use super::device::{EVENT_SIZE, InputEvent, QUEUE_SIZE, VirtioInput};
use super::mmio::{CONFIG_OFFSET, VirtioMmio, reg, status};
use crate::qxl::IrqLine;

/// Size of the mock guest memory.
pub const MOCK_MEM_SIZE: usize = 1 << 20;
/// Where queue `i` starts (`QUEUE_BASE + i * 0x2000`).
pub const QUEUE_BASE: u64 = 0x1000;
/// Eventq buffers: descriptor `i` points at `EVENT_BUFS + 8 * i`.
pub const EVENT_BUFS: u64 = 0x1_0000;
/// Statusq buffers.
pub const STATUS_BUFS: u64 = 0x2_0000;
/// `VIRTQ_DESC_F_WRITE`.
const DESC_F_WRITE: u16 = 2;

/// Fresh zeroed guest memory for the mock.
pub fn mock_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MOCK_MEM_SIZE)])
        .unwrap_or_else(|e| panic!("mock guest memory: {e}"))
}

#[derive(Debug, Clone, Copy)]
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    avail_idx: u16,
    used_seen: u16,
}

/// The mock Linux driver.
#[derive(Debug)]
pub struct MockInputDriver {
    mem: GuestMemoryMmap,
    rings: [Ring; 2],
    status_next: u16,
    /// Every event read so far, in order.
    pub log: Vec<InputEvent>,
}

fn rd<M: vm_memory::GuestMemory, I: IrqLine>(
    t: &mut VirtioMmio<M, VirtioInput, I>,
    off: u64,
) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr<M: vm_memory::GuestMemory, I: IrqLine>(
    t: &mut VirtioMmio<M, VirtioInput, I>,
    off: u64,
    v: u32,
) {
    t.write(off, &v.to_le_bytes());
}

#[allow(clippy::cast_possible_truncation)] // addresses are below 4 GiB here
const fn lo(v: u64) -> u32 {
    v as u32
}

impl MockInputDriver {
    /// A driver over `mem` (the same memory the transport holds).
    pub fn new(mem: &GuestMemoryMmap) -> MockInputDriver {
        // desc 16 * 64 = 0x400 bytes, avail 6 + 2 * 64, used 6 + 8 * 64.
        let ring = |i: u64| {
            let base = QUEUE_BASE + i * 0x2000;
            Ring {
                desc: base,
                avail: base + 0x400,
                used: base + 0x1000,
                size: QUEUE_SIZE,
                avail_idx: 0,
                used_seen: 0,
            }
        };
        MockInputDriver {
            mem: mem.clone(),
            rings: [ring(0), ring(1)],
            status_next: 0,
            log: Vec::new(),
        }
    }

    /// Reads a config entry like `virtinput_cfg_select`: writes select and
    /// subsel, reads size, then the union bytes.
    pub fn config<M: vm_memory::GuestMemory, I: IrqLine>(
        t: &mut VirtioMmio<M, VirtioInput, I>,
        select: u8,
        subsel: u8,
    ) -> Vec<u8> {
        t.write(CONFIG_OFFSET, &[select]);
        t.write(CONFIG_OFFSET + 1, &[subsel]);
        let mut size = [0u8];
        t.read(CONFIG_OFFSET + 2, &mut size);
        let mut u = vec![0u8; usize::from(size[0])];
        for (i, b) in u.iter_mut().enumerate() {
            let mut one = [0u8];
            t.read(CONFIG_OFFSET + UNION_OFFSET + i as u64, &mut one);
            *b = one[0];
        }
        u
    }

    /// The device name (`ID_NAME`).
    pub fn name<M: vm_memory::GuestMemory, I: IrqLine>(
        t: &mut VirtioMmio<M, VirtioInput, I>,
    ) -> String {
        String::from_utf8_lossy(&Self::config(t, CFG_ID_NAME, 0)).into_owned()
    }

    /// Initialises the device like Linux' virtio-mmio probe + virtinput_probe,
    /// posting `QUEUE_SIZE` event buffers. Panics on any deviation.
    pub fn init<M: vm_memory::GuestMemory, I: IrqLine>(
        &mut self,
        t: &mut VirtioMmio<M, VirtioInput, I>,
    ) {
        self.setup(t);
        self.driver_ok(t);
    }

    /// Everything of [`init`](Self::init) before DRIVER_OK: reset,
    /// features, queues, event buffers.
    pub fn setup<M: vm_memory::GuestMemory, I: IrqLine>(
        &mut self,
        t: &mut VirtioMmio<M, VirtioInput, I>,
    ) {
        assert_eq!(rd(t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(t, reg::VERSION), 2);
        assert_eq!(rd(t, reg::DEVICE_ID), 18);
        wr(t, reg::STATUS, 0);
        wr(t, reg::STATUS, status::ACKNOWLEDGE);
        wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, reg::DEVICE_FEATURES_SEL, 1);
        let hi = rd(t, reg::DEVICE_FEATURES);
        assert_eq!(hi & 1, 1, "VIRTIO_F_VERSION_1 not offered");
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, 1);
        wr(t, reg::DRIVER_FEATURES_SEL, 0);
        wr(t, reg::DRIVER_FEATURES, 0);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(t, reg::STATUS, s);
        assert_eq!(
            rd(t, reg::STATUS) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        for (i, r) in (0u32..).zip(self.rings.iter()) {
            wr(t, reg::QUEUE_SEL, i);
            assert_eq!(rd(t, reg::QUEUE_READY), 0);
            assert!(rd(t, reg::QUEUE_NUM_MAX) >= u32::from(r.size));
            wr(t, reg::QUEUE_NUM, u32::from(r.size));
            wr(t, reg::QUEUE_DESC_LOW, lo(r.desc));
            wr(t, reg::QUEUE_DESC_HIGH, 0);
            wr(t, reg::QUEUE_DRIVER_LOW, lo(r.avail));
            wr(t, reg::QUEUE_DRIVER_HIGH, 0);
            wr(t, reg::QUEUE_DEVICE_LOW, lo(r.used));
            wr(t, reg::QUEUE_DEVICE_HIGH, 0);
            wr(t, reg::QUEUE_READY, 1);
        }
        // virtinput_fill_evt runs before DRIVER_OK (virtio_device_ready).
        for i in 0..QUEUE_SIZE {
            self.post(0, i, EVENT_BUFS + u64::from(i) * 8, 8, DESC_F_WRITE);
        }
    }

    /// Sets DRIVER_OK and kicks the eventq.
    pub fn driver_ok<M: vm_memory::GuestMemory, I: IrqLine>(
        &mut self,
        t: &mut VirtioMmio<M, VirtioInput, I>,
    ) {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(t, reg::STATUS, s | status::DRIVER_OK);
        assert_eq!(rd(t, reg::STATUS) & status::DRIVER_OK, status::DRIVER_OK);
        wr(t, reg::QUEUE_NOTIFY, 0);
    }

    /// Writes descriptor `index` of queue `q` and makes it available.
    pub fn post(&mut self, q: usize, index: u16, addr: u64, len: u32, flags: u16) {
        let r = &mut self.rings[q];
        let d = GuestAddress(r.desc + u64::from(index % r.size) * 16);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        self.mem.write_slice(&raw, d).expect("descriptor");
        let slot = GuestAddress(r.avail + 4 + u64::from(r.avail_idx % r.size) * 2);
        self.mem.write_obj(index.to_le(), slot).expect("avail slot");
        fence(Ordering::SeqCst);
        r.avail_idx = r.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(r.avail_idx.to_le(), GuestAddress(r.avail + 2))
            .expect("avail idx");
    }

    /// New used entries of queue `q`: `(descriptor id, length)`.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let r = &mut self.rings[q];
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(r.used + 2))
            .expect("used idx");
        let mut out = Vec::new();
        while r.used_seen != idx {
            let e = GuestAddress(r.used + 4 + u64::from(r.used_seen % r.size) * 8);
            let id: u32 = self.mem.read_obj(e).expect("used id");
            let len: u32 = self.mem.read_obj(GuestAddress(e.0 + 4)).expect("used len");
            out.push((id, len));
            r.used_seen = r.used_seen.wrapping_add(1);
        }
        out
    }

    /// Collects the events the device wrote since the last call, reposts the
    /// buffers and kicks the eventq (like `virtinput_recv_events`), and
    /// acknowledges the interrupt.
    pub fn read_events<M: vm_memory::GuestMemory, I: IrqLine>(
        &mut self,
        t: &mut VirtioMmio<M, VirtioInput, I>,
    ) -> Vec<InputEvent> {
        let isr = rd(t, reg::INTERRUPT_STATUS);
        wr(t, reg::INTERRUPT_ACK, isr);
        let mut evs = Vec::new();
        let used = self.take_used(0);
        for &(id, len) in &used {
            let Ok(id) = u16::try_from(id) else { continue };
            if len as usize == EVENT_SIZE {
                let mut b = [0u8; EVENT_SIZE];
                self.mem
                    .read_slice(&mut b, GuestAddress(EVENT_BUFS + u64::from(id) * 8))
                    .expect("event buffer");
                evs.push(InputEvent::from_bytes(b));
            }
            self.post(0, id, EVENT_BUFS + u64::from(id) * 8, 8, DESC_F_WRITE);
        }
        if !used.is_empty() {
            wr(t, reg::QUEUE_NOTIFY, 0);
        }
        self.log.extend(evs.iter().copied());
        evs
    }

    /// Sends one event on the statusq (like `virtinput_send_status`) and
    /// kicks it.
    pub fn send_status<M: vm_memory::GuestMemory, I: IrqLine>(
        &mut self,
        t: &mut VirtioMmio<M, VirtioInput, I>,
        ev: InputEvent,
    ) {
        let i = self.status_next % QUEUE_SIZE;
        self.status_next = self.status_next.wrapping_add(1);
        let addr = STATUS_BUFS + u64::from(i) * 8;
        self.mem
            .write_slice(&ev.to_bytes(), GuestAddress(addr))
            .expect("status buffer");
        self.post(1, i, addr, 8, 0);
        wr(t, reg::QUEUE_NOTIFY, 1);
        let _ = self.take_used(1);
    }
}
