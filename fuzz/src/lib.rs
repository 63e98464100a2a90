//! Shared harnesses for the fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Each decoder target lays the fuzzer's bytes out as a small device memory
//! with two memslots, points a command at an offset chosen by the input, and
//! runs the real decoder. Inputs are hostile by construction: every pointer,
//! count and size inside them is whatever the fuzzer made up. The harness only
//! asserts what must always hold: the decoder returns (no panic, no hang) and
//! never hands back more data than its limits allow.

use devices::qxl::decode::{self, Limits};
use devices::qxl::memslot::{MemSlot, MemSlots};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Size of the device memory a decoder input is laid out in.
pub const MEM_SIZE: usize = 256 << 10;

/// A device memory filled from fuzzer input, with memslot 1 over all of it
/// (generation 0) and memslot 2 over its upper half (generation 1), so that
/// addresses built like a driver builds them (`0x01 0x00 <offset>`) resolve.
pub struct DecodeEnv {
    /// The device memory.
    pub mem: GuestMemoryMmap,
    /// The memslot table.
    pub slots: MemSlots,
    /// Decoder limits, lowered so that a fuzz iteration stays cheap.
    pub limits: Limits,
}

impl DecodeEnv {
    /// Lay `data` out at address 0 of a fresh device memory (the rest is zero).
    pub fn new(data: &[u8]) -> Option<Self> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let n = data.len().min(MEM_SIZE);
        mem.write_slice(data.get(..n)?, GuestAddress(0)).ok()?;
        let size = u64::try_from(MEM_SIZE).ok()?;
        let mut slots = MemSlots::new();
        slots
            .add(
                1,
                MemSlot {
                    virt_start: 0,
                    size,
                    local_start: 0,
                    generation: 0,
                },
            )
            .ok()?;
        slots
            .add(
                2,
                MemSlot {
                    virt_start: 0,
                    size: size / 2,
                    local_start: size / 2,
                    generation: 1,
                },
            )
            .ok()?;
        let limits = Limits {
            // The memory is 256 KiB: nothing larger can be backed by it, and
            // smaller caps keep each iteration's allocations cheap.
            max_chunk_data: 1 << 20,
            max_image_bytes: 1 << 20,
            max_command_bytes: 4 << 20,
            n_surfaces: 64,
            ..Limits::default()
        };
        Some(Self { mem, slots, limits })
    }
}

/// Split an input into (command offset, flags, memory image): the first two
/// bytes choose where in slot 1 the command structure lies, the third its
/// `QXLCommandExt` flags (compat bits).
pub fn split_input(data: &[u8]) -> Option<(u64, u32, &[u8])> {
    let (head, rest) = data.split_at_checked(3)?;
    let [a, b, flags] = head else { return None };
    let offset = u64::from(u16::from_le_bytes([*a, *b])) * 4;
    Some((offset, u32::from(*flags & 3), rest))
}

/// Run `decode_command` for `cmd_type` on an input.
pub fn fuzz_decode_command(data: &[u8], cmd_type: u32) {
    let Some((offset, flags, image)) = split_input(data) else {
        return;
    };
    let Some(env) = DecodeEnv::new(image) else {
        return;
    };
    let phys = devices::qxl::memslot::make_phys(1, 0, offset);
    if let Ok(d) = decode::decode_command(&env.mem, &env.slots, cmd_type, phys, flags, &env.limits)
    {
        // Whatever was decoded must be consistent enough to be inspected.
        let _ = format!("{:?}", d.command).len();
    }
}

/// Run `decode_monitors_config` on an input.
pub fn fuzz_decode_monitors_config(data: &[u8]) {
    let Some((offset, _, image)) = split_input(data) else {
        return;
    };
    let Some(env) = DecodeEnv::new(image) else {
        return;
    };
    let phys = devices::qxl::memslot::make_phys(1, 0, offset);
    if let Ok(cfg) = decode::decode_monitors_config(&env.mem, &env.slots, phys, &env.limits) {
        assert!(cfg.heads.len() <= usize::from(env.limits.max_monitors));
    }
}

/// The largest device memory a `ring_replay` input may ask for; larger configs
/// are skipped so that one iteration stays cheap.
pub const MAX_REPLAY_MEMORY: u64 = 16 << 20;

/// A display sink that only counts what it is given.
#[derive(Debug, Default)]
pub struct CountingSink(pub u64);

