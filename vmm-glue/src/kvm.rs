//! A minimal KVM virtual machine with the QXL device on a PCI bus.
//!
//! # Primer
//!
//! KVM runs guest code natively; the VMM only sees what the guest does to
//! addresses nobody backed with memory (an *exit*), plus whatever it asked the
//! kernel to turn into file-descriptor events. For QXL that gives three paths:
//!
//! - **Memory BARs as memory.** BAR0 (RAM) and BAR1 (VRAM) are the device's
//!   *device memory*: one `GuestMemoryMmap` at device-local addresses (BAR0 at
//!   0, the VRAM at [`QxlConfig::vram_local_base`]) that the device reads
//!   through `vm-memory`. The very same host mappings are registered as KVM
//!   user memory regions at the guest-physical addresses the guest programmed
//!   into the BARs, so guest stores land in the device's memory with no exit.
//!   When the guest moves a BAR (or switches memory decoding) the slot is
//!   deleted and re-added at the new base ([`QxlBarMapper`]). The ROM BAR
//!   (BAR2) is deliberately *not* memory: its accesses exit as MMIO and are
//!   served by [`QxlDevice::rom_read`] (writes are dropped), so the guest always
//!   sees the ROM as the device last updated it (client monitors config,
//!   client capabilities) and can never change it.
//! - **Ports.** `NOTIFY_CMD` and `NOTIFY_CURSOR` (I/O BAR + 0 / + 1) are
//!   ioeventfds: the `out` completes in the kernel, the vCPU goes on, and the
//!   event thread ([`crate::event_handler::QxlEventHandler`]) consumes the
//!   ring. Every other QXL port exits to the vCPU thread, which calls
//!   [`QxlDevice::io_write`] before it re-enters the guest, so synchronous
//!   ports (`UPDATE_AREA`, `UPDATE_IRQ`, `CREATE_PRIMARY`, ...) have completed
//!   when the guest executes its next instruction. The ioeventfds move with
//!   the I/O BAR.
//! - **The interrupt.** INTA# is an irqfd with a resample fd on an in-kernel
//!   irqchip GSI ([`IrqfdLine`]). The device asserts by signalling the irqfd;
//!   KVM holds the line up until the guest EOIs it, then drops it and signals
//!   the resample fd, on which the event thread re-asserts if the device still
//!   has an unmasked interrupt pending (`int_pending & int_mask`). That is
//!   level-triggered INTx without an exit per interrupt.
//!
//! # Locking
//!
//! The device lives in one `Arc<Mutex<_>>` ([`SharedQxl`]) shared by the vCPU
//! thread (synchronous ports, PCI config accesses, ROM reads) and the event
//! thread (ring processing, resample). Each side holds the lock for one
//! operation at a time and never calls into KVM while holding it, except the
//! non-blocking irqfd write inside [`IrqLine::set_level`]. BAR re-mapping runs
//! on the vCPU thread *after* the device lock is released, under the mapper's
//! own lock; the two locks are never nested.
//!
//! # Memory lifetime (the `unsafe` here)
//!
//! A KVM memory slot is a raw host address range the kernel keeps using until
//! the slot is deleted or the VM fd is closed. Every owner of the `VmFd`
//! ([`QxlVm`], [`QxlBarMapper`]) also owns a clone of the `GuestMemoryMmap`
//! whose regions back its slots (clones share the mappings through `Arc`s),
//! and declares the `VmFd` field before the memory field, so the VM fd is
//! closed before the mapping can go away. The `VmFd` is never handed out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use devices::qxl::{IrqLine, QxlConfig, QxlDevice};
use kvm_bindings::{KVM_MP_STATE_HALTED, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};
use spice_server::command::DisplaySink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::pci::{PciFunction, PciRoot, PciSlot};

/// Errors of the KVM glue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// `/dev/kvm` cannot be opened or lacks a needed capability.
    #[error("KVM unavailable: {0}")]
    Unavailable(String),
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// Host memory could not be allocated or mapped.
    #[error("memory: {0}")]
    Memory(String),
    /// The QXL device could not be built.
    #[error("device: {0}")]
    Device(#[from] devices::Error),
    /// An eventfd could not be created or duplicated.
    #[error("eventfd ({what}): {source}")]
    EventFd {
        /// The fd's role.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be served by this VM.
    #[error("configuration: {0}")]
    Config(String),
    /// The guest did something this VM does not handle.
    #[error("unhandled vCPU exit: {0}")]
    UnhandledExit(String),
    /// The guest reported a failure through the failure port.
    #[error("guest reported failure {code:#x} (detail {detail:#x})")]
    GuestFailed {
        /// The code the guest wrote.
        code: u32,
        /// The detail dword it wrote before.
        detail: u32,
    },
    /// The run did not finish in time.
    #[error("vCPU timed out after {0:?} (rip {1:#x})")]
    Timeout(Duration, u64),
    /// The device mutex was poisoned by a panic on another thread.
    #[error("device lock poisoned")]
    Poisoned,
    /// A BAR could not be re-mapped after a guest configuration write.
    #[error("BAR mapping: {0}")]
    BarMapping(String),
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not run the guest on (sub-error 1
    /// is an instruction its emulator cannot handle).
    #[error(
        "KVM internal error, sub-error {suberror} (1 = emulation failure), data {data:x?}, rip {rip:#x}"
    )]
    Internal {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// The data words KVM reported.
        data: Vec<u64>,
        /// The guest's instruction pointer.
        rip: u64,
    },
}

