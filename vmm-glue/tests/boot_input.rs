//! `qxl-vmm boot` end to end on this host, with a guest KVM can run: a tiny
//! PVH "kernel" (an ELF with a `XEN_ELFNOTE_PHYS32_ENTRY` note, built here
//! around an `iced-x86` program) is loaded by `linux-loader`, entered in
//! 32-bit protected mode like a PVH Linux, and talks to what the VMM gives a
//! Linux guest:
//!
//! - the 16550 console (every line it prints is a console line here);
//! - the QXL function on the PCI host bridge (its ids, and the ROM magic
//!   through the BAR the VMM programmed);
//! - the virtio-mmio windows the VMM announced on the command line: it finds
//!   the `virtio_mmio.device=` words in the command line the PVH start info
//!   points to, checks the keyboard window's registers, initialises it like
//!   Linux's driver and posts eventq buffers with a `QueueNotify` (an
//!   ioeventfd served by the VMM's event thread);
//! - then real spice-gtk (the GObject probe) types `A` on the VMM's SPICE
//!   server; the evdev events travel inputs channel → `VirtioInputSink` →
//!   the late-bound injector → the device → the guest's buffers, and the
//!   guest prints them and "powers off" (`reboot: Power down`).
//!
//! Linux itself cannot boot on this nested KVM (see `linux_boot.rs`); this
//! proves the same VMM code path with a guest it can run. Skips (with a
//! `SKIP:` line) only without a usable `/dev/kvm`.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

#[path = "../../spice-server/tests/common/mod.rs"]
#[macro_use]
mod common;
mod guest_asm;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use devices::virtio_input::InputEvent;
use devices::virtio_input::evdev::EV_KEY;
use devices::virtio_input::keymap::KEY_A;
use guest_asm::QueueRings;
use iced_x86::code_asm::*;
use vmm_glue::boot::{self, BootOptions, PVH_INFO, SerialOut};

/// Where the program is linked and entered.
const CODE: u32 = 0x10_0000;
/// Its strings and hex digits (a second PT_LOAD segment).
const DATA: u32 = 0x18_0000;
/// The keyboard's eventq and statusq.
const QUEUES: [QueueRings; 2] = guest_asm::input_queues(0x20_0000);
/// The eventq's used ring.
const USED: u32 = QUEUES[0].used;
/// The eventq buffers, after the rings.
const BUF: u32 = 0x20_6000;
const KBD: u32 = 0xd000_0000;
const COM1: u32 = 0x3f8;
const QUEUE_SIZE: u32 = 8;

/// The data segment: NUL-terminated strings at fixed offsets.
const S_UP: u32 = 0x00; // "qxl-test: up\n"
const S_CMDLINE: u32 = 0x20; // "qxl-test: cmdline has virtio_mmio.device=4K@0xd0000000:5\n"
const S_WINDOW: u32 = 0x60; // "qxl-test: window "
const S_READY: u32 = 0x80; // "qxl-test: ready\n"
const S_EV: u32 = 0xa0; // "qxl-test: ev "
const S_SP: u32 = 0xc0; // " "
const S_NL: u32 = 0xc4; // "\n"
const S_OFF: u32 = 0xd0; // "reboot: Power down\n"
const S_TIMEOUT: u32 = 0x100; // "qxl-test: no events\n"
const S_NEEDLE: u32 = 0x120; // "virtio_mmio.device=4K@0xd0000000:5" (no newline)
const S_QXL: u32 = 0x150; // "qxl-test: qxl "
const HEX: u32 = 0x170; // "0123456789abcdef"

fn data_segment() -> Vec<u8> {
    let mut d = vec![0u8; 0x190];
    let mut put = |off: u32, s: &str| {
        let off = usize::try_from(off).unwrap();
        d[off..off + s.len()].copy_from_slice(s.as_bytes());
    };
    put(S_UP, "qxl-test: up\n");
    put(
        S_CMDLINE,
        "qxl-test: cmdline has virtio_mmio.device=4K@0xd0000000:5\n",
    );
    put(S_WINDOW, "qxl-test: window ");
    put(S_READY, "qxl-test: ready\n");
    put(S_EV, "qxl-test: ev ");
    put(S_SP, " ");
    put(S_NL, "\n");
    put(S_OFF, "reboot: Power down\n");
    put(S_TIMEOUT, "qxl-test: no events\n");
    put(S_NEEDLE, "virtio_mmio.device=4K@0xd0000000:5");
    put(S_QXL, "qxl-test: qxl ");
    put(HEX, "0123456789abcdef");
    d
}

