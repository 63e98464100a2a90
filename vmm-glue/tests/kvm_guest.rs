//! A real guest CPU under KVM drives the QXL device.
//!
//! The guest is a small bare-metal program assembled here with `iced-x86`
//! (no external assembler). The vCPU starts in flat 32-bit protected mode
//! without paging (the VMM loads the segment caches, as Firecracker does for
//! its 32-bit entry; the guest then installs its own GDT and IDT). It:
//!
//! 1. programs the 8259 PIC (IRQ5 = the QXL INTx GSI, level-triggered through
//!    ELCR) — or, in the IOAPIC variant, masks the PIC and routes IOAPIC pin
//!    16 (level, active high, as `qxl-vmm boot`'s MP table declares the
//!    INTA#) through the local APIC — and builds an IDT whose vector 0x25 is
//!    the QXL interrupt handler; every other vector reports a failure;
//! 2. scans bus 0 through `0xCF8`/`0xCFC` for 1b36:0100, sizes BARs 0..3 by
//!    writing all-ones, programs them like firmware (memory from
//!    0xD000_0000, I/O from 0x1000), enables decoding, leaves a marker in BAR0
//!    and reads the ROM magic through the ROM BAR (MMIO exits);
//! 3. *moves* every BAR with decoding enabled (memory from 0xC000_0000, I/O
//!    from 0x2000) and checks the marker is visible at the new BAR0 base (the
//!    VMM re-mapped the KVM slot onto the same device memory);
//! 4. interprets a *driver script* translated from the replay that
//!    `MockQxlDriver::with_sink_recording` produced for a desktop session
//!    (probe, create primary, several `DesktopScene` frames with the cursor,
//!    final OOM flush and release drain).
//!
//! Translation of the replay (host side, [`translate`]):
//! - `MemWrite` → copy into the BAR (device-local address → BAR0 base +
//!   address, or BAR1 base + (address − RAM size)). Three kinds of bytes are
//!   not copied: `int_pending` (the guest ISR owns it), the release ring's
//!   `cons` (the guest pops the ring itself, see below), and
//!   `ram.mem_slot` (its guest-physical addresses are rewritten relative to
//!   the BARs the *guest* programmed — the recording used the mock
//!   firmware's addresses).
//! - `PciWrite` → skipped: the guest's own firmware code replaces the
//!   recorded firmware writes.
//! - `IoWrite` → a real `out dx, al` at the guest's I/O BAR + port, except
//!   `UPDATE_IRQ`, which in the recording is the mock's interrupt handler:
//!   here the guest's real ISR does it. `NOTIFY_CMD`/`NOTIFY_CURSOR` hit the
//!   ioeventfds, so the device consumes the rings on the event thread while the
//!   guest runs on.
//! - `AckIrq` → skipped (the ISR); `Process(ring)` → an `out` to that ring's
//!   notify port.
//! - `ExpectRing` → the guest waits (bounded) until the ring's `prod`/`cons`
//!   reach the recorded values: this keeps the asynchronous device in lock
//!   step with the recording.
//! - `ExpectIrq` with the line up → the guest waits (bounded) until its ISR
//!   has seen those `int_pending` bits; with the line down → it checks
//!   `int_pending` equals the recorded value.
//! - A write to the release ring's `cons` → the guest pops the release ring
//!   up to that index like Linux's `qxl_garbage_collect`: each id is looked up
//!   in an id → `release_info` table, every id of the chain is logged, and a
//!   double release is a failure. The host then compares the log with the
//!   mock's release order.
//!
//! The host checks afterwards: the guest reached its final `hlt`, its ISR's
//! interrupt counts equal the mock driver's, every pushed id came back, and the
//! frames reached the SPICE server pixel-exact (`DisplayHandle::screenshot`
//! and the real `spicy-screenshot` client).
//!
//! Skips: this is the only test in the workspace that may skip, and only when
//! `/dev/kvm` is missing or unusable (it prints `SKIP: <reason>`).

// Test code: panics are the failure reports; the shared client harness has
// helpers this file does not use.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    dead_code,
    missing_docs
)]

#[path = "../../spice-server/tests/common/mod.rs"]
#[macro_use]
mod common;
mod guest_asm;

use std::collections::BTreeMap;
use std::time::Duration;

use devices::qxl::abi::{io, ram as ram_off, rom as rom_off};
use devices::qxl::mock::driver::{MockQxlDriver, MockRing, RecordingSink};
use devices::qxl::replay::{self, Player, Record, RingId};
use guest_asm::interrupt_return;
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;
use spice_server::ServerConfig;
use spice_server::command::Command;
use vm_memory::Bytes;
use vmm_glue::demo::device_config;
use vmm_glue::event_handler::{EventThread, QxlEventHandler};
use vmm_glue::kvm::{self, DONE, QxlVm, VcpuEntry, VmConfig, VmError};
use vmm_glue::scene::{DesktopScene, Scene};

const W: u32 = 1024;
const H: u32 = 768;
const FRAMES: u64 = 16;

// Guest-physical layout.
const GDT: u32 = 0x1000;
const GDTR: u32 = 0x1020;
const IDTR: u32 = 0x1030;
const VARS: u32 = 0x2000;
const BITMAP: u32 = 0x3000; // 4 KiB: release ids < 32768
const IDT: u32 = 0x4000;
const STACK_TOP: u32 = 0x8_0000;
const CODE_BASE: u32 = 0x10_0000;
const RELEASE_LOG: u32 = 0x20_0000;
const RELEASE_LOG_MAX: u32 = 0x4_0000;
const ID_TABLE: u32 = 0x40_0000;
const MAX_IDS: u32 = 32 * 1024;
const SCRIPT_BASE: u32 = 0x100_0000;

// Guest variables (offsets from VARS).
const V_BAR: u32 = 0x00; // 4 dwords
const V_SIZE: u32 = 0x10; // 4 dwords
const V_RAMHDR: u32 = 0x20;
const V_SEEN: u32 = 0x24;
const V_ISR_RUNS: u32 = 0x28;
const V_HANDLED: u32 = 0x2c;
const V_BITCNT: u32 = 0x30; // 6 dwords
const V_RELEASED: u32 = 0x48;
const V_CFG: u32 = 0x4c;
const V_ROM_MAGIC: u32 = 0x50;
const V_POS: u32 = 0x54;
const V_DETAIL: u32 = 0x58;
const V_TABLE_LEN: u32 = 0x5c;
const V_END: u32 = 0x60;
const V_MEMCUR: u32 = 0x64;
const V_IOCUR: u32 = 0x68;
const V_ISIO: u32 = 0x70; // 4 dwords
const V_PHASE_A: u32 = 0x80; // 4 dwords: BAR bases before the move