impl VmError {
    pub(crate) fn kvm(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Self {
        move |source| Self::Kvm { what, source }
    }

    pub(crate) fn fd(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::EventFd { what, source }
    }

    /// Append the vCPU's instruction pointer to an unhandled-exit message.
    fn at_rip(self, rip: u64) -> Self {
        match self {
            Self::UnhandledExit(m) => Self::UnhandledExit(format!("{m} at rip {rip:#x}")),
            other => other,
        }
    }
}

/// The crate-internal result type of this module.
pub type VmResult<T> = Result<T, VmError>;

/// The QXL INTx line as an irqfd (see the module primer).
#[derive(Debug)]
pub struct IrqfdLine {
    irqfd: EventFd,
    asserts: AtomicU64,
    errors: AtomicU64,
}

impl IrqfdLine {
    /// A line over `irqfd` (registered with a resample fd by [`QxlVm`]).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            irqfd,
            asserts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// How often the device asserted the line (irqfd writes).
    pub fn asserts(&self) -> u64 {
        self.asserts.load(Ordering::Relaxed)
    }

    /// irqfd writes that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl IrqLine for IrqfdLine {
    /// `true` signals the irqfd (KVM raises the GSI; a no-op if it is still
    /// up). `false` needs no action: KVM lowers the line itself when the guest
    /// EOIs, and the resample path only re-raises while the device says so.
    fn set_level(&self, asserted: bool) {
        if !asserted {
            return;
        }
        self.asserts.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.irqfd.write(1) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            log::error!("qxl irqfd write failed: {e}");
        }
    }
}

/// The device type this VM runs: device memory is a `GuestMemoryMmap`, the
/// interrupt an irqfd.
pub type KvmQxlDevice<S> = QxlDevice<GuestMemoryMmap, Arc<IrqfdLine>, S>;

/// The device shared between the vCPU thread and the event thread.
pub type SharedQxl<S> = Arc<Mutex<KvmQxlDevice<S>>>;

/// Lock the shared device.
pub fn lock_device<S: DisplaySink>(
    dev: &SharedQxl<S>,
) -> VmResult<MutexGuard<'_, KvmQxlDevice<S>>> {
    dev.lock().map_err(|_| VmError::Poisoned)
}

/// A flat 32-bit code segment (base 0, limit 4 GiB, selector 0x08, execute/read,
/// accessed): what a protected-mode entry without paging loads into CS.
/// `..FLAT_CODE32` with `selector: 0x10, type_: 0x3` gives the matching data segment.
pub const FLAT_CODE32: kvm_segment = kvm_segment {
    base: 0,
    limit: 0xffff_ffff,
    selector: 0x08,
    type_: 0xb,
    present: 1,
    dpl: 0,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
    padding: 0,
};

/// KVM memory slot of guest RAM.
const SLOT_GUEST_RAM: u32 = 0;
/// KVM memory slot of BAR0 (QXL RAM).
const SLOT_QXL_RAM: u32 = 1;
/// KVM memory slot of BAR1 (QXL VRAM).
const SLOT_QXL_VRAM: u32 = 2;

/// Where the QXL BARs currently decode (guest-physical; `None` = off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BarLayout {
    /// BAR0, the RAM BAR.
    pub ram: Option<u64>,
    /// BAR1, the VRAM BAR.
    pub vram: Option<u64>,
    /// BAR2, the ROM BAR (served by MMIO exits).
    pub rom: Option<u64>,
    /// BAR3, the I/O BAR.
    pub io: Option<u64>,
}

impl BarLayout {
    fn of<S: DisplaySink>(dev: &KvmQxlDevice<S>) -> Self {
        Self {
            ram: dev.bar_address(0),
            vram: dev.bar_address(1),
            rom: dev.bar_address(2),
            io: dev.bar_address(3),
        }
    }
}

/// Keeps KVM's view of the QXL BARs in step with the PCI configuration:
/// memory slots for BAR0/BAR1, ioeventfds for the notify ports.
pub struct QxlBarMapper {
    // Field order matters: the VM fd must close before the memory unmaps.
    vm: Arc<VmFd>,
    _dev_mem: GuestMemoryMmap,
    ram: (u64, u64),
    vram: (u64, u64),
    notify_cmd: EventFd,
    notify_cursor: EventFd,
    state: Mutex<BarLayout>,
    remaps: AtomicU64,
}

impl std::fmt::Debug for QxlBarMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QxlBarMapper")
            .field("layout", &self.layout())
            .field("remaps", &self.remaps())
            .finish_non_exhaustive()
    }
}

impl QxlBarMapper {
    /// The layout KVM currently decodes.
    pub fn layout(&self) -> BarLayout {
        self.state.lock().map(|s| *s).unwrap_or_default()
    }

    /// How many slot or ioeventfd (re)registrations happened.
    pub fn remaps(&self) -> u64 {
        self.remaps.load(Ordering::Relaxed)
    }

    fn set_slot(&self, slot: u32, gpa: u64, (host, size): (u64, u64)) -> VmResult<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: `host..host + size` is a region of `self._dev_mem` (checked
        // when the mapper was built), and the mapping outlives the slot: this
        // struct owns a clone of that memory and closes its `VmFd` (declared
        // first) before the memory is dropped. A size of 0 deletes the slot.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(VmError::kvm("memory slot"))
    }

    fn delete_slot(&self, slot: u32) -> VmResult<()> {
        let region = kvm_userspace_memory_region {
            slot,
            ..Default::default()
        };
        // SAFETY: deleting a slot (memory_size 0) hands no memory to KVM.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(VmError::kvm("delete slot"))
    }

