//! SPICE channels: one TCP connection each, after the link handshake.
//!
//! # Primer
//!
//! A SPICE session is one *main* channel plus one connection per other
//! channel (display, cursor, inputs, ...), all tied together by the session id
//! the server hands out in `SPICE_MSG_MAIN_INIT`. Every channel understands
//! the base messages (ids below 100: ACK_SYNC/ACK for flow control, PONG,
//! DISCONNECTING, migration); channel-specific ids start at 101.
//!
//! Threads: main and inputs are request/response and run on one thread each.
//! Display and cursor are fed by the display worker through an
//! [`outbox::Outbox`]: their connection thread writes, and a helper thread
//! reads (ACKs, DISPLAY_INIT, ...). Any read or write error, or a message that
//! breaks the protocol, ends the connection (both threads) with a log line;
//! nothing a client sends can reach the display worker's state or the device.

pub mod client_msg;
pub mod cursor;
pub mod display;
pub mod inputs;
pub mod main;
pub mod outbox;

use std::net::{Shutdown, TcpStream};

use crate::Error;
use crate::link::LinkRequest;
use crate::wire::{HeaderKind, Message, read_message};
use client_msg::ClientMsg;
use outbox::Outbox;

/// A linked channel connection handed to a channel implementation.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Data header in use.
    pub header: HeaderKind,
    /// What the client asked for at link time (its caps included).
    pub request: LinkRequest,
    /// The session this connection belongs to.
    pub session_id: u32,
}

impl Conn {
    /// A short name for logs.
    pub fn name(&self) -> String {
        let peer = self
            .stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        format!(
            "{peer} {}:{}",
            channel_name(self.request.channel_type),
            self.request.channel_id
        )
    }

    /// Closes both directions of the socket (wakes any thread blocked on it).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A channel type's name for logs.
pub const fn channel_name(t: u8) -> &'static str {
    match t {
        1 => "main",
        2 => "display",
        3 => "inputs",
        4 => "cursor",
        5 => "playback",
        6 => "record",
        _ => "unknown",
    }
}

/// Handles a base message (type < 101). Returns `Ok(false)` for other types.
///
/// `ack` receives ACK_SYNC/ACK on flow-controlled channels.
pub fn handle_base<I>(msg: &Message, ack: Option<&Outbox<I>>) -> Result<bool, Error> {
    if msg.ty > 100 {
        return Ok(false);
    }
    // Every channel type decodes the base messages the same way.
    match client_msg::decode(client_msg::channel_type::MAIN, msg.ty, &msg.body)? {
        ClientMsg::AckSync(generation) => {
            if let Some(o) = ack {
                o.ack_sync(generation);
            }
        }
        ClientMsg::Ack => {
            if let Some(o) = ack {
                o.ack();
            }
        }
        ClientMsg::Pong { .. } => {}
        ClientMsg::Disconnecting => return Err(Error::Closed),
        ClientMsg::Migration(ty) => log::debug!("ignoring migration message {ty}"),
        other => log::debug!("ignoring unknown base message {other:?}"),
    }
    Ok(true)
}

/// Reads messages until an error; `f` handles each one.
///
/// Returns the error that ended the loop (`Error::Closed` for a clean close).
pub fn read_loop(
    stream: &TcpStream,
    header: HeaderKind,
    max_body: u32,
    mut f: impl FnMut(Message) -> Result<(), Error>,
) -> Error {
    let mut input = std::io::BufReader::with_capacity(16 * 1024, stream);
    loop {
        let msg = match read_message(&mut input, header, max_body) {
            Ok(m) => m,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Error::Closed;
            }
            Err(e) => return e,
        };
        if let Err(e) = f(msg) {
            return e;
        }
    }
}

/// Logs how a connection ended, quietly for ordinary closes.
pub fn log_end(name: &str, e: &Error) {
    match e {
        Error::Closed => log::debug!("{name}: closed"),
        Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            log::debug!("{name}: closed ({io})");
        }
        other => log::warn!("{name}: dropping client: {other}"),
    }
}
