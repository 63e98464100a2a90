//! The SPICE link handshake, run on every new TCP connection.
//!
//! # Primer
//!
//! 1. client → `SpiceLinkHeader` (magic "REDQ", version 2.2, size) +
//!    `SpiceLinkMess` (connection id, channel type/id, cap counts, caps offset)
//!    + caps words;
//! 2. server → `SpiceLinkHeader` + `SpiceLinkReply` (error, 162-byte RSA
//!    public key, cap counts, caps offset = 178) + caps words;
//! 3. client → `SpiceLinkAuthMechanism` (u32 cap number) when it announced
//!    `PROTOCOL_AUTH_SELECTION`;
//! 4. client → 128-byte RSA-OAEP ticket;
//! 5. server → u32 link result (0 = OK), decided by the caller once it knows
//!    whether the session and channel exist.
//!
//! Everything before authentication comes from an anonymous peer: the link
//! message is capped at 4096 bytes, the caps at 1024 words, and the whole
//! exchange must finish within the handshake timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::Error;
use crate::auth::Ticketing;
use crate::wire::{
    Caps, HeaderKind, LINK_HEADER_SIZE, LINK_MESS_SIZE, LINK_REPLY_SIZE, MAGIC, MAX_CAPS_WORDS,
    MAX_LINK_SIZE, Reader, TICKET_CIPHER_BYTES, VERSION_MAJOR, VERSION_MINOR, Writer, common_cap,
    link_err,
};

/// What the client asked for in its `SpiceLinkMess`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// 0 for a new session's main channel, else the session id.
    pub connection_id: u32,
    /// Channel type (`wire::channel_type`).
    pub channel_type: u8,
    /// Channel id.
    pub channel_id: u8,
    /// The client's common caps.
    pub common_caps: Caps,
    /// The client's channel caps.
    pub channel_caps: Caps,
}

/// A channel connection that passed the handshake up to the link result.
#[derive(Debug)]
pub struct Linked {
    /// The request.
    pub request: LinkRequest,
    /// The data header both sides use from now on.
    pub header: HeaderKind,
}

/// Parses the bytes following the link header.
pub fn parse_link_mess(body: &[u8]) -> Result<LinkRequest, Error> {
    let mut r = Reader::new(body);
    let connection_id = r.u32()?;
    let channel_type = r.u8()?;
    let channel_id = r.u8()?;
    let num_common = r.u32()?;
    let num_channel = r.u32()?;
    let caps_offset = r.u32()?;
    let total = u64::from(num_common) + u64::from(num_channel);
    if total > u64::from(MAX_CAPS_WORDS) {
        return Err(Error::TooManyCaps(total));
    }
    let mut caps = r.at(caps_offset)?;
    if usize::try_from(caps_offset).unwrap_or(usize::MAX) < LINK_MESS_SIZE {
        return Err(Error::Malformed("caps offset inside the link message"));
    }
    let common_caps = caps.caps(num_common)?;
    let channel_caps = caps.caps(num_channel)?;
    Ok(LinkRequest {
        connection_id,
        channel_type,
        channel_id,
        common_caps,
        channel_caps,
    })
}

/// The server's common caps.
pub fn server_common_caps() -> Caps {
    Caps::from_caps(&[
        common_cap::PROTOCOL_AUTH_SELECTION,
        common_cap::AUTH_SPICE,
        common_cap::MINI_HEADER,
    ])
}

/// Builds `SpiceLinkHeader` + `SpiceLinkReply` + caps.
pub fn build_link_reply(error: u32, pubkey: &[u8], common: &Caps, channel: &Caps) -> Vec<u8> {
    let mut body = Writer::with_capacity(LINK_REPLY_SIZE + 64);
    body.u32(error);
    let mut key = [0u8; crate::wire::TICKET_PUBKEY_BYTES];
    if error == link_err::OK {
        let n = pubkey.len().min(key.len());
        key[..n].copy_from_slice(&pubkey[..n]);
    }
    body.bytes(&key);
    if error == link_err::OK {
        body.u32(common.words()).u32(channel.words());
    } else {
        body.u32(0).u32(0);
    }
    body.u32(u32::try_from(LINK_REPLY_SIZE).unwrap_or(0));
    if error == link_err::OK {
        for w in common.0.iter().chain(channel.0.iter()) {
            body.u32(*w);
        }
    }
    let body = body.finish();
    let mut out = Writer::with_capacity(LINK_HEADER_SIZE + body.len());
    out.u32(MAGIC)
        .u32(VERSION_MAJOR)
        .u32(VERSION_MINOR)
        .u32(u32::try_from(body.len()).unwrap_or(0))
        .bytes(&body);
    out.finish()
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Error::HandshakeTimeout)?;
        stream.set_read_timeout(Some(left))?;
        let rest = buf.get_mut(got..).ok_or(Error::Malformed("read"))?;
        match stream.read(rest) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::HandshakeTimeout);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends a reply that carries only `error`, then gives up on the client.
fn refuse(stream: &mut TcpStream, error: u32, why: Error) -> Error {
    let reply = build_link_reply(error, &[], &Caps::default(), &Caps::default());
    let _ = stream.write_all(&reply);
    why
}

