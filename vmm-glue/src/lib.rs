//! Glue between the QXL device, the SPICE server and a rust-vmm hypervisor.
//!
//! Modules:
//! - [`scene`]: synthetic guests (the demo desktop, a PNG slideshow).
//! - [`demo`]: the demo VMM (real device, synthetic guest, SPICE server).
//! - [`record_replay`]: replaying a real guest's `SPICE_REPLAY` recording through the device.
//! - [`cli`]: command-line options (QEMU `-spice` names).
//! - [`pci`]: a PCI host bridge (configuration mechanism #1) and bus 0.
//! - [`kvm`]: a minimal KVM VM with the QXL device on that bus (BARs as KVM
//!   memory slots, irqfd with resample, notify ioeventfds).
//! - [`event_handler`]: the event-manager subscriber that consumes the rings.
//! - [`boot`]: `qxl-vmm boot`, a Linux guest (bzImage/PVH) with the QXL device and a serial console.
//! - [`error`]: the crate's error type.
//! - [`input`]: the SPICE inputs channel → virtio-input keyboard, tablet and mouse.
//! - [`virtio`]: virtio-mmio windows on the VM's bus (the input devices of `qxl-vmm boot`).

pub mod boot;
pub mod cli;
pub mod demo;
pub mod error;
pub mod event_handler;
pub mod kvm;
pub mod pci;
pub mod record_replay;
pub mod scene;

pub use error::{Error, Result};
pub mod input;
pub mod virtio;