const STATUS_PORT: u16 = 0x510;
const FAIL_PORT: u16 = 0x514;
const QXL_VECTOR: u32 = 0x25; // PIC master base 0x20 + IRQ5; the IOAPIC route uses it too
const SPIN: u32 = 400_000_000;
const MARKER: u32 = 0xc0ff_ee00;

// Script ops.
const OP_END: u32 = 0;
const OP_MEMCPY: u32 = 1;
const OP_OUT: u32 = 2;
const OP_WAIT32: u32 = 3;
const OP_WAIT_IRQ: u32 = 4;
const OP_CHECK32: u32 = 5;
const OP_BAR_REL64: u32 = 6;
const OP_DRAIN: u32 = 7;

// Failure codes the guest reports.
const F_NO_DEVICE: u32 = 0x01;
const F_ROM_MAGIC: u32 = 0x02;
const F_MARKER: u32 = 0x03;
const F_WAIT32: u32 = 0x10;
const F_WAIT_IRQ: u32 = 0x11;
const F_CHECK32: u32 = 0x12;
const F_BAD_OP: u32 = 0x13;
const F_BAD_ADDR: u32 = 0x14;
const F_BAD_BAR: u32 = 0x15;
const F_DRAIN_EMPTY: u32 = 0x20;
const F_DRAIN_ID: u32 = 0x21;
const F_DRAIN_DOUBLE: u32 = 0x22;
const F_DRAIN_CHAIN: u32 = 0x23;
const F_DRAIN_LOG: u32 = 0x24;
const F_EARLY_IRQ: u32 = 0x30;
const F_EXCEPTION: u32 = 0xe000;

// ---------------------------------------------------------------------------
// The driver script.

/// Ops for the guest interpreter (little-endian dwords).
#[derive(Default)]
struct Script {
    words: Vec<u8>,
    ops: BTreeMap<u32, usize>,
}