    fn ioevents(&self, io: u64, register: bool) -> VmResult<()> {
        for (fd, off) in [(&self.notify_cmd, 0u64), (&self.notify_cursor, 1)] {
            let addr = IoEventAddress::Pio(io + off);
            if register {
                self.vm
                    .register_ioevent(fd, &addr, NoDatamatch)
                    .map_err(VmError::kvm("register ioeventfd"))?;
            } else {
                self.vm
                    .unregister_ioevent(fd, &addr, NoDatamatch)
                    .map_err(VmError::kvm("unregister ioeventfd"))?;
            }
        }
        Ok(())
    }

    /// Bring KVM in line with `new` (after a configuration write).
    pub fn sync(&self, new: BarLayout) -> VmResult<()> {
        let mut cur = self.state.lock().map_err(|_| VmError::Poisoned)?;
        if cur.ram != new.ram {
            if cur.ram.is_some() {
                self.delete_slot(SLOT_QXL_RAM)?;
            }
            cur.ram = None;
            if let Some(gpa) = new.ram {
                self.set_slot(SLOT_QXL_RAM, gpa, self.ram)?;
            }
            cur.ram = new.ram;
            self.remaps.fetch_add(1, Ordering::Relaxed);
            log::debug!("qxl BAR0 now at {:x?}", new.ram);
        }
        if cur.vram != new.vram {
            if cur.vram.is_some() {
                self.delete_slot(SLOT_QXL_VRAM)?;
            }
            cur.vram = None;
            if let Some(gpa) = new.vram {
                self.set_slot(SLOT_QXL_VRAM, gpa, self.vram)?;
            }
            cur.vram = new.vram;
            self.remaps.fetch_add(1, Ordering::Relaxed);
            log::debug!("qxl BAR1 now at {:x?}", new.vram);
        }
        if cur.io != new.io {
            if let Some(old) = cur.io {
                self.ioevents(old, false)?;
            }
            cur.io = None;
            if let Some(io) = new.io {
                self.ioevents(io, true)?;
            }
            cur.io = new.io;
            self.remaps.fetch_add(1, Ordering::Relaxed);
            log::debug!("qxl I/O BAR now at {:x?}", new.io);
        }
        cur.rom = new.rom;
        Ok(())
    }
}

/// The QXL function as seen by [`PciRoot`]: configuration accesses go to the
/// device; after each write the BAR layout is pushed to [`QxlBarMapper`].
pub struct QxlPciFunction<S: DisplaySink> {
    dev: SharedQxl<S>,
    mapper: Arc<QxlBarMapper>,
    failure: Arc<Mutex<Option<String>>>,
}

impl<S: DisplaySink + Send> PciFunction for QxlPciFunction<S> {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        match self.dev.lock() {
            Ok(d) => d.pci_config_read(offset, data),
            Err(_) => data.fill(0xff),
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let layout = match self.dev.lock() {
            Ok(mut d) => {
                d.pci_config_write(offset, data);
                BarLayout::of(&d)
            }
            Err(_) => return,
        };
        if let Err(e) = self.mapper.sync(layout) {
            log::error!("qxl BAR re-mapping failed: {e}");
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// How to build a [`QxlVm`].
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Guest RAM at guest-physical 0 (rounded up to 4 KiB).
    pub guest_ram_size: u64,
    /// Where the QXL function sits on bus 0.
    pub qxl_slot: PciSlot,
    /// The GSI (in-kernel PIC/IOAPIC pin) INTA# is routed to.
    pub qxl_gsi: u32,
    /// A dword port the guest writes a progress/result value to; the value
    /// [`DONE`] ends the run (the guest is expected to `hlt` next).
    pub status_port: u16,
    /// A dword port the guest writes a failure code to (ends the run with
    /// [`VmError::GuestFailed`]); the last status value is its detail.
    pub fail_port: u16,
}

/// The status value that tells the VMM the guest finished.
pub const DONE: u32 = 0x600d_600d;

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            guest_ram_size: 32 << 20,
            qxl_slot: PciSlot {
                device: 2,
                function: 0,
            },
            qxl_gsi: 5,
            status_port: 0x510,
            fail_port: 0x514,
        }
    }
}

/// Where the vCPU starts: flat 32-bit protected mode without paging.
///
/// Code segment selector 0x08 and data selector 0x10 are loaded with flat
/// 4 GiB descriptors; the guest must install a GDT with the same layout
/// before it reloads a segment or takes an interrupt.
#[derive(Debug, Clone, Copy)]
pub struct VcpuEntry {
    /// Initial EIP.
    pub rip: u64,
    /// Initial ESP.
    pub rsp: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The guest wrote [`DONE`] and then halted with interrupts off (the vCPU
    /// was found in the HALTED state, parked on its final `hlt`).
    pub halted: bool,
    /// EIP when the run ended.
    pub rip: u64,
    /// Status values the guest wrote, in order.
    pub status: Vec<u32>,
    /// Port-I/O exits handled.
    pub io_exits: u64,
    /// MMIO exits handled.
    pub mmio_exits: u64,
    /// Writes to QXL ports served on the vCPU thread.
    pub qxl_port_writes: u64,
    /// How long the vCPU ran.
    pub elapsed: Duration,
}

/// A minimal VM: guest RAM, one vCPU, an in-kernel irqchip, a PCI bus with
/// the QXL function.
pub struct QxlVm<S: DisplaySink> {
    // Field order matters: the vCPU and VM fds close before memory unmaps.
    vcpu: VcpuFd,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    guest_mem: GuestMemoryMmap,
    irq: Arc<IrqfdLine>,
    bus: Bus<S>,
    notify_cmd: EventFd,
    notify_cursor: EventFd,
    resample: EventFd,
}

impl<S: DisplaySink> std::fmt::Debug for QxlVm<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QxlVm")
            .field("config", &self.bus.config)
            .field("bars", &self.bus.mapper.layout())
            .finish_non_exhaustive()
    }
}

