//! The virtio-mmio transport (virtio spec 1.2 §4.2.2, version 2) as a
//! register state machine.
//!
//! # Primer
//!
//! A virtio-mmio device is a 0x200-byte register window (usually announced
//! to Linux on the kernel command line, `virtio_mmio.device=512@0xd0000000:5`,
//! or in a device tree). All registers below 0x100 are 32-bit, little-endian,
//! accessed at aligned offsets; the device config space starts at 0x100.
//!
//! ```text
//! 0x000 MagicValue "virt"      0x050 QueueNotify (W)
//! 0x004 Version 2              0x060 InterruptStatus (R)
//! 0x008 DeviceID               0x064 InterruptACK (W)
//! 0x00c VendorID               0x070 Status (RW)
//! 0x010 DeviceFeatures (R)     0x080/0x084 QueueDesc low/high (W)
//! 0x014 DeviceFeaturesSel (W)  0x090/0x094 QueueDriver (avail) low/high (W)
//! 0x020 DriverFeatures (W)     0x0a0/0x0a4 QueueDevice (used) low/high (W)
//! 0x024 DriverFeaturesSel (W)  0x0ac SHMSel (W), 0x0b0.. SHMLen/Base (R, -1: none)
//! 0x030 QueueSel (W)           0x0fc ConfigGeneration (R)
//! 0x034 QueueNumMax (R)        0x100+ device config space
//! 0x038 QueueNum (W)
//! 0x044 QueueReady (RW)
//! ```
//!
//! Driver initialisation: write Status 0 (reset), ACKNOWLEDGE, DRIVER; read
//! the features, write the accepted subset, set FEATURES_OK and read it back
//! (the device clears it if it refuses the subset); per queue select it, set
//! its size and addresses, write QueueReady 1; finally set DRIVER_OK. The
//! device interrupts with InterruptStatus bit 0 (used buffer) and the driver
//! acknowledges by writing the bits to InterruptACK.
//!
//! The transport owns the [`virtio_queue::Queue`]s and the guest memory; the
//! device behind it ([`VirtioDevice`]) sees them only while the driver has set
//! DRIVER_OK. The interrupt line is the [`IrqLine`] the QXL device uses: high
//! while InterruptStatus is non-zero.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::qxl::IrqLine;

/// `MagicValue`: "virt" little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The transport version this implements.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` reported (the PCI vendor id of Red Hat/Qumranet virtio devices).
pub const VENDOR_ID: u32 = 0x1af4;
/// Size of the register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x200;
/// Start of the device config space in the window.
pub const CONFIG_OFFSET: u64 = 0x100;