/// Runs steps 1–4 of the handshake. The caller writes the link result.
///
/// `channel_caps` yields the server's caps for a channel type.
pub fn handshake(
    stream: &mut TcpStream,
    ticketing: &Ticketing,
    timeout: Duration,
    channel_caps: impl Fn(u8) -> Caps,
) -> Result<Linked, Error> {
    let deadline = Instant::now() + timeout;
    let mut hdr = [0u8; LINK_HEADER_SIZE];
    read_until(stream, &mut hdr, deadline)?;
    let mut r = Reader::new(&hdr);
    let magic = r.u32()?;
    let major = r.u32()?;
    let minor = r.u32()?;
    let size = r.u32()?;
    if magic != MAGIC {
        return Err(refuse(
            stream,
            link_err::INVALID_MAGIC,
            Error::BadMagic(magic),
        ));
    }
    if major != VERSION_MAJOR {
        return Err(refuse(
            stream,
            link_err::VERSION_MISMATCH,
            Error::VersionMismatch { major, minor },
        ));
    }
    if size > MAX_LINK_SIZE {
        return Err(refuse(
            stream,
            link_err::INVALID_DATA,
            Error::MessageTooLarge {
                size: u64::from(size),
                max: u64::from(MAX_LINK_SIZE),
            },
        ));
    }
    if usize::try_from(size).unwrap_or(0) < LINK_MESS_SIZE {
        return Err(refuse(
            stream,
            link_err::INVALID_DATA,
            Error::Malformed("link message shorter than SpiceLinkMess"),
        ));
    }
    let mut body = vec![0u8; usize::try_from(size).map_err(|_| Error::Malformed("size"))?];
    read_until(stream, &mut body, deadline)?;
    let request = match parse_link_mess(&body) {
        Ok(r) => r,
        Err(e) => return Err(refuse(stream, link_err::INVALID_DATA, e)),
    };

    let common = server_common_caps();
    let chan = channel_caps(request.channel_type);
    stream.write_all(&build_link_reply(
        link_err::OK,
        ticketing.public_key_der(),
        &common,
        &chan,
    ))?;

    if request.common_caps.has(common_cap::PROTOCOL_AUTH_SELECTION) {
        let mut mech = [0u8; 4];
        read_until(stream, &mut mech, deadline)?;
        let mech = u32::from_le_bytes(mech);
        if mech != common_cap::AUTH_SPICE {
            let _ = stream.write_all(&link_err::ERROR.to_le_bytes());
            return Err(Error::UnsupportedAuth(mech));
        }
    }
    let mut ticket = [0u8; TICKET_CIPHER_BYTES];
    read_until(stream, &mut ticket, deadline)?;
    if let Err(e) = ticketing.verify(&ticket) {
        let _ = stream.write_all(&link_err::PERMISSION_DENIED.to_le_bytes());
        return Err(e);
    }
    stream.set_read_timeout(None)?;
    let header = if request.common_caps.has(common_cap::MINI_HEADER) {
        HeaderKind::Mini
    } else {
        HeaderKind::Full
    };
    Ok(Linked { request, header })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_mess(caps_offset: u32, ncommon: u32, nchan: u32, words: &[u32]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(0)
            .u8(1)
            .u8(0)
            .u32(ncommon)
            .u32(nchan)
            .u32(caps_offset);
        for x in words {
            w.u32(*x);
        }
        w.finish()
    }

    #[test]
    fn parses_link_mess() -> Result<(), Error> {
        let r = parse_link_mess(&link_mess(18, 1, 1, &[0b1001, 0b100]))?;
        assert!(r.common_caps.has(0) && r.common_caps.has(3));
        assert!(r.channel_caps.has(2));
        assert_eq!(r.channel_type, 1);
        Ok(())
    }

    #[test]
    fn rejects_bad_link_mess() {
        let _ = parse_link_mess(&link_mess(18, 2, 1, &[1, 2])).expect_err("short caps");
        let _ = parse_link_mess(&link_mess(18, 1000, 100, &[])).expect_err("too many caps");
        let _ = parse_link_mess(&link_mess(u32::MAX, 1, 0, &[1])).expect_err("offset");
        let _ = parse_link_mess(&link_mess(4, 1, 0, &[1])).expect_err("offset overlaps");
        let _ = parse_link_mess(&[0; 10]).expect_err("truncated");
        assert!(
            parse_link_mess(&link_mess(18, u32::MAX, u32::MAX, &[])).is_err(),
            "count overflow"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_link_mess_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(r) = parse_link_mess(&b) {
                proptest::prop_assert!(r.common_caps.0.len() + r.channel_caps.0.len() <= MAX_CAPS_WORDS as usize);
            }
        }
    }

    #[test]
    fn reply_layout() {
        let r = build_link_reply(0, &[7; 162], &server_common_caps(), &Caps::from_caps(&[0]));
        assert_eq!(&r[0..4], b"REDQ");
        assert_eq!(r.len(), 16 + 178 + 8);
        assert_eq!(r[16 + 4], 7);
        assert_eq!(
            u32::from_le_bytes([r[16 + 174], r[16 + 175], r[16 + 176], r[16 + 177]]),
            178
        );
    }
}
