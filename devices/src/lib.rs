//! The guest-facing side of qxl-spice.
//!
//! This crate is the only one that reads guest memory. It models the QXL
//! paravirtual display device (`qxl-vga` / `qxl` in QEMU) as a pure state machine
//! over [`vm_memory::GuestMemory`]: PCI config space, BARs, the ROM and RAM
//! headers, the command/cursor/release rings, memslots, every I/O port and the
//! interrupt line. It decodes each guest command into the owned values of
//! [`spice_server::command`] and hands them to a [`spice_server::command::DisplaySink`].
//!
//! There is no KVM, `EventFd` or socket in here: the VMM glue (crate `vmm-glue`)
//! forwards port writes and BAR accesses, and implements the [`qxl::IrqLine`] trait.

pub mod error;
pub mod qxl;

pub use error::Error;
pub mod virtio_input;
