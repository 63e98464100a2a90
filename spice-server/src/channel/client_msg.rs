//! Typed decoding of every message a client sends after the link.
//!
//! # Primer
//!
//! After the link handshake each channel carries a stream of messages, each a
//! header (type and size) and a body. Types below 101 are the *base* messages
//! every channel shares (ACK, PONG, DISCONNECTING, migration); the others are
//! per channel. This module turns `(channel, type, body)` into a typed value
//! in one place, with a bounds-checked [`Reader`], so that every channel handler
//! works on validated values and the fuzz target `client_msg` exercises exactly
//! the code the server runs. A body shorter than its type needs is an error; a
//! longer one is accepted (later protocol versions append fields); an unknown
//! type decodes to [`ClientMsg::Unknown`] and is ignored by the handlers.

use crate::Error;
pub use crate::wire::channel_type;
use crate::wire::{Reader, msg_base, msg_display, msg_inputs, msg_main};

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// `ACK_SYNC`: the client's ACK generation.
    AckSync(u32),
    /// `ACK`: one window of messages consumed.
    Ack,
    /// `PONG`: answer to a ping.
    Pong {
        /// Ping id.
        id: u32,
        /// Timestamp echoed back.
        timestamp: u64,
    },
    /// `DISCONNECTING`: the client is leaving.
    Disconnecting,
    /// A migration message (ignored: migration is not supported).
    Migration(u16),
    /// Main `CLIENT_INFO`.
    ClientInfo {
        /// The client's cache size.
        cache_size: u64,
    },
    /// Main `ATTACH_CHANNELS`.
    AttachChannels,
    /// Main `MOUSE_MODE_REQUEST`.
    MouseModeRequest(u16),
    /// Main `AGENT_START` (with tokens).
    AgentStart(u32),
    /// Main `AGENT_TOKEN`.
    AgentToken(u32),
    /// Main `AGENT_DATA` (length of the data).
    AgentData(usize),
    /// Display `INIT`.
    DisplayInit {
        /// Pixmap cache id.
        cache_id: u8,
        /// Pixmap cache size in pixels.
        cache_size: i64,
        /// GLZ dictionary id.
        glz_id: u8,
        /// GLZ window size in pixels.
        glz_window: i32,
    },
    /// Display `PREFERRED_COMPRESSION`.
    PreferredCompression(u8),
    /// Display `STREAM_REPORT` (stream id).
    StreamReport(u32),
    /// Display `GL_DRAW_DONE`.
    GlDrawDone,
    /// Display `PREFERRED_VIDEO_CODEC_TYPE` (the codec list).
    PreferredVideoCodecs(Vec<u8>),
    /// Inputs `KEY_DOWN`.
    KeyDown(u32),
    /// Inputs `KEY_UP`.
    KeyUp(u32),
    /// Inputs `KEY_SCANCODE`: raw scan-code bytes.
    KeyScancode(Vec<u8>),
    /// Inputs `KEY_MODIFIERS`.
    KeyModifiers(u16),
    /// Inputs `MOUSE_MOTION`.
    MouseMotion {
        /// Horizontal motion.
        dx: i32,
        /// Vertical motion.
        dy: i32,
        /// Button state.
        buttons: u16,
    },
    /// Inputs `MOUSE_POSITION`.
    MousePosition {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
        /// Button state.
        buttons: u16,
        /// Display id.
        display: u8,
    },
    /// Inputs `MOUSE_PRESS`.
    MousePress {
        /// The button.
        button: u8,
        /// Button state.
        buttons: u16,
    },
    /// Inputs `MOUSE_RELEASE`.
    MouseRelease {
        /// The button.
        button: u8,
        /// Button state.
        buttons: u16,
    },
    /// A type this channel does not define (ignored).
    Unknown(u16),
}

/// The most scan-code bytes one `KEY_SCANCODE` may carry.
pub const MAX_SCANCODE_BYTES: usize = 4096;
/// The most codecs a `PREFERRED_VIDEO_CODEC_TYPE` may list.
pub const MAX_VIDEO_CODECS: usize = 64;

