//! A real guest CPU under KVM drives the virtio-input devices `qxl-vmm boot`
//! puts on the bus ([`vmm_glue::virtio`]), and SPICE-side input reaches it.
//!
//! The guest is a bare-metal program assembled here with `iced-x86`, started
//! in flat 32-bit protected mode without paging. It:
//!
//! 1. installs a GDT, an IDT whose vector 0x25 (8259 IRQ 5, the first
//!    window's GSI, edge-triggered) is its interrupt handler, and unmasks
//!    IRQ 5 only;
//! 2. reads MagicValue, Version and DeviceID of the three windows and of the
//!    empty fourth slot (MMIO exits served by `VirtioInputs::mmio_read`);
//! 3. initialises the keyboard like Linux's `virtio_mmio` driver: reset,
//!    ACKNOWLEDGE, DRIVER, features (VERSION_1 only), FEATURES_OK read back,
//!    both queues (size 8) with their ring addresses, DRIVER_OK;
//! 4. reports "ready" on a status port. The host then types `A` through the
//!    server-side `VirtioInputSink` (four evdev events); with no buffers yet
//!    they wait in the device's FIFO;
//! 5. posts eight 8-byte buffers on the eventq and writes QueueNotify — a
//!    KVM ioeventfd, so the notification is served by the event thread while
//!    the vCPU runs on — and waits until the used ring holds four buffers and
//!    its handler has taken the irqfd interrupt (it acknowledges with
//!    InterruptACK and an EOI).
//!
//! The host checks the registers the guest read, the four events in the
//! guest's buffers, the interrupt count, and that InterruptStatus ended
//! acknowledged. Skips (with a `SKIP:` line) only without a usable `/dev/kvm`.

// Test code: panics are the failure reports.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_docs,
    dead_code
)]

use std::time::{Duration, Instant};

use devices::qxl::mock::driver::RecordingSink;
use devices::virtio_input::InputKind;
use devices::virtio_input::evdev::EV_KEY;
use devices::virtio_input::keymap::KEY_A;
use devices::virtio_input::{InputEvent, VIRTIO_ID_INPUT};
use guest_asm::{QueueRings, interrupt_return};
use iced_x86::code_asm::*;
use spice_server::InputSink;
use spice_server::command::{DisplaySink, SurfaceCreate, SurfaceFormat};
use vm_memory::{Bytes, GuestAddress};
use vmm_glue::event_handler::EventThread;
use vmm_glue::input::{DisplaySize, VirtioInputSink};
use vmm_glue::kvm::{self, GuestEnd, GuestExits, QxlVm, VcpuEntry, VmConfig};
use vmm_glue::virtio::{TrackPrimary, VIRTIO_MMIO_BASE, VIRTIO_MMIO_STRIDE, VirtioInputs};

#[path = "../../spice-server/tests/common/mod.rs"]
#[macro_use]
mod common;
mod guest_asm;

const CODE: u32 = 0x1_0000;
const HANDLER: u32 = 0x1_8000;
const STACK_TOP: u32 = 0x8_0000;
const GDT: u32 = 0x1000;
const GDTR: u32 = 0x1100;
const IDT: u32 = 0x2000;
const IDTR: u32 = 0x2900;
/// The keyboard's eventq and statusq.
const QUEUES: [QueueRings; 2] = guest_asm::input_queues(0x10_0000);
/// The eventq's used ring.
const USED: u32 = QUEUES[0].used;
/// The eventq buffers, after the rings.
const BUF: u32 = 0x10_6000;
/// Registers the guest read, 4 bytes each.
const RESULTS: u32 = 0x10_7000;
/// Interrupts the guest's handler took.
const COUNT: u32 = 0x10_8000;
/// The last InterruptStatus the handler saw.
const LAST_ISR: u32 = 0x10_8004;
const STATUS_PORT: u16 = 0x510;
const FAIL_PORT: u16 = 0x514;
const QUEUE_SIZE: u32 = 8;
const KBD: u32 = 0xd000_0000;

fn reg(off: u32) -> AsmMemoryOperand {
    dword_ptr(KBD + off)
}

/// The interrupt handler (assembled apart, at [`HANDLER`]): count,
/// acknowledge the device and the PIC.
fn handler() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let r = (|| -> Result<(), IcedError> {
        a.push(eax)?;
        a.inc(dword_ptr(COUNT))?;
        a.mov(eax, reg(0x60))?;
        a.mov(dword_ptr(LAST_ISR), eax)?;
        a.mov(reg(0x64), eax)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.pop(eax)?;
        interrupt_return(&mut a)
    })();
    r.unwrap();
    a.assemble(u64::from(HANDLER)).unwrap()
}

