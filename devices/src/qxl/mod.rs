//! The QXL paravirtual display device.
//!
//! # Primer on QXL
//!
//! QXL is a PCI display device (vendor 0x1b36, device 0x0100) designed for
//! SPICE. Instead of a framebuffer that the host scrapes, the guest driver sends
//! *commands* — draw operations, surface create/destroy, cursor updates — that
//! the host forwards to remote clients with little work.
//!
//! The device exposes four BARs:
//!
//! - **BAR0, RAM**: the primary surface area, then "device RAM" pages where the
//!   driver places commands, images and other structures, and at its very end the
//!   `QXLRam` header (interrupt registers, the command, cursor and release rings,
//!   and parameter blocks for port writes).
//! - **BAR1, VRAM** (and optionally **BAR4**, a 64-bit view of a larger VRAM):
//!   memory for off-screen surfaces.
//! - **BAR2, ROM**: read-only `QXLRom` with the device parameters and the mode list.
//! - **BAR3, I/O**: byte-wide command ports (`QXL_IO_*`).
//!
//! The guest produces `QXLCommand`s into the command ring (and cursor commands
//! into the cursor ring) and kicks `QXL_IO_NOTIFY_CMD` / `QXL_IO_NOTIFY_CURSOR`.
//! The device consumes them, decodes the structures they point at through the
//! memslot table ([`memslot`]), and, once it no longer needs a command, gives it
//! back through the release ring, chaining released ids through the commands'
//! own `release_info` fields. Interrupt bits are OR-ed into `int_pending` in the
//! RAM header; the INTx line is asserted while `int_pending & int_mask != 0`.
//!
//! Everything the guest can write is hostile input: ring indices, memslot ids and
//! generations, offsets, chunk chains, image sizes, surface ids and rectangles
//! are all checked before use, every guest structure is read once into host
//! memory, and a bad command is logged, counted and dropped.

pub mod guest;
pub mod memslot;

pub mod abi;
pub mod chunks;
pub mod decode;
pub mod device;
pub mod metrics;
pub mod pci;
pub mod ram;
pub mod release;
pub mod replay;
pub mod ring;
pub mod rom;
pub mod spice_record;

#[cfg(any(test, feature = "test-utils"))]
pub mod mock;

pub use device::{IrqLine, Mode, QxlConfig, QxlDevice};
pub use metrics::{Metrics, MetricsSnapshot};