/// Round `v` up to a 4 KiB multiple.
fn page_align(v: u64) -> Option<u64> {
    v.checked_add(0xfff).map(|x| x & !0xfff)
}

fn host_range(mem: &GuestMemoryMmap, at: u64, size: u64) -> VmResult<(u64, u64)> {
    let len = usize::try_from(size).map_err(|_| VmError::Memory("region too large".into()))?;
    // The whole range must be one region, or KVM would map past it.
    mem.get_slice(GuestAddress(at), len)
        .map_err(|e| VmError::Memory(format!("memory {at:#x}+{size:#x}: {e}")))?;
    let host = mem
        .get_host_address(GuestAddress(at))
        .map_err(|e| VmError::Memory(format!("memory {at:#x}: {e}")))?;
    u64::try_from(host as usize)
        .map(|h| (h, size))
        .map_err(|_| VmError::Memory("host address above 64 bits".into()))
}

/// Open `/dev/kvm` and check what this VM needs; the reason when unusable.
pub fn probe_kvm() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    for (cap, name) in [
        (kvm_ioctls::Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (kvm_ioctls::Cap::Irqfd, "KVM_CAP_IRQFD"),
        (kvm_ioctls::Cap::IrqfdResample, "KVM_CAP_IRQFD_RESAMPLE"),
        (kvm_ioctls::Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (kvm_ioctls::Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(format!("{name} missing"));
        }
    }
    kvm.create_vm()
        .map(drop)
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))
}

