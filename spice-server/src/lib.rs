//! A pure-Rust SPICE server.
//!
//! This crate is the client-facing half of qxl-spice. It knows nothing of guest
//! memory or KVM: the `devices` crate decodes what a guest QXL driver writes into
//! the owned values of [`command`], and hands them to a [`command::DisplaySink`]
//! that this crate's display worker implements.
//!
//! Modules:
//! - [`command`]: the command model shared with the device (draw commands, surfaces,
//!   cursors, images), and the sink trait the device talks to.

pub mod codecs;
pub mod command;
pub mod error;

pub use error::Error;