impl spice_server::command::DisplaySink for CountingSink {
    fn command(&mut self, _: spice_server::command::Command) {
        self.0 += 1;
    }
    fn create_primary(&mut self, _: spice_server::command::SurfaceCreate) {}
    fn destroy_primary(&mut self) {}
    fn destroy_surface_wait(&mut self, _: u32) {}
    fn destroy_all_surfaces(&mut self) {}
    fn update_area(
        &mut self,
        surface_id: u32,
        area: spice_server::command::Rect,
    ) -> Option<spice_server::command::AreaPixels> {
        // Answer with a well-formed but arbitrary picture so the device's
        // write-back path runs too.
        let (w, h) = (area.width(), area.height());
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) > 1 << 20 {
            return None;
        }
        let stride = usize::try_from(w).ok()?.checked_mul(4)?;
        let len = stride.checked_mul(usize::try_from(h).ok()?)?;
        let fill = u8::try_from(surface_id & 0xff).unwrap_or(0);
        Some(spice_server::command::AreaPixels {
            area,
            stride,
            data: vec![fill; len],
        })
    }
    fn flush_surfaces(&mut self) {}
    fn monitors_config(&mut self, _: spice_server::command::MonitorsConfig) {}
    fn reset(&mut self) {}
}

/// Play a (possibly malformed) replay file through a fresh device: every
/// well-formed record before the first malformed one is applied.
pub fn fuzz_ring_replay(data: &[u8]) {
    use devices::qxl::replay::{self, Player, Record};
    let (records, _) = replay::parse_prefix(data);
    let Some(Record::Config(config)) = records.first() else {
        return;
    };
    let qc = devices::qxl::QxlConfig::from(config);
    if qc.validate().is_err() || qc.normalized().device_memory_size() > MAX_REPLAY_MEMORY {
        return;
    }
    let Ok(mut player) = Player::new(config, CountingSink::default()) else {
        return;
    };
    for r in &records {
        player.step(r);
    }
    let dev = player.device();
    // The device must still answer and be consistent after anything.
    let _ = dev.irq_level();
    let _ = dev.metrics().snapshot();
}

/// Parse a SPICE link message body (the bytes after the 16-byte link header),
/// as a client before authentication sends it.
pub fn fuzz_link_mess(data: &[u8]) {
    // The server refuses link messages above 4096 bytes before reading them.
    let body = data.get(..data.len().min(4096)).unwrap_or(&[]);
    if let Ok(req) = spice_server::link::parse_link_mess(body) {
        assert!(
            req.common_caps.words() + req.channel_caps.words() <= 1024,
            "caps cap not enforced"
        );
    }
}

/// A ticketing state with a password, built once (RSA key generation is slow).
fn ticketing() -> &'static spice_server::auth::Ticketing {
    static T: std::sync::OnceLock<spice_server::auth::Ticketing> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let t = spice_server::auth::Ticketing::new(false).expect("RSA key generation");
        t.set_password(Some("secret"), None).expect("password");
        t
    })
}

/// Feed a 128-byte encrypted ticket to the verifier: garbage must be refused.
pub fn fuzz_ticket(data: &[u8]) {
    let mut cipher = [0u8; spice_server::wire::TICKET_CIPHER_BYTES];
    let n = data.len().min(cipher.len());
    if let (Some(dst), Some(src)) = (cipher.get_mut(..n), data.get(..n)) {
        dst.copy_from_slice(src);
    }
    // A random ciphertext decrypting to the right password is not a thing.
    assert!(ticketing().verify(&cipher).is_err());
}

/// Read a stream of client messages the way a channel does (header kind and
/// channel chosen by the first byte) and decode each one.
pub fn fuzz_client_msg(data: &[u8]) {
    use spice_server::channel::client_msg;
    use spice_server::wire::{HeaderKind, read_message};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let channel = 1 + sel % 4;
    let kind = if sel & 0x80 != 0 {
        HeaderKind::Full
    } else {
        HeaderKind::Mini
    };
    let mut input = rest;
    // Every message is at least a header, so this loop is bounded by the input.
    while let Ok(msg) = read_message(&mut input, kind, 64 << 10) {
        let _ = client_msg::decode(channel, msg.ty, &msg.body);
    }
}

