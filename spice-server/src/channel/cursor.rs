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
//! (ALPHA: width×height×4 bytes B,G,R,A).
//!
//! # Cursor cache
//! Each connection tracks the client's cursor cache ([`CursorCache`], 256
//! entries, LRU, like spice-server's `CLIENT_CURSOR_CACHE_SIZE`): a shape
//! whose `unique` is non-zero is sent once with `CACHE_ME` and afterwards as
//! `FROM_CACHE` with its header only. A `unique` the guest reuses for a
//! different shape is sent in full again (the client replaces its entry).
//! Evicting an entry sends `INVAL_ONE` before the message that needs the
//! room. spice-gtk clears its cache on INIT and RESET, and so does the
//! tracker; each connection starts with an empty cache.

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
/// `SPICE_CURSOR_FLAGS_CACHE_ME`.
pub const CURSOR_FLAGS_CACHE_ME: u16 = 2;
/// `SPICE_CURSOR_FLAGS_FROM_CACHE`.
pub const CURSOR_FLAGS_FROM_CACHE: u16 = 4;
/// `SPICE_MSG_CURSOR_INVAL_ONE`.
pub const INVAL_ONE: u16 = 107;
/// `SPICE_MSG_CURSOR_INVAL_ALL`.
pub const INVAL_ALL: u16 = 108;
/// Cursors a client caches (`CLIENT_CURSOR_CACHE_SIZE`).
pub const CURSOR_CACHE_ENTRIES: usize = 256;

/// Server-side copy of a client's cursor cache.
#[derive(Debug, Default)]
pub struct CursorCache {
    /// unique → (content hash, LRU tick).
    entries: std::collections::HashMap<u64, (u64, u64)>,
    lru: std::collections::BTreeMap<u64, u64>,
    tick: u64,
    /// Evicted uniques the client has not been told about.
    evicted: Vec<u64>,
    /// Shapes sent from the cache so far.
    pub hits: u64,
}

impl CursorCache {
    /// Forgets everything (the client cleared its cache).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.lru.clear();
        self.evicted.clear();
    }

    /// The flags a shape goes with: `FROM_CACHE` (header only), `CACHE_ME`
    /// or 0 (uncacheable, `unique` 0).
    pub fn flags_for(&mut self, c: &Cursor) -> u16 {
        if c.unique == 0 {
            return 0;
        }
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (c.kind as u8, c.width, c.height, c.hot_spot_x, c.hot_spot_y).hash(&mut h);
            c.data.hash(&mut h);
            h.finish()
        };
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(&c.unique) {
            self.lru.remove(&e.1);
            e.1 = tick;
            self.lru.insert(tick, c.unique);
            if e.0 == hash {
                self.hits += 1;
                return CURSOR_FLAGS_FROM_CACHE;
            }
            e.0 = hash;
            return CURSOR_FLAGS_CACHE_ME;
        }
        while self.entries.len() >= CURSOR_CACHE_ENTRIES {
            let Some((t, u)) = self.lru.iter().next().map(|(t, u)| (*t, *u)) else {
                break;
            };
            self.lru.remove(&t);
            self.entries.remove(&u);
            self.evicted.push(u);
        }
        self.entries.insert(c.unique, (hash, tick));
        self.lru.insert(tick, c.unique);
        CURSOR_FLAGS_CACHE_ME
    }

    /// Uniques evicted since the last call (send INVAL_ONE for each first).
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }
}

fn point16(w: &mut Writer, p: Point16) {
    w.i16(p.x).i16(p.y);
}

/// Appends a `SpiceCursor` (always in full, without cache flags).
pub fn write_cursor(w: &mut Writer, shape: Option<&Cursor>) {
    write_cursor_flags(w, shape, 0);
}

/// Appends a `SpiceCursor` with cache `flags` (`FROM_CACHE`: header only).
pub fn write_cursor_flags(w: &mut Writer, shape: Option<&Cursor>, flags: u16) {
    match shape {
        None => {
            w.u16(CURSOR_FLAGS_NONE);
        }
        Some(c) => {
            w.u16(flags)
                .u64(c.unique)
                .u8(c.kind as u8)
                .u16(c.width)
                .u16(c.height)
                .u16(c.hot_spot_x)
                .u16(c.hot_spot_y);
            if flags & CURSOR_FLAGS_FROM_CACHE == 0 {
                w.bytes(&c.data);
            }
        }
    }
}

