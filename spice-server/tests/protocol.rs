//! The server against a hostile or unusual raw-protocol client: link errors,
//! header kinds, oversize and truncated messages, flow control, and a client
//! that never reads.
#![allow(clippy::unwrap_used, clippy::tests_outside_test_module, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{fill, open_config, scene, start};
use rsa::pkcs8::DecodePublicKey;
use spice_server::ServerConfig;
use spice_server::command::{DisplaySink, Rect};

struct Reply {
    error: u32,
    pubkey: Vec<u8>,
    common_caps: Vec<u32>,
    channel_caps: Vec<u32>,
}

fn link_mess(conn_id: u32, ty: u8, id: u8, common: &[u32], chan: &[u32]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&conn_id.to_le_bytes());
    body.push(ty);
    body.push(id);
    body.extend_from_slice(&u32::try_from(common.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&u32::try_from(chan.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&18u32.to_le_bytes());
    for w in common.iter().chain(chan) {
        body.extend_from_slice(&w.to_le_bytes());
    }
    let mut m = b"REDQ".to_vec();
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    m.extend_from_slice(&body);
    m
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(&hdr[..4], b"REDQ");
    let size = u32_at(&hdr, 12) as usize;
    let mut b = vec![0u8; size];
    s.read_exact(&mut b).unwrap();
    let nc = u32_at(&b, 166) as usize;
    let nch = u32_at(&b, 170) as usize;
    let off = u32_at(&b, 174) as usize;
    let words = |from: usize, n: usize| (0..n).map(|i| u32_at(&b, from + 4 * i)).collect();
    Reply {
        error: u32_at(&b, 0),
        pubkey: b[4..166].to_vec(),
        common_caps: if b.len() >= off + 4 * (nc + nch) {
            words(off, nc)
        } else {
            vec![]
        },
        channel_caps: if b.len() >= off + 4 * (nc + nch) {
            words(off + 4 * nc, nch)
        } else {
            vec![]
        },
    }
}

fn ticket(pubkey: &[u8], password: &str) -> Vec<u8> {
    let pk = rsa::PublicKey::from_public_key_der(pubkey).unwrap();
    let mut plain = password.as_bytes().to_vec();
    plain.push(0);
    pk.oaep_encrypt::<sha1::Sha1>(&plain).unwrap()
}

const MINI: u32 = 1 << 3 | 1; // AUTH_SELECTION + MINI_HEADER

/// Links a channel; returns the socket and the link result.
fn link(addr: SocketAddr, conn_id: u32, ty: u8, common: u32, password: &str) -> (TcpStream, u32) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&link_mess(conn_id, ty, 0, &[common], &[]))
        .unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.error, 0);
    assert_eq!(r.pubkey.len(), 162);
    if common & 1 != 0 {
        s.write_all(&1u32.to_le_bytes()).unwrap();
    }
    s.write_all(&ticket(&r.pubkey, password)).unwrap();
    let mut res = [0u8; 4];
    s.read_exact(&mut res).unwrap();
    (s, u32::from_le_bytes(res))
}

fn read_mini(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut h = [0u8; 6];
    s.read_exact(&mut h).unwrap();
    let mut b = vec![0u8; u32_at(&h, 2) as usize];
    s.read_exact(&mut b).unwrap();
    (u16::from_le_bytes([h[0], h[1]]), b)
}

fn send_mini(s: &mut TcpStream, ty: u16, body: &[u8]) {
    let mut m = ty.to_le_bytes().to_vec();
    m.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    m.extend_from_slice(body);
    s.write_all(&m).unwrap();
}

fn session(addr: SocketAddr) -> (TcpStream, u32) {
    let (mut m, res) = link(addr, 0, 1, MINI, "");
    assert_eq!(res, 0);
    let (ty, body) = read_mini(&mut m);
    assert_eq!(ty, 103, "MAIN_INIT");
    (m, u32_at(&body, 0))
}

fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

#[test]
fn server_caps_and_main_init() {
    let h = start(open_config());
    let addr = h.server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&link_mess(0, 1, 0, &[MINI], &[])).unwrap();
    let r = read_reply(&mut s);
    assert_eq!(
        r.common_caps,
        vec![0b1011],
        "AUTH_SELECTION, AUTH_SPICE, MINI_HEADER"
    );
    assert!(r.channel_caps.is_empty());
    drop(s);
    let (mut m, id) = session(addr);
    assert_ne!(id, 0);
    let (ty, body) = read_mini(&mut m);
    assert_eq!((ty, body.len()), (106, 4), "MULTI_MEDIA_TIME");
    send_mini(&mut m, 104, &[]); // ATTACH_CHANNELS
    let (ty, body) = read_mini(&mut m);
    assert_eq!(ty, 104, "CHANNELS_LIST");
    assert_eq!(body, vec![3, 0, 0, 0, 2, 0, 4, 0, 3, 0]);
    let (ty, body) = read_mini(&mut m);
    assert_eq!((ty, body.len()), (4, 12), "PING");
    let mut pong = body.clone();
    pong.truncate(12);
    send_mini(&mut m, 3, &pong);
    // Inputs channel caps carry KEY_SCANCODE.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&link_mess(id, 3, 0, &[MINI], &[])).unwrap();
    assert_eq!(read_reply(&mut s).channel_caps, vec![1]);
}