/// Read a `SPICE_REPLAY 1` recording (the fuzzer's bytes after the magic
/// line) event by event, with caps lowered so an iteration stays cheap. The
/// reader must return typed errors (never panic), stop after the first one,
/// and never hold a blob larger than its cap.
pub fn fuzz_spice_record_parse(data: &[u8]) {
    use devices::qxl::spice_record::{MAGIC_LINE, RecordLimits, RecordReader};
    let limits = RecordLimits {
        max_line: 128,
        max_blob: 1 << 20,
        max_event_bytes: 2 << 20,
        max_chunks: 64,
        max_palette_entries: 256,
    };
    // Half the inputs get the magic line for free, so the fuzzer reaches events.
    let mut input = Vec::with_capacity(data.len() + MAGIC_LINE.len() + 1);
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.extend_from_slice(MAGIC_LINE);
        input.push(b'\n');
    }
    input.extend_from_slice(data.get(1..).unwrap_or_default());
    let Ok(mut reader) = RecordReader::with_limits(&input[..], limits) else {
        return;
    };
    let mut n = 0u64;
    loop {
        match reader.next_event() {
            Ok(Some(_)) => n += 1,
            Ok(None) => break,
            Err(e) => {
                assert!(matches!(e, devices::Error::Record { .. }), "{e}");
                assert!(matches!(reader.next_event(), Ok(None)));
                break;
            }
        }
        // Every event costs at least one line of input.
        assert!(n <= u64::try_from(input.len()).unwrap_or(u64::MAX));
    }
    assert!(reader.offset() <= u64::try_from(input.len()).unwrap_or(u64::MAX));
}

/// Small decode limits for the codec targets: big claimed images are refused
/// before allocating, so the fuzzer spends its time in the bit streams.
fn codec_limits() -> spice_server::codecs::DecodeLimits {
    spice_server::codecs::DecodeLimits {
        max_width: 4096,
        max_height: 4096,
        max_bytes: 16 << 20,
    }
}

/// QUIC decoder on arbitrary bytes (THREATS row 10: CVE-2020-14355 class):
/// never panics; a decoded image has exactly the size its header claims.
pub fn fuzz_codec_quic(data: &[u8]) {
    use spice_server::codecs::quic;
    if let Ok(img) = quic::decode_with_limits(data, &codec_limits()) {
        assert_eq!(img.pixels.len(), img.stride * img.height as usize);
    }
}

/// LZ decoder (and the palette conversion) on arbitrary bytes
/// (CVE-2018-10893 class): never panics, never over-reads.
pub fn fuzz_codec_lz(data: &[u8]) {
    use spice_server::codecs::lz;
    if let Ok(img) = lz::decode_with_limits(data, &codec_limits()) {
        assert_eq!(img.pixels.len(), img.stride * img.height as usize);
        if img.format.is_palette() {
            let palette: Vec<u32> = (0..u32::from(data[0])).collect();
            let _ = lz::palette_to_rgb32(&img, &palette);
        }
    }
}

