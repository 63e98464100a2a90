//! `qxl-vmm boot`: a Linux guest under KVM with the QXL device, served over SPICE.
//!
//! # Primer
//!
//! There is no firmware: the VMM does what a boot loader and a BIOS would.
//!
//! - **Kernel.** `linux-loader` loads a bzImage's protected-mode part at 1 MiB
//!   (its setup header comes back for the zero page), or an ELF `vmlinux`
//!   with a PVH note at its physical addresses.
//! - **Zero page** ([`ZERO_PAGE`]): the bzImage setup header plus what a boot
//!   loader fills in: loader type, command line pointer ([`CMDLINE`]), initrd
//!   place and size (as high as `initrd_addr_max` allows), and the e820 map
//!   (RAM below the MP table, the MP table reserved, RAM from 1 MiB on). A PVH
//!   kernel gets the same facts in an `hvm_start_info` instead.
//! - **CPU state.** bzImage: 64-bit long mode at the kernel's 64-bit entry
//!   (`load address + 0x200`), identity-mapped first GiB (2 MiB pages, tables
//!   at [`PML4`]), a flat GDT ([`GDT`]), `rsi` = zero page. PVH: 32-bit flat
//!   protected mode without paging, `ebx` = start info.
//! - **Interrupts.** KVM's in-kernel PIC + IOAPIC + LAPIC and PIT. An Intel MP
//!   table ([`MPTABLE`]) tells Linux about one CPU, the IOAPIC, the ISA IRQs
//!   (identity-routed to IOAPIC pins 0..15) and the QXL function's INTA# on
//!   IOAPIC pin [`QXL_GSI`] (level, active high: KVM's irqfd with resample
//!   models the level).
//! - **Input.** A virtio-input keyboard, tablet and mouse on virtio-mmio
//!   windows ([`crate::virtio`]), announced by `virtio_mmio.device=` words
//!   appended to the command line, on ISA IRQs 5..7 (edge irqfds), with
//!   `QueueNotify` as ioeventfds. The SPICE inputs channel feeds them through
//!   [`crate::input::VirtioInputSink`]; the tablet scales against the primary
//!   surface the guest creates, and the keyboard's LEDs go back to the client.
//! - **PCI.** The QXL function sits at 00:02.0 behind the host bridge; its BARs
//!   are programmed here, in the 32-bit hole above RAM ([`MMIO_BASE`]), as
//!   firmware would, and Linux keeps them.
//! - **Console.** A 16550 UART from `vm-superio` on `0x3f8` with IRQ 4 as an
//!   irqfd. Every byte goes to the chosen output; whole lines also go to an
//!   optional channel, and they are how boot progress is judged.
//!
//! # Progress detection
//!
//! A guest that prints nothing on the console within
//! [`BootOptions::first_output_timeout`], or then goes silent for
//! [`BootOptions::stall_timeout`], ends the run with [`BootError::NoProgress`]
//! naming the phase, the last line and the vCPU's `rip`. An instruction KVM
//! cannot emulate is [`BootError::Emulation`]; a kernel panic line is
//! [`BootError::GuestPanic`]. A `reboot: Power down` line (or a guest
//! shutdown exit after it) is a clean end.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::qxl::QxlConfig;
use devices::virtio_input::InputKind;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{self, BzImage, Cmdline, Elf, KernelLoader, PvhBootCapability};
use spice_server::{DisplayHandle, KeyboardModifiersHandle, NoInput, ServerConfig, SpiceServer};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::event_handler::{BoxedSubscriber, EventThread, QxlEventHandler};
use crate::input::{DisplaySize, VirtioInputSink, led_observer};
use crate::kvm::{GuestEnd, GuestExits, QxlVm, VcpuEntry, VmConfig, VmError};
use crate::virtio::{LateInjector, TrackPrimary, VirtioInputs};

/// GDT (4 descriptors: null, code64, data, TSS).
pub const GDT: u64 = 0x500;
/// IDT (one empty descriptor: the kernel installs its own before it enables interrupts).
pub const IDT: u64 = 0x520;
/// The zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack top.
pub const BOOT_STACK: u64 = 0x8ff0;
/// PML4; the PDPT and PD follow at +4 KiB and +8 KiB.
pub const PML4: u64 = 0x9000;
/// PVH start info (and its memory map right after).
pub const PVH_INFO: u64 = 0x6000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Room for the command line.
pub const CMDLINE_MAX: usize = 4096;
/// The MP table (floating pointer, then the configuration table), in the last
/// KiB of base memory where Linux looks for it.
pub const MPTABLE: u64 = 0x9fc00;
/// Where RAM resumes above the legacy hole.
pub const HIGH_RAM: u64 = 0x10_0000;
/// First address of the 32-bit PCI MMIO hole (guest RAM must end below).
pub const MMIO_BASE: u64 = 0xc000_0000;
/// The QXL I/O BAR.
pub const QXL_IO_BASE: u64 = 0xc000;
/// IOAPIC pin (GSI) of the QXL INTA#: above the ISA range, as on real boards.
pub const QXL_GSI: u32 = 16;
/// COM1.
pub const COM1: u16 = 0x3f8;
/// COM1's IRQ.
pub const COM1_GSI: u32 = 4;
/// The local APIC's address.
const LAPIC_BASE: u32 = 0xfee0_0000;
/// The IOAPIC's address.
const IOAPIC_BASE: u32 = 0xfec0_0000;
/// The IOAPIC's id in the MP table (the CPU is 0).
const IOAPIC_ID: u8 = 1;

