//! The inputs channel: keyboard and mouse from the client to the VMM.
//!
//! # Primer
//!
//! The server opens with `INPUTS_INIT {keyboard_modifiers u16}`. The client
//! then sends KEY_DOWN/KEY_UP {code u32} (scan code set 1 bytes packed
//! little-endian), KEY_SCANCODE (raw set-1 bytes, the whole body),
//! KEY_MODIFIERS {u16}, MOUSE_MOTION {dx i32, dy i32, buttons u16},
//! MOUSE_POSITION {x u32, y u32, buttons u16, display u8}, MOUSE_PRESS and
//! MOUSE_RELEASE {button u8, buttons u16}. After every 4 motion/position
//! messages (`SPICE_INPUT_MOTION_ACK_BUNCH`) the server answers
//! `MOUSE_MOTION_ACK`; the client stops sending motion while 8 are unacked.
//!
//! Everything is delivered, in order, to the VMM's [`InputSink`].

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::client_msg::{self, ClientMsg};
use super::{Conn, handle_base, read_loop};
use crate::Error;
use crate::inputs::{InputSink, buttons};
use crate::server::Shared;
use crate::wire::{MessageWriter, Writer, channel_type, msg_inputs};

/// Largest client message on the inputs channel.
const MAX_INPUTS_MSG: u32 = 256;
/// `SPICE_INPUT_MOTION_ACK_BUNCH`.
pub const MOTION_ACK_BUNCH: u32 = 4;

/// The mask bit of a `SpiceMouseButton` (LEFT 1 … EXTRA 7), 0 for unknown ones.
pub const fn button_bit(button: u8) -> u16 {
    match button {
        1 => buttons::LEFT,
        2 => buttons::MIDDLE,
        3 => buttons::RIGHT,
        4 => buttons::UP,
        5 => buttons::DOWN,
        6 => buttons::SIDE,
        7 => buttons::EXTRA,
        _ => 0,
    }
}

/// Splits raw set-1 bytes into key events `(code packed LE, is_release)`.
pub fn split_scancodes(raw: &[u8]) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let len = match b {
            0xe0 => 2,
            0xe1 => 3,
            _ => 1,
        };
        let Some(seq) = raw.get(i..i + len) else {
            break; // incomplete trailing prefix: ignored
        };
        let mut code = 0u32;
        for (k, &byte) in seq.iter().enumerate() {
            code |= u32::from(byte) << (8 * k);
        }
        let release = seq.get(1).copied().unwrap_or(b) & 0x80 != 0;
        out.push((code, release));
        i += len;
    }
    out
}

fn with_sink(shared: &Shared, f: impl FnOnce(&mut dyn InputSink)) {
    let mut s = shared.inputs.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut **s);
}

/// Runs an inputs channel connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: &Conn) -> Result<(), Error> {
    let out: SharedWriter = Arc::new(Mutex::new(MessageWriter::new(
        conn.stream.try_clone()?,
        conn.header,
    )));
    {
        // INIT and registration under the registry lock, so that a concurrent
        // set_keyboard_modifiers is either in INIT or sent after it.
        let mut reg = shared
            .inputs_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut w = Writer::new();
        w.u16(shared.keyboard_modifiers.load(Ordering::Acquire));
        lock(&out).send(msg_inputs::INIT, &w.finish())?;
        *reg = Some(Arc::clone(&out));
    }
    let result = serve(shared, conn, &out);
    let mut reg = shared
        .inputs_writer
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if reg.as_ref().is_some_and(|w| Arc::ptr_eq(w, &out)) {
        *reg = None;
    }
    result
}

/// An inputs connection's writer, shared with `SpiceServer::set_keyboard_modifiers`.
pub type SharedWriter = Arc<Mutex<MessageWriter<TcpStream>>>;

fn lock(w: &SharedWriter) -> MutexGuard<'_, MessageWriter<TcpStream>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends KEY_MODIFIERS to the current inputs connection, if any.
pub(crate) fn push_modifiers(shared: &Shared, modifiers: u16) {
    let reg = shared
        .inputs_writer
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(w) = reg.as_ref() {
        let mut b = Writer::new();
        b.u16(modifiers);
        if let Err(e) = lock(w).send(msg_inputs::KEY_MODIFIERS, &b.finish()) {
            log::debug!("KEY_MODIFIERS not sent: {e}");
        }
    }
}

fn serve(shared: &Arc<Shared>, conn: &Conn, out: &SharedWriter) -> Result<(), Error> {
    let mut motions: u32 = 0;
    let end = read_loop(&conn.stream, conn.header, MAX_INPUTS_MSG, |msg| {
        if handle_base::<()>(&msg, None)? {
            return Ok(());
        }
        let mut motion = false;
        match client_msg::decode(channel_type::INPUTS, msg.ty, &msg.body)? {
            ClientMsg::KeyDown(code) => with_sink(shared, |s| s.key_down(code)),
            ClientMsg::KeyUp(code) => with_sink(shared, |s| s.key_up(code)),
            ClientMsg::KeyScancode(raw) => {
                let events = split_scancodes(&raw);
                with_sink(shared, |s| {
                    for (code, release) in events {
                        if release {
                            s.key_up(code);
                        } else {
                            s.key_down(code);
                        }
                    }
                });
            }
            ClientMsg::KeyModifiers(m) => with_sink(shared, |s| s.modifiers(m)),
            ClientMsg::MouseMotion { dx, dy, buttons } => {
                with_sink(shared, |s| s.pointer_relative(dx, dy, buttons));
                motion = true;
            }
            ClientMsg::MousePosition {
                x,
                y,
                buttons,
                display,
            } => {
                with_sink(shared, |s| s.pointer_absolute(x, y, buttons, display));
                motion = true;
            }
            ClientMsg::MousePress { button, buttons } => {
                with_sink(shared, |s| s.buttons(buttons | button_bit(button)));
            }
            ClientMsg::MouseRelease { button, buttons } => {
                with_sink(shared, |s| s.buttons(buttons & !button_bit(button)));
            }
            other => log::debug!("inputs: ignoring message {other:?}"),
        }
        if motion {
            motions = motions.wrapping_add(1);
            if motions.is_multiple_of(MOTION_ACK_BUNCH) {
                lock(out).send(msg_inputs::MOUSE_MOTION_ACK, &[])?;
            }
        }
        Ok(())
    });
    Err(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scancodes() {
        assert_eq!(
            split_scancodes(&[0x1e, 0x9e, 0xe0, 0x1d, 0xe0, 0x9d, 0xe0]),
            vec![(0x1e, false), (0x9e, true), (0x1de0, false), (0x9de0, true)]
        );
        assert_eq!(
            split_scancodes(&[0xe1, 0x1d, 0x45]),
            vec![(0x45_1de1, false)]
        );
    }
}
