//! The QXL ROM (BAR2): `QXLRom` followed by the mode list.
//!
//! # Primer
//!
//! The ROM is the device's read-only parameter block. A driver reads it first
//! (Linux checks the magic), learns where the `QXLRam` header is in BAR0
//! (`ram_header_offset`), how big the surface-0 area is, the memslot address
//! format (`slot_id_bits`, `slot_gen_bits`, `slots_start`), and the compat
//! mode list. From revision 4 the device also writes client state into it:
//! whether a SPICE client is connected, its display capabilities, and the
//! client's preferred monitor layout, protected by a CRC because the guest
//! may read it while it changes.
//!
//! The ROM is host memory owned by the device (guest writes are ignored). As in
//! QEMU a *shadow* copy holds the values a reset restores.

use crate::qxl::abi::{self, rom as off};
use crate::qxl::guest::le;

/// Size of the ROM BAR: `sizeof(QXLRom) + 4 + 148 * 32` = 5900 bytes, rounded
/// up to two 4 KiB pages, as QEMU sizes it.
pub const ROM_SIZE: u64 = 8192;

/// `modes_offset`: the mode list follows `QXLRom` (1160 bytes).
pub const MODES_OFFSET: u32 = 1160;

/// Number of entries in the unfiltered mode table (37 resolutions × 4).
pub const NUM_MODES: usize = 148;

/// The 37 resolutions of QEMU's `qxl_modes[]`, in table order.
pub const RESOLUTIONS: [(u32, u32); 37] = [
    (640, 480),
    (800, 480),
    (800, 600),
    (832, 624),
    (960, 640),
    (1024, 600),
    (1024, 768),
    (1152, 864),
    (1152, 870),
    (1280, 720),
    (1280, 760),
    (1280, 768),
    (1280, 800),
    (1280, 960),
    (1280, 1024),
    (1360, 768),
    (1366, 768),
    (1400, 1050),
    (1440, 900),
    (1600, 900),
    (1600, 1200),
    (1680, 1050),
    (1920, 1080),
    (1920, 1200),
    (1920, 1440),
    (2000, 2000),
    (2048, 1536),
    (2048, 2048),
    (2560, 1440),
    (2560, 1600),
    (2560, 2048),
    (2800, 2100),
    (3200, 2400),
    (3840, 2160),
    (4096, 2160),
    (7680, 4320),
    (8192, 4320),
];

/// One `QXLMode` entry (32 bytes in the ROM, all `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QxlMode {
    /// Index into the *unfiltered* table.
    pub id: u32,
    /// Width in pixels.
    pub x_res: u32,
    /// Height in pixels.
    pub y_res: u32,
    /// Bits per pixel (16 or 32).
    pub bits: u32,
    /// Bytes per line (`x_res * bits / 8`).
    pub stride: u32,
    /// Physical width in millimetres (`trunc(0.2936875 * x_res)`).
    pub x_mili: u32,
    /// Physical height in millimetres (`trunc(0.2936875 * y_res)`).
    pub y_mili: u32,
    /// Orientation (0 or 1).
    pub orientation: u32,
}

/// `trunc(0.2936875 * v)` in exact integer arithmetic: 0.2936875 = 4699 / 16000.
///
/// QEMU computes it in `double`; for every `v < 2^32` the exact product is never
/// within double rounding error of an integer unless it *is* one, so both agree.
pub fn pixel_to_mili(v: u32) -> u32 {
    // v * 4699 < 2^45, no overflow in u64; the quotient is < v, so it fits u32.
    let q = u64::from(v) * 4699 / 16000;
    u32::try_from(q).unwrap_or(u32::MAX)
}

/// The full 148-entry mode table, in QEMU order: for each resolution
/// (16 bpp, orientation 0), (32, 0), (16, 1), (32, 1).
pub fn mode_table() -> Vec<QxlMode> {
    let mut modes = Vec::with_capacity(NUM_MODES);
    let mut id = 0u32;
    for &(x, y) in &RESOLUTIONS {
        for orientation in [0, 1] {
            for bits in [16, 32] {
                modes.push(QxlMode {
                    id,
                    x_res: x,
                    y_res: y,
                    bits,
                    stride: x * bits / 8,
                    x_mili: pixel_to_mili(x),
                    y_mili: pixel_to_mili(y),
                    orientation,
                });
                id += 1;
            }
        }
    }
    modes
}