/// The default kernel command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 loglevel=7";

/// Where the guest's console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOut {
    /// The VMM's standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// Nowhere (lines still reach [`BootOptions::console_lines`]).
    Discard,
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// A bzImage, or an ELF vmlinux with a PVH entry note.
    pub kernel: PathBuf,
    /// An initramfs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB (64..=3072: RAM ends below the PCI hole).
    pub mem_mib: u64,
    /// The SPICE server.
    pub server: ServerConfig,
    /// The console output.
    pub serial: SerialOut,
    /// Each complete console line, as it arrives.
    pub console_lines: Option<Sender<String>>,
    /// No console output at all by then: [`BootError::NoProgress`].
    pub first_output_timeout: Duration,
    /// Console silent this long after it started: [`BootError::NoProgress`].
    pub stall_timeout: Duration,
    /// Attach a virtio-input keyboard, tablet and mouse (virtio-mmio windows
    /// announced on the command line) fed by the SPICE inputs channel.
    pub virtio_input: bool,
}

impl BootOptions {
    /// Options for `kernel` with the defaults: 512 MiB, [`DEFAULT_CMDLINE`],
    /// console on stdout, 30 s to the first console byte, 120 s of silence at most.
    pub fn new(kernel: PathBuf, server: ServerConfig) -> Self {
        Self {
            kernel,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            mem_mib: 512,
            server,
            serial: SerialOut::Stdout,
            console_lines: None,
            first_output_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            virtio_input: true,
        }
    }
}

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The options are wrong.
    #[error("{0}")]
    Config(String),
    /// The kernel or initrd could not be read or placed.
    #[error("loading {what}: {detail}")]
    Load {
        /// Kernel, initrd, command line, zero page, ...
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// The VM could not be built or run.
    #[error("VM: {0}")]
    Vm(VmError),
    /// KVM could not execute a guest instruction (`KVM_EXIT_INTERNAL_ERROR`).
    #[error(
        "KVM could not run the guest at rip {rip:#x}: emulation failure (sub-error {suberror}, data {data:x?}); \
         a nested or limited KVM cannot boot this kernel"
    )]
    Emulation {
        /// `KVM_INTERNAL_ERROR_*` (1 = emulation).
        suberror: u32,
        /// KVM's data words.
        data: Vec<u64>,
        /// The guest's instruction pointer.
        rip: u64,
    },
    /// The guest made no console progress in time.
    #[error(
        "no boot progress: {phase} (no console output for {waited:?}; last line: {last_line:?}; rip {rip:#x}; {cpu})"
    )]
    NoProgress {
        /// What was awaited.
        phase: &'static str,
        /// How long.
        waited: Duration,
        /// The last console line, if any.
        last_line: Option<String>,
        /// The vCPU's instruction pointer when it was stopped.
        rip: u64,
        /// Control registers and the last page-fault address then.
        cpu: String,
    },
    /// The kernel panicked.
    #[error("guest kernel panic: {0}")]
    GuestPanic(String),
    /// The guest reset (triple fault or reset request) without powering off.
    #[error("guest reset without powering off (last line: {0:?})")]
    GuestReset(Option<String>),
    /// The SPICE server failed to start.
    #[error("SPICE server: {0}")]
    Spice(#[from] spice_server::Error),
    /// A thread or fd could not be made.
    #[error("{0}")]
    Host(String),
}

impl From<VmError> for BootError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::Internal {
                suberror,
                data,
                rip,
            } => Self::Emulation {
                suberror,
                data,
                rip,
            },
            other => Self::Vm(other),
        }
    }
}

/// What a finished boot did.
#[derive(Debug, Clone)]
pub struct BootReport {
    /// Why the run ended cleanly (`guest powered off`, `stopped`).
    pub end: String,
    /// Console lines seen.
    pub console_lines: u64,
    /// When the first console byte came.
    pub first_output: Option<Duration>,
    /// Port-I/O and MMIO exits.
    pub exits: u64,
    /// Accesses no device claimed.
    pub unclaimed: u64,
    /// Run time.
    pub elapsed: Duration,
}

// ---------------------------------------------------------------------------
// Console.

/// The 16550's interrupt: an irqfd pulse.
struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Console progress shared with the run loop.
#[derive(Debug, Default)]
struct ConsoleState {
    first_byte: Option<Instant>,
    last_byte: Option<Instant>,
    lines: u64,
    last_line: Option<String>,
    powered_off: bool,
    panic: Option<String>,
}

/// The UART's output: raw bytes to the sink, lines to the state and channel.
struct ConsoleWriter {
    out: Option<Box<dyn Write + Send>>,
    line: Vec<u8>,
    lines: Option<Sender<String>>,
    state: Arc<Mutex<ConsoleState>>,
}