impl<S: DisplaySink + Send + 'static> QxlVm<S> {
    /// Build the VM: guest RAM, irqchip, the QXL device over fresh device
    /// memory drawing into `sink`, its irqfd/resample fd and notify
    /// ioeventfds, and the PCI bus. The BARs start unprogrammed (the guest's
    /// firmware programs them).
    pub fn new(config: VmConfig, qxl: QxlConfig, sink: S) -> VmResult<Self> {
        if qxl.has_vram64_bar() {
            return Err(VmError::Config(
                "the 64-bit VRAM BAR (BAR4) is not mapped by this VM yet".into(),
            ));
        }
        let kvm = Kvm::new().map_err(|e| VmError::Unavailable(e.to_string()))?;
        let vm = Arc::new(kvm.create_vm().map_err(VmError::kvm("create VM"))?);
        vm.set_tss_address(0xfffb_d000)
            .map_err(VmError::kvm("set TSS address"))?;
        vm.create_irq_chip()
            .map_err(VmError::kvm("create irqchip"))?;

        // Guest RAM.
        let ram_size = page_align(config.guest_ram_size)
            .ok_or_else(|| VmError::Config("guest RAM size".into()))?;
        let ram_len =
            usize::try_from(ram_size).map_err(|_| VmError::Config("guest RAM size".into()))?;
        let guest_mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram_len)])
            .map_err(|e| VmError::Memory(format!("guest RAM: {e}")))?;
        let (ram_host, _) = host_range(&guest_mem, 0, ram_size)?;
        let region = kvm_userspace_memory_region {
            slot: SLOT_GUEST_RAM,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram_size,
            userspace_addr: ram_host,
        };
        // SAFETY: the range is the single region of `guest_mem`, which this
        // VM owns and drops only after its `VmFd` (declared earlier) closes.
        unsafe { vm.set_user_memory_region(region) }.map_err(VmError::kvm("guest RAM slot"))?;

        // Device memory: BAR0 at 0, the VRAM at vram_local_base.
        let qxl = qxl.into_normalized();
        let bar0_len =
            usize::try_from(qxl.ram_size).map_err(|_| VmError::Config("QXL RAM size".into()))?;
        let vram_len = usize::try_from(qxl.vram_total_size())
            .map_err(|_| VmError::Config("QXL VRAM size".into()))?;
        let dev_mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), bar0_len),
            (GuestAddress(qxl.vram_local_base()), vram_len),
        ])
        .map_err(|e| VmError::Memory(format!("QXL device memory: {e}")))?;
        let ram_range = host_range(&dev_mem, 0, qxl.ram_size)?;
        let vram_range = host_range(&dev_mem, qxl.vram_local_base(), qxl.vram_size)?;

        // The interrupt.
        let new_fd = |what: &'static str| EventFd::new(EFD_NONBLOCK).map_err(VmError::fd(what));
        let irqfd = new_fd("irqfd")?;
        let resample = new_fd("resamplefd")?;
        vm.register_irqfd_with_resample(&irqfd, &resample, config.qxl_gsi)
            .map_err(VmError::kvm("register irqfd"))?;
        let irq = Arc::new(IrqfdLine::new(irqfd));

        let notify_cmd = new_fd("notify_cmd ioeventfd")?;
        let notify_cursor = new_fd("notify_cursor ioeventfd")?;
        let clone = |fd: &EventFd| fd.try_clone().map_err(VmError::fd("dup"));
        let mapper = Arc::new(QxlBarMapper {
            vm: Arc::clone(&vm),
            _dev_mem: dev_mem.clone(),
            ram: ram_range,
            vram: vram_range,
            notify_cmd: clone(&notify_cmd)?,
            notify_cursor: clone(&notify_cursor)?,
            state: Mutex::new(BarLayout::default()),
            remaps: AtomicU64::new(0),
        });
        let dev = Arc::new(Mutex::new(QxlDevice::new(
            qxl,
            dev_mem,
            Arc::clone(&irq),
            sink,
        )?));
        let failure = Arc::new(Mutex::new(None));
        let mut pci = PciRoot::new();
        pci.add_function(
            config.qxl_slot,
            Box::new(QxlPciFunction {
                dev: Arc::clone(&dev),
                mapper: Arc::clone(&mapper),
                failure: Arc::clone(&failure),
            }),
        )
        .map_err(|e| VmError::Config(e.to_string()))?;
        let vcpu = vm.create_vcpu(0).map_err(VmError::kvm("create vCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::kvm("get supported CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(VmError::kvm("set CPUID"))?;
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            guest_mem,
            irq,
            bus: Bus {
                dev,
                mapper,
                pci,
                failure,
                config,
            },
            notify_cmd,
            notify_cursor,
            resample,
        })
    }

    /// Guest RAM (to load a program and read results).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.guest_mem
    }

    /// The shared device.
    pub fn device(&self) -> &SharedQxl<S> {
        &self.bus.dev
    }

    /// The interrupt line.
    pub fn irq(&self) -> &Arc<IrqfdLine> {
        &self.irq
    }

    /// The BAR mapper (current layout, re-map count).
    pub fn bars(&self) -> &QxlBarMapper {
        &self.bus.mapper
    }

    /// Duplicates of the event fds the event thread needs: `(notify_cmd,
    /// notify_cursor, resample)`.
    pub fn event_fds(&self) -> VmResult<(EventFd, EventFd, EventFd)> {
        let clone = |fd: &EventFd| fd.try_clone().map_err(VmError::fd("dup"));
        Ok((
            clone(&self.notify_cmd)?,
            clone(&self.notify_cursor)?,
            clone(&self.resample)?,
        ))
    }

    /// Copy `bytes` into guest RAM at `gpa`.
    pub fn load(&self, gpa: u64, bytes: &[u8]) -> VmResult<()> {
        self.guest_mem
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|e| VmError::Memory(format!("load at {gpa:#x}: {e}")))
    }

    /// Set the vCPU up for `entry`: flat 32-bit protected mode without
    /// paging (code selector 0x08, data 0x10, as [`VcpuEntry`] describes).
    /// [`Self::run`] does this itself; a VMM driving [`Self::run_guest`] with
    /// such a guest calls it first.
    pub fn set_entry(&self, entry: VcpuEntry) -> VmResult<()> {
        let mut sregs = self.vcpu.get_sregs().map_err(VmError::kvm("get sregs"))?;
        let code = FLAT_CODE32;
        let data = kvm_segment {
            selector: 0x10,
            type_: 0x3,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 = 0x11; // PE | ET, no paging
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.vcpu
            .set_sregs(&sregs)
            .map_err(VmError::kvm("set sregs"))?;
        let regs = kvm_bindings::kvm_regs {
            rip: entry.rip,
            rsp: entry.rsp,
            rflags: 0x2,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(VmError::kvm("set regs"))
    }

    fn rip(&self) -> u64 {
        self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
    }

    /// Run the vCPU from `entry` until the guest writes [`DONE`] to the status
    /// port and halts, fails, exits in a way this VM does not handle, or
    /// `timeout` passes. A watchdog thread kicks the vCPU out of `KVM_RUN`
    /// with a signal once the deadline is reached, so a guest that spins
    /// forever ends the run with [`VmError::Timeout`] instead of hanging.
    ///
    /// A run that ended in an error may leave the vCPU in the middle of an
    /// instruction (an exit KVM expects to be completed): do not run the same
    /// VM again after an error.
    pub fn run(&mut self, entry: VcpuEntry, timeout: Duration) -> VmResult<RunReport> {
        self.set_entry(entry)?;
        kick::install()?;
        let start = Instant::now();
        let expired = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let target = kick::current_thread();
        let watchdog = {
            let expired = Arc::clone(&expired);
            std::thread::Builder::new()
                .name("vcpu-watchdog".into())
                .spawn(move || {
                    if !matches!(
                        done_rx.recv_timeout(timeout),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return;
                    }
                    expired.store(true, Ordering::SeqCst);
                    // Kick until the vCPU thread says it left the loop (a
                    // signal that lands outside KVM_RUN is simply lost).
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        done_rx.recv_timeout(Duration::from_millis(20))
                    {
                        kick::kick(target);
                    }
                })
                .map_err(|e| VmError::Unavailable(format!("watchdog thread: {e}")))?
        };
        let res = self.run_loop(&expired, timeout, start);
        drop(done_tx);
        let _ = watchdog.join();
        res
    }

    fn run_loop(
        &mut self,
        expired: &AtomicBool,
        timeout: Duration,
        start: Instant,
    ) -> VmResult<RunReport> {
        let mut report = RunReport::default();
        loop {
            if let Some(msg) = self.bus.failure.lock().ok().and_then(|mut f| f.take()) {
                return Err(VmError::BarMapping(msg));
            }
            if expired.load(Ordering::SeqCst) {
                return Err(VmError::Timeout(timeout, self.rip()));
            }
            let bus = &mut self.bus;
            let outcome = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    report.io_exits += 1;
                    bus.port_out(port, data, &mut report)
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    report.io_exits += 1;
                    bus.port_in(port, data).map(|()| PortOutcome::Continue)
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    report.mmio_exits += 1;
                    bus.mmio_read(addr, data).map(|()| PortOutcome::Continue)
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    report.mmio_exits += 1;
                    bus.mmio_write(addr, data).map(|()| PortOutcome::Continue)
                }
                Ok(VcpuExit::Intr) => Ok(PortOutcome::Continue),
                Ok(VcpuExit::Hlt) => Err(VmError::UnhandledExit("guest halted before DONE".into())),
                Ok(VcpuExit::InternalError) => Err(VmError::UnhandledExit("InternalError".into())),
                Ok(other) => Err(VmError::UnhandledExit(format!("{other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Ok(PortOutcome::Continue)
                }
                Err(e) => Err(VmError::Kvm {
                    what: "run",
                    source: e,
                }),
            };
            match outcome {
                Ok(PortOutcome::Continue) => {}
                Ok(PortOutcome::Done) => return self.wait_halt(report, start),
                Err(VmError::UnhandledExit(m)) if m == "InternalError" => {
                    let detail = self.internal_error();
                    return Err(VmError::UnhandledExit(detail).at_rip(self.rip()));
                }
                Err(e) => return Err(e.at_rip(self.rip())),
            }
        }
    }

    /// Describe a `KVM_EXIT_INTERNAL_ERROR` (sub-error and data words).
    fn internal_error(&mut self) -> String {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which the
        // kernel fills the `internal` member of the exit union; all its fields
        // are plain integers, valid for any bit pattern.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = usize::try_from(internal.ndata)
            .unwrap_or(0)
            .min(internal.data.len());
        format!(
            "KVM internal error, sub-error {} (1 = emulation failure), data {:x?}",
            internal.suberror,
            internal.data.get(..n).unwrap_or(&[])
        )
    }

    /// After DONE: run on until the vCPU parks on its final `hlt`, which with
    /// an in-kernel irqchip never exits; a periodic kick reveals the halted
    /// state (`KVM_MP_STATE_HALTED`).
    fn wait_halt(&mut self, mut report: RunReport, start: Instant) -> VmResult<RunReport> {
        let target = kick::current_thread();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let kicker = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_millis(20))
            {
                kick::kick(target);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let res = loop {
            if Instant::now() > deadline {
                break Err(VmError::UnhandledExit(
                    "guest wrote DONE but never halted".into(),
                ));
            }
            let exit = match self.vcpu.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
                Err(e) => {
                    break Err(VmError::Kvm {
                        what: "run",
                        source: e,
                    });
                }
                Ok(VcpuExit::Hlt) => break Ok(()),
                Ok(other) => Some(format!("{other:?}")),
            };
            if let Some(name) = exit {
                break Err(VmError::UnhandledExit(format!("{name} after DONE")));
            }
            let mp = self
                .vcpu
                .get_mp_state()
                .map_err(VmError::kvm("get MP state"))?;
            if mp.mp_state == KVM_MP_STATE_HALTED {
                break Ok(());
            }
        };
        drop(tx);
        let _ = kicker.join();
        let rip = self.rip();
        res.map_err(|e| e.at_rip(rip))?;
        report.halted = true;
        report.rip = rip;
        report.elapsed = start.elapsed();
        Ok(report)
    }
}