fn reg(off: u32) -> AsmMemoryOperand {
    dword_ptr(KBD + off)
}

fn program() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut puts = a.create_label();
    let mut puthex = a.create_label();
    let mut find = a.create_label();
    let r = (|| -> Result<(), IcedError> {
        a.cli()?;
        a.cld()?;
        a.mov(esp, 0x9_0000u32)?;
        // ebx: the PVH start info; its cmdline_paddr (offset 24, 64-bit).
        a.mov(edi, dword_ptr(ebx + 24))?;
        a.mov(esi, DATA + S_UP)?;
        a.call(puts)?;

        // The command line announces the keyboard's window?
        let mut no_cmdline = a.create_label();
        a.call(find)?; // edi = command line; eax = 1 when found
        a.test(eax, eax)?;
        a.jz(no_cmdline)?;
        a.mov(esi, DATA + S_CMDLINE)?;
        a.call(puts)?;
        a.set_label(&mut no_cmdline)?;

        // MagicValue, Version, DeviceID of the first window.
        a.mov(esi, DATA + S_WINDOW)?;
        a.call(puts)?;
        for off in [0u32, 4, 8] {
            a.mov(eax, reg(off))?;
            a.call(puthex)?;
            a.mov(esi, DATA + S_SP)?;
            a.call(puts)?;
        }
        a.mov(esi, DATA + S_NL)?;
        a.call(puts)?;

        // The QXL function at 00:02.0 as the VMM's firmware left it: its
        // ids through the host bridge, and the ROM magic through BAR2.
        a.mov(esi, DATA + S_QXL)?;
        a.call(puts)?;
        a.mov(edx, 0xcf8u32)?;
        a.mov(eax, 0x8000_1000u32)?;
        a.out(dx, eax)?;
        a.mov(edx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.call(puthex)?;
        a.mov(esi, DATA + S_SP)?;
        a.call(puts)?;
        a.mov(edx, 0xcf8u32)?;
        a.mov(eax, 0x8000_1018u32)?;
        a.out(dx, eax)?;
        a.mov(edx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.and(eax, 0xffff_fff0u32)?;
        a.mov(eax, dword_ptr(eax))?;
        a.call(puthex)?;
        a.mov(esi, DATA + S_NL)?;
        a.call(puts)?;

        // Linux's virtio_mmio probe, reduced, then eventq buffers.
        guest_asm::virtio_mmio_init(&mut a, KBD, &QUEUES, QUEUE_SIZE, None)?;
        guest_asm::post_buffers(&mut a, QUEUES[0], BUF, 8, QUEUE_SIZE)?;
        a.mov(reg(0x50), 0u32)?; // QueueNotify: the ioeventfd
        a.mov(esi, DATA + S_READY)?;
        a.call(puts)?;

        // Wait for four used buffers (bounded; the host times out first).
        let mut wait = a.create_label();
        let mut got = a.create_label();
        let mut off = a.create_label();
        a.mov(ecx, 0xffff_ffffu32)?;
        a.set_label(&mut wait)?;
        a.movzx(eax, word_ptr(USED + 2))?;
        a.cmp(eax, 4u32)?;
        a.jae(got)?;
        a.pause()?;
        a.dec(ecx)?;
        a.jnz(wait)?;
        a.mov(esi, DATA + S_TIMEOUT)?;
        a.call(puts)?;
        a.jmp(off)?;
        a.set_label(&mut got)?;
        for i in 0..4u32 {
            a.mov(esi, DATA + S_EV)?;
            a.call(puts)?;
            a.mov(eax, dword_ptr(BUF + 8 * i))?;
            a.call(puthex)?;
            a.mov(esi, DATA + S_SP)?;
            a.call(puts)?;
            a.mov(eax, dword_ptr(BUF + 8 * i + 4))?;
            a.call(puthex)?;
            a.mov(esi, DATA + S_NL)?;
            a.call(puts)?;
        }
        a.set_label(&mut off)?;
        a.mov(esi, DATA + S_OFF)?;
        a.call(puts)?;
        let mut park = a.create_label();
        a.set_label(&mut park)?;
        a.hlt()?;
        a.jmp(park)?;

        // puts: the NUL-terminated string at esi to COM1.
        a.set_label(&mut puts)?;
        a.push(eax)?;
        a.push(edx)?;
        a.mov(edx, COM1)?;
        let mut next = a.create_label();
        let mut end = a.create_label();
        a.set_label(&mut next)?;
        a.lodsb()?;
        a.test(al, al)?;
        a.jz(end)?;
        a.out(dx, al)?;
        a.jmp(next)?;
        a.set_label(&mut end)?;
        a.pop(edx)?;
        a.pop(eax)?;
        a.ret()?;

        // puthex: eax as 8 hex digits to COM1.
        a.set_label(&mut puthex)?;
        a.push(eax)?;
        a.push(ebx)?;
        a.push(ecx)?;
        a.push(edx)?;
        a.mov(edx, COM1)?;
        a.mov(ecx, 8u32)?;
        let mut digit = a.create_label();
        a.set_label(&mut digit)?;
        a.rol(eax, 4)?;
        a.mov(ebx, eax)?;
        a.and(ebx, 0xfu32)?;
        a.push(eax)?;
        a.mov(al, byte_ptr(ebx + HEX + DATA))?;
        a.out(dx, al)?;
        a.pop(eax)?;
        a.dec(ecx)?;
        a.jnz(digit)?;
        a.pop(edx)?;
        a.pop(ecx)?;
        a.pop(ebx)?;
        a.pop(eax)?;
        a.ret()?;

        // find: eax = 1 when the NUL-terminated string at edi contains the
        // needle at DATA + S_NEEDLE.
        a.set_label(&mut find)?;
        a.push(esi)?;
        a.push(edi)?;
        a.push(ecx)?;
        let mut outer = a.create_label();
        let mut inner = a.create_label();
        let mut found = a.create_label();
        let mut not_found = a.create_label();
        let mut advance = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut outer)?;
        a.cmp(byte_ptr(edi), 0)?;
        a.je(not_found)?;
        a.mov(esi, DATA + S_NEEDLE)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut inner)?;
        a.mov(al, byte_ptr(esi + ecx))?;
        a.test(al, al)?;
        a.jz(found)?;
        a.cmp(al, byte_ptr(edi + ecx))?;
        a.jne(advance)?;
        a.inc(ecx)?;
        a.jmp(inner)?;
        a.set_label(&mut advance)?;
        a.inc(edi)?;
        a.jmp(outer)?;
        a.set_label(&mut found)?;
        a.mov(eax, 1u32)?;
        a.jmp(done)?;
        a.set_label(&mut not_found)?;
        a.xor(eax, eax)?;
        a.set_label(&mut done)?;
        a.pop(ecx)?;
        a.pop(edi)?;
        a.pop(esi)?;
        a.ret()
    })();
    r.unwrap();
    a.assemble(u64::from(CODE)).unwrap()
}

