//! SPICE wire encoding: bounds-checked readers, writers with pointer fix-ups,
//! data headers, capability sets and the protocol's numbers.
//!
//! # Primer
//!
//! Everything in a SPICE message is little-endian and packed (no padding).
//! A "pointer" field is a `u32` offset counted from the first byte of the
//! message *body* (the byte after the data header); 0 means NULL. Senders
//! append the pointed-to data after the fixed part, but a reader must only use
//! the offset.
//!
//! Every message travels behind a data header: the 18-byte full header
//! (`serial u64, type u16, size u32, sub_list u32`), or the 6-byte mini header
//! (`type u16, size u32`) when both peers announced
//! `SPICE_COMMON_CAP_MINI_HEADER` during the link. With the mini header the
//! serial is implicit (each side counts its messages from 1).
//!
//! Client input is hostile: [`Reader`] returns [`Error::Truncated`] instead of
//! panicking on every read, and [`read_message`] enforces a per-channel cap on
//! the announced body size *before* allocating.

use std::io::{Read, Write};

use crate::Error;
use crate::command::Rect;

/// `SPICE_MAGIC`: the bytes "REDQ" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"REDQ");
/// `SPICE_VERSION_MAJOR`.
pub const VERSION_MAJOR: u32 = 2;
/// `SPICE_VERSION_MINOR`.
pub const VERSION_MINOR: u32 = 2;

/// Size of `SpiceLinkHeader`.
pub const LINK_HEADER_SIZE: usize = 16;
/// Size of the fixed part of `SpiceLinkMess`.
pub const LINK_MESS_SIZE: usize = 18;
/// Size of the fixed part of `SpiceLinkReply`.
pub const LINK_REPLY_SIZE: usize = 178;
/// `SPICE_TICKET_PUBKEY_BYTES`: DER SubjectPublicKeyInfo of an RSA-1024 key.
pub const TICKET_PUBKEY_BYTES: usize = 162;
/// `SPICE_TICKET_KEY_PAIR_LENGTH / 8`: size of the encrypted ticket.
pub const TICKET_CIPHER_BYTES: usize = 128;
/// `SPICE_MAX_PASSWORD_LENGTH`.
pub const MAX_PASSWORD_LENGTH: usize = 60;
/// Largest link message (after the link header) a server accepts before auth.
pub const MAX_LINK_SIZE: u32 = 4096;
/// Largest number of capability words (common + channel) accepted before auth.
pub const MAX_CAPS_WORDS: u32 = 1024;

/// Size of `SpiceDataHeader`.
pub const FULL_HEADER_SIZE: usize = 18;
/// Size of `SpiceMiniDataHeader`.
pub const MINI_HEADER_SIZE: usize = 6;

/// Channel types (`SPICE_CHANNEL_*`).
pub mod channel_type {
    /// Main channel.
    pub const MAIN: u8 = 1;
    /// Display channel.
    pub const DISPLAY: u8 = 2;
    /// Inputs channel.
    pub const INPUTS: u8 = 3;
    /// Cursor channel.
    pub const CURSOR: u8 = 4;
    /// Audio playback.
    pub const PLAYBACK: u8 = 5;
    /// Audio record.
    pub const RECORD: u8 = 6;
}

/// Link errors (`SpiceLinkErr`).
pub mod link_err {
    /// Success.
    pub const OK: u32 = 0;
    /// Generic error.
    pub const ERROR: u32 = 1;
    /// Bad magic.
    pub const INVALID_MAGIC: u32 = 2;
    /// Malformed link message.
    pub const INVALID_DATA: u32 = 3;
    /// Unsupported major version.
    pub const VERSION_MISMATCH: u32 = 4;
    /// Bad ticket.
    pub const PERMISSION_DENIED: u32 = 7;
    /// Unknown session for a non-main channel.
    pub const BAD_CONNECTION_ID: u32 = 8;
    /// No such channel.
    pub const CHANNEL_NOT_AVAILABLE: u32 = 9;
}