/// LZ4 image decoder: the first 4 bytes choose the claimed size.
pub fn fuzz_codec_lz4(data: &[u8]) {
    use spice_server::codecs::lz4;
    let Some((size, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let w = 1 + u32::from(u16::from_le_bytes([size[0], size[1]]) % 1024);
    let h = 1 + u32::from(u16::from_le_bytes([size[2], size[3]]) % 1024);
    if let Ok(img) = lz4::decode_with_limits(rest, w, h, &codec_limits()) {
        assert_eq!((img.width, img.height), (w, h));
    }
}

/// GLZ client window: the input is split at 0xfe bytes into several GLZ
/// images decoded in order in one window (cross-image references, window
/// release), then the same bytes as one ZLIB_GLZ payload.
pub fn fuzz_codec_glz(data: &[u8]) {
    use spice_server::codecs::glz::GlzDecoderWindow;
    use spice_server::codecs::zlib_glz;
    let mut win = GlzDecoderWindow::with_limits(codec_limits());
    for part in data.split(|&b| b == 0xfe).take(16) {
        if let Ok(img) = win.decode(part) {
            assert_eq!(img.pixels.len(), img.stride * img.height as usize);
        }
    }
    assert!(win.pixels() <= 16 * (4 << 20));
    if let Some((size, rest)) = data.split_first_chunk::<4>() {
        let _ = zlib_glz::decode(&mut win, u32::from_le_bytes(*size) % (1 << 20), rest);
        let _ = zlib_glz::decode_wire(&mut win, data);
    }
}

/// JPEG and JPEG_ALPHA decoders (the latter splits at a claimed `jpeg_size`).
pub fn fuzz_codec_jpeg(data: &[u8]) {
    use spice_server::codecs::jpeg;
    let _ = jpeg::decode(data, &codec_limits());
    if let Some((hdr, rest)) = data.split_first_chunk::<3>() {
        let jpeg_size = u32::from(u16::from_le_bytes([hdr[1], hdr[2]]));
        let _ = jpeg::decode_alpha(hdr[0], jpeg_size, rest, &codec_limits());
    }
}

/// virtio-input behind virtio-mmio: `data[0] % 3` picks keyboard, tablet or
/// mouse; `data[1]` (at most 64) ops of 8 bytes follow (`[kind, off lo, off
/// hi, width, value le32]`: register write, register read, host injection of
/// `value % 8` events, or a guest-memory poke mid-flight); the rest is the
/// initial 64 KiB of guest memory, so rings and descriptors are whatever the
/// fuzzer wrote. Asserts that the host FIFO stays bounded.
pub fn fuzz_virtio_input(data: &[u8]) {
    use devices::qxl::IrqLine;
    use devices::virtio_input::device::{DEFAULT_PENDING_CAP, InputEvent};
    use devices::virtio_input::{InputConfig, InputKind, VirtioInput, VirtioMmio};

    struct NoIrq;
    impl IrqLine for NoIrq {
        fn set_level(&self, _: bool) {}
    }

    let [sel, nops, rest @ ..] = data else {
        return;
    };
    let kind = match sel % 3 {
        0 => InputKind::Keyboard,
        1 => InputKind::Tablet,
        _ => InputKind::Mouse,
    };
    let n = usize::from(*nops).min(64).min(rest.len() / 8);
    let (ops, image) = rest.split_at(n * 8);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]) else {
        return;
    };
    let _ = mem.write_slice(&image[..image.len().min(0x1_0000)], GuestAddress(0));
    let mut t = VirtioMmio::new(mem.clone(), VirtioInput::new(InputConfig::new(kind)), NoIrq);
    for op in ops.chunks_exact(8) {
        let off = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let v = [op[4], op[5], op[6], op[7]];
        let width = [1usize, 2, 4, 8][usize::from(op[3] % 4)];
        match op[0] % 4 {
            0 => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&v);
                t.write(off % 0x200, &b[..width]);
            }
            1 => {
                let mut b = [0u8; 8];
                t.read(off % 0x200, &mut b[..width]);
            }
            2 => {
                let evs: Vec<InputEvent> = (0..u16::from(op[4] % 8))
                    .map(|i| InputEvent::new(1, i, u32::from(op[5])))
                    .collect();
                t.with_device(|d, m, q| d.inject(&evs, m, q));
            }
            _ => {
                let _ = mem.write_slice(&v, GuestAddress(off * 4));
            }
        }
        assert!(t.device().pending() <= DEFAULT_PENDING_CAP);
    }
}

#[cfg(test)]
mod virtio_input_tests {
    /// A few hand-made inputs through the harness: a driver-ish register
    /// sequence with rings at 0x1000, and garbage.
    #[test]
    fn virtio_input_harness_runs() {
        let mut d = vec![0u8, 12];
        let w = |d: &mut Vec<u8>, off: u16, v: u32| {
            d.push(0);
            d.extend_from_slice(&off.to_le_bytes());
            d.push(2);
            d.extend_from_slice(&v.to_le_bytes());
        };
        w(&mut d, 0x70, 3);
        w(&mut d, 0x24, 1);
        w(&mut d, 0x20, 1);
        w(&mut d, 0x70, 0xb);
        w(&mut d, 0x38, 16);
        w(&mut d, 0x80, 0x1000);
        w(&mut d, 0x90, 0x1100);
        w(&mut d, 0xa0, 0x1200);
        w(&mut d, 0x44, 1);
        w(&mut d, 0x70, 0xf);
        d.extend_from_slice(&[2, 0, 0, 0, 5, 1, 0, 0]);
        w(&mut d, 0x50, 0);
        d.extend(std::iter::repeat_n(0xa5, 0x2000));
        super::fuzz_virtio_input(&d);
        for s in 0..=255u8 {
            super::fuzz_virtio_input(&[s, s, s, s, s, s, s, s, s, s, s, s]);
        }
    }
}