/// An ELF64 executable: two PT_LOAD segments (code at [`CODE`], data at
/// [`DATA`]) and a PT_NOTE with the PVH entry note ("Xen", type 18).
fn pvh_elf(code: &[u8], data: &[u8]) -> Vec<u8> {
    const PHDRS: u64 = 3;
    let note_off = 64 + 56 * PHDRS;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&CODE.to_le_bytes());
    let code_off = 0x1000u64;
    let data_off = code_off + u64::try_from(code.len()).unwrap().next_multiple_of(0x1000);

    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&u64::from(CODE).to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&u16::try_from(PHDRS).unwrap().to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let mut phdr = |ty: u32, off: u64, addr: u64, size: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes()); // RWX
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes()); // vaddr
        f.extend_from_slice(&addr.to_le_bytes()); // paddr
        f.extend_from_slice(&size.to_le_bytes()); // filesz
        f.extend_from_slice(&size.to_le_bytes()); // memsz
        f.extend_from_slice(&0x1000u64.to_le_bytes());
    };
    let len = |b: &[u8]| u64::try_from(b.len()).unwrap();
    phdr(1, code_off, u64::from(CODE), len(code));
    phdr(1, data_off, u64::from(DATA), len(data));
    phdr(4, note_off, 0, len(&note));
    f.extend_from_slice(&note);
    f.resize(usize::try_from(code_off).unwrap(), 0);
    f.extend_from_slice(code);
    f.resize(usize::try_from(data_off).unwrap(), 0);
    f.extend_from_slice(data);
    f
}