/// Common capabilities (`SPICE_COMMON_CAP_*`).
pub mod common_cap {
    /// The client sends a `SpiceLinkAuthMechanism` before authenticating.
    pub const PROTOCOL_AUTH_SELECTION: u32 = 0;
    /// SPICE ticket (RSA) authentication.
    pub const AUTH_SPICE: u32 = 1;
    /// SASL authentication.
    pub const AUTH_SASL: u32 = 2;
    /// 6-byte data headers.
    pub const MINI_HEADER: u32 = 3;
}

/// Message types shared by every channel (`SPICE_MSG_*` / `SPICE_MSGC_*` below 100).
pub mod msg_base {
    /// S→C: set the ACK window.
    pub const SET_ACK: u16 = 3;
    /// S→C: ping.
    pub const PING: u16 = 4;
    /// S→C: server disconnects.
    pub const DISCONNECTING: u16 = 6;
    /// S→C: notification text.
    pub const NOTIFY: u16 = 7;
    /// C→S: acknowledge a SET_ACK generation.
    pub const C_ACK_SYNC: u16 = 1;
    /// C→S: one window of messages received.
    pub const C_ACK: u16 = 2;
    /// C→S: ping reply.
    pub const C_PONG: u16 = 3;
    /// C→S: migration flush mark.
    pub const C_MIGRATE_FLUSH_MARK: u16 = 4;
    /// C→S: migration data.
    pub const C_MIGRATE_DATA: u16 = 5;
    /// C→S: client disconnects.
    pub const C_DISCONNECTING: u16 = 6;
}

/// Main-channel message types.
pub mod msg_main {
    /// S→C: session init.
    pub const INIT: u16 = 103;
    /// S→C: channels list.
    pub const CHANNELS_LIST: u16 = 104;
    /// S→C: mouse mode.
    pub const MOUSE_MODE: u16 = 105;
    /// S→C: multimedia time.
    pub const MULTI_MEDIA_TIME: u16 = 106;
    /// C→S: client info (cache size).
    pub const C_CLIENT_INFO: u16 = 101;
    /// C→S: attach channels.
    pub const C_ATTACH_CHANNELS: u16 = 104;
    /// C→S: mouse mode request.
    pub const C_MOUSE_MODE_REQUEST: u16 = 105;
    /// C→S: agent start (tokens).
    pub const C_AGENT_START: u16 = 106;
    /// C→S: agent data.
    pub const C_AGENT_DATA: u16 = 107;
    /// C→S: agent tokens.
    pub const C_AGENT_TOKEN: u16 = 108;
}

/// Main-channel capabilities (`SPICE_MAIN_CAP_*`).
pub mod main_cap {
    /// Agent connected tokens message.
    pub const AGENT_CONNECTED_TOKENS: u32 = 2;
}

/// Display-channel message types.
pub mod msg_display {
    /// S→C: the primary is complete; show it.
    pub const MARK: u16 = 102;
    /// S→C: reset.
    pub const RESET: u16 = 103;
    /// S→C: invalidate every palette.
    pub const INVAL_ALL_PALETTES: u16 = 108;
    /// S→C: draw copy.
    pub const DRAW_COPY: u16 = 304;
    /// S→C: create a surface.
    pub const SURFACE_CREATE: u16 = 314;
    /// S→C: destroy a surface.
    pub const SURFACE_DESTROY: u16 = 315;
    /// C→S: display init (caches).
    pub const C_INIT: u16 = 101;
    /// C→S: stream report.
    pub const C_STREAM_REPORT: u16 = 102;
    /// C→S: preferred compression.
    pub const C_PREFERRED_COMPRESSION: u16 = 103;
    /// C→S: GL draw done.
    pub const C_GL_DRAW_DONE: u16 = 104;
    /// C→S: preferred video codecs.
    pub const C_PREFERRED_VIDEO_CODEC_TYPE: u16 = 105;
}

/// Display-channel capabilities (`SPICE_DISPLAY_CAP_*`).
pub mod display_cap {
    /// LZ4 image compression.
    pub const LZ4_COMPRESSION: u32 = 5;
    /// The client may send PREFERRED_COMPRESSION.
    pub const PREF_COMPRESSION: u32 = 6;
}