impl ConsoleWriter {
    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_owned();
        self.line.clear();
        if let Ok(mut s) = self.state.lock() {
            s.lines += 1;
            if text.contains("reboot: Power down") || text.contains("reboot: System halted") {
                s.powered_off = true;
            }
            if text.contains("Kernel panic") && s.panic.is_none() {
                s.panic = Some(text.clone());
            }
            s.last_line = Some(text.clone());
        }
        if let Some(tx) = &self.lines
            && tx.send(text).is_err()
        {
            self.lines = None;
        }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut s) = self.state.lock() {
            let now = Instant::now();
            s.first_byte.get_or_insert(now);
            s.last_byte = Some(now);
        }
        if let Some(o) = &mut self.out
            && o.write_all(buf).is_err()
        {
            self.out = None;
        }
        for &b in buf {
            match b {
                b'\n' => self.end_line(),
                _ if self.line.len() < 4096 => self.line.push(b),
                _ => {}
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(o) = &mut self.out {
            o.flush()?;
        }
        Ok(())
    }
}

/// How the run loop should end.
#[derive(Debug)]
enum Verdict {
    PoweredOff,
    Stopped,
    Panic(String),
    NoProgress(&'static str, Duration, Option<String>),
}

/// The devices of the boot VM outside the QXL function: COM1, a CMOS that reads
/// zero, an i8042 that only knows the reset command.
struct BootExits {
    serial: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleWriter>,
    state: Arc<Mutex<ConsoleState>>,
    stop: Arc<AtomicBool>,
    start: Instant,
    first_output_timeout: Duration,
    stall_timeout: Duration,
    verdict: Option<Verdict>,
    reset_requested: bool,
    inputs: Option<VirtioInputs>,
}

impl GuestExits for BootExits {
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        self.inputs
            .as_ref()
            .is_some_and(|i| i.mmio_read(addr, data))
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        self.inputs
            .as_ref()
            .is_some_and(|i| i.mmio_write(addr, data))
    }

    fn port_out(&mut self, port: u16, data: &[u8]) -> bool {
        match port {
            COM1..=0x3ff => {
                if let (Ok(off), Some(&b)) = (u8::try_from(port - COM1), data.first())
                    && let Err(e) = self.serial.write(off, b)
                {
                    log::debug!("serial write: {e:?}");
                }
                true
            }
            // i8042 command 0xfe: pulse the reset line.
            0x64 => {
                if data.first() == Some(&0xfe) {
                    self.reset_requested = true;
                }
                true
            }
            0x70 | 0x71 | 0x80 => true,
            _ => false,
        }
    }

    fn port_in(&mut self, port: u16, data: &mut [u8]) -> bool {
        match port {
            COM1..=0x3ff => {
                let v = u8::try_from(port - COM1).map_or(0xff, |off| self.serial.read(off));
                data.fill(0);
                if let Some(d) = data.first_mut() {
                    *d = v;
                }
                true
            }
            // i8042 status: nothing to read, ready for input; CMOS: zeros (no
            // update in progress, so the RTC read does not spin).
            0x64 | 0x60 | 0x70 | 0x71 => {
                data.fill(0);
                true
            }
            _ => false,
        }
    }

    fn poll(&mut self) -> Option<String> {
        if self.verdict.is_some() {
            return Some("verdict".into());
        }
        if self.stop.load(Ordering::SeqCst) {
            self.verdict = Some(Verdict::Stopped);
            return Some("stopped".into());
        }
        let s = self.state.lock().ok()?;
        let v = if s.powered_off {
            Some(Verdict::PoweredOff)
        } else if let Some(p) = &s.panic {
            Some(Verdict::Panic(p.clone()))
        } else if self.reset_requested {
            None
        } else {
            match s.last_byte {
                None if self.start.elapsed() > self.first_output_timeout => {
                    Some(Verdict::NoProgress(
                        "the kernel never wrote to the serial console",
                        self.start.elapsed(),
                        None,
                    ))
                }
                Some(t) if t.elapsed() > self.stall_timeout => Some(Verdict::NoProgress(
                    "the guest went silent on the serial console",
                    t.elapsed(),
                    s.last_line.clone(),
                )),
                _ => None,
            }
        };
        drop(s);
        if self.reset_requested && v.is_none() {
            return Some("reset requested".into());
        }
        let reason = v.as_ref().map(|v| format!("{v:?}"));
        self.verdict = v;
        reason
    }
}

// ---------------------------------------------------------------------------
// Memory setup.

fn load_err(what: &'static str) -> impl FnOnce(String) -> BootError {
    move |detail| BootError::Load { what, detail }
}

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// 64-bit entry of a bzImage.
    Linux64 { rip: u64 },
    /// 32-bit PVH entry.
    Pvh { rip: u64 },
}

/// The e820 map as `(start, size, type)`: 1 = RAM, 2 = reserved.
fn e820(ram_size: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, MPTABLE, 1),
        (MPTABLE, HIGH_RAM - MPTABLE, 2),
        (HIGH_RAM, ram_size - HIGH_RAM, 1),
    ]
}