/// What [`QxlVm::run_guest`] asks of the VMM beyond the QXL function and the
/// PCI bus: the other devices' ports, and when to stop.
pub trait GuestExits {
    /// An `out` to a port neither the PCI host bridge nor the QXL I/O BAR
    /// decodes. Returns `false` when no device claims it (the write is dropped).
    fn port_out(&mut self, port: u16, data: &[u8]) -> bool;
    /// An `in` from such a port; returns `false` when no device claims it (the
    /// guest reads all-ones, as from an empty ISA bus).
    fn port_in(&mut self, port: u16, data: &mut [u8]) -> bool;
    /// Called after every exit and at least every [`GUEST_POLL`]: `Some` ends
    /// the run with that reason (console finished, no progress, Ctrl-C, ...).
    fn poll(&mut self) -> Option<String>;
    /// A read from guest-physical `addr` that neither guest RAM nor a QXL
    /// BAR backs (a virtio-mmio window, say). Returns `false` when no device
    /// claims it (the guest reads all-ones).
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let _ = (addr, data);
        false
    }
    /// Such a write; returns `false` when no device claims it (dropped).
    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let _ = (addr, data);
        false
    }
}

/// How often [`QxlVm::run_guest`] kicks the vCPU to call [`GuestExits::poll`]
/// even when the guest makes no exits.
pub const GUEST_POLL: Duration = Duration::from_millis(100);

/// How a [`QxlVm::run_guest`] run ended (failures are [`VmError`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// [`GuestExits::poll`] ended the run, for this reason.
    Stopped(String),
    /// The guest reset or shut down (`KVM_EXIT_SHUTDOWN`: a triple fault or
    /// a reset request).
    Shutdown,
}

/// What a [`QxlVm::run_guest`] run did.
#[derive(Debug, Clone)]
pub struct GuestRunReport {
    /// How it ended.
    pub end: GuestEnd,
    /// Port-I/O exits.
    pub io_exits: u64,
    /// MMIO exits.
    pub mmio_exits: u64,
    /// Accesses no device claimed (dropped writes, all-ones reads).
    pub unclaimed: u64,
    /// Instruction pointer at the end.
    pub rip: u64,
    /// How long the vCPU ran.
    pub elapsed: Duration,
}