/// CVE-2017-7506: spice-server trusted `num_of_monitors` of a client's
/// `VD_AGENT_MONITORS_CONFIG`. Here no agent is attached: agent data from
/// the client is dropped unparsed, whatever it claims, and the session goes
/// on (the next request is answered).
#[test]
fn client_agent_monitors_config_is_dropped_and_the_session_goes_on() {
    let h = start(open_config());
    let addr = h.server.local_addr();
    let (mut m, _) = session(addr);
    assert_eq!(read_mini(&mut m).0, 106, "MULTI_MEDIA_TIME");
    send_mini(&mut m, 106, &10u32.to_le_bytes()); // AGENT_START, 10 tokens
    // VDAgentMessage: protocol 1, type 2 (MONITORS_CONFIG), opaque, size;
    // then VDAgentMonitorsConfig claiming 2^32 - 1 monitors in 8 bytes.
    let mut agent = Vec::new();
    agent.extend_from_slice(&1u32.to_le_bytes());
    agent.extend_from_slice(&2u32.to_le_bytes());
    agent.extend_from_slice(&0u64.to_le_bytes());
    agent.extend_from_slice(&8u32.to_le_bytes());
    agent.extend_from_slice(&u32::MAX.to_le_bytes());
    agent.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..3 {
        send_mini(&mut m, 107, &agent); // AGENT_DATA
    }
    // A chunk as long as a VDAgent chunk may be, claiming the same.
    let mut big = agent.clone();
    big.resize(2048, 0xff);
    send_mini(&mut m, 107, &big);
    send_mini(&mut m, 104, &[]); // ATTACH_CHANNELS
    let (ty, _) = read_mini(&mut m);
    assert_eq!(ty, 104, "CHANNELS_LIST after the agent data");
}

#[test]
fn full_header_when_the_client_has_no_mini_header() {
    let h = start(open_config());
    let (mut s, res) = link(h.server.local_addr(), 0, 1, 1, "");
    assert_eq!(res, 0);
    let mut hdr = [0u8; 18];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(
        u64::from_le_bytes(hdr[..8].try_into().unwrap()),
        1,
        "serial 1"
    );
    assert_eq!(u16::from_le_bytes([hdr[8], hdr[9]]), 103);
    assert_eq!(u32_at(&hdr, 10), 32);
    // Without AUTH_SELECTION the ticket follows the reply directly.
    let (_s2, res) = link(h.server.local_addr(), 0, 1, 1 << 3, "");
    assert_eq!(res, 0);
}

#[test]
fn link_errors() {
    let h = start(ServerConfig {
        password: Some("pw".into()),
        ..ServerConfig::default()
    });
    let addr = h.server.local_addr();
    assert_eq!(link(addr, 0, 1, MINI, "nope").1, 7, "PERMISSION_DENIED");
    let (mut m, res) = link(addr, 0, 1, MINI, "pw");
    assert_eq!(res, 0);
    let (_, init) = read_mini(&mut m);
    let id = u32_at(&init, 0);
    assert_eq!(link(addr, id ^ 1, 2, MINI, "pw").1, 8, "BAD_CONNECTION_ID");
    assert_eq!(
        link(addr, id, 5, MINI, "pw").1,
        9,
        "playback: CHANNEL_NOT_AVAILABLE"
    );
    // No smartcard, usbredir, port or webdav channel (8-11) is offered, so
    // no parser of theirs (CVE-2016-0749) is reachable.
    for ty in [8u8, 9, 10, 11] {
        assert_eq!(link(addr, id, ty, MINI, "pw").1, 9, "channel type {ty}");
    }
    assert_eq!(link(addr, id, 2, MINI, "pw").1, 0);

    // Version mismatch and malformed link messages: an error reply, then close.
    let mut bad = link_mess(0, 1, 0, &[MINI], &[]);
    bad[4] = 3;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&bad).unwrap();
    assert_eq!(read_reply(&mut s).error, 4);
    assert!(closed(&mut s));
    let mut many = link_mess(0, 1, 0, &[MINI], &[]);
    many[16 + 6..16 + 10].copy_from_slice(&2000u32.to_le_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&many).unwrap();
    assert_eq!(read_reply(&mut s).error, 3, "too many caps");
    let mut off = link_mess(0, 1, 0, &[MINI], &[]);
    off[16 + 14..16 + 18].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&off).unwrap();
    assert_eq!(read_reply(&mut s).error, 3, "caps offset");

    // SASL is not offered.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&link_mess(0, 1, 0, &[MINI], &[])).unwrap();
    let _ = read_reply(&mut s);
    s.write_all(&2u32.to_le_bytes()).unwrap();
    let mut res = [0u8; 4];
    s.read_exact(&mut res).unwrap();
    assert_eq!(u32::from_le_bytes(res), 1);
    assert!(closed(&mut s));

    // The session survived all of that.
    assert_eq!(h.server.session_id(), id);
}

