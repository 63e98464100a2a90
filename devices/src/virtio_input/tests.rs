//! Unit tests: the mock Linux driver against the transport and device, and
//! hostile drivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};

use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::config::{ABS_MAX, CFG_ABS_INFO, CFG_EV_BITS, CFG_ID_DEVIDS};
use super::device::{EVENTQ, QUEUE_SIZE, STATUSQ, leds_to_spice_modifiers};
use super::evdev::*;
use super::mmio::{INT_VRING, reg, status};
use super::mock::{MockInputDriver, mock_memory};
use super::*;
use crate::qxl::IrqLine;

#[derive(Default)]
struct Line {
    level: AtomicBool,
    raises: AtomicU32,
}

impl IrqLine for Line {
    fn set_level(&self, asserted: bool) {
        self.level.store(asserted, Ordering::SeqCst);
        if asserted {
            self.raises.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Dev = VirtioMmio<GuestMemoryMmap, VirtioInput, Arc<Line>>;

fn setup(kind: InputKind) -> (Dev, MockInputDriver, Arc<Line>) {
    let mem = mock_memory();
    let line = Arc::new(Line::default());
    let t = VirtioMmio::new(
        mem.clone(),
        VirtioInput::new(InputConfig::new(kind)),
        Arc::clone(&line),
    );
    (t, MockInputDriver::new(&mem), line)
}

fn inject(t: &mut Dev, evs: &[InputEvent]) {
    t.with_device(|d, m, q| d.inject(evs, m, q));
}

fn key(code: u16, v: u32) -> InputEvent {
    InputEvent::new(EV_KEY, code, v)
}

fn rd(t: &mut Dev, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn driver_reads_config_and_negotiates() {
    let (mut t, mut drv, _) = setup(InputKind::Tablet);
    assert_eq!(MockInputDriver::name(&mut t), "QEMU Virtio Tablet");
    assert_eq!(
        MockInputDriver::config(&mut t, CFG_ID_DEVIDS, 0),
        [6, 0, 0x27, 6, 3, 0, 1, 0]
    );
    assert_eq!(MockInputDriver::config(&mut t, CFG_EV_BITS, 3), [3]);
    assert!(MockInputDriver::config(&mut t, CFG_EV_BITS, 4).is_empty());
    let abs = MockInputDriver::config(&mut t, CFG_ABS_INFO, 0);
    assert_eq!(abs.len(), 20);
    assert_eq!(abs[4..8], ABS_MAX.to_le_bytes());
    drv.init(&mut t);
    assert!(t.is_active());
    assert_eq!(t.driver_features(), VIRTIO_F_VERSION_1);
    assert!(drv.read_events(&mut t).is_empty());
}

#[test]
fn key_press_and_release_arrive_with_syn() {
    let (mut t, mut drv, line) = setup(InputKind::Keyboard);
    drv.init(&mut t);
    inject(&mut t, &[key(30, 1)]);
    assert!(line.level.load(Ordering::SeqCst));
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), INT_VRING);
    inject(&mut t, &[key(30, 0)]);
    let evs = drv.read_events(&mut t);
    assert!(!line.level.load(Ordering::SeqCst), "ack lowers the line");
    assert_eq!(
        evs,
        [key(30, 1), InputEvent::syn(), key(30, 0), InputEvent::syn()]
    );
    assert_eq!(t.device().metrics().events_delivered, 4);
}

#[test]
fn tablet_moves_and_button_edges() {
    let (mut t, mut drv, _) = setup(InputKind::Tablet);
    drv.init(&mut t);
    let abs = |c, v| InputEvent::new(EV_ABS, c, v);
    inject(&mut t, &[abs(ABS_X, 100), abs(ABS_Y, 32767)]);
    inject(&mut t, &[key(BTN_LEFT, 1)]);
    inject(&mut t, &[InputEvent::signed(EV_REL, REL_WHEEL, -1)]);
    inject(&mut t, &[key(BTN_LEFT, 0)]);
    let evs = drv.read_events(&mut t);
    assert_eq!(evs.len(), 9);
    assert_eq!(evs[0], abs(ABS_X, 100));
    assert_eq!(evs[1], abs(ABS_Y, 32767));
    assert_eq!(evs[3], key(BTN_LEFT, 1));
    assert_eq!(evs[5].signed_value(), -1);
    assert_eq!(evs[7], key(BTN_LEFT, 0));
    assert_eq!(evs[8], InputEvent::syn());
}

#[test]
fn many_events_wrap_the_rings() {
    let (mut t, mut drv, _) = setup(InputKind::Keyboard);
    drv.init(&mut t);
    let mut want = Vec::new();
    for round in 0..40u32 {
        for k in 0..5u16 {
            let e = key(2 + k, round % 2);
            inject(&mut t, &[e]);
            want.extend([e, InputEvent::syn()]);
        }
        drv.read_events(&mut t);
    }
    assert_eq!(drv.log, want);
    assert_eq!(t.device().metrics().events_dropped, 0);
}

#[test]
fn flood_without_buffers_is_bounded_and_counted() {
    let (mut t, mut drv, _) = setup(InputKind::Keyboard);
    drv.init(&mut t); // 64 buffers posted, never reposted below
    for i in 0..100_000u32 {
        inject(&mut t, &[key(30, i % 2)]);
    }
    let d = t.device();
    assert!(d.pending() <= device::DEFAULT_PENDING_CAP);
    let m = d.metrics();
    assert_eq!(m.events_delivered, u64::from(QUEUE_SIZE));
    assert_eq!(
        m.events_delivered + d.pending() as u64 + m.events_dropped,
        200_000
    );
    assert!(m.batches_dropped > 99_000);
    // The guest comes back: it sees whole batches, each ending with SYN.
    let mut evs = Vec::new();
    for _ in 0..10 {
        evs.extend(drv.read_events(&mut t));
    }
    assert_eq!(
        evs.len(),
        usize::from(QUEUE_SIZE) + device::DEFAULT_PENDING_CAP
    );
    assert!(evs.chunks(2).all(|c| c[1] == InputEvent::syn()));
}

#[test]
fn events_before_driver_ok_wait_then_arrive() {
    let (mut t, mut drv, line) = setup(InputKind::Mouse);
    drv.setup(&mut t);
    inject(&mut t, &[InputEvent::signed(EV_REL, REL_X, -5)]);
    assert!(!line.level.load(Ordering::SeqCst));
    assert_eq!(t.device().pending(), 2);
    drv.driver_ok(&mut t);
    let evs = drv.read_events(&mut t);
    assert_eq!(evs[0].signed_value(), -5);
    assert_eq!(evs[1], InputEvent::syn());
}

#[test]
fn reset_drops_pending_and_stops_delivery() {
    let (mut t, mut drv, _) = setup(InputKind::Keyboard);
    drv.init(&mut t);
    t.write(reg::STATUS, &0u32.to_le_bytes());
    assert!(!t.is_active());
    inject(&mut t, &[key(30, 1)]);
    assert_eq!(t.device().pending(), 2);
    t.write(reg::STATUS, &0u32.to_le_bytes());
    assert_eq!(t.device().pending(), 0);
    // Notify before DRIVER_OK is ignored.
    t.write(reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
    assert!(t.ignored_accesses() > 0);
}

#[test]
fn features_without_version_1_are_refused() {
    let (mut t, _, _) = setup(InputKind::Keyboard);
    let w = |t: &mut Dev, o, v: u32| t.write(o, &v.to_le_bytes());
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut t, reg::DRIVER_FEATURES, 0);
    w(&mut t, reg::STATUS, 0xb);
    assert_eq!(rd(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    // Unknown feature bits too.
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 0xffff_ffff);
    w(&mut t, reg::STATUS, 0xb);
    assert_eq!(rd(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK: the device wants a reset.
    w(&mut t, reg::STATUS, 0x7);
    assert!(!t.is_active());
    assert_ne!(rd(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn hostile_register_accesses_are_ignored() {
    let (mut t, mut drv, _) = setup(InputKind::Keyboard);
    let mut b2 = [0xffu8; 2];
    t.read(reg::MAGIC_VALUE, &mut b2);
    let mut b4 = [0xffu8; 4];
    t.read(2, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.write(reg::QUEUE_SEL, &7u32.to_le_bytes());
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
    t.write(reg::QUEUE_NUM, &64u32.to_le_bytes());
    t.write(reg::QUEUE_READY, &1u32.to_le_bytes());
    t.write(reg::QUEUE_SEL, &0u32.to_le_bytes());
    t.write(reg::QUEUE_NUM, &3u32.to_le_bytes()); // not a power of two
    t.write(reg::QUEUE_NUM, &0x1_0000u32.to_le_bytes());
    t.write(0x1000, &[1, 2, 3, 4]);
    t.write(reg::MAGIC_VALUE, &[1]);
    let mut big = [0xffu8; 300];
    t.read(0x100, &mut big);
    assert!(t.ignored_accesses() >= 5);
    assert_eq!(rd(&mut t, reg::SHM_LEN_LOW), u32::MAX);
    drv.init(&mut t);
    // Queue setup after DRIVER_OK is ignored.
    t.write(reg::QUEUE_DESC_LOW, &0xdead_0000u32.to_le_bytes());
    inject(&mut t, &[key(2, 1)]);
    assert_eq!(drv.read_events(&mut t).len(), 2);
}

/// A queue driven directly by `MockSplitQueue`, with the chains `descs`.
fn raw_queue(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Queue {
    let m = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
    m.add_desc_chains(descs, 0).expect("chains");
    m.create_queue::<Queue>().expect("queue")
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn used(mem: &GuestMemoryMmap, q: &Queue, i: u64) -> (u32, u32) {
    let e = GuestAddress(q.used_ring() + 4 + i * 8);
    let id: u32 = mem.read_obj(e).expect("id");
    let len: u32 = mem.read_obj(GuestAddress(e.0 + 4)).expect("len");
    (id, len)
}

#[test]
fn bad_event_buffers_are_returned_empty() {
    let mem = mock_memory();
    const W: u16 = 2;
    let descs = [
        desc(0x1_0000, 8, 0, 0),         // read-only
        desc(0x1_0000, 4, W, 0),         // too small
        desc(0xffff_ffff_0000, 8, W, 0), // outside guest memory
        desc(0x1_0000, 8, W, 0),         // good
        desc(0x1_0100, 4, W | 1, 5),     // too small, then…
        desc(0x1_0200, 8, W, 0),         // …a good one in the same chain
    ];
    let q = raw_queue(&mem, &descs);
    let mut dev = VirtioInput::new(InputConfig::new(InputKind::Keyboard));
    let mut qs = [q];
    assert!(dev.inject(&[key(30, 1)], &mem, &mut qs));
    let q = &qs[0];
    let m = dev.metrics();
    assert_eq!(m.bad_event_buffers, 3);
    assert_eq!(m.events_delivered, 2);
    assert_eq!(used(&mem, q, 0), (0, 0));
    assert_eq!(used(&mem, q, 1), (1, 0));
    assert_eq!(used(&mem, q, 2), (2, 0));
    assert_eq!(used(&mem, q, 3), (3, 8));
    assert_eq!(used(&mem, q, 4), (4, 8));
    let mut b = [0u8; 8];
    mem.read_slice(&mut b, GuestAddress(0x1_0200))
        .expect("read");
    assert_eq!(InputEvent::from_bytes(b), InputEvent::syn());
}

#[test]
fn cyclic_chains_and_wild_avail_index_terminate() {
    let mem = mock_memory();
    // Two descriptors pointing at each other, both too small.
    let descs = [desc(0x1_0000, 4, 3, 1), desc(0x1_0000, 4, 3, 0)];
    let m = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    for (i, d) in (0u16..).zip(descs.iter()) {
        m.desc_table().store(i, *d).expect("store");
    }
    mem.write_obj(0u16, m.avail_addr().unchecked_add(4))
        .expect("slot");
    mem.write_obj(1u16, m.avail_addr().unchecked_add(2))
        .expect("idx");
    let q: Queue = m.create_queue().expect("queue");
    let mut dev = VirtioInput::new(InputConfig::new(InputKind::Keyboard));
    let mut qs = [q];
    dev.inject(&[key(30, 1)], &mem, &mut qs);
    assert_eq!(dev.metrics().bad_event_buffers, 1);
    assert_eq!(dev.pending(), 2);
    // An avail index far ahead of the ring: nothing is consumed.
    mem.write_obj(1000u16, m.avail_addr().unchecked_add(2))
        .expect("idx");
    dev.fill_eventq(&mem, &mut qs);
    assert_eq!(dev.pending(), 2);
    // A queue with rings outside memory.
    let mut q = Queue::new(16).expect("queue");
    q.set_desc_table_address(Some(0xffff_f000), Some(0xffff));
    q.set_avail_ring_address(Some(0xffff_f000), Some(0xffff));
    q.set_used_ring_address(Some(0xffff_f000), Some(0xffff));
    q.set_ready(true);
    let mut qs = [q];
    dev.fill_eventq(&mem, &mut qs);
    assert_eq!(dev.pending(), 2);
}

#[test]
fn statusq_leds_reach_the_observer_and_garbage_is_ignored() {
    let (mut t, mut drv, _) = setup(InputKind::Keyboard);
    let seen = Arc::new(AtomicU16::new(0xffff));
    let s = Arc::clone(&seen);
    t.device_mut()
        .set_led_observer(Box::new(move |l| s.store(l, Ordering::SeqCst)));
    drv.init(&mut t);
    drv.send_status(&mut t, InputEvent::new(EV_LED, LED_CAPSL, 1));
    assert_eq!(seen.load(Ordering::SeqCst), 1 << LED_CAPSL);
    assert_eq!(
        leds_to_spice_modifiers(t.device().leds()),
        spice_server::inputs::modifiers::CAPS_LOCK
    );
    drv.send_status(&mut t, InputEvent::new(EV_LED, LED_NUML, 7));
    drv.send_status(&mut t, InputEvent::new(EV_LED, LED_CAPSL, 0));
    assert_eq!(seen.load(Ordering::SeqCst), 1 << LED_NUML);
    // Garbage: other types, huge codes, a 2-byte buffer, a write-only one.
    drv.send_status(&mut t, InputEvent::new(EV_KEY, 30, 1));
    drv.send_status(&mut t, InputEvent::new(EV_LED, 0xffff, 1));
    drv.post(STATUSQ, 60, 0x2_0000, 2, 0);
    drv.post(STATUSQ, 61, 0x2_0000, 8, 2);
    t.write(reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
    t.write(reg::QUEUE_NOTIFY, &9u32.to_le_bytes());
    let m = t.device().metrics();
    assert_eq!(m.status_events, 5);
    assert_eq!(m.bad_status_buffers, 2);
    assert_eq!(t.device().leds(), 1 << LED_NUML);
    let _ = EVENTQ;
}