fn is_elf(path: &PathBuf) -> Result<bool, BootError> {
    let mut magic = [0u8; 4];
    let mut f =
        File::open(path).map_err(|e| load_err("kernel")(format!("{}: {e}", path.display())))?;
    std::io::Read::read_exact(&mut f, &mut magic).map_err(|e| load_err("kernel")(e.to_string()))?;
    Ok(&magic == b"\x7fELF")
}

/// Load the kernel, initrd and command line, write the zero page (or PVH start
/// info), page tables, GDT and MP table. Returns the entry.
fn setup_memory(
    mem: &GuestMemoryMmap,
    opts: &BootOptions,
    cmdline_text: &str,
    ram_size: u64,
) -> Result<Entry, BootError> {
    let mut kernel = File::open(&opts.kernel)
        .map_err(|e| load_err("kernel")(format!("{}: {e}", opts.kernel.display())))?;
    let elf = is_elf(&opts.kernel)?;
    let loaded = if elf {
        Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIGH_RAM)))
    } else {
        BzImage::load(mem, None, &mut kernel, Some(GuestAddress(HIGH_RAM)))
    }
    .map_err(|e| load_err("kernel")(e.to_string()))?;

    let mut cmdline =
        Cmdline::new(CMDLINE_MAX).map_err(|e| load_err("command line")(e.to_string()))?;
    cmdline
        .insert_str(cmdline_text)
        .map_err(|e| load_err("command line")(e.to_string()))?;
    loader::load_cmdline(mem, GuestAddress(CMDLINE), &cmdline)
        .map_err(|e| load_err("command line")(e.to_string()))?;
    let cmdline_len = u32::try_from(cmdline_text.len() + 1).unwrap_or(u32::MAX);

    // The initrd: as high as the kernel allows, page aligned.
    let initrd_max = loaded
        .setup_header
        .map_or(0x7fff_ffff, |h| u64::from(h.initrd_addr_max));
    let initrd = match &opts.initrd {
        None => None,
        Some(p) => {
            let data = std::fs::read(p)
                .map_err(|e| load_err("initrd")(format!("{}: {e}", p.display())))?;
            let size = u64::try_from(data.len()).map_err(|e| load_err("initrd")(e.to_string()))?;
            let top = ram_size.min(initrd_max.saturating_add(1));
            let at = top
                .checked_sub(size)
                .map(|a| a & !0xfff)
                .filter(|a| *a >= loaded.kernel_end)
                .ok_or_else(|| {
                    load_err("initrd")(format!("{size} bytes do not fit above the kernel"))
                })?;
            mem.write_slice(&data, GuestAddress(at))
                .map_err(|e| load_err("initrd")(e.to_string()))?;
            Some((at, size))
        }
    };

    write_mptable(mem)?;

    if elf {
        let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
            return Err(BootError::Config(
                "the ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); give a bzImage"
                    .into(),
            ));
        };
        write_pvh_info(mem, ram_size, initrd)?;
        return Ok(Entry::Pvh { rip: entry.0 });
    }

    let hdr = loaded
        .setup_header
        .ok_or_else(|| load_err("kernel")("no bzImage setup header".into()))?;
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.cmd_line_ptr = u32::try_from(CMDLINE).unwrap_or(0);
    params.hdr.cmdline_size = cmdline_len;
    params.hdr.loadflags |= 0x80; // CAN_USE_HEAP
    params.hdr.heap_end_ptr = 0xfe00;
    if let Some((at, size)) = initrd {
        params.hdr.ramdisk_image =
            u32::try_from(at).map_err(|e| load_err("initrd")(e.to_string()))?;
        params.hdr.ramdisk_size =
            u32::try_from(size).map_err(|e| load_err("initrd")(e.to_string()))?;
    }
    let map = e820(ram_size);
    for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = u8::try_from(map.len()).unwrap_or(0);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|e| load_err("zero page")(e.to_string()))?;

    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(Entry::Linux64 {
        rip: loaded.kernel_load.0 + 0x200,
    })
}

fn write_pvh_info(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let map: Vec<hvm_memmap_table_entry> = e820(ram_size)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let map_addr = PVH_INFO + 0x100;
    let mut info = hvm_start_info {
        magic: 0x336e_c578, // XEN_HVM_START_MAGIC_VALUE
        version: 1,
        cmdline_paddr: CMDLINE,
        memmap_paddr: map_addr,
        memmap_entries: u32::try_from(map.len()).unwrap_or(0),
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO));
    if let Some((paddr, size)) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_INFO + 0x80;
        params = BootParams::new(&info, GuestAddress(PVH_INFO));
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(PVH_INFO + 0x80));
    }
    params.set_sections(&map, GuestAddress(map_addr));
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| load_err("PVH start info")(e.to_string()))
}

fn write_u64s(
    mem: &GuestMemoryMmap,
    at: u64,
    words: &[u64],
    what: &'static str,
) -> Result<(), BootError> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(at))
        .map_err(|e| load_err(what)(e.to_string()))
}