/// Builds the body of a cursor message for an item, without the cache.
pub fn item_body(item: &CursorItem) -> (u16, Vec<u8>) {
    item_body_cached(item, None)
}

/// Builds the body of a cursor message for an item, using and updating the
/// client's cursor cache when given (INIT and RESET clear it, as the client
/// does).
pub fn item_body_cached(item: &CursorItem, mut cache: Option<&mut CursorCache>) -> (u16, Vec<u8>) {
    if matches!(item, CursorItem::Init(_) | CursorItem::Reset)
        && let Some(c) = cache.as_deref_mut()
    {
        c.clear();
    }
    let mut flags_for = |shape: Option<&Cursor>| match (shape, cache.as_deref_mut()) {
        (Some(s), Some(c)) => c.flags_for(s),
        _ => 0,
    };
    let mut w = Writer::new();
    let ty = match item {
        CursorItem::Init(s) => {
            let f = flags_for(s.shape.as_deref());
            init(&mut w, s, f);
            msg_cursor::INIT
        }
        CursorItem::Set(s) => {
            point16(&mut w, s.position);
            w.u8(u8::from(s.visible));
            let f = flags_for(s.shape.as_deref());
            write_cursor_flags(&mut w, s.shape.as_deref(), f);
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

fn init(w: &mut Writer, s: &CursorState, flags: u16) {
    point16(w, s.position);
    w.u16(s.trail.0).u16(s.trail.1);
    w.u8(u8::from(s.visible && s.shape.is_some()));
    write_cursor_flags(w, s.shape.as_deref(), flags);
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
    let mut cache = CursorCache::default();
    while let Some(item) = outbox.pop() {
        // In client mouse mode the client draws the pointer where the user's
        // mouse is: guest moves are not forwarded (spice-server does the same).
        if matches!(item, CursorItem::Move(_))
            && shared.mouse_mode.load(std::sync::atomic::Ordering::Acquire)
                == crate::server::MOUSE_MODE_CLIENT
        {
            continue;
        }
        let (ty, body) = item_body_cached(&item, Some(&mut cache));
        let mut sent = Ok(());
        for u in cache.take_evicted() {
            let mut w = Writer::new();
            w.u64(u);
            sent = sent.and_then(|()| out.send(INVAL_ONE, &w.finish()));
        }
        if let Err(e) = sent.and_then(|()| out.send(ty, &body)) {
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

    fn shape(unique: u64, fill: u8) -> CursorState {
        CursorState {
            shape: Some(Arc::new(Cursor {
                unique,
                kind: CursorType::Alpha,
                width: 2,
                height: 1,
                hot_spot_x: 0,
                hot_spot_y: 0,
                data: vec![fill; 8],
            })),
            position: Point16 { x: 0, y: 0 },
            visible: true,
            trail: (0, 0),
        }
    }

    #[test]
    fn cursor_cache_hits_replaces_and_evicts() {
        let mut c = CursorCache::default();
        let (_, b) = item_body_cached(&CursorItem::Set(shape(7, 1)), Some(&mut c));
        assert_eq!(&b[5..7], &CURSOR_FLAGS_CACHE_ME.to_le_bytes());
        assert_eq!(b.len(), 24 + 8);
        let (_, b) = item_body_cached(&CursorItem::Set(shape(7, 1)), Some(&mut c));
        assert_eq!(&b[5..7], &CURSOR_FLAGS_FROM_CACHE.to_le_bytes());
        assert_eq!(b.len(), 24, "header only");
        // same unique, other pixels: sent again in full
        let (_, b) = item_body_cached(&CursorItem::Set(shape(7, 2)), Some(&mut c));
        assert_eq!(&b[5..7], &CURSOR_FLAGS_CACHE_ME.to_le_bytes());
        // unique 0 is never cached
        let (_, b) = item_body_cached(&CursorItem::Set(shape(0, 1)), Some(&mut c));
        assert_eq!(&b[5..7], &0u16.to_le_bytes());
        for u in 100..100 + CURSOR_CACHE_ENTRIES as u64 {
            item_body_cached(&CursorItem::Set(shape(u, 3)), Some(&mut c));
        }
        assert_eq!(c.take_evicted(), vec![7]);
        // INIT clears (the client clears too)
        item_body_cached(&CursorItem::Init(shape(100, 3)), Some(&mut c));
        assert_eq!(c.entries.len(), 1);
    }
}
