//! The cursor channel: the guest's pointer shape and position.
//!
//! # Primer
//!
//! After `SET_ACK` the server sends `CURSOR_INIT` {position Point16,
//! trail_length u16, trail_frequency u16, visible u8, Cursor}, then `SET`
//! {position, visible u8, Cursor}, `MOVE` {position}, `HIDE`, `TRAIL`,
//! `RESET` as the guest changes its cursor. A `Cursor` is
//! `flags u16` (NONE 1 = no shape) and, when a shape is present, a header
//! {unique u64, type u8, width u16, height u16, hot_spot_x u16,
//! hot_spot_y u16} followed by the pixel data up to the end of the message
//! (ALPHA: width×height×4 bytes B,G,R,A). This server does not use the cursor
//! cache: shapes are always sent in full, without CACHE_ME.

use std::sync::Arc;

use super::outbox::Outbox;
use super::{Conn, handle_base, log_end, read_loop};
use crate::Error;
use crate::command::{Cursor, Point16};
use crate::server::Shared;
use crate::wire::{MessageWriter, Writer, msg_base, msg_cursor};
use crate::worker::{CURSOR_OUTBOX_CAP, CursorItem, CursorState};

/// Largest client message on the cursor channel.
const MAX_CURSOR_MSG: u32 = 1024;
/// `SPICE_CURSOR_FLAGS_NONE`.
const CURSOR_FLAGS_NONE: u16 = 1;

fn point16(w: &mut Writer, p: Point16) {
    w.i16(p.x).i16(p.y);
}

/// Appends a `SpiceCursor`.
pub fn write_cursor(w: &mut Writer, shape: Option<&Cursor>) {
    match shape {
        None => {
            w.u16(CURSOR_FLAGS_NONE);
        }
        Some(c) => {
            w.u16(0)
                .u64(c.unique)
                .u8(c.kind as u8)
                .u16(c.width)
                .u16(c.height)
                .u16(c.hot_spot_x)
                .u16(c.hot_spot_y)
                .bytes(&c.data);
        }
    }
}

/// Builds the body of a cursor message for an item.
pub fn item_body(item: &CursorItem) -> (u16, Vec<u8>) {
    let mut w = Writer::new();
    let ty = match item {
        CursorItem::Init(s) => {
            init(&mut w, s);
            msg_cursor::INIT
        }
        CursorItem::Set(s) => {
            point16(&mut w, s.position);
            w.u8(u8::from(s.visible));
            write_cursor(&mut w, s.shape.as_deref());
            msg_cursor::SET
        }
        CursorItem::Move(p) => {
            point16(&mut w, *p);
            msg_cursor::MOVE
        }
        CursorItem::Hide => msg_cursor::HIDE,
        CursorItem::Trail(l, f) => {
            w.u16(*l).u16(*f);
            msg_cursor::TRAIL
        }
        CursorItem::Reset => msg_cursor::RESET,
    };
    (ty, w.finish())
}

fn init(w: &mut Writer, s: &CursorState) {
    point16(w, s.position);
    w.u16(s.trail.0).u16(s.trail.1);
    w.u8(u8::from(s.visible && s.shape.is_some()));
    write_cursor(w, s.shape.as_deref());
}

/// Runs a cursor channel connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: &Conn) -> Result<(), Error> {
    let outbox = Arc::new(Outbox::new(CURSOR_OUTBOX_CAP));
    let mut out = MessageWriter::new(conn.stream.try_clone()?, conn.header);
    let (generation, window) = outbox.start_ack();
    let mut w = Writer::new();
    w.u32(generation).u32(window);
    out.send(msg_base::SET_ACK, &w.finish())?;
    shared.display.add_cursor_client(Arc::clone(&outbox));

    let reader = {
        let outbox = Arc::clone(&outbox);
        let stream = conn.stream.try_clone()?;
        let header = conn.header;
        let name = conn.name();
        std::thread::Builder::new()
            .name("spice-cursor-rx".into())
            .spawn(move || {
                let end = read_loop(&stream, header, MAX_CURSOR_MSG, |msg| {
                    if !handle_base(&msg, Some(&*outbox))? {
                        log::debug!("cursor: ignoring message {}", msg.ty);
                    }
                    Ok(())
                });
                outbox.close();
                let _ = stream.shutdown(std::net::Shutdown::Both);
                log_end(&name, &end);
            })?
    };

    let mut result = Ok(());
    while let Some(item) = outbox.pop() {
        // In client mouse mode the client draws the pointer where the user's
        // mouse is: guest moves are not forwarded (spice-server does the same).
        if matches!(item, CursorItem::Move(_))
            && shared.mouse_mode.load(std::sync::atomic::Ordering::Acquire)
                == crate::server::MOUSE_MODE_CLIENT
        {
            continue;
        }
        let (ty, body) = item_body(&item);
        if let Err(e) = out.send(ty, &body) {
            result = Err(e);
            break;
        }
        outbox.sent(1);
    }
    outbox.close();
    conn.shutdown();
    let _ = reader.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CursorType;

    #[test]
    fn set_layout() {
        let c = Cursor {
            unique: 9,
            kind: CursorType::Alpha,
            width: 2,
            height: 1,
            hot_spot_x: 1,
            hot_spot_y: 0,
            data: vec![1; 8],
        };
        let (ty, b) = item_body(&CursorItem::Set(CursorState {
            shape: Some(Arc::new(c)),
            position: Point16 { x: 3, y: 4 },
            visible: true,
            trail: (0, 0),
        }));
        assert_eq!(ty, msg_cursor::SET);
        assert_eq!(b.len(), 24 + 8);
        assert_eq!(&b[7..15], &9u64.to_le_bytes());
        assert_eq!(b[15], 0);
        assert_eq!(&b[16..18], &2u16.to_le_bytes());
        let (ty, b) = item_body(&CursorItem::Init(CursorState::default()));
        assert_eq!((ty, b.len()), (msg_cursor::INIT, 11));
    }
}