/// Running a full guest (a Linux kernel): the extra KVM objects it needs and a
/// run loop that serves other devices through [`GuestExits`].
impl<S: DisplaySink + Send + 'static> QxlVm<S> {
    /// The vCPU, for the VMM's own register setup (long mode, boot registers).
    /// Register accesses cannot touch the VM's memory mappings.
    pub fn vcpu(&self) -> &VcpuFd {
        &self.vcpu
    }

    /// Add the in-kernel i8254 PIT (after the irqchip, which [`Self::new`] made).
    pub fn create_pit(&self) -> VmResult<()> {
        let config = kvm_bindings::kvm_pit_config::default();
        self._vm
            .create_pit2(config)
            .map_err(VmError::kvm("create PIT"))
    }

    /// Route `fd` to irqchip GSI `gsi` (an edge-triggered line such as a
    /// 16550's: each write is a pulse).
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> VmResult<()> {
        self._vm
            .register_irqfd(fd, gsi)
            .map_err(VmError::kvm("register irqfd"))
    }

    /// Signal `fd` instead of exiting when the guest writes the 32-bit value
    /// `datamatch` at `addr` (a virtio `QueueNotify`, say).
    pub fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: &IoEventAddress,
        datamatch: u32,
    ) -> VmResult<()> {
        self._vm
            .register_ioevent(fd, addr, datamatch)
            .map_err(VmError::kvm("register ioeventfd"))
    }

    /// Program the QXL BARs (bus 0 firmware's job) at the given bases, enable
    /// I/O, memory and bus mastering, and set the interrupt line register; KVM's
    /// slots and ioeventfds follow. `bases[i]` is BAR `i`'s address.
    pub fn program_bars(&self, bases: &[(usize, u64)], irq_line: u8) -> VmResult<BarLayout> {
        let layout = {
            let mut dev = lock_device(&self.bus.dev)?;
            for &(bar, base) in bases {
                let off = u16::try_from(0x10 + 4 * bar)
                    .map_err(|_| VmError::Config(format!("BAR {bar}")))?;
                let lo = u32::try_from(base & 0xffff_ffff).unwrap_or(0);
                dev.pci_config_write(off, &lo.to_le_bytes());
            }
            dev.pci_config_write(0x3c, &[irq_line]);
            dev.pci_config_write(0x04, &0x0007u16.to_le_bytes());
            BarLayout::of(&dev)
        };
        self.bus.mapper.sync(layout)?;
        Ok(layout)
    }

    /// Run the vCPU from the registers the VMM set until `exits` stops it, the
    /// guest shuts down, or KVM fails. Unlike [`Self::run`] there is no status
    /// port: every port and MMIO access the QXL function and the PCI bus do not
    /// decode goes to `exits`, and what it does not claim is dropped (reads see
    /// all-ones), as on a PC. A `KVM_EXIT_INTERNAL_ERROR` (an instruction KVM
    /// could not emulate) is [`VmError::Internal`].
    pub fn run_guest(&mut self, exits: &mut dyn GuestExits) -> VmResult<GuestRunReport> {
        kick::install()?;
        let start = Instant::now();
        let target = kick::current_thread();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let ticker = std::thread::Builder::new()
            .name("vcpu-ticker".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(GUEST_POLL)
                {
                    kick::kick(target);
                }
            })
            .map_err(|e| VmError::Unavailable(format!("ticker thread: {e}")))?;
        let res = self.guest_loop(exits);
        drop(tx);
        let _ = ticker.join();
        let (end, io_exits, mmio_exits, unclaimed) = res?;
        Ok(GuestRunReport {
            end,
            io_exits,
            mmio_exits,
            unclaimed,
            rip: self.rip(),
            elapsed: start.elapsed(),
        })
    }

    fn guest_loop(&mut self, exits: &mut dyn GuestExits) -> VmResult<(GuestEnd, u64, u64, u64)> {
        let (mut io, mut mmio, mut unclaimed) = (0u64, 0u64, 0u64);
        let mut scratch = RunReport::default();
        loop {
            if let Some(msg) = self.bus.failure.lock().ok().and_then(|mut f| f.take()) {
                return Err(VmError::BarMapping(msg));
            }
            if let Some(reason) = exits.poll() {
                return Ok((GuestEnd::Stopped(reason), io, mmio, unclaimed));
            }
            let bus = &mut self.bus;
            let res = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    io += 1;
                    if PciRoot::handles(port) {
                        bus.pci.pio_write(port, data);
                        Ok(())
                    } else if bus.in_io_bar(port) {
                        bus.port_out(port, data, &mut scratch).map(drop)
                    } else {
                        if !exits.port_out(port, data) {
                            unclaimed += 1;
                        }
                        Ok(())
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    io += 1;
                    if PciRoot::handles(port) || bus.in_io_bar(port) {
                        bus.port_in(port, data)
                    } else {
                        if !exits.port_in(port, data) {
                            unclaimed += 1;
                            data.fill(0xff);
                        }
                        Ok(())
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    mmio += 1;
                    if bus.rom_offset(addr, data.len()).is_some() {
                        bus.mmio_read(addr, data)
                    } else {
                        if !exits.mmio_read(addr, data) {
                            unclaimed += 1;
                            data.fill(0xff);
                        }
                        Ok(())
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    mmio += 1;
                    if bus.rom_offset(addr, data.len()).is_some() {
                        bus.mmio_write(addr, data)
                    } else {
                        if !exits.mmio_write(addr, data) {
                            unclaimed += 1;
                        }
                        Ok(())
                    }
                }
                Ok(VcpuExit::Shutdown) => return Ok((GuestEnd::Shutdown, io, mmio, unclaimed)),
                Ok(VcpuExit::Intr | VcpuExit::Hlt) => Ok(()),
                Ok(VcpuExit::InternalError) => {
                    let (suberror, data) = self.internal_error_data();
                    return Err(VmError::Internal {
                        suberror,
                        data,
                        rip: self.rip(),
                    });
                }
                Ok(other) => Err(VmError::UnhandledExit(format!("{other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
                Err(e) => Err(VmError::Kvm {
                    what: "run",
                    source: e,
                }),
            };
            if let Err(e) = res {
                return Err(e.at_rip(self.rip()));
            }
        }
    }

    /// The sub-error and data words of the last `KVM_EXIT_INTERNAL_ERROR`.
    fn internal_error_data(&mut self) -> (u32, Vec<u64>) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which the
        // kernel fills the `internal` member of the exit union; all its fields
        // are plain integers, valid for any bit pattern.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = usize::try_from(internal.ndata)
            .unwrap_or(0)
            .min(internal.data.len());
        (
            internal.suberror,
            internal.data.get(..n).unwrap_or(&[]).to_vec(),
        )
    }
}

/// The non-vCPU half of the VM the exit handlers use (split from the vCPU fd
/// so an exit's data buffer can be filled while it is borrowed).
struct Bus<S: DisplaySink> {
    dev: SharedQxl<S>,
    mapper: Arc<QxlBarMapper>,
    pci: PciRoot,
    failure: Arc<Mutex<Option<String>>>,
    config: VmConfig,
}

impl<S: DisplaySink> Bus<S> {
    /// Whether `port` falls in the QXL I/O BAR.
    fn in_io_bar(&self, port: u16) -> bool {
        self.io_bar().is_some_and(|(base, size)| {
            u64::from(port)
                .checked_sub(base)
                .is_some_and(|off| off < size)
        })
    }

    fn io_bar(&self) -> Option<(u64, u64)> {
        let base = self.mapper.layout().io?;
        let size = lock_device(&self.dev).ok()?.config().io_size();
        Some((base, size))
    }

    fn port_out(
        &mut self,
        port: u16,
        data: &[u8],
        report: &mut RunReport,
    ) -> VmResult<PortOutcome> {
        if PciRoot::handles(port) {
            self.pci.pio_write(port, data);
            return Ok(PortOutcome::Continue);
        }
        if port == self.config.status_port || port == self.config.fail_port {
            let mut b = [0u8; 4];
            for (d, s) in b.iter_mut().zip(data) {
                *d = *s;
            }
            let v = u32::from_le_bytes(b);
            if port == self.config.fail_port {
                let detail = report.status.last().copied().unwrap_or(0);
                return Err(VmError::GuestFailed { code: v, detail });
            }
            report.status.push(v);
            return Ok(if v == DONE {
                PortOutcome::Done
            } else {
                PortOutcome::Continue
            });
        }
        if let Some((base, size)) = self.io_bar()
            && let Some(off) = u64::from(port).checked_sub(base)
            && off < size
        {
            // QXL ports are byte-wide (QEMU splits wider accesses).
            let mut dev = lock_device(&self.dev)?;
            for (i, b) in (0u64..).zip(data) {
                dev.io_write(off + i, *b);
                report.qxl_port_writes += 1;
            }
            return Ok(PortOutcome::Continue);
        }
        Err(VmError::UnhandledExit(format!(
            "out to port {port:#x} ({data:02x?})"
        )))
    }

    fn port_in(&mut self, port: u16, data: &mut [u8]) -> VmResult<()> {
        if PciRoot::handles(port) {
            self.pci.pio_read(port, data);
            return Ok(());
        }
        if let Some((base, size)) = self.io_bar()
            && let Some(off) = u64::from(port).checked_sub(base)
            && off < size
        {
            let mut dev = lock_device(&self.dev)?;
            for (i, d) in (0u64..).zip(data.iter_mut()) {
                *d = dev.io_read(off + i);
            }
            return Ok(());
        }
        Err(VmError::UnhandledExit(format!("in from port {port:#x}")))
    }

    fn rom_offset(&self, addr: u64, len: usize) -> Option<u64> {
        let base = self.mapper.layout().rom?;
        let size = lock_device(&self.dev).ok()?.config().rom_size();
        let off = addr.checked_sub(base)?;
        let end = off.checked_add(u64::try_from(len).ok()?)?;
        (end <= size).then_some(off)
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> VmResult<()> {
        if let Some(off) = self.rom_offset(addr, data.len()) {
            lock_device(&self.dev)?.rom_read(off, data);
            return Ok(());
        }
        Err(VmError::UnhandledExit(format!(
            "MMIO read of {} bytes at {addr:#x}",
            data.len()
        )))
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> VmResult<()> {
        if self.rom_offset(addr, data.len()).is_some() {
            log::debug!("guest wrote the read-only QXL ROM at {addr:#x}: dropped");
            return Ok(());
        }
        Err(VmError::UnhandledExit(format!(
            "MMIO write {data:02x?} at {addr:#x}"
        )))
    }
}

enum PortOutcome {
    Continue,
    Done,
}

/// Kicking a vCPU thread out of `KVM_RUN` with a real-time signal whose
/// handler does nothing (the interrupted ioctl returns `EINTR`).
mod kick {
    use std::sync::Once;

    use super::VmError;

    /// Offset of the kick signal from `SIGRTMIN`.
    const KICK_OFFSET: i32 = 5;

    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

    fn signal() -> libc::c_int {
        vmm_sys_util::signal::SIGRTMIN() + KICK_OFFSET
    }

    /// Install the no-op handler (once per process).
    pub(super) fn install() -> Result<(), VmError> {
        static ONCE: Once = Once::new();
        let mut res = Ok(());
        ONCE.call_once(|| {
            res = vmm_sys_util::signal::register_signal_handler(signal(), noop)
                .map_err(|e| VmError::Unavailable(format!("kick signal handler: {e}")));
        });
        res
    }

    /// The calling thread, as a kick target.
    pub(super) fn current_thread() -> libc::pthread_t {
        // SAFETY: `pthread_self` has no preconditions and cannot fail.
        unsafe { libc::pthread_self() }
    }

    /// Send the kick signal to `thread`. The target is the thread running the
    /// vCPU loop, which outlives every kicker (it joins them before leaving).
    pub(super) fn kick(thread: libc::pthread_t) {
        // SAFETY: `thread` is a live thread (see above) and the signal has a
        // handler installed by `install`, so delivery cannot kill the process.
        let rc = unsafe { libc::pthread_kill(thread, signal()) };
        if rc != 0 {
            log::warn!("vCPU kick failed: {rc}");
        }
    }
}
