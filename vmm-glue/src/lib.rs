//! Glue between the QXL device, the SPICE server and a rust-vmm hypervisor.
//!
//! Modules:
//! - [`replay`]: the QXL replay format and a player that drives the device from it.

pub mod replay;
