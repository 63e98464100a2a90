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
//! - [`server`]: the public entry point, [`SpiceServer::start`] with a [`ServerConfig`].
//! - [`wire`], [`link`], [`auth`]: message encoding, the link handshake, ticket auth.
//! - [`channel`]: main, display, cursor and inputs channels.
//! - [`worker`], [`canvas`]: the display worker (a [`DisplayHandle`] is its
//!   [`command::DisplaySink`]) and the software renderer.
//! - [`inputs`]: the [`InputSink`] trait the VMM implements for keyboard and mouse.

pub mod codecs;
pub mod command;
pub mod error;

pub mod auth;
pub mod canvas;
pub mod channel;
pub mod inputs;
pub mod link;
pub mod server;
pub mod wire;
pub mod worker;

pub use error::Error;
pub use inputs::{InputSink, NoInput};
pub use server::{
    ImageCompression, KeyboardModifiersHandle, ServerConfig, SpiceServer, WanCompression,
};
pub use worker::DisplayHandle;