fn program() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut fail = a.create_label();
    let r = (|| -> Result<(), IcedError> {
        a.cld()?;
        a.mov(esp, STACK_TOP)?;
        guest_asm::flat_gdt(&mut a, GDT, GDTR)?;
        // IDT: only vector 0x25 present (anything else faults to a triple
        // fault, which ends the run as a failure).
        a.mov(eax, HANDLER)?;
        a.mov(edx, eax)?;
        a.and(edx, 0xffffu32)?;
        a.or(edx, 0x0008_0000u32)?;
        a.mov(dword_ptr(IDT + 0x25 * 8), edx)?;
        a.and(eax, 0xffff_0000u32)?;
        a.or(eax, 0x8e00u32)?;
        a.mov(dword_ptr(IDT + 0x25 * 8 + 4), eax)?;
        a.mov(word_ptr(IDTR), 0x7ffu32)?;
        a.mov(dword_ptr(IDTR + 2), IDT)?;
        a.lidt(ptr(IDTR))?;
        // 8259: master at 0x20, slave at 0x28, only IRQ 5 unmasked (edge).
        guest_asm::pic_init(&mut a, 5)?;
        a.sti()?;

        // Identify the windows (the fourth slot is empty: all-ones).
        let mut out = RESULTS;
        for w in 0..4u32 {
            for off in [0u32, 4, 8] {
                a.mov(eax, dword_ptr(KBD + w * 0x1000 + off))?;
                a.mov(dword_ptr(out), eax)?;
                out += 4;
            }
        }
        // Keyboard init, as drivers/virtio/virtio_mmio.c + virtio.c do it.
        guest_asm::virtio_mmio_init(&mut a, KBD, &QUEUES, QUEUE_SIZE, Some(out))?;

        // Ready: the host types while the eventq has no buffers.
        a.mov(eax, 1u32)?;
        a.mov(dx, u32::from(STATUS_PORT))?;
        a.out(dx, eax)?;

        // Post QUEUE_SIZE write-only buffers of 8 bytes, then notify.
        guest_asm::post_buffers(&mut a, QUEUES[0], BUF, 8, QUEUE_SIZE)?;
        a.mov(reg(0x50), 0u32)?; // QueueNotify(eventq): the ioeventfd

        // Wait (bounded) for four used buffers and an interrupt.
        let mut wait = a.create_label();
        let mut next = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 100_000_000u32)?;
        a.set_label(&mut wait)?;
        a.movzx(eax, word_ptr(USED + 2))?;
        a.cmp(eax, 4u32)?;
        a.jb(next)?;
        a.cmp(dword_ptr(COUNT), 0u32)?;
        a.jne(done)?;
        a.set_label(&mut next)?;
        a.pause()?;
        a.dec(ecx)?;
        a.jnz(wait)?;
        a.jmp(fail)?;
        a.set_label(&mut done)?;
        a.mov(eax, 2u32)?;
        a.mov(dx, u32::from(STATUS_PORT))?;
        a.out(dx, eax)?;
        let mut park = a.create_label();
        a.set_label(&mut park)?;
        a.cli()?;
        a.hlt()?;
        a.jmp(park)?;

        a.set_label(&mut fail)?;
        a.movzx(eax, word_ptr(USED + 2))?;
        a.mov(dx, u32::from(FAIL_PORT))?;
        a.out(dx, eax)?;
        a.jmp(park)
    })();
    r.unwrap();
    a.assemble(u64::from(CODE)).unwrap()
}

/// The host side of the run: the windows, the SPICE input sink, status ports.
struct Exits {
    inputs: VirtioInputs,
    sink: VirtioInputSink,
    status: Vec<u32>,
    failed: Option<u32>,
    start: Instant,
}

impl GuestExits for Exits {
    fn port_out(&mut self, port: u16, data: &[u8]) -> bool {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(v);
        match port {
            STATUS_PORT => {
                self.status.push(v);
                if v == 1 {
                    // Scan code set 1: A down, A up.
                    self.sink.key_down(0x1e);
                    self.sink.key_up(0x1e);
                }
                true
            }
            FAIL_PORT => {
                self.failed = Some(v);
                true
            }
            _ => false,
        }
    }

    fn port_in(&mut self, _: u16, _: &mut [u8]) -> bool {
        false
    }

    fn poll(&mut self) -> Option<String> {
        if self.status.last() == Some(&2) {
            return Some("done".into());
        }
        if let Some(f) = self.failed {
            return Some(format!("guest failed with {f} used buffers"));
        }
        (self.start.elapsed() > Duration::from_secs(60)).then(|| "timeout".into())
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        self.inputs.mmio_read(addr, data)
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        self.inputs.mmio_write(addr, data)
    }
}

fn read_u32(vm: &QxlVm<TrackPrimary<RecordingSink>>, gpa: u32) -> u32 {
    vm.guest_memory()
        .read_obj::<u32>(GuestAddress(u64::from(gpa)))
        .unwrap()
}