/// Identity-map the first GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let pdpt = PML4 + 0x1000;
    let pd = PML4 + 0x2000;
    write_u64s(mem, PML4, &[pdpt | 3], "page tables")?;
    write_u64s(mem, pdpt, &[pd | 3], "page tables")?;
    let entries: Vec<u64> = (0..512u64).map(|i| (i << 21) | 0x83).collect();
    write_u64s(mem, pd, &entries, "page tables")
}

/// The boot GDT: null, 64-bit code (0x08), data (0x10), TSS (0x18); and an empty IDT.
const GDT_ENTRIES: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    write_u64s(mem, GDT, &GDT_ENTRIES, "GDT")?;
    write_u64s(mem, IDT, &[0], "IDT")
}

/// Decode a GDT entry into KVM's segment form.
fn segment(selector: u16, entry: u64) -> kvm_segment {
    let bit = |b: u32| u8::from(entry >> b & 1 == 1);
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit = (entry & 0xffff) | ((entry >> 32) & 0xf_0000);
    let g = bit(55);
    let limit = if g == 1 { (limit << 12) | 0xfff } else { limit };
    kvm_segment {
        base,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        selector,
        type_: u8::try_from((entry >> 40) & 0xf).unwrap_or(0),
        present: bit(47),
        dpl: u8::try_from((entry >> 45) & 3).unwrap_or(0),
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

/// Registers for `entry`.
fn setup_vcpu<S: spice_server::command::DisplaySink + Send + 'static>(
    vm: &QxlVm<S>,
    entry: Entry,
) -> Result<(), BootError> {
    let kvm = |what: &'static str| move |source| BootError::Vm(VmError::Kvm { what, source });
    let vcpu = vm.vcpu();
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set FPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        Entry::Linux64 { rip } => {
            let code = segment(0x08, GDT_ENTRIES[1]);
            let data = segment(0x10, GDT_ENTRIES[2]);
            let tss = segment(0x18, GDT_ENTRIES[3]);
            sregs.gdt.base = GDT;
            sregs.gdt.limit = 4 * 8 - 1;
            sregs.idt.base = IDT;
            sregs.idt.limit = 7;
            sregs.cs = code;
            sregs.ds = data;
            sregs.es = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.ss = data;
            sregs.tr = tss;
            sregs.cr3 = PML4;
            sregs.cr4 |= 0x20; // PAE
            sregs.cr0 |= 0x8000_0001; // PG | PE
            sregs.efer |= 0x500; // LME | LMA
            regs.rip = rip;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
            regs.rsi = ZERO_PAGE;
        }
        Entry::Pvh { rip } => {
            // Flat 32-bit protected mode without paging, plus a TSS and
            // ebx = the start info.
            vm.set_entry(VcpuEntry { rip, rsp: 0 })?;
            sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
            sregs.tr = kvm_segment {
                selector: 0x18,
                type_: 0xb,
                s: 0,
                db: 0,
                ..crate::kvm::FLAT_CODE32
            };
            regs.rip = rip;
            regs.rbx = PVH_INFO;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("set sregs"))?;
    vcpu.set_regs(&regs).map_err(kvm("set regs"))
}

// ---------------------------------------------------------------------------
// MP table (Intel MultiProcessor Specification 1.4).

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP configuration table's entries: CPU 0, buses (0 = PCI, 1 = ISA), the
/// IOAPIC, ISA IRQs 0..15 to pins 0..15, the QXL INTA# to [`QXL_GSI`], LINT0 =
/// ExtINT, LINT1 = NMI.
fn mptable_entries() -> (Vec<u8>, u16) {
    let mut e = Vec::new();
    let mut count = 0u16;
    // Processor: type 0, APIC id 0, version 0x14, enabled + BSP, signature,
    // features (FPU, APIC), reserved.
    e.extend_from_slice(&[0, 0, 0x14, 0x3]);
    e.extend_from_slice(&0x600u32.to_le_bytes());
    e.extend_from_slice(&0x201u32.to_le_bytes());
    e.extend_from_slice(&[0; 8]);
    count += 1;
    for (id, name) in [(0u8, b"PCI   "), (1, b"ISA   ")] {
        e.extend_from_slice(&[1, id]);
        e.extend_from_slice(name);
        count += 1;
    }
    e.extend_from_slice(&[2, IOAPIC_ID, 0x11, 1]);
    e.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
    count += 1;
    // I/O interrupts: type 3, INT, flags (0 = conforms to the bus), bus, bus
    // IRQ, IOAPIC id, pin.
    for irq in 0u8..16 {
        e.extend_from_slice(&[3, 0, 0, 0, 1, irq, IOAPIC_ID, irq]);
        count += 1;
    }
    // PCI 00:02.0 INTA#: bus IRQ = device << 2 | pin; active high (01),
    // level triggered (11 << 2).
    let flags = 0x01u16 | (0x03 << 2);
    let pin = u8::try_from(QXL_GSI).unwrap_or(16);
    e.extend_from_slice(&[3, 0]);
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&[0, 2 << 2, IOAPIC_ID, pin]);
    count += 1;
    // Local interrupts: type 4; ExtINT on LINT0, NMI on LINT1 of every CPU.
    e.extend_from_slice(&[4, 3, 0, 0, 1, 0, 0xff, 0]);
    e.extend_from_slice(&[4, 1, 0, 0, 1, 0, 0xff, 1]);
    count += 2;
    (e, count)
}

