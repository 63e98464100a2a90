//! virtio-mmio devices on the VM's bus: the SPICE input devices of `qxl-vmm boot`.
//!
//! # Primer
//!
//! A virtio-mmio device is a register window in guest-physical address space
//! plus an interrupt line; there is no bus enumeration. Linux learns about
//! each window from its command line (`virtio_mmio.device=<size>@<base>:<irq>`,
//! built by [`VirtioInputs::cmdline`]) and binds the driver named by the
//! window's DeviceID register (`virtio_input` for type 18).
//!
//! The windows sit [`VIRTIO_MMIO_STRIDE`] apart from [`VIRTIO_MMIO_BASE`], in
//! the 32-bit PCI hole above the QXL BARs, on IOAPIC pins from
//! [`VIRTIO_GSI_BASE`] on (ISA IRQs the MP table routes edge-triggered, the
//! way Firecracker places its virtio-mmio devices). The interrupt is an
//! irqfd: each `InterruptStatus` raise is one edge, and the driver's
//! `InterruptACK` needs no host action.
//!
//! Register accesses trap to the vCPU thread ([`VirtioInputs::mmio_read`] /
//! [`VirtioInputs::mmio_write`]) except the hot one: a `QueueNotify` write of
//! queue `n` is an ioeventfd with datamatch `n`, consumed on the event thread
//! by [`VirtioNotifyHandler`], so a driver refilling its eventq never waits
//! for the device. Host-side input (the SPICE inputs thread) reaches the same
//! transports through [`InputInjector`]; every path takes the transport's
//! mutex, so the state machine sees one access at a time.

use std::sync::{Arc, Mutex, OnceLock};

use devices::virtio_input::mmio::{MMIO_WINDOW_SIZE, reg};
use devices::virtio_input::{
    InputConfig, InputEvent, InputInjector, InputKind, VirtioInput, VirtioMmio,
};
use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_ioctls::IoEventAddress;
use spice_server::command::{DisplaySink, SurfaceCreate};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::input::DisplaySize;
use crate::kvm::{IrqfdLine, QxlVm, VmError, VmResult};

/// Guest-physical address of the first virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Distance between two windows (one page each, so KVM can trap them apart).
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// IOAPIC pin (GSI) of the first window; the others follow.
pub const VIRTIO_GSI_BASE: u32 = 5;
/// Queues of a virtio-input device (eventq, statusq): one notify ioeventfd each.
const INPUT_QUEUES: u32 = 2;

/// A virtio-input device as the VM runs it: guest RAM, an irqfd.
pub type KvmVirtioInput = VirtioMmio<GuestMemoryMmap, VirtioInput, Arc<IrqfdLine>>;

/// One device on the bus.
#[derive(Debug)]
pub struct MmioInput {
    /// What it is.
    pub kind: InputKind,
    /// Its window's guest-physical base.
    pub base: u64,
    /// Its IOAPIC pin.
    pub gsi: u32,
    /// The transport (shared with the event thread and the input sink).
    pub transport: Arc<Mutex<KvmVirtioInput>>,
    irq: Arc<IrqfdLine>,
}

impl MmioInput {
    /// Interrupts delivered to the guest so far.
    pub fn interrupts(&self) -> u64 {
        self.irq.asserts()
    }
}

/// The input devices of a VM, in window order.
#[derive(Debug)]
pub struct VirtioInputs {
    devices: Vec<MmioInput>,
    notify: Vec<(EventFd, Arc<Mutex<KvmVirtioInput>>, u32)>,
}

impl VirtioInputs {
    /// Creates one device per entry of `kinds` over the VM's RAM, wires each
    /// window's interrupt (irqfd on its GSI) and `QueueNotify` ioeventfds.
    ///
    /// # Errors
    /// A KVM or eventfd failure, as [`VmError`].
    pub fn attach<S: DisplaySink + Send + 'static>(
        vm: &QxlVm<S>,
        kinds: &[InputKind],
    ) -> VmResult<Self> {
        let mut devices = Vec::with_capacity(kinds.len());
        let mut notify = Vec::new();
        for (i, &kind) in kinds.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| VmError::Config("too many devices".into()))?;
            let base = VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_STRIDE;
            let gsi = VIRTIO_GSI_BASE + index;
            let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmError::fd("virtio irqfd"))?;
            vm.register_irqfd(&irqfd, gsi)?;
            let irq = Arc::new(IrqfdLine::new(irqfd));
            let transport = Arc::new(Mutex::new(VirtioMmio::new(
                vm.guest_memory().clone(),
                VirtioInput::new(InputConfig::new(kind)),
                Arc::clone(&irq),
            )));
            for queue in 0..INPUT_QUEUES {
                let fd = EventFd::new(EFD_NONBLOCK).map_err(VmError::fd("virtio notify"))?;
                vm.register_ioevent(&fd, &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY), queue)?;
                notify.push((fd, Arc::clone(&transport), queue));
            }
            devices.push(MmioInput {
                kind,
                base,
                gsi,
                transport,
                irq,
            });
        }
        Ok(Self { devices, notify })
    }

    /// The devices.
    pub fn devices(&self) -> &[MmioInput] {
        &self.devices
    }

    /// The first device of `kind` as an [`InputInjector`] (for
    /// [`crate::input::VirtioInputSink`]).
    pub fn injector(&self, kind: InputKind) -> Option<Arc<dyn InputInjector>> {
        self.devices
            .iter()
            .find(|d| d.kind == kind)
            .map(|d| Arc::clone(&d.transport) as Arc<dyn InputInjector>)
    }

    /// The kernel command-line words that announce every window.
    pub fn cmdline(&self) -> String {
        self.devices
            .iter()
            .map(|d| {
                format!(
                    "virtio_mmio.device={}K@{:#x}:{}",
                    VIRTIO_MMIO_STRIDE / 1024,
                    d.base,
                    d.gsi
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs `f` on the transport whose window holds `addr..addr + len`, with
    /// the offset in the window; `None` when no window holds it.
    fn on_window<R>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut KvmVirtioInput, u64) -> R,
    ) -> Option<R> {
        let off = addr.checked_sub(VIRTIO_MMIO_BASE)?;
        let index = usize::try_from(off / VIRTIO_MMIO_STRIDE).ok()?;
        let dev = self.devices.get(index)?;
        let within = off % VIRTIO_MMIO_STRIDE;
        let end = within.checked_add(u64::try_from(len).ok()?)?;
        if end > MMIO_WINDOW_SIZE {
            return None;
        }
        let mut t = dev
            .transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut t, within))
    }

    /// A vCPU read at `addr`; `false` when no window holds it.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let len = data.len();
        self.on_window(addr, len, |t, off| t.read(off, data))
            .is_some()
    }

    /// A vCPU write at `addr`; `false` when no window holds it.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.on_window(addr, data.len(), |t, off| t.write(off, data))
            .is_some()
    }

    /// The event-thread subscriber that serves the `QueueNotify` ioeventfds
    /// (takes them; call once).
    pub fn notify_handler(&mut self) -> VirtioNotifyHandler {
        VirtioNotifyHandler {
            entries: std::mem::take(&mut self.notify),
        }
    }
}