/// The modes whose framebuffer (`y_res * stride`) fits in `vgamem` bytes, as QEMU
/// stores them in the ROM. Ids keep their unfiltered values.
pub fn filtered_modes(vgamem: u64) -> Vec<QxlMode> {
    mode_table()
        .into_iter()
        .filter(|m| u64::from(m.y_res) * u64::from(m.stride) <= vgamem)
        .collect()
}

/// The BAR0 layout values the ROM advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    /// `surface0_area_size` = `pages_offset` = `ALIGN(vgamem, 4096)`.
    pub surface0_area_size: u32,
    /// `num_pages` of device RAM between surface 0 and the RAM header.
    pub num_pages: u32,
    /// `ram_header_offset` = BAR0 size − 8192.
    pub ram_header_offset: u32,
}

impl RamLayout {
    /// The layout for a BAR0 of `ram_size` bytes and `vgamem` bytes of surface 0,
    /// `None` if they do not fit (or do not fit the ROM's 32-bit fields).
    pub fn new(ram_size: u64, vgamem: u64) -> Option<Self> {
        let surface0 = vgamem.checked_next_multiple_of(abi::PAGE_SIZE)?;
        let header = ram_size.checked_sub(abi::ram::HEADER_SIZE)?;
        let pages = header.checked_sub(surface0)? / abi::PAGE_SIZE;
        Some(Self {
            surface0_area_size: u32::try_from(surface0).ok()?,
            num_pages: u32::try_from(pages).ok()?,
            ram_header_offset: u32::try_from(header).ok()?,
        })
    }
}

/// The parameters [`build_rom`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RomParams {
    /// Device id (`QXLRom.id`).
    pub id: u32,
    /// `n_surfaces`.
    pub n_surfaces: u32,
    /// Size of the surface-0 area before alignment (`vgamem`), used to filter modes.
    pub vgamem: u64,
    /// The BAR0 layout.
    pub layout: RamLayout,
}

/// Build the ROM image (`ROM_SIZE` bytes) as QEMU's `init_qxl_rom` does.
pub fn build_rom(p: &RomParams) -> Vec<u8> {
    let mut rom = vec![0u8; usize::try_from(ROM_SIZE).unwrap_or(8192)];
    le::put_u32(&mut rom, off::MAGIC, abi::ROM_MAGIC);
    le::put_u32(&mut rom, off::ID, p.id);
    le::put_u32(&mut rom, off::LOG_LEVEL, 0);
    le::put_u32(&mut rom, off::MODES_OFFSET, MODES_OFFSET);
    le::put_u32(&mut rom, off::NUM_PAGES, p.layout.num_pages);
    le::put_u32(&mut rom, off::PAGES_OFFSET, p.layout.surface0_area_size);
    le::put_u32(&mut rom, off::DRAW_AREA_OFFSET, 0);
    le::put_u32(
        &mut rom,
        off::SURFACE0_AREA_SIZE,
        p.layout.surface0_area_size,
    );
    le::put_u32(&mut rom, off::RAM_HEADER_OFFSET, p.layout.ram_header_offset);
    le::put_u32(&mut rom, off::N_SURFACES, p.n_surfaces);
    set_u8(&mut rom, off::SLOTS_START, 1);
    set_u8(
        &mut rom,
        off::SLOTS_END,
        u8::try_from(crate::qxl::memslot::NUM_MEMSLOTS - 1).unwrap_or(7),
    );
    set_u8(
        &mut rom,
        off::SLOT_GEN_BITS,
        u8::try_from(crate::qxl::memslot::SLOT_GEN_BITS).unwrap_or(8),
    );
    set_u8(
        &mut rom,
        off::SLOT_ID_BITS,
        u8::try_from(crate::qxl::memslot::SLOT_ID_BITS).unwrap_or(8),
    );
    let modes = filtered_modes(p.vgamem);
    le::put_u32(&mut rom, off::SIZE, u32::try_from(modes.len()).unwrap_or(0));
    for (i, m) in modes.iter().enumerate() {
        let base = off::SIZE + 4 + i * off::MODE_SIZE;
        let fields = [
            m.id,
            m.x_res,
            m.y_res,
            m.bits,
            m.stride,
            m.x_mili,
            m.y_mili,
            m.orientation,
        ];
        for (j, v) in fields.iter().enumerate() {
            le::put_u32(&mut rom, base + j * 4, *v);
        }
    }
    rom
}