#[test]
fn bad_messages_after_auth_drop_only_that_client() {
    let h = start(open_config());
    let addr = h.server.local_addr();
    // Oversize message on main.
    let (mut m, _) = session(addr);
    let mut hdr = 101u16.to_le_bytes().to_vec();
    hdr.extend_from_slice(&0x4000_0000u32.to_le_bytes());
    m.write_all(&hdr).unwrap();
    assert!(closed(&mut m));
    // Truncated body on inputs (KEY_DOWN needs 4 bytes).
    let (_m, id) = session(addr);
    let (mut i, res) = link(addr, id, 3, MINI, "");
    assert_eq!(res, 0);
    assert_eq!(read_mini(&mut i).0, 101, "INPUTS_INIT");
    send_mini(&mut i, 101, &[1, 2]);
    assert!(closed(&mut i));
    // Truncated ACK_SYNC on display.
    let (mut d, res) = link(addr, id, 2, MINI, "");
    assert_eq!(res, 0);
    assert_eq!(read_mini(&mut d).0, 3, "SET_ACK");
    send_mini(&mut d, 1, &[0]);
    assert!(closed(&mut d));
    // A fresh client works.
    let (_m, id2) = session(addr);
    let (mut i, res) = link(addr, id2, 3, MINI, "");
    assert_eq!(res, 0);
    assert_eq!(read_mini(&mut i).0, 101);
    for k in 0..8u32 {
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        send_mini(&mut i, 111, &b);
        if k % 4 == 3 {
            assert_eq!(read_mini(&mut i).0, 111, "MOUSE_MOTION_ACK");
        }
    }
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_device() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let addr = h.server.local_addr();
    let (_m, id) = session(addr);
    let (mut d, res) = link(addr, id, 2, MINI, "");
    assert_eq!(res, 0);
    // DISPLAY_INIT, then never read nor ACK again.
    let mut init = vec![1u8];
    init.extend_from_slice(&(80i64 << 20).to_le_bytes());
    init.push(1);
    init.extend_from_slice(&(1i32 << 20).to_le_bytes());
    send_mini(&mut d, 101, &init);
    let t = Instant::now();
    for i in 0..3000 {
        let x = (i * 37) % 600;
        h.display.command(fill(
            Rect::new(x, 0, x + 40, 480),
            0x0001_0101 * (i.cast_unsigned() % 200),
        ));
    }
    let px = h.display.update_area(0, Rect::new(0, 0, 640, 480)).unwrap();
    assert_eq!(px.data.len(), 640 * 480 * 4);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "device side stalled: {:?}",
        t.elapsed()
    );
}

#[test]
fn pending_link_cap_and_handshake_timeout() {
    let h = start(ServerConfig {
        max_pending_links: 2,
        handshake_timeout: Duration::from_millis(400),
        ..open_config()
    });
    let addr = h.server.local_addr();
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(addr).unwrap();
    assert!(closed(&mut c), "third pending link dropped");
    std::thread::sleep(Duration::from_millis(600));
    let (_m, id) = session(addr);
    assert_ne!(id, 0);
}

/// A small deterministic generator (xorshift) for the hostile-stream test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_messages_on_every_channel_never_hurt_the_server() {
    let mut h = start(open_config());
    scene(&mut h.display);
    let addr = h.server.local_addr();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..24 {
        let (m, id) = session(addr);
        let ty = [1u8, 2, 3, 4][round % 4];
        let mut s = if ty == 1 {
            m.try_clone().unwrap()
        } else {
            let (s, res) = link(addr, id, ty, MINI, "");
            assert_eq!(res, 0);
            s
        };
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..200 {
            let mtype = u16::try_from(rng.below(130)).unwrap();
            let len = usize::try_from(rng.below(40)).unwrap();
            let body: Vec<u8> = (0..len)
                .map(|_| u8::try_from(rng.below(256)).unwrap())
                .collect();
            let mut msg = mtype.to_le_bytes().to_vec();
            msg.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
            msg.extend_from_slice(&body);
            if s.write_all(&msg).is_err() {
                break; // dropped for a malformed message: fine
            }
        }
        drop(s);
        drop(m);
    }
    // The device side and a well-behaved client are unaffected.
    let px = h.display.update_area(0, Rect::new(0, 0, 8, 8)).unwrap();
    assert_eq!(px.data.len(), 8 * 8 * 4);
    let (mut m, _) = session(addr);
    let (ty, _) = read_mini(&mut m);
    assert_eq!(ty, 106);
}