impl Script {
    fn op(&mut self, op: u32, args: &[u32]) {
        *self.ops.entry(op).or_default() += 1;
        for w in std::iter::once(op).chain(args.iter().copied()) {
            self.words.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn memcpy(&mut self, addr: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.op(
            OP_MEMCPY,
            &[
                u32::try_from(addr).unwrap(),
                u32::try_from(data.len()).unwrap(),
            ],
        );
        self.words.extend_from_slice(data);
        while !self.words.len().is_multiple_of(4) {
            self.words.push(0);
        }
    }
}

/// Byte ranges `[start, end)` of device memory the guest must not copy.
struct Dropped {
    int_pending: (u64, u64),
    release_cons: (u64, u64),
    mem_slot: (u64, u64),
}

fn overlaps(addr: u64, len: u64, (a, b): (u64, u64)) -> bool {
    addr < b && a < addr + len
}

/// Translate the mock driver's replay into the guest's script (see the module
/// documentation for the rules).
fn translate(
    file: &[u8],
    recorded: &devices::qxl::mock::driver::MockBars,
    ram_size: u64,
    vram_size: u64,
) -> Script {
    let records = replay::parse(file).unwrap();
    let Some(Record::Config(cfg)) = records.first() else {
        panic!("replay without a config record")
    };
    let mut player = Player::new(cfg, RecordingSink::default()).unwrap();
    let hdr = player.device().ram_header().base();
    let rel = hdr + ram_off::RELEASE_RING;
    let dropped = Dropped {
        int_pending: (hdr + ram_off::INT_PENDING, hdr + ram_off::INT_PENDING + 4),
        release_cons: (rel + 12, rel + 16),
        mem_slot: (hdr + ram_off::MEM_SLOT, hdr + ram_off::MEM_SLOT + 16),
    };
    let ring_base = |r: RingId| match r {
        RingId::Command => hdr + ram_off::CMD_RING,
        RingId::Cursor => hdr + ram_off::CURSOR_RING,
        RingId::Release => rel,
    };
    let bar_rel = |v: u64| -> (u32, u32) {
        if (recorded.ram..=recorded.ram + ram_size).contains(&v) {
            (0, u32::try_from(v - recorded.ram).unwrap())
        } else if (recorded.vram..=recorded.vram + vram_size).contains(&v) {
            (1, u32::try_from(v - recorded.vram).unwrap())
        } else {
            panic!("memslot address {v:#x} is in no recorded BAR")
        }
    };
    let mut s = Script::default();
    // A pending interrupt expectation, flushed before the next guest action
    // (so ring waits of the same group come first).
    let mut pending_irq: Option<(bool, u32)> = None;
    let flush = |s: &mut Script, p: &mut Option<(bool, u32)>| {
        if let Some((level, bits)) = p.take() {
            if level {
                s.op(OP_WAIT_IRQ, &[bits]);
            } else {
                let addr = u32::try_from(dropped.int_pending.0).unwrap();
                s.op(OP_CHECK32, &[addr, bits]);
            }
        }
    };
    for r in &records {
        player.step(r);
        match r {
            Record::Config(_) | Record::PciWrite { .. } | Record::AckIrq => {}
            Record::MemWrite { addr, data } => {
                flush(&mut s, &mut pending_irq);
                let len = u64::try_from(data.len()).unwrap();
                // Copy every run of bytes outside the dropped fields.
                let keep = |a: u64| {
                    ![dropped.int_pending, dropped.release_cons, dropped.mem_slot]
                        .iter()
                        .any(|&(x, y)| (x..y).contains(&a))
                };
                let touches_cons = overlaps(*addr, len, dropped.release_cons);
                if touches_cons {
                    // Pop the release ring up to the recorded new `cons` first.
                    let cons = player
                        .device()
                        .mem()
                        .read_obj::<u32>(vm_memory::GuestAddress(rel + 12))
                        .unwrap();
                    s.op(OP_DRAIN, &[cons]);
                }
                let mut i = 0usize;
                while i < data.len() {
                    let a = *addr + u64::try_from(i).unwrap();
                    if !keep(a) {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < data.len() && keep(*addr + u64::try_from(i).unwrap()) {
                        i += 1;
                    }
                    s.memcpy(a, &data[start..i]);
                }
                if overlaps(*addr, len, dropped.mem_slot) {
                    for off in [0u64, 8] {
                        let at = dropped.mem_slot.0 + off;
                        let v = player
                            .device()
                            .mem()
                            .read_obj::<u64>(vm_memory::GuestAddress(at))
                            .unwrap();
                        let (bar, delta) = bar_rel(v);
                        s.op(OP_BAR_REL64, &[u32::try_from(at).unwrap(), bar, delta]);
                    }
                }
            }
            Record::IoWrite { port, value } => {
                flush(&mut s, &mut pending_irq);
                if u64::from(*port) != io::UPDATE_IRQ {
                    s.op(OP_OUT, &[u32::from(*port), u32::from(*value)]);
                }
            }
            Record::Process(ring) => {
                flush(&mut s, &mut pending_irq);
                let port = match ring {
                    RingId::Cursor => io::NOTIFY_CURSOR,
                    _ => io::NOTIFY_CMD,
                };
                s.op(OP_OUT, &[u32::try_from(port).unwrap(), 0]);
            }
            Record::ExpectIrq { level, int_pending } => {
                flush(&mut s, &mut pending_irq);
                pending_irq = Some((*level, *int_pending));
            }
            Record::ExpectRing { ring, prod, cons } => {
                let base = u32::try_from(ring_base(*ring)).unwrap();
                s.op(OP_WAIT32, &[base + 4, *prod]);
                s.op(OP_WAIT32, &[base + 12, *cons]);
            }
            Record::ClientMonitors(_) => panic!("host-side events are not part of this script"),
        }
    }
    flush(&mut s, &mut pending_irq);
    s.op(OP_END, &[]);
    let report = player.report();
    assert!(
        report.failures.is_empty(),
        "the recording does not replay: {:?}",
        report.failures
    );
    s
}

// ---------------------------------------------------------------------------
// The guest program.

struct Program {
    code: Vec<u8>,
    after_hlt: u32,
}

/// Label addresses the second pass needs.
#[derive(Default, Clone)]
struct Addrs {
    handlers: Vec<u32>,
    table: u32,
}

fn v(off: u32) -> AsmMemoryOperand {
    dword_ptr(VARS + off)
}

/// How the QXL INTx reaches the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqRoute {
    /// 8259 IRQ 5, level-triggered through ELCR (GSI 5).
    Pic,
    /// IOAPIC pin 16, level-triggered, active high, into the local APIC: how
    /// `qxl-vmm boot`'s MP table routes 00:02.0's INTA# for Linux.
    Ioapic,
}

impl IrqRoute {
    const fn gsi(self) -> u32 {
        match self {
            Self::Pic => 5,
            Self::Ioapic => 16,
        }
    }
}

fn assemble(addrs: &Addrs, route: IrqRoute) -> Result<(Program, Addrs), IcedError> {
    let mut a = CodeAssembler::new(32)?;
    let mut fail_common = a.create_label();
    let mut fails: Vec<(CodeLabel, u32)> = Vec::new();
    let mut fail = |a: &mut CodeAssembler, code: u32| -> CodeLabel {
        let l = a.create_label();
        fails.push((l, code));
        l
    };

    // --- Setup: stack, GDT, IDT, PIC.
    a.cld()?;
    a.mov(esp, STACK_TOP)?;
    guest_asm::flat_gdt(&mut a, GDT, GDTR)?;
    // IDT from the handler table (pass 2 fills it in).
    a.mov(esi, addrs.table)?;
    a.mov(edi, IDT)?;
    a.mov(ecx, 256u32)?;
    let mut idt_loop = a.create_label();
    a.set_label(&mut idt_loop)?;
    a.lodsd()?;
    a.mov(edx, eax)?;
    a.and(edx, 0xffffu32)?;
    a.or(edx, 0x0008_0000u32)?; // selector 0x08
    a.mov(dword_ptr(edi), edx)?;
    a.and(eax, 0xffff_0000u32)?;
    a.or(eax, 0x8e00u32)?; // present, DPL 0, 32-bit interrupt gate
    a.mov(dword_ptr(edi + 4), eax)?;
    a.add(edi, 8)?;
    a.dec(ecx)?;
    a.jnz(idt_loop)?;
    a.mov(word_ptr(IDTR), 0x7ffu32)?;
    a.mov(dword_ptr(IDTR + 2), IDT)?;
    a.lidt(ptr(IDTR))?;
    match route {
        IrqRoute::Pic => {
            // 8259: master at 0x20, slave at 0x28; only IRQ5 unmasked; IRQ5 level.
            guest_asm::pic_init(&mut a, 5)?;
            a.mov(dx, 0x4d0u32)?;
            a.mov(al, 0x20u32)?;
            a.out(dx, al)?;
        }
        IrqRoute::Ioapic => {
            // Every 8259 line masked; the QXL pin through the IOAPIC.
            guest_asm::pic_init(&mut a, 8)?;
            guest_asm::ioapic_route(&mut a, route.gsi(), QXL_VECTOR, true, 0x2f)?;
        }
    }
    a.sti()?;

    // --- PCI scan for 1b36:0100 on bus 0.
    let mut cfg_read = a.create_label();
    let mut cfg_write = a.create_label();
    a.mov(ebx, 0x8000_0000u32)?;
    let mut scan = a.create_label();
    let mut found = a.create_label();
    a.set_label(&mut scan)?;
    a.mov(v(V_CFG), ebx)?;
    a.xor(ecx, ecx)?;
    a.call(cfg_read)?;
    a.cmp(eax, 0x0100_1b36u32)?;
    a.je(found)?;
    a.add(ebx, 0x800)?;
    a.cmp(ebx, 0x8001_0000u32)?;
    a.jb(scan)?;
    let l = fail(&mut a, F_NO_DEVICE);
    a.jmp(l)?;
    a.set_label(&mut found)?;
    a.mov(eax, 1u32)?;
    a.mov(dx, u32::from(STATUS_PORT))?;
    a.out(dx, eax)?;

    // --- Size BARs 0..3.
    for i in 0..4u32 {
        let reg = 0x10 + 4 * i;
        let mut is_io = a.create_label();
        let mut sized = a.create_label();
        a.mov(ecx, reg)?;
        a.call(cfg_read)?;
        a.mov(edi, eax)?;
        a.mov(eax, 0xffff_ffffu32)?;
        a.call(cfg_write)?;
        a.call(cfg_read)?;
        a.mov(ebx, eax)?;
        a.mov(eax, edi)?;
        a.call(cfg_write)?;
        a.mov(eax, ebx)?;
        a.and(eax, 1)?;
        a.mov(v(V_ISIO + 4 * i), eax)?;
        a.test(ebx, 1)?;
        a.jnz(is_io)?;
        a.and(ebx, 0xffff_fff0u32)?;
        a.jmp(sized)?;
        a.set_label(&mut is_io)?;
        a.and(ebx, 0xffff_fffcu32)?;
        a.or(ebx, 0xffff_0000u32)?; // I/O decodes 16 bits
        a.set_label(&mut sized)?;
        a.neg(ebx)?;
        a.mov(v(V_SIZE + 4 * i), ebx)?;
    }

    // --- Program the BARs at (mem cursor, io cursor), enable decoding.
    let mut assign = a.create_label();
    a.mov(v(V_MEMCUR), 0xd000_0000u32)?;
    a.mov(v(V_IOCUR), 0x1000u32)?;
    a.call(assign)?;
    for i in 0..4u32 {
        a.mov(eax, v(V_BAR + 4 * i))?;
        a.mov(v(V_PHASE_A + 4 * i), eax)?;
    }
    a.mov(eax, v(V_BAR))?;
    a.mov(dword_ptr(eax + 0x100), MARKER)?;
    a.mov(eax, v(V_BAR + 8))?;
    a.mov(ebx, dword_ptr(eax))?; // ROM magic, through an MMIO exit
    a.mov(v(V_ROM_MAGIC), ebx)?;
    a.cmp(ebx, 0x4f52_5851u32)?;
    let l = fail(&mut a, F_ROM_MAGIC);
    a.jne(l)?;
    a.mov(eax, 2u32)?;
    a.mov(dx, u32::from(STATUS_PORT))?;
    a.out(dx, eax)?;
    // Move every BAR with decoding on.
    a.mov(v(V_MEMCUR), 0xc000_0000u32)?;
    a.mov(v(V_IOCUR), 0x2000u32)?;
    a.call(assign)?;
    a.mov(eax, v(V_BAR))?;
    a.mov(ebx, dword_ptr(eax + 0x100))?;
    a.mov(v(V_DETAIL), ebx)?;
    a.cmp(ebx, MARKER)?;
    let l = fail(&mut a, F_MARKER);
    a.jne(l)?;
    a.mov(dword_ptr(eax + 0x100), 0u32)?;
    a.mov(eax, v(V_BAR + 8))?;
    a.mov(
        ebx,
        dword_ptr(eax + u32::try_from(rom_off::RAM_HEADER_OFFSET).unwrap()),
    )?;
    a.add(ebx, v(V_BAR))?;
    a.mov(v(V_RAMHDR), ebx)?;
    a.mov(eax, 3u32)?;
    a.mov(dx, u32::from(STATUS_PORT))?;
    a.out(dx, eax)?;

    // --- The script interpreter. esi = script pointer.
    let mut translate = a.create_label();
    let mut next = a.create_label();
    let mut script_end = a.create_label();
    let mut op_memcpy = a.create_label();
    let mut op_out = a.create_label();
    let mut op_wait32 = a.create_label();
    let mut op_wait_irq = a.create_label();
    let mut op_check32 = a.create_label();
    let mut op_bar_rel = a.create_label();
    let mut op_drain = a.create_label();
    a.mov(esi, SCRIPT_BASE)?;
    a.set_label(&mut next)?;
    a.mov(eax, esi)?;
    a.sub(eax, SCRIPT_BASE)?;
    a.mov(v(V_POS), eax)?;
    a.mov(v(V_DETAIL), eax)?;
    a.lodsd()?;
    for (op, l) in [
        (OP_END, script_end),
        (OP_MEMCPY, op_memcpy),
        (OP_OUT, op_out),
        (OP_WAIT32, op_wait32),
        (OP_WAIT_IRQ, op_wait_irq),
        (OP_CHECK32, op_check32),
        (OP_BAR_REL64, op_bar_rel),
        (OP_DRAIN, op_drain),
    ] {
        a.cmp(eax, op)?;
        a.je(l)?;
    }
    let l = fail(&mut a, F_BAD_OP);
    a.jmp(l)?;

    // MEMCPY addr, len, data...
    a.set_label(&mut op_memcpy)?;
    a.lodsd()?;
    a.call(translate)?;
    a.lodsd()?;
    a.mov(ecx, eax)?;
    a.rep().movsb()?;
    a.add(esi, 3)?;
    a.and(esi, 0xffff_fffcu32)?;
    a.jmp(next)?;

    // OUT port, value
    a.set_label(&mut op_out)?;
    a.lodsd()?;
    a.mov(edx, v(V_BAR + 12))?;
    a.add(edx, eax)?;
    a.lodsd()?;
    a.out(dx, al)?;
    a.jmp(next)?;

    // WAIT32 addr, value
    a.set_label(&mut op_wait32)?;
    a.lodsd()?;
    a.call(translate)?;
    a.lodsd()?;
    a.mov(ecx, SPIN)?;
    let mut w32 = a.create_label();
    a.set_label(&mut w32)?;
    a.cmp(dword_ptr(edi), eax)?;
    a.je(next)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(w32)?;
    a.mov(eax, dword_ptr(edi))?;
    a.mov(v(V_DETAIL), eax)?;
    let l = fail(&mut a, F_WAIT32);
    a.jmp(l)?;

    // WAIT_IRQ bits
    a.set_label(&mut op_wait_irq)?;
    a.lodsd()?;
    a.mov(ebx, eax)?;
    a.mov(ecx, SPIN)?;
    let mut wirq = a.create_label();
    let mut got = a.create_label();
    a.set_label(&mut wirq)?;
    a.mov(eax, v(V_SEEN))?;
    a.and(eax, ebx)?;
    a.cmp(eax, ebx)?;
    a.je(got)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(wirq)?;
    a.mov(eax, v(V_SEEN))?;
    a.mov(v(V_DETAIL), eax)?;
    let l = fail(&mut a, F_WAIT_IRQ);
    a.jmp(l)?;
    a.set_label(&mut got)?;
    a.not(ebx)?;
    a.lock().and(v(V_SEEN), ebx)?;
    a.jmp(next)?;

    // CHECK32 addr, value
    a.set_label(&mut op_check32)?;
    a.lodsd()?;
    a.call(translate)?;
    a.lodsd()?;
    a.mov(ebx, dword_ptr(edi))?;
    a.cmp(ebx, eax)?;
    a.je(next)?;
    a.mov(v(V_DETAIL), ebx)?;
    let l = fail(&mut a, F_CHECK32);
    a.jmp(l)?;

    // BAR_REL64 addr, bar, delta: *addr = bar base + delta (64-bit).
    a.set_label(&mut op_bar_rel)?;
    a.lodsd()?;
    a.call(translate)?;
    a.lodsd()?;
    a.cmp(eax, 4)?;
    let l = fail(&mut a, F_BAD_BAR);
    a.jae(l)?;
    a.mov(ebx, dword_ptr(eax * 4 + (VARS + V_BAR)))?;
    a.lodsd()?;
    a.add(ebx, eax)?;
    a.mov(dword_ptr(edi), ebx)?;
    a.mov(dword_ptr(edi + 4), 0u32)?;
    a.jmp(next)?;

    // DRAIN cons: pop the release ring up to `cons`, following chains.
    a.set_label(&mut op_drain)?;
    a.lodsd()?;
    a.mov(ebx, eax)?;
    a.push(esi)?;
    a.mov(ebp, v(V_RAMHDR))?;
    a.add(ebp, u32::try_from(ram_off::RELEASE_RING).unwrap())?;
    let mut dloop = a.create_label();
    let mut ddone = a.create_label();
    let mut dhave = a.create_label();
    let mut dwait = a.create_label();
    let mut chain = a.create_label();
    a.set_label(&mut dloop)?;
    a.mov(eax, dword_ptr(ebp + 12))?; // cons
    a.cmp(eax, ebx)?;
    a.je(ddone)?;
    a.mov(ecx, SPIN)?;
    a.set_label(&mut dwait)?;
    a.cmp(eax, dword_ptr(ebp + 4))?; // prod
    a.jne(dhave)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(dwait)?;
    let l = fail(&mut a, F_DRAIN_EMPTY);
    a.jmp(l)?;
    a.set_label(&mut dhave)?;
    a.mov(edx, dword_ptr(ebp))?; // num_items
    a.dec(edx)?;
    a.and(eax, edx)?;
    a.mov(edx, dword_ptr(ebp + eax * 8 + 24))?; // id, high dword
    a.test(edx, edx)?;
    let l = fail(&mut a, F_DRAIN_ID);
    a.jnz(l)?;
    a.mov(edx, dword_ptr(ebp + eax * 8 + 20))?; // id
    a.inc(dword_ptr(ebp + 12))?;
    a.mov(ecx, 1u32 << 20)?;
    a.set_label(&mut chain)?;
    a.test(edx, edx)?;
    a.jz(dloop)?;
    a.mov(v(V_DETAIL), edx)?;
    a.cmp(edx, v(V_TABLE_LEN))?;
    let l = fail(&mut a, F_DRAIN_ID);
    a.jae(l)?;
    a.bts(dword_ptr(BITMAP), edx)?;
    let l = fail(&mut a, F_DRAIN_DOUBLE);
    a.jc(l)?;
    a.mov(eax, v(V_RELEASED))?;
    a.cmp(eax, RELEASE_LOG_MAX)?;
    let l = fail(&mut a, F_DRAIN_LOG);
    a.jae(l)?;
    a.mov(dword_ptr(eax * 4 + RELEASE_LOG), edx)?;
    a.inc(v(V_RELEASED))?;
    a.mov(eax, dword_ptr(edx * 4 + ID_TABLE))?;
    a.call(translate)?;
    a.mov(edx, dword_ptr(edi + 4))?;
    a.test(edx, edx)?;
    let l = fail(&mut a, F_DRAIN_ID);
    a.jnz(l)?;
    a.mov(edx, dword_ptr(edi))?;
    a.dec(ecx)?;
    a.jnz(chain)?;
    let l = fail(&mut a, F_DRAIN_CHAIN);
    a.jmp(l)?;
    a.set_label(&mut ddone)?;
    a.pop(esi)?;
    a.jmp(next)?;

    // The end: report DONE, then halt with interrupts off.
    let mut after_hlt = a.create_label();
    a.set_label(&mut script_end)?;
    a.mov(v(V_END), 1u32)?;
    a.mov(eax, DONE)?;
    a.mov(dx, u32::from(STATUS_PORT))?;
    a.out(dx, eax)?;
    a.cli()?;
    a.hlt()?;
    a.set_label(&mut after_hlt)?;
    a.jmp(script_end)?;

    // translate: eax = device-local address → edi = guest-physical.
    let mut vram = a.create_label();
    a.set_label(&mut translate)?;
    a.cmp(eax, v(V_SIZE))?;
    a.jae(vram)?;
    a.mov(edi, v(V_BAR))?;
    a.add(edi, eax)?;
    a.ret()?;
    a.set_label(&mut vram)?;
    a.sub(eax, v(V_SIZE))?;
    a.cmp(eax, v(V_SIZE + 4))?;
    let l = fail(&mut a, F_BAD_ADDR);
    a.jae(l)?;
    a.mov(edi, v(V_BAR + 4))?;
    a.add(edi, eax)?;
    a.ret()?;

    // cfg_read: ecx = register → eax. cfg_write: ecx = register, eax = value.
    a.set_label(&mut cfg_read)?;
    a.push(edx)?;
    a.mov(eax, v(V_CFG))?;
    a.or(eax, ecx)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.pop(edx)?;
    a.ret()?;
    a.set_label(&mut cfg_write)?;
    a.push(edx)?;
    a.push(eax)?;
    a.mov(eax, v(V_CFG))?;
    a.or(eax, ecx)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.pop(eax)?;
    a.mov(dx, 0xcfcu32)?;
    a.out(dx, eax)?;
    a.pop(edx)?;
    a.ret()?;

    // assign: place BARs 0..3 from the cursors (natural alignment), enable
    // I/O + memory decoding and bus mastering.
    a.set_label(&mut assign)?;
    for i in 0..4u32 {
        let mut skip = a.create_label();
        let mut io_bar = a.create_label();
        let mut write = a.create_label();
        a.mov(ebx, v(V_SIZE + 4 * i))?;
        a.test(ebx, ebx)?;
        a.jz(skip)?;
        a.mov(edx, ebx)?;
        a.dec(edx)?;
        a.not(edx)?; // alignment mask
        a.cmp(v(V_ISIO + 4 * i), 0)?;
        a.jne(io_bar)?;
        a.mov(eax, v(V_MEMCUR))?;
        a.lea(eax, ebx + eax - 1)?;
        a.and(eax, edx)?;
        a.mov(v(V_BAR + 4 * i), eax)?;
        a.lea(edx, eax + ebx)?;
        a.mov(v(V_MEMCUR), edx)?;
        a.jmp(write)?;
        a.set_label(&mut io_bar)?;
        a.mov(eax, v(V_IOCUR))?;
        a.lea(eax, ebx + eax - 1)?;
        a.and(eax, edx)?;
        a.mov(v(V_BAR + 4 * i), eax)?;
        a.lea(edx, eax + ebx)?;
        a.mov(v(V_IOCUR), edx)?;
        a.set_label(&mut write)?;
        a.mov(ecx, 0x10 + 4 * i)?;
        a.call(cfg_write)?;
        a.set_label(&mut skip)?;
    }
    a.mov(ecx, 4u32)?;
    a.call(cfg_read)?;
    a.and(eax, 0xffffu32)?; // do not write status bits
    a.or(eax, 7)?;
    a.call(cfg_write)?;
    a.ret()?;

    // The QXL interrupt handler (Linux qxl_irq_handler, reduced).
    let mut isr = a.create_label();
    let mut ack = a.create_label();
    a.set_label(&mut isr)?;
    a.pushad()?;
    a.mov(ebx, v(V_RAMHDR))?;
    a.test(ebx, ebx)?;
    let l = fail(&mut a, F_EARLY_IRQ);
    a.jz(l)?;
    a.xor(eax, eax)?;
    a.xchg(dword_ptr(ebx + 4), eax)?; // int_pending (xchg is locked)
    a.inc(v(V_ISR_RUNS))?;
    a.test(eax, eax)?;
    a.jz(ack)?;
    a.inc(v(V_HANDLED))?;
    a.lock().or(v(V_SEEN), eax)?;
    for bit in 0..6i32 {
        a.bt(eax, bit)?;
        a.adc(v(V_BITCNT + 4 * bit.unsigned_abs()), 0)?;
    }
    a.set_label(&mut ack)?;
    a.mov(edx, v(V_BAR + 12))?;
    a.add(edx, u32::try_from(io::UPDATE_IRQ).unwrap())?;
    a.xor(eax, eax)?;
    a.out(dx, al)?;
    match route {
        IrqRoute::Pic => {
            a.mov(al, 0x20u32)?;
            a.out(0x20u32, al)?; // EOI
        }
        IrqRoute::Ioapic => guest_asm::lapic_eoi(&mut a)?,
    }
    a.popad()?;
    interrupt_return(&mut a)?;

    // Spurious IRQ7: no EOI.
    let mut spurious = a.create_label();
    a.set_label(&mut spurious)?;
    interrupt_return(&mut a)?;

    // Every other vector: report it (with the dword on top of the stack:
    // EIP, or the error code for exceptions that push one).
    let mut stubs = Vec::new();
    for vec in 0..48u32 {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(v(V_DETAIL), eax)?;
        a.mov(eax, F_EXCEPTION + vec)?;
        a.jmp(fail_common)?;
        stubs.push(l);
    }
    let mut generic = a.create_label();
    a.set_label(&mut generic)?;
    a.mov(eax, F_EXCEPTION + 0xff)?;
    a.jmp(fail_common)?;

    for (mut l, code) in fails {
        a.set_label(&mut l)?;
        a.mov(eax, code)?;
        a.jmp(fail_common)?;
    }
    a.set_label(&mut fail_common)?;
    a.mov(ebx, eax)?;
    a.mov(eax, v(V_DETAIL))?;
    a.mov(dx, u32::from(STATUS_PORT))?;
    a.out(dx, eax)?;
    a.mov(eax, ebx)?;
    a.mov(dx, u32::from(FAIL_PORT))?;
    a.out(dx, eax)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(fail_common)?;

    // The handler table the IDT loop reads (256 dwords).
    let mut table = a.create_label();
    a.set_label(&mut table)?;
    let mut entries = addrs.handlers.clone();
    entries.resize(256, 0);
    a.dd(&entries)?;

    let res = a.assemble_options(
        u64::from(CODE_BASE),
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let ip =
        |l: &CodeLabel| -> Result<u32, IcedError> { Ok(u32::try_from(res.label_ip(l)?).unwrap()) };
    let mut handlers = Vec::with_capacity(256);
    for vec in 0..256usize {
        let h = match vec {
            0x25 => ip(&isr)?,
            0x27 | 0x2f => ip(&spurious)?,
            v if v < 48 => ip(&stubs[v])?,
            _ => ip(&generic)?,
        };
        handlers.push(h);
    }
    assert_eq!(QXL_VECTOR, 0x25);
    let out = Addrs {
        handlers,
        table: ip(&table)?,
    };
    let after_hlt = ip(&after_hlt)?;
    Ok((
        Program {
            code: res.inner.code_buffer,
            after_hlt,
        },
        out,
    ))
}

/// Two passes: the first finds the handler addresses, the second embeds them
/// (every instruction that carries one has a fixed-size immediate, so the
/// layout cannot change between passes).
fn guest_program(route: IrqRoute) -> Program {
    let (_, addrs) = assemble(
        &Addrs {
            handlers: Vec::new(),
            table: 0,
        },
        route,
    )
    .unwrap();
    let (prog, again) = assemble(&addrs, route).unwrap();
    assert_eq!(
        again.handlers, addrs.handlers,
        "the layout changed between passes"
    );
    assert_eq!(again.table, addrs.table);
    prog
}

// ---------------------------------------------------------------------------
// The recording.

struct Session {
    replay: Vec<u8>,
    bars: devices::qxl::mock::driver::MockBars,
    irq: devices::qxl::mock::driver::IrqCounts,
    released: Vec<u64>,
    pushed: u64,
    outstanding: usize,
    /// Device-local address of each id's `release_info` (index = id).
    table: Vec<u32>,
}

fn record_session() -> Session {
    let mut drv =
        MockQxlDriver::with_sink_recording(device_config(W, H), RecordingSink::default()).unwrap();
    drv.probe().unwrap();
    drv.create_primary(W, H, None).unwrap();
    let mut scene = DesktopScene::new(W, H);
    let mut table = vec![0u32];
    let mut next_id = 1u64;
    for n in 0..FRAMES {
        let frame = scene.frame(n);
        for cmd in frame.draws.iter().chain(&frame.cursor) {
            // `push_command`, with the id → release_info address kept.
            let (phys, kind) = drv.encode_command(cmd, next_id).unwrap();
            table.push(u32::try_from(drv.addr_of(phys).unwrap().0).unwrap());
            drv.track_release(next_id, phys).unwrap();
            let ring = if matches!(cmd, Command::Cursor(_)) {
                MockRing::Cursor
            } else {
                MockRing::Command
            };
            drv.push_raw(ring, phys, kind).unwrap();
            next_id += 1;
        }
        drv.drain_releases().unwrap();
    }
    // Get everything back: flush the partial release batch and drain.
    drv.notify_oom();
    drv.drain_releases().unwrap();
    Session {
        replay: drv.take_recording().unwrap(),
        bars: drv.bars(),
        irq: drv.irq_counts(),
        released: drv.released().to_vec(),
        pushed: next_id - 1,
        outstanding: drv.outstanding(),
        table,
    }
}

fn reference() -> Vec<u8> {
    let mut s = DesktopScene::new(W, H);
    for i in 0..FRAMES {
        s.frame(i);
    }
    s.framebuffer().to_vec()
}

fn read_u32(vm: &QxlVm<spice_server::DisplayHandle>, gpa: u32) -> u32 {
    vm.guest_memory()
        .read_obj::<u32>(vm_memory::GuestAddress(u64::from(gpa)))
        .unwrap()
}

#[test]
fn kvm_guest_drives_qxl_to_spice_client() {
    drive_qxl(IrqRoute::Pic);
}

/// The same session with the QXL INTx on IOAPIC pin 16, level-triggered, as
/// Linux under `qxl-vmm boot` takes it: each end of interrupt goes through
/// the local APIC, and KVM's resample fd re-raises the line while the
/// device still has `int_pending & int_mask` bits.
#[test]
fn kvm_guest_drives_qxl_through_the_ioapic() {
    drive_qxl(IrqRoute::Ioapic);
}

fn drive_qxl(route: IrqRoute) {
    if let Err(reason) = kvm::probe_kvm() {
        skip!("SKIP: {reason}");
        return;
    }
    common::init_log();

    // 1. What a driver does, recorded from the mock Linux driver.
    let session = record_session();
    assert!(u32::try_from(session.table.len()).unwrap() <= MAX_IDS);
    let cfg = device_config(W, H).into_normalized();
    let script = translate(&session.replay, &session.bars, cfg.ram_size, cfg.vram_size);
    println!(
        "script: {} bytes from a {}-byte replay, ops {:?}",
        script.words.len(),
        session.replay.len(),
        script.ops
    );

    // 2. The VM, the SPICE server, the event thread.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, display) = spice_server::SpiceServer::start(
        ServerConfig {
            port,
            disable_ticketing: true,
            ..ServerConfig::default()
        },
        Box::new(common::Recorder::default()),
    )
    .unwrap();
    let script_len = u64::try_from(script.words.len()).unwrap();
    let vm_config = VmConfig {
        guest_ram_size: u64::from(SCRIPT_BASE) + script_len + (1 << 20),
        status_port: STATUS_PORT,
        fail_port: FAIL_PORT,
        qxl_gsi: route.gsi(),
        ..VmConfig::default()
    };
    let mut vm = match QxlVm::new(vm_config, device_config(W, H), display.clone()) {
        Ok(vm) => vm,
        Err(VmError::Unavailable(reason)) => {
            skip!("SKIP: {reason}");
            return;
        }
        Err(e) => panic!("building the VM failed: {e}"),
    };
    let handler = QxlEventHandler::new(vm.device().clone(), vm.event_fds().unwrap());
    let stats = handler.stats();
    let mut events = EventThread::spawn(handler).unwrap();

    // 3. Load the guest: program, script, id table.
    let prog = guest_program(route);
    if let Some(path) = std::env::var_os("KVM_GUEST_DUMP") {
        // `objdump -D -b binary -mi386 --adjust-vma=0x100000 <path>`
        std::fs::write(path, &prog.code).unwrap();
    }
    vm.load(u64::from(CODE_BASE), &prog.code).unwrap();
    vm.load(u64::from(SCRIPT_BASE), &script.words).unwrap();
    let table: Vec<u8> = session.table.iter().flat_map(|v| v.to_le_bytes()).collect();
    vm.load(u64::from(ID_TABLE), &table).unwrap();
    let table_len = u32::try_from(session.table.len()).unwrap();
    vm.load(u64::from(VARS + V_TABLE_LEN), &table_len.to_le_bytes())
        .unwrap();

    // 4. Run it.
    let res = vm.run(
        VcpuEntry {
            rip: u64::from(CODE_BASE),
            rsp: u64::from(STACK_TOP),
        },
        Duration::from_secs(180),
    );
    let var = |off: u32| read_u32(&vm, VARS + off);
    let report = match res {
        Ok(r) => r,
        Err(e) => panic!(
            "the guest did not finish: {e}\n script offset {:#x} (of {:#x}), detail {:#x}, \
             isr runs {}, seen {:#x}, bars {:x?}, handler {stats:?}",
            var(V_POS),
            script.words.len(),
            var(V_DETAIL),
            var(V_ISR_RUNS),
            var(V_SEEN),
            vm.bars().layout(),
        ),
    };
    // The last end-of-interrupt's resample may still be on its way to the
    // event thread: let it arrive (bounded) before stopping the loop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stats.resamples.load(std::sync::atomic::Ordering::Relaxed) < u64::from(var(V_HANDLED))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{route:?} run: {report:?}\nevent handler: {stats:?}");
    events.stop();

    // The guest ran its script to the end and parked on its final `hlt`.
    assert!(report.halted);
    assert_eq!(var(V_END), 1);
    assert_eq!(report.rip, u64::from(prog.after_hlt), "halted elsewhere");
    assert_eq!(report.status, vec![1, 2, 3, DONE]);

    // Firmware: the guest's own BAR programming, moved once with decoding on.
    let layout = vm.bars().layout();
    assert_eq!(layout.ram, Some(0xc000_0000));
    assert_eq!(layout.vram, Some(0xc400_0000));
    assert_eq!(layout.io, Some(0x2000));
    assert_eq!(var(V_PHASE_A), 0xd000_0000);
    assert_eq!(var(V_PHASE_A + 12), 0x1000);
    assert!(vm.bars().remaps() >= 6, "{} re-maps", vm.bars().remaps());
    assert_eq!(var(V_ROM_MAGIC), 0x4f52_5851);

    // Interrupts: the guest's ISR saw what the mock driver's handler saw.
    let irq = session.irq;
    let counts = [
        irq.display,
        irq.cursor,
        irq.io_cmd,
        irq.error,
        irq.client,
        irq.client_monitors_config,
    ];
    let got: Vec<u64> = (0..6u32)
        .map(|i| u64::from(var(V_BITCNT + 4 * i)))
        .collect();
    println!(
        "interrupts: guest ISR ran {} times, handled {}, per bit {got:?}; mock {irq:?}",
        var(V_ISR_RUNS),
        var(V_HANDLED)
    );
    assert_eq!(got, counts.to_vec(), "per-bit interrupt counts");
    assert_eq!(u64::from(var(V_HANDLED)), irq.handled);
    // Every end of interrupt of the level-triggered line came back to the
    // device as a resample (PIC: the ELCR level line; IOAPIC: Remote IRR).
    let resamples = stats.resamples.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        resamples >= irq.handled,
        "{resamples} resamples for {} handled interrupts",
        irq.handled
    );
    assert_eq!(irq.error, 0);
    assert!(irq.io_cmd >= 3 && irq.display >= 1);

    // Releases: the guest popped every id, in the mock's order.
    let n = usize::try_from(var(V_RELEASED)).unwrap();
    let log: Vec<u64> = (0..n)
        .map(|i| u64::from(read_u32(&vm, RELEASE_LOG + 4 * u32::try_from(i).unwrap())))
        .collect();
    assert_eq!(log, session.released);
    assert_eq!(session.outstanding, 0, "the mock kept ids outstanding");
    let mut sorted = log.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=session.pushed).collect::<Vec<_>>());

    {
        let dev = kvm::lock_device(vm.device()).unwrap();
        assert!(!dev.guest_bug());
        assert_eq!(dev.metrics().snapshot().guest_bugs, 0);
        let irqfd = vm.irq();
        println!(
            "irqfd asserts {}, errors {}; device metrics {:?}",
            irqfd.asserts(),
            irqfd.errors(),
            dev.metrics().snapshot()
        );
        assert_eq!(irqfd.errors(), 0);
    }

    // 5. The frames reached the SPICE server pixel-exact ...
    display.sync().unwrap();
    let (w, h, shot) = display.screenshot(0).unwrap();
    assert_eq!((w, h), (W, H));
    let want = reference();
    assert!(
        common::bgrx_to_rgb(&shot) == common::bgrx_to_rgb(&want),
        "the worker's canvas differs from the scene's framebuffer"
    );
    // ... and a real SPICE client sees the same picture.
    let s = common::spicy_screenshot(port, None, Duration::from_secs(30));
    let (pw, ph, ppm) = s
        .ppm
        .unwrap_or_else(|| panic!("no screenshot: {}", s.stderr));
    assert_eq!((pw, ph), (W, H));
    let diff = ppm
        .chunks_exact(3)
        .zip(common::bgrx_to_rgb(&want).chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        diff, 0,
        "spicy-screenshot's picture differs in {diff} pixels"
    );
    server.shutdown();
}