fn write_mptable(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let table = MPTABLE + 16;
    let (entries, count) = mptable_entries();
    let len = u16::try_from(44 + entries.len()).map_err(|e| load_err("MP table")(e.to_string()))?;
    let mut cfg = Vec::with_capacity(usize::from(len));
    cfg.extend_from_slice(b"PCMP");
    cfg.extend_from_slice(&len.to_le_bytes());
    cfg.push(4); // spec revision 1.4
    cfg.push(0); // checksum, below
    cfg.extend_from_slice(b"QXLSPICE");
    cfg.extend_from_slice(b"QXL-VMM     ");
    cfg.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    cfg.extend_from_slice(&0u16.to_le_bytes());
    cfg.extend_from_slice(&count.to_le_bytes());
    cfg.extend_from_slice(&LAPIC_BASE.to_le_bytes());
    cfg.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    cfg.push(0); // extended checksum
    cfg.push(0);
    cfg.extend_from_slice(&entries);
    if let Some(c) = cfg.get_mut(7) {
        *c = 0;
    }
    let sum = checksum(&cfg);
    if let Some(c) = cfg.get_mut(7) {
        *c = sum;
    }
    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&u32::try_from(table).unwrap_or(0).to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 1 paragraph, rev 1.4, checksum, features
    let sum = checksum(&fp);
    if let Some(c) = fp.get_mut(10) {
        *c = sum;
    }
    mem.write_slice(&fp, GuestAddress(MPTABLE))
        .and_then(|()| mem.write_slice(&cfg, GuestAddress(table)))
        .map_err(|e| load_err("MP table")(e.to_string()))
}

/// The QXL BAR bases: each naturally aligned from [`MMIO_BASE`] on; I/O at [`QXL_IO_BASE`].
fn qxl_bar_bases(config: &QxlConfig) -> Vec<(usize, u64)> {
    let c = config.normalized();
    let mut next = MMIO_BASE;
    let mut bases = Vec::new();
    for (bar, size) in [(0usize, c.ram_size), (1, c.vram_size), (2, c.rom_size())] {
        let size = size.max(0x1000).next_power_of_two();
        let at = (next + size - 1) & !(size - 1);
        bases.push((bar, at));
        next = at + size;
    }
    bases.push((3, QXL_IO_BASE));
    bases
}

// ---------------------------------------------------------------------------
// The running VM.

/// A booting guest: the SPICE server on this thread, the vCPU on its own.
pub struct Booted {
    server: Option<SpiceServer>,
    _display: DisplayHandle,
    stop: Arc<AtomicBool>,
    vcpu: Option<JoinHandle<Result<BootReport, BootError>>>,
}

impl std::fmt::Debug for Booted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Booted")
            .field("spice", &self.spice_addr())
            .finish_non_exhaustive()
    }
}

impl Booted {
    /// Where SPICE clients connect.
    pub fn spice_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(SpiceServer::local_addr)
    }

    /// Set to stop the guest (Ctrl-C).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Wait for the guest to end. The SPICE server keeps serving the last frame
    /// until `self` is dropped.
    pub fn wait(&mut self) -> Result<BootReport, BootError> {
        let h = self
            .vcpu
            .take()
            .ok_or_else(|| BootError::Host("already waited".into()))?;
        h.join()
            .map_err(|_| BootError::Host("the vCPU thread panicked".into()))?
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.vcpu.take() {
            let _ = h.join();
        }
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// Start the SPICE server and boot the guest on a vCPU thread.
pub fn start(opts: BootOptions) -> Result<Booted, BootError> {
    if !(64..=3072).contains(&opts.mem_mib) {
        return Err(BootError::Config(format!(
            "--mem {}: 64..=3072 MiB (RAM ends below the PCI hole at {MMIO_BASE:#x})",
            opts.mem_mib
        )));
    }
    crate::kvm::probe_kvm().map_err(|e| BootError::Vm(VmError::Unavailable(e)))?;
    // The server owns the input sink before the VM (and its devices) exist:
    // the sink feeds late-bound injectors the vCPU thread connects.
    let (wiring, input_sink) = InputWiring::new();
    let input: Box<dyn spice_server::InputSink> = if opts.virtio_input {
        Box::new(input_sink)
    } else {
        Box::new(NoInput)
    };
    // The virtio tablet is an absolute pointer: offer client mouse mode.
    let server_config = ServerConfig {
        absolute_pointer: opts.server.absolute_pointer || opts.virtio_input,
        ..opts.server.clone()
    };
    let (server, display) = SpiceServer::start(server_config, input)?;
    let leds = server.keyboard_modifiers_handle();
    let stop = Arc::new(AtomicBool::new(false));
    let sink = display.clone();
    let thread_stop = Arc::clone(&stop);
    let vcpu = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || run(&opts, sink, &wiring, &leds, &thread_stop))
        .map_err(|e| BootError::Host(format!("vCPU thread: {e}")))?;
    Ok(Booted {
        server: Some(server),
        _display: display,
        stop,
        vcpu: Some(vcpu),
    })
}