/// Register offsets.
pub mod reg {
    /// `MagicValue`.
    pub const MAGIC_VALUE: u64 = 0x000;
    /// `Version`.
    pub const VERSION: u64 = 0x004;
    /// `DeviceID`.
    pub const DEVICE_ID: u64 = 0x008;
    /// `VendorID`.
    pub const VENDOR_ID: u64 = 0x00c;
    /// `DeviceFeatures`.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// `DeviceFeaturesSel`.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// `DriverFeatures`.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// `DriverFeaturesSel`.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// `QueueSel`.
    pub const QUEUE_SEL: u64 = 0x030;
    /// `QueueNumMax`.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// `QueueNum`.
    pub const QUEUE_NUM: u64 = 0x038;
    /// `QueueReady`.
    pub const QUEUE_READY: u64 = 0x044;
    /// `QueueNotify`.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// `InterruptStatus`.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// `InterruptACK`.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// `Status`.
    pub const STATUS: u64 = 0x070;
    /// `QueueDescLow`.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// `QueueDescHigh`.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// `QueueDriverLow` (available ring).
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// `QueueDriverHigh`.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// `QueueDeviceLow` (used ring).
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// `QueueDeviceHigh`.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// `SHMSel`.
    pub const SHM_SEL: u64 = 0x0ac;
    /// `SHMLenLow`.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// `SHMLenHigh`.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// `SHMBaseLow`.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// `SHMBaseHigh`.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// `QueueReset`.
    pub const QUEUE_RESET: u64 = 0x0c0;
    /// `ConfigGeneration`.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// Device status bits.
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// `InterruptStatus` bit: a used buffer was added.
pub const INT_VRING: u32 = 1;
/// `InterruptStatus` bit: the config space changed.
pub const INT_CONFIG: u32 = 2;

/// A device behind the transport: what it is, its config space, and what it
/// does with its queues.
pub trait VirtioDevice<M: GuestMemory> {
    /// The virtio device type.
    fn device_type(&self) -> u32;
    /// The feature bits offered.
    fn device_features(&self) -> u64;
    /// The maximum size of each queue (its length is the number of queues).
    fn queue_max_sizes(&self) -> &[u16];
    /// Size of the config space in bytes.
    fn config_size(&self) -> u64;
    /// A driver read in the config space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write in the config space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK. Returns whether to interrupt.
    fn activate(&mut self, mem: &M, queues: &mut [Queue]) -> bool;
    /// The driver notified queue `index`. Returns whether to interrupt.
    fn queue_notify(&mut self, mem: &M, queues: &mut [Queue], index: u32) -> bool;
    /// The driver reset the device.
    fn reset(&mut self);
}

/// The virtio-mmio transport around device `D` over guest memory `M`,
/// interrupting through `I`.
#[derive(Debug)]
pub struct VirtioMmio<M, D, I> {
    mem: M,
    device: D,
    irq: I,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    ignored_accesses: u64,
}

/// Sets the low or high half of a u64.
const fn set_half(v: u64, high: bool, half: u32) -> u64 {
    if high {
        (v & 0xffff_ffff) | ((half as u64) << 32)
    } else {
        (v & !0xffff_ffff) | half as u64
    }
}

impl<M: GuestMemory, D: VirtioDevice<M>, I: IrqLine> VirtioMmio<M, D, I> {
    /// A transport in reset state.
    pub fn new(mem: M, device: D, irq: I) -> VirtioMmio<M, D, I> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| match Queue::new(max) {
                Ok(q) => Some(q),
                Err(e) => {
                    log::error!("virtio-mmio: bad queue size {max}: {e}");
                    None
                }
            })
            .collect();
        VirtioMmio {
            mem,
            device,
            irq,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            ignored_accesses: 0,
        }
    }

    /// The device.
    pub const fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably (host-side configuration).
    pub const fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The guest memory.
    pub const fn memory(&self) -> &M {
        &self.mem
    }

    /// The device status register.
    pub const fn status(&self) -> u32 {
        self.status
    }

    /// The interrupt status register.
    pub const fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The features the driver accepted.
    pub const fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Accesses ignored (bad width, alignment, offset or state).
    pub const fn ignored_accesses(&self) -> u64 {
        self.ignored_accesses
    }

    /// Whether the driver is running the device (DRIVER_OK, no error).
    pub const fn is_active(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & (status::DEVICE_NEEDS_RESET | status::FAILED) == 0
    }

    /// Runs `f` on the device (host-side work such as injecting input) with
    /// the queues when the device is active (an empty slice otherwise), and
    /// interrupts the driver if `f` says so.
    pub fn with_device<R>(&mut self, f: impl FnOnce(&mut D, &M, &mut [Queue]) -> R) -> R
    where
        R: Into<bool> + Copy,
    {
        let active = self.is_active();
        let queues: &mut [Queue] = if active { &mut self.queues } else { &mut [] };
        let r = f(&mut self.device, &self.mem, queues);
        if r.into() {
            self.raise(INT_VRING);
        }
        r
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        self.irq.set_level(true);
    }

    fn ignore(&mut self, what: &str, offset: u64) {
        self.ignored_accesses = self.ignored_accesses.saturating_add(1);
        if self.ignored_accesses.is_power_of_two() {
            log::debug!("virtio-mmio: ignored {what} at {offset:#x}");
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
    }

    /// A driver read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(c) = offset.checked_sub(CONFIG_OFFSET) {
            self.device.read_config(c, data);
            return;
        }
        let Ok(out) = <&mut [u8; 4]>::try_from(data) else {
            self.ignore("read of bad width", offset);
            return;
        };
        if !offset.is_multiple_of(4) {
            *out = [0; 4];
            self.ignore("unaligned read", offset);
            return;
        }
        let sel = self.queue_sel;
        let v = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let f = self.device.device_features();
                match self.device_features_sel {
                    0 => u32::try_from(f & 0xffff_ffff).unwrap_or(0),
                    1 => u32::try_from(f >> 32).unwrap_or(0),
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => usize::try_from(sel)
                .ok()
                .and_then(|i| self.queues.get(i))
                .map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => usize::try_from(sel)
                .ok()
                .and_then(|i| self.queues.get(i))
                .map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => 0,
            _ => {
                self.ignore("read of write-only or unknown register", offset);
                0
            }
        };
        *out = v.to_le_bytes();
    }

    /// A driver write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(c) = offset.checked_sub(CONFIG_OFFSET) {
            self.device.write_config(c, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.ignore("write of bad width", offset);
            return;
        };
        if !offset.is_multiple_of(4) {
            self.ignore("unaligned write", offset);
            return;
        }
        let v = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 || self.driver_features_sel > 1 {
                    self.ignore("feature write after FEATURES_OK", offset);
                } else {
                    self.driver_features =
                        set_half(self.driver_features, self.driver_features_sel == 1, v);
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_field(offset, v),
            reg::QUEUE_READY => match self.selected_queue() {
                Some(q) => q.set_ready(v == 1),
                None => self.ignore("QueueReady of a missing queue", offset),
            },
            reg::QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => {
                self.interrupt_status &= !v;
                if self.interrupt_status == 0 {
                    self.irq.set_level(false);
                }
            }
            reg::STATUS => self.write_status(v),
            reg::SHM_SEL => {}
            reg::QUEUE_RESET => self.ignore("QueueReset (not offered)", offset),
            _ => self.ignore("write of read-only or unknown register", offset),
        }
    }

    fn write_queue_field(&mut self, offset: u64, v: u32) {
        if self.status & status::DRIVER_OK != 0 {
            self.ignore("queue setup after DRIVER_OK", offset);
            return;
        }
        let Some(q) = self.selected_queue() else {
            self.ignore("setup of a missing queue", offset);
            return;
        };
        if q.ready() {
            self.ignore("setup of a ready queue", offset);
            return;
        }
        match offset {
            reg::QUEUE_NUM => match u16::try_from(v) {
                Ok(n) => q.set_size(n),
                Err(_) => self.ignore("queue size beyond u16", offset),
            },
            reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
            reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
            reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
            reg::QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => {}
        }
    }

    fn notify(&mut self, v: u32) {
        if !self.is_active() {
            self.ignore("notify before DRIVER_OK", reg::QUEUE_NOTIFY);
            return;
        }
        let index = v & 0xffff;
        if self.device.queue_notify(&self.mem, &mut self.queues, index) {
            self.raise(INT_VRING);
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & super::VIRTIO_F_VERSION_1 != 0;
            if !ok {
                log::debug!(
                    "virtio-mmio: refusing features {:#x} (offered {offered:#x})",
                    self.driver_features
                );
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            if new & status::FEATURES_OK == 0 {
                log::debug!("virtio-mmio: DRIVER_OK without FEATURES_OK");
                new = (new & !status::DRIVER_OK) | status::DEVICE_NEEDS_RESET;
                self.status = new;
                return;
            }
            self.status = new;
            for q in &mut self.queues {
                q.set_event_idx(false);
            }
            if self.device.activate(&self.mem, &mut self.queues) {
                self.raise(INT_VRING);
            }
            return;
        }
        self.status = new;
    }

    /// Device reset (Status written 0).
    pub fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        if self.interrupt_status != 0 {
            self.interrupt_status = 0;
            self.irq.set_level(false);
        }
    }
}