#[test]
fn kvm_guest_drives_virtio_input_mmio_with_ioeventfd_and_irqfd() {
    if let Err(reason) = kvm::probe_kvm() {
        skip!("SKIP: {reason}");
        return;
    }
    let size = DisplaySize::new(1024, 768);
    let mut vm = QxlVm::new(
        VmConfig {
            guest_ram_size: 4 << 20,
            ..VmConfig::default()
        },
        vmm_glue::demo::device_config(640, 480),
        TrackPrimary::new(RecordingSink::default(), size.clone()),
    )
    .unwrap();
    let mut inputs = VirtioInputs::attach(
        &vm,
        &[InputKind::Keyboard, InputKind::Tablet, InputKind::Mouse],
    )
    .unwrap();
    assert_eq!(
        inputs.cmdline(),
        "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
         virtio_mmio.device=4K@0xd0002000:7"
    );
    assert_eq!(KBD, u32::try_from(VIRTIO_MMIO_BASE).unwrap());
    assert_eq!(VIRTIO_MMIO_STRIDE, 0x1000);
    let sink = VirtioInputSink::new(
        inputs.injector(InputKind::Keyboard),
        inputs.injector(InputKind::Tablet),
        inputs.injector(InputKind::Mouse),
    );
    let mut events = EventThread::spawn_all(vec![Box::new(inputs.notify_handler())]).unwrap();

    let code = program();
    vm.load(u64::from(CODE), &code).unwrap();
    vm.load(u64::from(HANDLER), &handler()).unwrap();
    vm.set_entry(VcpuEntry {
        rip: u64::from(CODE),
        rsp: u64::from(STACK_TOP),
    })
    .unwrap();

    let mut exits = Exits {
        inputs,
        sink,
        status: Vec::new(),
        failed: None,
        start: Instant::now(),
    };
    let run = vm.run_guest(&mut exits).unwrap();
    events.stop();
    assert_eq!(
        run.end,
        GuestEnd::Stopped("done".into()),
        "status {:?}, failed {:?}, used idx {}",
        exits.status,
        exits.failed,
        read_u32(&vm, USED) >> 16
    );

    // What the guest read through the MMIO exits.
    let r = |i: u32| read_u32(&vm, RESULTS + 4 * i);
    for w in 0..3 {
        assert_eq!(r(3 * w), 0x7472_6976, "magic of window {w}");
        assert_eq!(r(3 * w + 1), 2, "version of window {w}");
        assert_eq!(r(3 * w + 2), VIRTIO_ID_INPUT, "device id of window {w}");
    }
    for i in 9..12 {
        assert_eq!(r(i), 0xffff_ffff, "the empty fourth slot reads all-ones");
    }
    assert_eq!(r(12) & 1, 1, "VERSION_1 offered");
    assert_eq!(r(13), 0xb, "FEATURES_OK accepted");
    assert!(r(14) >= QUEUE_SIZE && r(15) >= QUEUE_SIZE, "queue sizes");
    assert_eq!(r(16), 0xf, "DRIVER_OK");
    assert!(run.unclaimed >= 3, "the empty slot's reads are unclaimed");

    // The typed key, delivered on the ioeventfd notification.
    let used_idx = read_u32(&vm, USED) >> 16;
    assert_eq!(used_idx, 4, "four used buffers");
    let expected = [
        InputEvent::new(EV_KEY, KEY_A, 1),
        InputEvent::syn(),
        InputEvent::new(EV_KEY, KEY_A, 0),
        InputEvent::syn(),
    ];
    for (i, ev) in expected.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        let mut got = [0u8; 8];
        vm.guest_memory()
            .read_slice(&mut got, GuestAddress(u64::from(BUF + 8 * i)))
            .unwrap();
        assert_eq!(got, ev.to_bytes(), "event {i}");
        // Used element i: id i, len 8.
        assert_eq!(read_u32(&vm, USED + 4 + 8 * i), i);
        assert_eq!(read_u32(&vm, USED + 8 + 8 * i), 8);
    }
    assert!(read_u32(&vm, COUNT) >= 1, "the irqfd interrupt arrived");
    assert_eq!(read_u32(&vm, LAST_ISR) & 1, 1, "a used-buffer interrupt");
    let kbd = &exits.inputs.devices()[0];
    assert!(kbd.interrupts() >= 1);
    assert_eq!(
        kbd.transport.lock().unwrap().interrupt_status(),
        0,
        "the guest acknowledged"
    );
    assert_eq!(exits.status, vec![1, 2]);
}

#[test]
fn the_tablet_scales_against_the_primary_the_guest_creates() {
    let size = DisplaySize::new(1024, 768);
    let mut sink = TrackPrimary::new(RecordingSink::default(), size.clone());
    sink.create_primary(SurfaceCreate {
        surface_id: 0,
        format: SurfaceFormat::Xrgb32,
        width: 1920,
        height: 1080,
        stride: -(1920 * 4),
        flags: 0,
        position: 0,
        initial: None,
    });
    assert_eq!(size.get(), (1920, 1080));
}