/// Serves `QueueNotify` ioeventfds: each event is the driver's notify write
/// of one queue, replayed into the transport.
#[derive(Debug)]
pub struct VirtioNotifyHandler {
    entries: Vec<(EventFd, Arc<Mutex<KvmVirtioInput>>, u32)>,
}

impl MutEventSubscriber for VirtioNotifyHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let token = events.data();
        let Some((fd, transport, queue)) = usize::try_from(token)
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            log::error!("virtio: unexpected event token {token}");
            let _ = ops.remove(events);
            return;
        };
        // Consume the counter; EAGAIN (already drained) is fine.
        let _ = fd.read();
        let mut t = transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.write(reg::QUEUE_NOTIFY, &queue.to_le_bytes());
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, (fd, _, _)) in self.entries.iter().enumerate() {
            let Ok(token) = u32::try_from(i) else {
                break;
            };
            if let Err(e) = ops.add(Events::with_data(fd, token, EventSet::IN)) {
                log::error!("virtio: cannot register notify event {token}: {e}");
            }
        }
    }
}

/// An [`InputInjector`] that forwards to a device attached later (the SPICE
/// server, which owns the input sink, starts before the VM exists); input
/// before then is dropped, as a guest without its driver would.
#[derive(Clone, Default)]
pub struct LateInjector(Arc<OnceLock<Arc<dyn InputInjector>>>);

impl std::fmt::Debug for LateInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateInjector")
            .field("connected", &self.0.get().is_some())
            .finish()
    }
}

impl LateInjector {
    /// Connects the device; later calls are ignored (returns `false`).
    pub fn connect(&self, device: Arc<dyn InputInjector>) -> bool {
        self.0.set(device).is_ok()
    }
}

impl InputInjector for LateInjector {
    fn inject(&self, events: &[InputEvent]) {
        if let Some(d) = self.0.get() {
            d.inject(events);
        }
    }
}

/// A [`DisplaySink`] wrapper that keeps the tablet's [`DisplaySize`] equal to
/// the primary surface, so absolute positions scale against the mode the
/// guest set.
#[derive(Debug)]
pub struct TrackPrimary<S> {
    inner: S,
    size: DisplaySize,
}

impl<S> TrackPrimary<S> {
    /// Forwards to `inner`, updating `size` on every primary surface.
    pub fn new(inner: S, size: DisplaySize) -> Self {
        Self { inner, size }
    }
}

impl<S: DisplaySink> DisplaySink for TrackPrimary<S> {
    fn command(&mut self, cmd: spice_server::command::Command) {
        self.inner.command(cmd);
    }
    fn create_primary(&mut self, surface: SurfaceCreate) {
        self.size.set(surface.width, surface.height);
        self.inner.create_primary(surface);
    }
    fn destroy_primary(&mut self) {
        self.inner.destroy_primary();
    }
    fn destroy_surface_wait(&mut self, surface_id: u32) {
        self.inner.destroy_surface_wait(surface_id);
    }
    fn destroy_all_surfaces(&mut self) {
        self.inner.destroy_all_surfaces();
    }
    fn update_area(
        &mut self,
        surface_id: u32,
        area: spice_server::command::Rect,
    ) -> Option<spice_server::command::AreaPixels> {
        self.inner.update_area(surface_id, area)
    }
    fn flush_surfaces(&mut self) {
        self.inner.flush_surfaces();
    }
    fn monitors_config(&mut self, config: spice_server::command::MonitorsConfig) {
        self.inner.monitors_config(config);
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
}