/// Cursor-channel message types.
pub mod msg_cursor {
    /// S→C: init with the current cursor.
    pub const INIT: u16 = 101;
    /// S→C: reset.
    pub const RESET: u16 = 102;
    /// S→C: set a shape.
    pub const SET: u16 = 103;
    /// S→C: move.
    pub const MOVE: u16 = 104;
    /// S→C: hide.
    pub const HIDE: u16 = 105;
    /// S→C: trail settings.
    pub const TRAIL: u16 = 106;
}

/// Inputs-channel message types.
pub mod msg_inputs {
    /// S→C: init with the keyboard modifiers.
    pub const INIT: u16 = 101;
    /// S→C: keyboard modifiers changed.
    pub const KEY_MODIFIERS: u16 = 102;
    /// S→C: motion ack.
    pub const MOUSE_MOTION_ACK: u16 = 111;
    /// C→S: key down.
    pub const C_KEY_DOWN: u16 = 101;
    /// C→S: key up.
    pub const C_KEY_UP: u16 = 102;
    /// C→S: lock modifiers.
    pub const C_KEY_MODIFIERS: u16 = 103;
    /// C→S: raw scancode bytes.
    pub const C_KEY_SCANCODE: u16 = 104;
    /// C→S: relative motion.
    pub const C_MOUSE_MOTION: u16 = 111;
    /// C→S: absolute position.
    pub const C_MOUSE_POSITION: u16 = 112;
    /// C→S: button press.
    pub const C_MOUSE_PRESS: u16 = 113;
    /// C→S: button release.
    pub const C_MOUSE_RELEASE: u16 = 114;
}

/// Inputs-channel capabilities (`SPICE_INPUTS_CAP_*`).
pub mod inputs_cap {
    /// The client may send KEY_SCANCODE.
    pub const KEY_SCANCODE: u32 = 0;
}

/// A capability set: cap `n` is bit `n % 32` of word `n / 32`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps(pub Vec<u32>);

impl Caps {
    /// A set with exactly these capabilities.
    pub fn from_caps(caps: &[u32]) -> Self {
        let mut c = Self::default();
        for &n in caps {
            c.set(n);
        }
        c
    }

    /// Adds capability `n`.
    pub fn set(&mut self, n: u32) {
        let word = usize::try_from(n / 32).unwrap_or(usize::MAX);
        if word >= MAX_CAPS_WORDS as usize {
            return;
        }
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1 << (n % 32);
        }
    }

    /// True when capability `n` is present.
    pub fn has(&self, n: u32) -> bool {
        usize::try_from(n / 32)
            .ok()
            .and_then(|w| self.0.get(w))
            .is_some_and(|w| w & (1 << (n % 32)) != 0)
    }

    /// Number of u32 words.
    pub fn words(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }
}