/// The SPICE input sink's side of the virtio-input devices, made before the
/// VM: injectors that [`run`] connects once the devices exist, the tablet's
/// display size and the guest's lock state.
#[derive(Debug, Clone)]
struct InputWiring {
    keyboard: LateInjector,
    tablet: LateInjector,
    mouse: LateInjector,
    size: DisplaySize,
    guest_modifiers: Arc<std::sync::atomic::AtomicU16>,
}

impl InputWiring {
    /// The wiring and the sink the server gets, which feeds it.
    fn new() -> (Self, VirtioInputSink) {
        let (keyboard, tablet, mouse) = (
            LateInjector::default(),
            LateInjector::default(),
            LateInjector::default(),
        );
        let sink = VirtioInputSink::new(
            Some(Arc::new(keyboard.clone())),
            Some(Arc::new(tablet.clone())),
            Some(Arc::new(mouse.clone())),
        );
        let wiring = Self {
            keyboard,
            tablet,
            mouse,
            size: sink.display_size(),
            guest_modifiers: sink.guest_modifiers(),
        };
        (wiring, sink)
    }

    /// Connects the devices; the keyboard's LEDs go to the clients.
    fn connect(&self, inputs: &VirtioInputs, leds: &KeyboardModifiersHandle) {
        for (late, kind) in [
            (&self.keyboard, InputKind::Keyboard),
            (&self.tablet, InputKind::Tablet),
            (&self.mouse, InputKind::Mouse),
        ] {
            if let Some(dev) = inputs.injector(kind) {
                late.connect(dev);
            }
        }
        if let Some(kbd) = inputs
            .devices()
            .iter()
            .find(|d| d.kind == InputKind::Keyboard)
        {
            let leds = leds.clone();
            kbd.transport
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .device_mut()
                .set_led_observer(led_observer(Arc::clone(&self.guest_modifiers), move |m| {
                    leds.set(m);
                }));
        }
    }
}