/// The next console line containing `needle`, or `None` after `timeout`.
fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    t: Duration,
) -> Option<String> {
    let deadline = Instant::now() + t;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = rx.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if line.contains(needle) {
            return Some(line);
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

#[test]
fn qxl_vmm_boot_carries_spice_keys_to_a_pvh_guest_through_virtio_mmio() {
    if let Err(e) = vmm_glue::kvm::probe_kvm() {
        skip!("SKIP: KVM is unusable here: {e}");
        return;
    }
    common::init_log();
    let elf = pvh_elf(&program(), &data_segment());
    let path = std::env::temp_dir().join(format!("qxl-boot-input-{}.elf", std::process::id()));
    std::fs::write(&path, &elf).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let mut opts = BootOptions::new(
        path.clone(),
        spice_server::ServerConfig {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            disable_ticketing: true,
            ..spice_server::ServerConfig::default()
        },
    );
    opts.cmdline = "console=ttyS0".into();
    opts.mem_mib = 64;
    opts.serial = SerialOut::Discard;
    opts.console_lines = Some(tx);
    opts.first_output_timeout = Duration::from_secs(20);
    opts.stall_timeout = Duration::from_secs(60);
    let mut vm = boot::start(opts).expect("qxl-vmm boot starts");
    let port = vm.spice_addr().unwrap().port();
    let mut seen = Vec::new();
    let ready = wait_line(&rx, &mut seen, "qxl-test: ready", Duration::from_secs(30));
    assert!(ready.is_some(), "the guest never got ready: {seen:#?}");
    let _ = std::fs::remove_file(&path);
    assert!(
        seen.iter().any(|l| l.contains("qxl-test: cmdline has")),
        "the VMM did not announce the keyboard's window: {seen:#?}"
    );
    let window = seen
        .iter()
        .find(|l| l.contains("qxl-test: window "))
        .unwrap();
    // 1b36:0100 and the ROM's "QXRO".
    let qxl = seen.iter().find(|l| l.contains("qxl-test: qxl ")).unwrap();
    assert!(qxl.ends_with("01001b36 4f525851"), "QXL function: {qxl:?}");
    // "virt", version 2, device 18 (input).
    assert!(
        window.ends_with("74726976 00000002 00000012 "),
        "window registers: {window:?}"
    );

    // Real spice-gtk types A on the VMM's SPICE server.
    let mut p = common::Probe::start(port, None, "main,inputs");
    p.wait_seen("OPENED inputs:0", Duration::from_secs(20));
    send(&mut p, "key_press 0x1e");
    send(&mut p, "key_release 0x1e");

    let mut events = Vec::new();
    while events.len() < 4 {
        let Some(line) = wait_line(&rx, &mut seen, "qxl-test: ev ", Duration::from_secs(30)) else {
            panic!("only {} events arrived: {seen:#?}", events.len());
        };
        let words: Vec<u32> = line
            .trim_start_matches("qxl-test: ev ")
            .split_whitespace()
            .map(|w| u32::from_str_radix(w, 16).unwrap())
            .collect();
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&words[0].to_le_bytes());
        bytes[4..].copy_from_slice(&words[1].to_le_bytes());
        events.push(bytes);
    }
    let want = [
        InputEvent::new(EV_KEY, KEY_A, 1),
        InputEvent::syn(),
        InputEvent::new(EV_KEY, KEY_A, 0),
        InputEvent::syn(),
    ]
    .map(InputEvent::to_bytes);
    assert_eq!(events, want.to_vec());
    let report = vm.wait().expect("the guest powers off");
    assert_eq!(report.end, "guest powered off");
    drop(p);
}

#[test]
fn the_pvh_start_info_is_where_the_guest_reads_it() {
    // The program above reads the command line pointer from the start info
    // at ebx + 24 (hvm_start_info.cmdline_paddr).
    assert_eq!(
        std::mem::offset_of!(
            linux_loader::loader::elf::start_info::hvm_start_info,
            cmdline_paddr
        ),
        24
    );
    assert_eq!(PVH_INFO, 0x6000);
}