/// A bounds-checked little-endian reader over one message.
///
/// Every read returns [`Error::Truncated`] when the message is too short.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A reader at `offset` of the same buffer (a pointer field's target).
    pub fn at(&self, offset: u32) -> Result<Reader<'a>, Error> {
        let pos = usize::try_from(offset).map_err(|_| Error::Malformed("pointer"))?;
        if pos > self.buf.len() {
            return Err(Error::Truncated {
                offset: pos,
                needed: 0,
                len: self.buf.len(),
            });
        }
        Ok(Self { buf: self.buf, pos })
    }

    /// Current offset.
    pub const fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated {
            offset: self.pos,
            needed: n,
            len: self.buf.len(),
        })?;
        let s = self.buf.get(self.pos..end).ok_or(Error::Truncated {
            offset: self.pos,
            needed: n,
            len: self.buf.len(),
        })?;
        self.pos = end;
        Ok(s)
    }

    /// All remaining bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// `n` capability words (the caller has capped `n`).
    pub fn caps(&mut self, n: u32) -> Result<Caps, Error> {
        let n = usize::try_from(n).map_err(|_| Error::TooManyCaps(u64::from(n)))?;
        let bytes = n
            .checked_mul(4)
            .ok_or(Error::TooManyCaps(u64::try_from(n).unwrap_or(u64::MAX)))?;
        let raw = self.bytes(bytes)?;
        Ok(Caps(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

/// A reserved pointer field, filled by [`Writer::fill_ptr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct PtrSlot(usize);

/// A little-endian message-body builder with pointer fix-ups.
///
/// Offsets written by [`Writer::fill_ptr`] are relative to the start of the
/// body, as SPICE pointers are.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty body with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Current length (the offset the next byte gets).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends an `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends an `i16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Appends a `SpiceRect` (top, left, bottom, right).
    pub fn rect(&mut self, r: &Rect) -> &mut Self {
        self.i32(r.top).i32(r.left).i32(r.bottom).i32(r.right)
    }

    /// Reserves a pointer field (written as 0 = NULL until filled).
    pub fn ptr(&mut self) -> PtrSlot {
        let at = self.buf.len();
        self.u32(0);
        PtrSlot(at)
    }

    /// Points `slot` at the current end of the body.
    pub fn fill_ptr(&mut self, slot: PtrSlot) -> Result<(), Error> {
        let off = u32::try_from(self.buf.len()).map_err(|_| Error::MessageTooLarge {
            size: u64::try_from(self.buf.len()).unwrap_or(u64::MAX),
            max: u64::from(u32::MAX),
        })?;
        let dst = self
            .buf
            .get_mut(slot.0..slot.0 + 4)
            .ok_or(Error::Malformed("pointer slot"))?;
        dst.copy_from_slice(&off.to_le_bytes());
        Ok(())
    }

    /// The finished body.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Which data header a channel connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// `SpiceMiniDataHeader` (both peers announced MINI_HEADER).
    Mini,
    /// `SpiceDataHeader` with explicit serials.
    Full,
}

impl HeaderKind {
    /// Header size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::Mini => MINI_HEADER_SIZE,
            Self::Full => FULL_HEADER_SIZE,
        }
    }
}

/// Writes one message (header + body) and counts the serial.
#[derive(Debug)]
pub struct MessageWriter<W: Write> {
    out: W,
    kind: HeaderKind,
    serial: u64,
}

impl<W: Write> MessageWriter<W> {
    /// A writer whose first message gets serial 1.
    pub const fn new(out: W, kind: HeaderKind) -> Self {
        Self {
            out,
            kind,
            serial: 0,
        }
    }

    /// Number of messages sent so far (= serial of the last one).
    pub const fn serial(&self) -> u64 {
        self.serial
    }