/// Build the VM, load the guest and run it to the end (the vCPU thread).
fn run(
    opts: &BootOptions,
    sink: DisplayHandle,
    wiring: &InputWiring,
    leds: &KeyboardModifiersHandle,
    stop: &Arc<AtomicBool>,
) -> Result<BootReport, BootError> {
    let ram_size = opts.mem_mib << 20;
    let qxl = QxlConfig::default();
    let bars = qxl_bar_bases(&qxl);
    // The tablet scales against the mode the guest sets.
    let size = wiring.size.clone();
    let mut vm = QxlVm::new(
        VmConfig {
            guest_ram_size: ram_size,
            qxl_gsi: QXL_GSI,
            ..VmConfig::default()
        },
        qxl,
        TrackPrimary::new(sink, size),
    )?;
    vm.create_pit()?;
    vm.program_bars(&bars, u8::try_from(QXL_GSI).unwrap_or(0))?;
    let mut inputs = if opts.virtio_input {
        let inputs = VirtioInputs::attach(
            &vm,
            &[InputKind::Keyboard, InputKind::Tablet, InputKind::Mouse],
        )?;
        wiring.connect(&inputs, leds);
        Some(inputs)
    } else {
        None
    };
    let cmdline = match &inputs {
        Some(i) => format!("{} {}", opts.cmdline, i.cmdline()),
        None => opts.cmdline.clone(),
    };
    let entry = setup_memory(vm.guest_memory(), opts, &cmdline, ram_size)?;
    setup_vcpu(&vm, entry)?;

    let com1 =
        EventFd::new(EFD_NONBLOCK).map_err(|e| BootError::Host(format!("COM1 irqfd: {e}")))?;
    vm.register_irqfd(&com1, COM1_GSI)?;
    let out: Option<Box<dyn Write + Send>> = match &opts.serial {
        SerialOut::Stdout => Some(Box::new(std::io::stdout())),
        SerialOut::File(p) => {
            Some(Box::new(File::create(p).map_err(|e| {
                BootError::Config(format!("--serial {}: {e}", p.display()))
            })?))
        }
        SerialOut::Discard => None,
    };
    let state = Arc::new(Mutex::new(ConsoleState::default()));
    let writer = ConsoleWriter {
        out,
        line: Vec::new(),
        lines: opts.console_lines.clone(),
        state: Arc::clone(&state),
    };
    let mut exits = BootExits {
        serial: Serial::new(IrqTrigger(com1), writer),
        state: Arc::clone(&state),
        stop: Arc::clone(stop),
        start: Instant::now(),
        first_output_timeout: opts.first_output_timeout,
        stall_timeout: opts.stall_timeout,
        verdict: None,
        reset_requested: false,
        inputs: None,
    };
    let handler = QxlEventHandler::new(Arc::clone(vm.device()), vm.event_fds()?);
    let mut subscribers: Vec<BoxedSubscriber> = vec![Box::new(handler)];
    if let Some(i) = &mut inputs {
        subscribers.push(Box::new(i.notify_handler()));
        log::info!(
            "qxl-vmm boot: virtio-input on the command line: {}",
            i.cmdline()
        );
    }
    exits.inputs = inputs;
    let mut events =
        EventThread::spawn_all(subscribers).map_err(|e| BootError::Host(e.to_string()))?;
    log::info!(
        "qxl-vmm boot: {} ({} MiB, entry {entry:x?}), QXL at 00:02.0 on GSI {QXL_GSI}",
        opts.kernel.display(),
        opts.mem_mib
    );
    let res = vm.run_guest(&mut exits);
    events.stop();
    let run = res?;
    let s = state
        .lock()
        .map_err(|_| BootError::Host("console state poisoned".into()))?;
    let report = BootReport {
        end: String::new(),
        console_lines: s.lines,
        first_output: s.first_byte.map(|t| t.duration_since(exits.start)),
        exits: run.io_exits + run.mmio_exits,
        unclaimed: run.unclaimed,
        elapsed: run.elapsed,
    };
    let end = match (run.end, exits.verdict.take()) {
        (_, Some(Verdict::PoweredOff)) => "guest powered off",
        (_, Some(Verdict::Stopped)) => "stopped",
        (_, Some(Verdict::Panic(line))) => return Err(BootError::GuestPanic(line)),
        (_, Some(Verdict::NoProgress(phase, waited, last_line))) => {
            let cpu = vm.vcpu().get_sregs().map_or_else(
                |e| format!("sregs unavailable: {e}"),
                |r| {
                    format!(
                        "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} idt {:#x}+{:#x}",
                        r.cr0, r.cr2, r.cr3, r.cr4, r.efer, r.idt.base, r.idt.limit
                    )
                },
            );
            return Err(BootError::NoProgress {
                phase,
                waited,
                last_line,
                rip: run.rip,
                cpu,
            });
        }
        (GuestEnd::Shutdown, None) if s.powered_off => "guest powered off",
        (GuestEnd::Shutdown | GuestEnd::Stopped(_), None) => {
            return Err(BootError::GuestReset(s.last_line.clone()));
        }
    };
    Ok(BootReport {
        end: end.into(),
        ..report
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    #[test]
    fn mptable_is_found_and_sums_to_zero() {
        let m = mem();
        write_mptable(&m).unwrap();
        let mut fp = [0u8; 16];
        m.read_slice(&mut fp, GuestAddress(MPTABLE)).unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(checksum(&fp), 0, "floating pointer checksum");
        let table = u64::from(u32::from_le_bytes(fp[4..8].try_into().unwrap()));
        let mut hdr = [0u8; 44];
        m.read_slice(&mut hdr, GuestAddress(table)).unwrap();
        assert_eq!(&hdr[..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
        let mut cfg = vec![0u8; len];
        m.read_slice(&mut cfg, GuestAddress(table)).unwrap();
        assert_eq!(checksum(&cfg), 0, "configuration table checksum");
        let (entries, count) = mptable_entries();
        assert_eq!(len, 44 + entries.len());
        // 1 CPU + 2 buses + IOAPIC + 16 ISA + 1 PCI + 2 local.
        assert_eq!(count, 23);
        // The QXL entry: PCI bus 0, device 2 INTA#, level/high, pin 16.
        // The processor entry is 20 bytes, every other entry 8.
        let pci: Vec<&[u8]> = cfg[44 + 20..]
            .chunks(8)
            .filter(|e| e[0] == 3 && e[4] == 0)
            .collect();
        assert_eq!(pci, vec![&[3, 0, 0x0d, 0, 0, 8, IOAPIC_ID, 16][..]]);
    }

    #[test]
    fn boot_segments_decode_as_long_mode() {
        let cs = segment(0x08, GDT_ENTRIES[1]);
        assert_eq!(
            (cs.type_, cs.l, cs.db, cs.s, cs.present, cs.g, cs.limit),
            (0xb, 1, 0, 1, 1, 1, 0xffff_ffff)
        );
        let ds = segment(0x10, GDT_ENTRIES[2]);
        assert_eq!((ds.type_, ds.l, ds.db, ds.unusable), (0x3, 0, 1, 0));
        let tr = segment(0x18, GDT_ENTRIES[3]);
        assert_eq!((tr.type_, tr.s), (0xb, 0));
    }

    #[test]
    fn bars_are_naturally_aligned_above_ram() {
        let bases = qxl_bar_bases(&QxlConfig::default());
        let c = QxlConfig::default();
        for (bar, size) in [(0, c.ram_size), (1, c.vram_size), (2, c.rom_size())] {
            let at = bases.iter().find(|b| b.0 == bar).unwrap().1;
            assert!(
                at >= MMIO_BASE && at % size.next_power_of_two() == 0,
                "BAR{bar} at {at:#x}"
            );
        }
        assert!(bases.contains(&(3, QXL_IO_BASE)));
    }

    #[test]
    fn e820_covers_ram_without_the_mptable() {
        let map = e820(512 << 20);
        let ram: u64 = map.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
        assert_eq!(ram, (512 << 20) - (HIGH_RAM - MPTABLE));
        assert!(map.iter().any(|e| e.2 == 2 && e.0 == MPTABLE));
    }
}