// ---------------------------------------------------------------------------
// The VM never hangs and never hides a guest problem.

fn tiny_vm() -> Option<QxlVm<RecordingSink>> {
    if let Err(reason) = kvm::probe_kvm() {
        skip!("SKIP: {reason}");
        return None;
    }
    let vm = QxlVm::new(
        VmConfig {
            guest_ram_size: 4 << 20,
            status_port: STATUS_PORT,
            fail_port: FAIL_PORT,
            ..VmConfig::default()
        },
        device_config(W, H),
        RecordingSink::default(),
    )
    .unwrap();
    Some(vm)
}

fn run_tiny(
    vm: &mut QxlVm<RecordingSink>,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    timeout: Duration,
) -> Result<kvm::RunReport, VmError> {
    let mut a = CodeAssembler::new(32).unwrap();
    build(&mut a).unwrap();
    let code = a.assemble(u64::from(CODE_BASE)).unwrap();
    vm.load(u64::from(CODE_BASE), &code).unwrap();
    vm.run(
        VcpuEntry {
            rip: u64::from(CODE_BASE),
            rsp: u64::from(STACK_TOP),
        },
        timeout,
    )
}

#[test]
fn a_spinning_guest_times_out_instead_of_hanging() {
    let Some(mut vm) = tiny_vm() else { return };
    let start = std::time::Instant::now();
    let res = run_tiny(
        &mut vm,
        |a| {
            let mut l = a.create_label();
            a.cli()?;
            a.set_label(&mut l)?;
            a.jmp(l)
        },
        Duration::from_millis(500),
    );
    assert!(
        matches!(res, Err(VmError::Timeout(..))),
        "expected a timeout, got {res:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn unhandled_exits_and_guest_failures_are_errors() {
    // A fresh VM per case: a run that ended in an error leaves the vCPU in
    // the middle of an instruction, so a VM is not re-run after one.
    let Some(mut vm) = tiny_vm() else { return };
    // An `out` to a port nobody decodes.
    let res = run_tiny(
        &mut vm,
        |a| {
            a.mov(al, 1u32)?;
            a.out(0x80u32, al)?;
            a.hlt()
        },
        Duration::from_secs(10),
    );
    match res {
        Err(VmError::UnhandledExit(m)) => assert!(m.contains("port 0x80"), "{m}"),
        other => panic!("expected an unhandled exit, got {other:?}"),
    }
    // A read of unbacked guest-physical memory (no BAR programmed).
    let Some(mut vm) = tiny_vm() else { return };
    let res = run_tiny(
        &mut vm,
        |a| {
            a.mov(eax, dword_ptr(0xe000_0000u32))?;
            a.hlt()
        },
        Duration::from_secs(10),
    );
    match res {
        Err(VmError::UnhandledExit(m)) => assert!(m.contains("MMIO read"), "{m}"),
        other => panic!("expected an unhandled MMIO exit, got {other:?}"),
    }
    // The guest's own failure report.
    let Some(mut vm) = tiny_vm() else { return };
    let res = run_tiny(
        &mut vm,
        |a| {
            a.mov(eax, 0x1234u32)?;
            a.mov(dx, u32::from(STATUS_PORT))?;
            a.out(dx, eax)?;
            a.mov(eax, 0x42u32)?;
            a.mov(dx, u32::from(FAIL_PORT))?;
            a.out(dx, eax)?;
            a.hlt()
        },
        Duration::from_secs(10),
    );
    assert!(
        matches!(
            res,
            Err(VmError::GuestFailed {
                code: 0x42,
                detail: 0x1234
            })
        ),
        "{res:?}"
    );
}