/// Read the mode list back from a ROM image (the filtered list, in ROM order).
pub fn read_modes(rom: &[u8]) -> Vec<QxlMode> {
    let n = usize::try_from(le::u32_at(rom, off::SIZE)).unwrap_or(0);
    (0..n.min(NUM_MODES))
        .map(|i| {
            let base = off::SIZE + 4 + i * off::MODE_SIZE;
            let f = |j: usize| le::u32_at(rom, base + j * 4);
            QxlMode {
                id: f(0),
                x_res: f(1),
                y_res: f(2),
                bits: f(3),
                stride: f(4),
                x_mili: f(5),
                y_mili: f(6),
                orientation: f(7),
            }
        })
        .collect()
}

fn set_u8(b: &mut [u8], off: usize, v: u8) {
    if let Some(x) = b.get_mut(off) {
        *x = v;
    }
}

/// The CRC QXL uses for the ROM client monitors configuration: reflected CRC-32
/// (polynomial 0xEDB88320, `CLIENT_MONITORS_CONFIG_CRC32_POLY`) with an initial
/// value of 0 and **no** final xor — what Linux's `crc32(0, p, len)` computes and
/// what QEMU reproduces with `zlib.crc32(0xffffffff, ..) ^ 0xffffffff`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    crc
}

/// One client monitor: position and size as the SPICE client's agent sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientHead {
    /// Column of the monitor's left edge.
    pub x: i32,
    /// Row of the monitor's top edge.
    pub y: i32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Write a client monitors configuration into `rom` as QEMU's
/// `interface_client_monitors_config` does: clear the 1028-byte block, store
/// `count` (capped to `max_heads`, itself at most 64) and one
/// `QXLURect {top, left, bottom, right}` per head (`right = x + width`,
/// `bottom = y + height`, wrapping as QEMU's unsigned arithmetic does), then the
/// CRC. Returns true when the bytes (block or CRC) changed.
pub fn write_client_monitors_config(
    rom: &mut [u8],
    heads: &[ClientHead],
    max_heads: usize,
) -> bool {
    let start = off::CLIENT_MONITORS_CONFIG_CRC;
    let end = off::CLIENT_MONITORS_CONFIG + off::CLIENT_MONITORS_CONFIG_SIZE;
    let Some(old) = rom.get(start..end).map(<[u8]>::to_vec) else {
        return false;
    };
    let mut block = [0u8; off::CLIENT_MONITORS_CONFIG_SIZE];
    let cap = max_heads.min(off::CLIENT_MONITORS_CONFIG_MAX_HEADS);
    let count = heads.len().min(cap);
    le::put_u16(&mut block, 0, u16::try_from(count).unwrap_or(0));
    for (i, h) in heads.iter().take(count).enumerate() {
        let base = 4 + i * 16;
        let left = u32::from_le_bytes(h.x.to_le_bytes());
        let top = u32::from_le_bytes(h.y.to_le_bytes());
        le::put_u32(&mut block, base, top);
        le::put_u32(&mut block, base + 4, left);
        le::put_u32(&mut block, base + 8, top.wrapping_add(h.height));
        le::put_u32(&mut block, base + 12, left.wrapping_add(h.width));
    }
    let crc = crc32(&block);
    le::put_u32(rom, off::CLIENT_MONITORS_CONFIG_CRC, crc);
    if let Some(dst) = rom.get_mut(off::CLIENT_MONITORS_CONFIG..end) {
        dst.copy_from_slice(&block);
    }
    rom.get(start..end).is_some_and(|new| new != old.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_pixel_to_mili_matches_double() {
        for v in 0u32..20000 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let f = (f64::from(v) * 0.293_687_5) as u32;
            assert_eq!(pixel_to_mili(v), f, "v = {v}");
        }
        assert_eq!(pixel_to_mili(u32::MAX), 1_261_378_207);
    }

    #[test]
    fn rom_crc32_known_vectors() {
        // init 0, no final xor: the CRC of an empty input is 0, and the
        // standard check value relation crc_std(x) = !crc(x) with init !0 does
        // not apply. "123456789" with init 0 / no xorout is 0x2DFD2D88.
        assert_eq!(crc32(&[]), 0);
        assert_eq!(crc32(b"123456789"), 0x2DFD_2D88);
        // 1028 zero bytes: zero input keeps a zero register.
        assert_eq!(crc32(&[0u8; 1028]), 0);
    }
}