    /// Sends one message.
    pub fn send(&mut self, ty: u16, body: &[u8]) -> Result<(), Error> {
        let size = u32::try_from(body.len()).map_err(|_| Error::MessageTooLarge {
            size: u64::try_from(body.len()).unwrap_or(u64::MAX),
            max: u64::from(u32::MAX),
        })?;
        self.serial = self.serial.wrapping_add(1);
        let mut hdr = [0u8; FULL_HEADER_SIZE];
        let hlen = match self.kind {
            HeaderKind::Mini => {
                hdr[0..2].copy_from_slice(&ty.to_le_bytes());
                hdr[2..6].copy_from_slice(&size.to_le_bytes());
                MINI_HEADER_SIZE
            }
            HeaderKind::Full => {
                hdr[0..8].copy_from_slice(&self.serial.to_le_bytes());
                hdr[8..10].copy_from_slice(&ty.to_le_bytes());
                hdr[10..14].copy_from_slice(&size.to_le_bytes());
                // sub_list stays 0.
                FULL_HEADER_SIZE
            }
        };
        // One write for small messages keeps the packet count low.
        if body.len() <= 4096 {
            let mut m = Vec::with_capacity(hlen + body.len());
            m.extend_from_slice(&hdr[..hlen]);
            m.extend_from_slice(body);
            self.out.write_all(&m)?;
        } else {
            self.out.write_all(&hdr[..hlen])?;
            self.out.write_all(body)?;
        }
        Ok(())
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub ty: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Reads one message, refusing bodies larger than `max_body` before allocating.
pub fn read_message<R: Read>(
    input: &mut R,
    kind: HeaderKind,
    max_body: u32,
) -> Result<Message, Error> {
    let mut hdr = [0u8; FULL_HEADER_SIZE];
    let h = hdr
        .get_mut(..kind.size())
        .ok_or(Error::Malformed("header"))?;
    input.read_exact(h)?;
    let mut r = Reader::new(h);
    let (ty, size) = match kind {
        HeaderKind::Mini => (r.u16()?, r.u32()?),
        HeaderKind::Full => {
            let _serial = r.u64()?;
            let ty = r.u16()?;
            let size = r.u32()?;
            let _sub_list = r.u32()?;
            (ty, size)
        }
    };
    if size > max_body {
        return Err(Error::MessageTooLarge {
            size: u64::from(size),
            max: u64::from(max_body),
        });
    }
    let len = usize::try_from(size).map_err(|_| Error::Malformed("size"))?;
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(Message { ty, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_reads() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16().ok(), Some(0x0201));
        assert!(matches!(r.u16(), Err(Error::Truncated { .. })));
        assert_eq!(r.u8().ok(), Some(3));
        let _ = r.u8().expect_err("unexpected result");
        let _ = r.at(4).expect_err("unexpected result");
        let _ = r.at(3).expect("unexpected result");
    }

    #[test]
    fn caps_bits() {
        let c = Caps::from_caps(&[0, 3, 33]);
        assert_eq!(c.0, vec![0b1001, 0b10]);
        assert!(c.has(33) && c.has(3) && !c.has(1) && !c.has(100));
        assert_eq!(c.words(), 2);
    }

    #[test]
    fn pointer_fixup_is_body_relative() -> Result<(), Error> {
        let mut w = Writer::new();
        w.u32(7);
        let p = w.ptr();
        w.u8(9);
        w.fill_ptr(p)?;
        w.u8(1);
        assert_eq!(w.finish(), vec![7, 0, 0, 0, 9, 0, 0, 0, 9, 1]);
        Ok(())
    }

    #[test]
    fn headers_round_trip() -> Result<(), Error> {
        for kind in [HeaderKind::Mini, HeaderKind::Full] {
            let mut mw = MessageWriter::new(Vec::new(), kind);
            mw.send(104, &[1, 2, 3])?;
            mw.send(7, &[])?;
            assert_eq!(mw.serial(), 2);
            let bytes = mw.get_mut().clone();
            let mut cur = std::io::Cursor::new(bytes);
            let m = read_message(&mut cur, kind, 16)?;
            assert_eq!((m.ty, m.body), (104, vec![1, 2, 3]));
            let m = read_message(&mut cur, kind, 16)?;
            assert_eq!((m.ty, m.body.len()), (7, 0));
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn read_message_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64), full in proptest::bool::ANY) {
            let kind = if full { HeaderKind::Full } else { HeaderKind::Mini };
            let mut cur = std::io::Cursor::new(b);
            while let Ok(m) = read_message(&mut cur, kind, 16) {
                proptest::prop_assert!(m.body.len() <= 16);
            }
        }

        #[test]
        fn reader_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..32), ops in proptest::collection::vec(0u8..7, 0..20)) {
            let mut r = Reader::new(&b);
            for op in ops {
                let _ = match op {
                    0 => r.u8().map(u64::from),
                    1 => r.u16().map(u64::from),
                    2 => r.u32().map(u64::from),
                    3 => r.u64(),
                    4 => r.bytes(5).map(|s| s.len() as u64),
                    5 => r.caps(3).map(|c| u64::from(c.words())),
                    _ => r.at(u32::from(b.first().copied().unwrap_or(0))).map(|x| x.pos() as u64),
                };
            }
        }
    }

    #[test]
    fn oversize_body_rejected_before_allocation() {
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&1u16.to_le_bytes());
        hdr.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut cur = std::io::Cursor::new(hdr);
        assert!(matches!(
            read_message(&mut cur, HeaderKind::Mini, 1024),
            Err(Error::MessageTooLarge { .. })
        ));
    }
}