/// Decode one message of a channel of type `channel`.
pub fn decode(channel: u8, ty: u16, body: &[u8]) -> Result<ClientMsg, Error> {
    let mut r = Reader::new(body);
    if ty <= 100 {
        return Ok(match ty {
            msg_base::C_ACK_SYNC => ClientMsg::AckSync(r.u32()?),
            msg_base::C_ACK => ClientMsg::Ack,
            msg_base::C_PONG => ClientMsg::Pong {
                id: r.u32()?,
                timestamp: r.u64()?,
            },
            msg_base::C_DISCONNECTING => ClientMsg::Disconnecting,
            msg_base::C_MIGRATE_FLUSH_MARK | msg_base::C_MIGRATE_DATA => ClientMsg::Migration(ty),
            other => ClientMsg::Unknown(other),
        });
    }
    Ok(match (channel, ty) {
        (channel_type::MAIN, msg_main::C_CLIENT_INFO) => ClientMsg::ClientInfo {
            cache_size: r.u64()?,
        },
        (channel_type::MAIN, msg_main::C_ATTACH_CHANNELS) => ClientMsg::AttachChannels,
        (channel_type::MAIN, msg_main::C_MOUSE_MODE_REQUEST) => {
            ClientMsg::MouseModeRequest(r.u16()?)
        }
        (channel_type::MAIN, msg_main::C_AGENT_START) => ClientMsg::AgentStart(r.u32()?),
        (channel_type::MAIN, msg_main::C_AGENT_TOKEN) => ClientMsg::AgentToken(r.u32()?),
        (channel_type::MAIN, msg_main::C_AGENT_DATA) => ClientMsg::AgentData(body.len()),
        (channel_type::DISPLAY, msg_display::C_INIT) => {
            let cache_id = r.u8()?;
            let cache_size = i64::from_le_bytes(r.u64()?.to_le_bytes());
            let glz_id = r.u8()?;
            let glz_window = r.i32()?;
            ClientMsg::DisplayInit {
                cache_id,
                cache_size,
                glz_id,
                glz_window,
            }
        }
        (channel_type::DISPLAY, msg_display::C_PREFERRED_COMPRESSION) => {
            ClientMsg::PreferredCompression(r.u8()?)
        }
        (channel_type::DISPLAY, msg_display::C_STREAM_REPORT) => ClientMsg::StreamReport(r.u32()?),
        (channel_type::DISPLAY, msg_display::C_GL_DRAW_DONE) => ClientMsg::GlDrawDone,
        (channel_type::DISPLAY, msg_display::C_PREFERRED_VIDEO_CODEC_TYPE) => {
            let n = usize::from(r.u8()?);
            if n > MAX_VIDEO_CODECS {
                return Err(Error::Malformed("too many video codecs"));
            }
            ClientMsg::PreferredVideoCodecs(r.bytes(n)?.to_vec())
        }
        (channel_type::INPUTS, msg_inputs::C_KEY_DOWN) => ClientMsg::KeyDown(r.u32()?),
        (channel_type::INPUTS, msg_inputs::C_KEY_UP) => ClientMsg::KeyUp(r.u32()?),
        (channel_type::INPUTS, msg_inputs::C_KEY_SCANCODE) => {
            let raw = r.rest();
            ClientMsg::KeyScancode(
                raw.get(..raw.len().min(MAX_SCANCODE_BYTES))
                    .unwrap_or(&[])
                    .to_vec(),
            )
        }
        (channel_type::INPUTS, msg_inputs::C_KEY_MODIFIERS) => ClientMsg::KeyModifiers(r.u16()?),
        (channel_type::INPUTS, msg_inputs::C_MOUSE_MOTION) => ClientMsg::MouseMotion {
            dx: r.i32()?,
            dy: r.i32()?,
            buttons: r.u16()?,
        },
        (channel_type::INPUTS, msg_inputs::C_MOUSE_POSITION) => ClientMsg::MousePosition {
            x: r.u32()?,
            y: r.u32()?,
            buttons: r.u16()?,
            display: r.u8()?,
        },
        (channel_type::INPUTS, msg_inputs::C_MOUSE_PRESS) => ClientMsg::MousePress {
            button: r.u8()?,
            buttons: r.u16()?,
        },
        (channel_type::INPUTS, msg_inputs::C_MOUSE_RELEASE) => ClientMsg::MouseRelease {
            button: r.u8()?,
            buttons: r.u16()?,
        },
        (_, other) => ClientMsg::Unknown(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_decodes_each_channel() {
        assert_eq!(
            decode(
                channel_type::INPUTS,
                msg_inputs::C_KEY_DOWN,
                &[0x1e, 0, 0, 0]
            )
            .unwrap(),
            ClientMsg::KeyDown(0x1e)
        );
        assert_eq!(
            decode(
                channel_type::INPUTS,
                msg_inputs::C_MOUSE_POSITION,
                &[10, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0]
            )
            .unwrap(),
            ClientMsg::MousePosition {
                x: 10,
                y: 20,
                buttons: 1,
                display: 0
            }
        );
        let mut init = vec![1u8];
        init.extend_from_slice(&(20i64 << 20).to_le_bytes());
        init.push(1);
        init.extend_from_slice(&(1i32 << 20).to_le_bytes());
        assert!(matches!(
            decode(channel_type::DISPLAY, msg_display::C_INIT, &init).unwrap(),
            ClientMsg::DisplayInit {
                cache_id: 1,
                glz_window: 0x10_0000,
                ..
            }
        ));
        assert_eq!(
            decode(channel_type::MAIN, msg_main::C_MOUSE_MODE_REQUEST, &[2, 0]).unwrap(),
            ClientMsg::MouseModeRequest(2)
        );
        assert_eq!(
            decode(channel_type::CURSOR, 150, &[]).unwrap(),
            ClientMsg::Unknown(150)
        );
    }

    #[test]
    fn client_msg_short_bodies_are_errors() {
        decode(channel_type::INPUTS, msg_inputs::C_MOUSE_MOTION, &[0; 9]).unwrap_err();
        decode(channel_type::DISPLAY, msg_display::C_INIT, &[0; 13]).unwrap_err();
        decode(channel_type::MAIN, msg_base::C_PONG, &[0; 11]).unwrap_err();
        decode(
            channel_type::DISPLAY,
            msg_display::C_PREFERRED_VIDEO_CODEC_TYPE,
            &[3, 1, 2],
        )
        .unwrap_err();
    }
}
