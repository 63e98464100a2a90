//! The main channel: session setup, channel list, mouse mode.
//!
//! # Primer
//!
//! Right after the link the server sends `MAIN_INIT` {session id, number of
//! displays, supported and current mouse modes, agent connected, agent
//! tokens, multimedia time, RAM hint}. The client stores the session id (all
//! its other channels link with it) and answers `ATTACH_CHANNELS`; only then
//! does the server send `CHANNELS_LIST`, and only then does the client open
//! the other channels. `MOUSE_MODE_REQUEST` switches between server (relative)
//! and client (absolute) mouse mode, answered by `MOUSE_MODE`.
//!
//! The server also sends `MULTI_MEDIA_TIME` after INIT and one `PING` after
//! the channel list (the client echoes it in a `PONG`).
//!
//! No guest agent is plumbed yet: INIT says "no agent, 0 tokens", and agent
//! messages from the client are counted and dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::client_msg::{self, ClientMsg};
use super::{Conn, handle_base, read_loop};
use crate::Error;
use crate::server::Shared;
use crate::wire::{MessageWriter, Writer, channel_type, msg_base, msg_main};

/// Largest client message on the main channel (agent data is ≤ 2048 bytes).
const MAX_MAIN_MSG: u32 = 8192;

/// The channels this server offers, as (type, id).
pub const CHANNELS: [(u8, u8); 3] = [
    (channel_type::DISPLAY, 0),
    (channel_type::CURSOR, 0),
    (channel_type::INPUTS, 0),
];

/// Builds the MAIN_INIT body.
pub fn init_body(
    session_id: u32,
    supported_modes: u16,
    current_mode: u16,
    mm_time: u32,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(32);
    w.u32(session_id)
        .u32(1) // display_channels_hint
        .u32(u32::from(supported_modes))
        .u32(u32::from(current_mode))
        .u32(0) // agent_connected
        .u32(0) // agent_tokens
        .u32(mm_time)
        .u32(0); // ram_hint
    w.finish()
}

/// Runs a main channel connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: &Conn) -> Result<(), Error> {
    let mut out = MessageWriter::new(conn.stream.try_clone()?, conn.header);
    out.send(
        msg_main::INIT,
        &init_body(
            conn.session_id,
            shared.supported_mouse_modes(),
            shared.mouse_mode.load(Ordering::Acquire),
            shared.mm_time(),
        ),
    )?;
    let mut mm = Writer::new();
    mm.u32(shared.mm_time());
    out.send(msg_main::MULTI_MEDIA_TIME, &mm.finish())?;
    let mut agent_msgs: u64 = 0;
    let end = read_loop(&conn.stream, conn.header, MAX_MAIN_MSG, |msg| {
        if handle_base::<()>(&msg, None)? {
            return Ok(());
        }
        match client_msg::decode(channel_type::MAIN, msg.ty, &msg.body)? {
            ClientMsg::AttachChannels => {
                let mut w = Writer::new();
                w.u32(u32::try_from(CHANNELS.len()).unwrap_or(0));
                for (t, i) in CHANNELS {
                    w.u8(t).u8(i);
                }
                out.send(msg_main::CHANNELS_LIST, &w.finish())?;
                // One ping (id 1, timestamp in ns since start, no padding): the
                // client's PONG is handled with the base messages.
                let mut p = Writer::new();
                p.u32(1).u64(shared.uptime_ns());
                out.send(msg_base::PING, &p.finish())
            }
            ClientMsg::MouseModeRequest(mode) => {
                let supported = shared.supported_mouse_modes();
                if mode.count_ones() == 1 && supported & mode != 0 {
                    shared.mouse_mode.store(mode, Ordering::Release);
                } else {
                    log::info!("client asked for unsupported mouse mode {mode}");
                }
                let mut w = Writer::new();
                w.u16(supported)
                    .u16(shared.mouse_mode.load(Ordering::Acquire));
                out.send(msg_main::MOUSE_MODE, &w.finish())
            }
            ClientMsg::ClientInfo { .. } | ClientMsg::AgentStart(_) | ClientMsg::AgentToken(_) => {
                Ok(())
            }
            ClientMsg::AgentData(_) => {
                agent_msgs = agent_msgs.saturating_add(1);
                if agent_msgs == 1 {
                    log::info!("agent data from the client dropped: no agent attached");
                }
                Ok(())
            }
            other => {
                log::debug!("main: ignoring message {other:?}");
                Ok(())
            }
        }
    });
    Err(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_layout() {
        let b = init_body(0x1234, 3, 2, 77);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..4], &0x1234u32.to_le_bytes());
        assert_eq!(&b[8..12], &3u32.to_le_bytes());
        assert_eq!(&b[12..16], &2u32.to_le_bytes());
        assert_eq!(&b[24..28], &77u32.to_le_bytes());
    }
}
