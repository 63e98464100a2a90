//! A baseline JPEG encoder (ITU T.81) in safe Rust, for [`super::jpeg`].
//!
//! What it writes: JFIF (`APP0`), two quantisation tables (the Annex K
//! luminance and chrominance tables scaled by the IJG quality formula), a
//! baseline `SOF0` of three components with YCbCr 4:2:0 sampling (MCUs of
//! 16×16 pixels: four Y blocks, one Cb, one Cr), the four standard Annex K
//! Huffman tables, an optional restart interval (`DRI`) and one interleaved
//! scan. Rows are encoded in visual order (top first) whatever the source's
//! orientation; edge MCUs repeat the last column and row.
//!
//! How (safe Rust written so the compiler vectorises it): per row of MCUs,
//! the pixels are converted to Y, Cb, Cr (JFIF full-range BT.601) in `f32`
//! rows, chroma is averaged over 2×2 pixels, the separable forward DCT
//! (even/odd decomposition of the DCT-II matrix) runs its vertical pass over
//! whole rows and its horizontal pass per block, the coefficients are
//! quantised with precomputed reciprocals (the float DCT with rounding at
//! the end is more accurate than libjpeg's integer ones), and the entropy
//! coder works from a 64-bit mask of the nonzero coefficients, precomputed
//! (code, length) pairs and a 64-bit bit buffer written out 32 bits at a time
//! with the `0xFF 0x00` byte stuffing only when one of those bytes is `0xFF`.
//!
//! [`encode`] writes a whole JPEG. For encoding in bands on several threads,
//! [`headers`] and [`scan`] give its two parts separately: the headers, and
//! the entropy-coded data of a range of MCU rows as it follows a restart
//! marker (see `jpeg::encode_parallel`).

use std::ops::Range;

use super::{CodecError, ImageRef, PixelFormat};

/// Zigzag position → natural (row-major) index of the 8×8 block.
const ZIGZAG: [usize; 64] = zigzag();

/// Builds [`ZIGZAG`] by walking the anti-diagonals (T.81 Figure 5).
const fn zigzag() -> [usize; 64] {
    let mut out = [0usize; 64];
    let mut k = 0;
    let mut d = 0usize;
    while d < 15 {
        // Diagonal `d`: row + col == d. Even diagonals go up (row falling).
        let lo = d.saturating_sub(7);
        let hi = if d < 7 { d } else { 7 };
        let mut i = 0;
        while i <= hi - lo {
            let row = if d.is_multiple_of(2) { hi - i } else { lo + i };
            out[k] = row * 8 + (d - row);
            k += 1;
            i += 1;
        }
        d += 1;
    }
    out
}

/// Annex K Table K.1 (luminance quantisation), natural order.
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// Annex K Table K.2 (chrominance quantisation), natural order.
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// Table K.3: luminance DC code lengths (count per length 1–16).
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
/// Table K.4: chrominance DC code lengths.
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
/// Tables K.3/K.4: the DC symbols (size categories).
const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
/// Table K.5: luminance AC code lengths.
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
/// Table K.5: luminance AC symbols (run << 4 | size), by code.
const AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
/// Table K.6: chrominance AC code lengths.
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
/// Table K.6: chrominance AC symbols, by code.
const AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// The (code, length) of every symbol of a Huffman table, from its code
/// length counts and symbols (T.81 Annex C); unused symbols get length 0.
fn huffman_codes(bits: &[u8; 16], vals: &[u8]) -> [(u32, u32); 256] {
    let mut out = [(0u32, 0u32); 256];
    let mut code = 0u32;
    let mut k = 0usize;
    for (len, &n) in (1u32..).zip(bits) {
        for _ in 0..n {
            if let Some(&v) = vals.get(k) {
                out[usize::from(v)] = (code, len);
            }
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    out
}

/// Natural index (row `v` · 8 + column `u`) of the coefficient the
/// horizontal pass leaves at block position `v * 8 + p`: the even columns
/// 0, 2, 4, 6 first, then the odd ones.
const fn layout_natural(i: usize) -> usize {
    let (v, p) = (i / 8, i % 8);
    let u = if p < 4 { 2 * p } else { 2 * (p - 4) + 1 };
    v * 8 + u
}

/// Zigzag position → block position in the DCT's output layout.
const ZIGZAG_SRC: [u8; 64] = zigzag_src();

/// Builds [`ZIGZAG_SRC`].
const fn zigzag_src() -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        let mut i = 0;
        while i < 64 {
            if layout_natural(i) == ZIGZAG[k] {
                #[allow(clippy::cast_possible_truncation)] // i < 64.
                {
                    out[k] = i as u8;
                }
            }
            i += 1;
        }
        k += 1;
    }
    out
}

/// A scaled quantisation table: the bytes for `DQT` (zigzag order) and the
/// reciprocals in the DCT's output layout (see [`layout_natural`]).
struct QuantTable {
    /// `DQT` values in zigzag order.
    zigzag: [u8; 64],
    /// `1 / q` per block position of the DCT output.
    recip: [f32; 64],
}

impl QuantTable {
    /// `base` scaled for `quality` (1–100) with the IJG formula, clamped to
    /// baseline's 1–255.
    fn new(base: &[u16; 64], quality: u8) -> Self {
        let q = u32::from(quality.clamp(1, 100));
        let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
        let mut natural = [1u8; 64];
        for (n, &b) in natural.iter_mut().zip(base) {
            let v = ((u32::from(b) * scale + 50) / 100).clamp(1, 255);
            *n = u8::try_from(v).unwrap_or(255);
        }
        let mut zigzag = [0u8; 64];
        for (z, &nat) in zigzag.iter_mut().zip(&ZIGZAG) {
            *z = natural[nat];
        }
        let mut recip = [0f32; 64];
        for (i, r) in recip.iter_mut().enumerate() {
            *r = 1.0 / f32::from(natural[layout_natural(i)]);
        }
        Self { zigzag, recip }
    }
}

/// The forward DCT-II matrix `M[u][x] = C(u)/2 · cos((2x+1)uπ/16)`, kept as
/// the first four columns (the others are ± these: even/odd decomposition).
struct Dct {
    /// `M[u][0..4]`.
    m: [[f32; 4]; 8],
    /// Even rows by column: `even[x] = [M[0][x], M[2][x], M[4][x], M[6][x]]`.
    even: [[f32; 4]; 4],
    /// Odd rows by column: `odd[x] = [M[1][x], M[3][x], M[5][x], M[7][x]]`.
    odd: [[f32; 4]; 4],
}

impl Dct {
    /// Builds the matrix.
    fn new() -> Self {
        let mut m = [[0f32; 4]; 8];
        for (u, row) in (0u8..).zip(m.iter_mut()) {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            for (x, v) in (0u8..).zip(row.iter_mut()) {
                let a = f64::from(2 * x + 1) * f64::from(u) * std::f64::consts::PI / 16.0;
                #[allow(clippy::cast_possible_truncation)] // Coefficients below 1.
                {
                    *v = (0.5 * c * a.cos()) as f32;
                }
            }
        }
        let mut even = [[0f32; 4]; 4];
        let mut odd = [[0f32; 4]; 4];
        for x in 0..4 {
            for p in 0..4 {
                even[x][p] = m[2 * p][x];
                odd[x][p] = m[2 * p + 1][x];
            }
        }
        Self { m, even, odd }
    }

    /// The vertical 1-D DCT of 8 rows of samples (`rows[k * stride..]`,
    /// `width` each) into `out` (8 rows of `width`): `out[u] = Σ_y M[u][y]
    /// · row[y]`, column by column over whole rows; `sd` is scratch.
    fn vertical(
        &self,
        rows: &[f32],
        stride: usize,
        width: usize,
        out: &mut [f32],
        sd: &mut Vec<f32>,
    ) {
        sd.resize(8 * width, 0.0);
        let (s, d) = sd.split_at_mut(4 * width);
        for k in 0..4 {
            let (Some(a), Some(b)) = (
                rows.get(k * stride..k * stride + width),
                rows.get((7 - k) * stride..(7 - k) * stride + width),
            ) else {
                return;
            };
            let sk = &mut s[k * width..(k + 1) * width];
            let dk = &mut d[k * width..(k + 1) * width];
            for (((s, d), &a), &b) in sk.iter_mut().zip(dk.iter_mut()).zip(a).zip(b) {
                *s = a + b;
                *d = a - b;
            }
        }
        for (u, o) in out.chunks_exact_mut(width).take(8).enumerate() {
            let src = if u.is_multiple_of(2) { &*s } else { &*d };
            let m = self.m[u];
            let (s0, rest) = src.split_at(width);
            let (s1, rest) = rest.split_at(width);
            let (s2, s3) = rest.split_at(width);
            for ((((o, &a), &b), &c), &e) in o.iter_mut().zip(s0).zip(s1).zip(s2).zip(s3) {
                *o = m[0] * a + m[1] * b + m[2] * c + m[3] * e;
            }
        }
    }

    /// The horizontal 1-D DCT of the block at column `x` of 8 vertically
    /// transformed rows, quantised: coefficients in zigzag order.
    // Not inlined, nor are `encode_block` and `convert_row`: the hot loops
    // keep their registers apart (measured: ~7% faster than inlined).
    #[inline(never)]
    fn horizontal_quant(
        &self,
        t: &[f32],
        width: usize,
        x: usize,
        q: &QuantTable,
        zz: &mut [i32; 64],
    ) {
        let mut c = [0f32; 64];
        for (v, cv) in c.as_chunks_mut::<8>().0.iter_mut().enumerate() {
            let start = v * width + x;
            let Some(seg) = t.get(start..start + 8) else {
                continue;
            };
            // s[k] = seg[k] + seg[7-k], d[k] = seg[k] - seg[7-k] as 4 lanes.
            let lo = [seg[0], seg[1], seg[2], seg[3]];
            let hi = [seg[7], seg[6], seg[5], seg[4]];
            let sv: [f32; 4] = std::array::from_fn(|l| lo[l] + hi[l]);
            let dv: [f32; 4] = std::array::from_fn(|l| lo[l] - hi[l]);
            let (ev, od) = (&self.even, &self.odd);
            let e: [f32; 4] = std::array::from_fn(|l| {
                sv[0] * ev[0][l] + sv[1] * ev[1][l] + sv[2] * ev[2][l] + sv[3] * ev[3][l]
            });
            let o: [f32; 4] = std::array::from_fn(|l| {
                dv[0] * od[0][l] + dv[1] * od[1][l] + dv[2] * od[2][l] + dv[3] * od[3][l]
            });
            cv[..4].copy_from_slice(&e);
            cv[4..].copy_from_slice(&o);
        }
        // Round to nearest through the float mantissa (|x| < 2^22).
        let flat: [i32; 64] = std::array::from_fn(|i| {
            (c[i] * q.recip[i] + 12_582_912.0)
                .to_bits()
                .wrapping_sub(0x4b40_0000)
                .cast_signed()
        });
        for (z, &src) in zz.iter_mut().zip(&ZIGZAG_SRC) {
            *z = flat[usize::from(src)];
        }
    }
}

/// The entropy-coded segment writer: bits MSB first, byte-stuffed.
struct BitWriter {
    /// The output stream: `buf[..pos]`, the rest is room.
    buf: Vec<u8>,
    /// Bytes written.
    pos: usize,
    /// Pending bits in the low `nbits` bits.
    acc: u64,
    /// Number of pending bits (below 32 between calls).
    nbits: u32,
}

/// Room [`BitWriter::reserve`] keeps: more than one MCU can take (six blocks
/// of at most 64 codes of 27 bits, every byte stuffed).
const MCU_ROOM: usize = 6 * 64 * 27 / 8 * 2 + 64;

impl BitWriter {
    /// Makes sure the next MCU (or marker) fits without further checks.
    #[inline(always)]
    fn reserve(&mut self) {
        if self.buf.len() < self.pos + MCU_ROOM {
            let len = (self.buf.len() * 2).max(self.pos + MCU_ROOM);
            self.buf.resize(len, 0);
        }
    }

    /// Appends one byte (room reserved).
    #[inline(always)]
    fn byte(&mut self, x: u8) {
        if let Some(d) = self.buf.get_mut(self.pos) {
            *d = x;
            self.pos += 1;
        }
    }

    /// Pads the last byte with 1 bits and writes out everything pending.
    fn flush(&mut self) {
        self.reserve();
        let pad = (8 - self.nbits % 8) % 8;
        self.acc = (self.acc << pad) | ((1u64 << pad) - 1);
        self.nbits += pad;
        while self.nbits >= 8 {
            self.nbits -= 8;
            let x = (self.acc >> self.nbits).to_be_bytes()[7];
            self.byte(x);
            if x == 0xff {
                self.byte(0);
            }
        }
        self.acc = 0;
    }
}

/// Huffman codes of one component class.
struct Tables {
    /// (code, length) per DC size category.
    dc: [(u32, u32); 256],
    /// (code, length) per AC symbol `run << 4 | size`.
    ac: [(u32, u32); 256],
}

/// Size category of `v` and its extra bits (T.81 F.1.2.1), without
/// branches.
#[inline(always)]
fn category(v: i32) -> (u32, u32) {
    let size = 32 - v.unsigned_abs().leading_zeros();
    // Negative values send v - 1 in `size` bits (ones' complement): add the
    // sign (-1 or 0).
    let bits = v.wrapping_add(v >> 31).cast_unsigned();
    (size, bits & ((1u32 << size) - 1))
}

/// The bit writer's state in locals (registers) while one block is coded.
#[derive(Clone, Copy)]
struct Bits {
    /// Pending bits in the low `nbits` bits.
    acc: u64,
    /// Number of pending bits (below 32 between calls).
    nbits: u32,
    /// Bytes written to the buffer.
    pos: usize,
}

impl Bits {
    /// Appends the low `len` bits of `bits` (`len` ≤ 27) to the local state,
    /// writing 32 bits to `buf` (which has [`MCU_ROOM`] bytes of room) when
    /// they are complete, with `0xFF 0x00` stuffing.
    #[inline(always)]
    fn put(&mut self, buf: &mut [u8], bits: u32, len: u32) {
        self.acc = (self.acc << len) | u64::from(bits);
        self.nbits += len;
        if self.nbits >= 32 {
            self.nbits -= 32;
            let b = (self.acc >> self.nbits).to_be_bytes();
            let w = [b[4], b[5], b[6], b[7]];
            let v = u32::from_be_bytes(w);
            // Any byte 0xFF? (the zero-byte test on the complement)
            if (!v).wrapping_sub(0x0101_0101) & v & 0x8080_8080 == 0 {
                if let Some(d) = buf.get_mut(self.pos..self.pos + 4) {
                    d.copy_from_slice(&w);
                    self.pos += 4;
                }
            } else {
                for x in w {
                    let n = if x == 0xff { 2 } else { 1 };
                    if let Some(d) = buf.get_mut(self.pos..self.pos + 2) {
                        d.copy_from_slice(&[x, 0]);
                        self.pos += n;
                    }
                }
            }
        }
    }
}

/// Entropy-codes one block (zigzag coefficients) against the DC prediction.
#[inline(never)]
fn encode_block(w: &mut BitWriter, zz: &[i32; 64], pred: &mut i32, t: &Tables) {
    let buf = &mut w.buf[..];
    let mut st = Bits {
        acc: w.acc,
        nbits: w.nbits,
        pos: w.pos,
    };
    let (size, extra) = category(zz[0] - *pred);
    *pred = zz[0];
    // Sizes stay within 11 (DC differences) and 10 (AC) for 8-bit samples;
    // the masks only spare the bounds checks.
    let (code, len) = t.dc[(size & 0xff) as usize];
    st.put(buf, (code << size) | extra, len + size);
    // Bit i set when coefficient i is nonzero: 0/1 bytes, eight at a time
    // gathered into one byte by a multiplication (byte k of the multiplier
    // is 2^(7-k), so the top byte of the product is Σ b_i · 2^i, no carries).
    let mut nz = [0u8; 64];
    for (n, &c) in nz.iter_mut().zip(zz) {
        *n = u8::from(c != 0);
    }
    let mut mask = 0u64;
    for (j, g) in nz.as_chunks::<8>().0.iter().enumerate() {
        mask |= (u64::from_le_bytes(*g).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * j);
    }
    mask &= !1;
    let mut last = 0u32;
    while mask != 0 {
        let k = mask.trailing_zeros();
        mask &= mask - 1;
        let mut run = k - last - 1;
        while run >= 16 {
            let (code, len) = t.ac[0xf0];
            st.put(buf, code, len);
            run -= 16;
        }
        let (size, extra) = category(zz[k as usize]);
        let (code, len) = t.ac[(((run << 4) | size) & 0xff) as usize];
        st.put(buf, (code << size) | extra, len + size);
        last = k;
    }
    if last != 63 {
        let (code, len) = t.ac[0];
        st.put(buf, code, len);
    }
    w.acc = st.acc;
    w.nbits = st.nbits;
    w.pos = st.pos;
}

/// Appends a marker segment: `FF marker`, the length, then `body`.
fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xff, marker]);
    let len = u16::try_from(body.len() + 2).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

/// Writes SOI, APP0, DQT, SOF0, DHT, DRI (if `restart_interval` > 0), SOS.
fn write_headers(
    out: &mut Vec<u8>,
    w: u16,
    h: u16,
    luma: &QuantTable,
    chroma: &QuantTable,
    restart_interval: u16,
) {
    out.extend_from_slice(&[0xff, 0xd8]);
    segment(
        out,
        0xe0,
        &[b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0],
    );
    let mut dqt = Vec::with_capacity(130);
    dqt.push(0);
    dqt.extend_from_slice(&luma.zigzag);
    dqt.push(1);
    dqt.extend_from_slice(&chroma.zigzag);
    segment(out, 0xdb, &dqt);
    let [h0, h1] = h.to_be_bytes();
    let [w0, w1] = w.to_be_bytes();
    segment(
        out,
        0xc0,
        &[8, h0, h1, w0, w1, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1],
    );
    let mut dht = Vec::with_capacity(420);
    for (class_id, bits, vals) in [
        (0x00u8, &DC_LUMA_BITS, &DC_VALS[..]),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALS[..]),
        (0x01, &DC_CHROMA_BITS, &DC_VALS[..]),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALS[..]),
    ] {
        dht.push(class_id);
        dht.extend_from_slice(bits);
        dht.extend_from_slice(vals);
    }
    segment(out, 0xc4, &dht);
    if restart_interval > 0 {
        segment(out, 0xdd, &restart_interval.to_be_bytes());
    }
    segment(out, 0xda, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
}

/// JFIF RGB → YCbCr weights.
const KR: f32 = 0.299;
/// Green weight of Y.
const KG: f32 = 0.587;
/// Blue weight of Y.
const KB: f32 = 0.114;
/// Red weight of Cb.
const CB_R: f32 = -0.168_735_9;
/// Green weight of Cb.
const CB_G: f32 = -0.331_264_1;
/// Green weight of Cr.
const CR_G: f32 = -0.418_687_6;
/// Blue weight of Cr.
const CR_B: f32 = -0.081_312_4;

/// Converts one stored row of `cols` pixels into level-shifted Y, Cb, Cr
/// (`ycc`, padded by repeating the last pixel); `rgb` is scratch for the
/// 16- and 24-bit formats.
#[inline(never)]
fn convert_row(
    row: &[u8],
    format: PixelFormat,
    cols: usize,
    rgb: &mut [Vec<f32>; 3],
    ycc: [&mut [f32]; 3],
) {
    let [y, cb, cr] = ycc;
    if matches!(format, PixelFormat::Rgb32 | PixelFormat::Rgba) {
        // Fused: whole pixels as `u32` lanes straight to Y, Cb, Cr (the
        // compiler vectorises the masks, shifts and conversions).
        let px = row.as_chunks::<4>().0;
        let n = y.len().min(cb.len()).min(cr.len());
        let m = px.len().min(n);
        let (px, y, cb, cr) = (&px[..m], &mut y[..n], &mut cb[..n], &mut cr[..n]);
        for i in 0..m {
            let v = u32::from_le_bytes(px[i]).cast_signed();
            #[allow(clippy::cast_precision_loss)] // Bytes: exact in f32.
            let (bv, gv, rv) = (
                (v & 0xff) as f32,
                ((v >> 8) & 0xff) as f32,
                ((v >> 16) & 0xff) as f32,
            );
            y[i] = KR * rv + KG * gv + KB * bv - 128.0;
            cb[i] = CB_R * rv + CB_G * gv + 0.5 * bv;
            cr[i] = 0.5 * rv + CR_G * gv + CR_B * bv;
        }
        if m > 0 && m < n {
            let (ly, lb, lr) = (y[m - 1], cb[m - 1], cr[m - 1]);
            y[m..].fill(ly);
            cb[m..].fill(lb);
            cr[m..].fill(lr);
        }
        return;
    }
    let [r, g, b] = rgb;
    let n = r.len();
    let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
    match format {
        PixelFormat::Rgb24 => {
            for (((p, r), g), b) in row
                .as_chunks::<3>()
                .0
                .iter()
                .zip(&mut *r)
                .zip(&mut *g)
                .zip(&mut *b)
            {
                *b = f32::from(p[0]);
                *g = f32::from(p[1]);
                *r = f32::from(p[2]);
            }
        }
        PixelFormat::Rgb16 => {
            for (((p, r), g), b) in row
                .as_chunks::<2>()
                .0
                .iter()
                .zip(&mut *r)
                .zip(&mut *g)
                .zip(&mut *b)
            {
                let v = u16::from_le_bytes(*p);
                let ch = |s: u16| {
                    let x = (v >> s) & 31;
                    f32::from((x << 3) | (x >> 2))
                };
                *b = ch(0);
                *g = ch(5);
                *r = ch(10);
            }
        }
        _ => {
            let px = row.as_chunks::<4>().0;
            let m = px.len().min(n);
            let (px, r, g, b) = (&px[..m], &mut r[..m], &mut g[..m], &mut b[..m]);
            for i in 0..m {
                // Whole pixels as `u32` lanes: the compiler vectorises the
                // masks, shifts and conversions.
                let v = u32::from_le_bytes(px[i]).cast_signed();
                #[allow(clippy::cast_precision_loss)] // Bytes: exact in f32.
                {
                    b[i] = (v & 0xff) as f32;
                    g[i] = ((v >> 8) & 0xff) as f32;
                    r[i] = ((v >> 16) & 0xff) as f32;
                }
            }
        }
    }
    if cols < n && cols > 0 {
        let (lr, lg, lb) = (r[cols - 1], g[cols - 1], b[cols - 1]);
        r[cols..].fill(lr);
        g[cols..].fill(lg);
        b[cols..].fill(lb);
    }
    let (y, cb, cr) = (&mut y[..n], &mut cb[..n], &mut cr[..n]);
    for i in 0..n {
        let (rv, gv, bv) = (r[i], g[i], b[i]);
        y[i] = KR * rv + KG * gv + KB * bv - 128.0;
        cb[i] = CB_R * rv + CB_G * gv + 0.5 * bv;
        cr[i] = 0.5 * rv + CR_G * gv + CR_B * bv;
    }
}

/// Checks that `img` is valid and that JPEG can carry it; returns its size
/// as the frame header's 16-bit fields.
fn check(img: &ImageRef<'_>) -> Result<(u16, u16), CodecError> {
    img.validate()?;
    let (Ok(w16), Ok(h16)) = (u16::try_from(img.width), u16::try_from(img.height)) else {
        return Err(CodecError::BadDimensions {
            width: img.width,
            height: img.height,
        });
    };
    match img.format {
        PixelFormat::Rgb32 | PixelFormat::Rgba | PixelFormat::Rgb24 | PixelFormat::Rgb16 => {
            Ok((w16, h16))
        }
        other => Err(CodecError::UnsupportedFormat {
            codec: "JPEG",
            format: other,
        }),
    }
}

/// Rows of MCUs of `img` (16 pixel rows each, the last one padded).
#[must_use]
pub fn mcu_rows(img: &ImageRef<'_>) -> usize {
    img.rows().div_ceil(16)
}

/// Columns of MCUs of `img` (16 pixels each, the last one padded).
#[must_use]
pub fn mcu_cols(img: &ImageRef<'_>) -> usize {
    img.cols().div_ceil(16)
}

/// Encodes `img` (RGB16/24/32 or RGBA, alpha ignored) as a baseline JFIF
/// JPEG with 4:2:0 chroma at `quality` (1–100), rows top first, with a
/// restart marker every `restart_interval` MCUs (0: none).
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for palette/A8 images,
/// [`CodecError::BadDimensions`] above 65535 pixels either way, or an invalid
/// [`ImageRef`].
pub fn encode(
    img: &ImageRef<'_>,
    quality: u8,
    restart_interval: u16,
) -> Result<Vec<u8>, CodecError> {
    let mut out = headers(img, quality, restart_interval)?;
    out.reserve(img.row_bytes() * img.rows() / 10 + 2);
    let mut out = Scan::new(quality, out).code(img, 0..mcu_rows(img), restart_interval);
    out.extend_from_slice(&[0xff, 0xd9]);
    Ok(out)
}

/// Everything of [`encode`]'s output before the entropy-coded data: SOI,
/// APP0, DQT, SOF0 (the full image size), DHT, DRI when `restart_interval`
/// is not 0, and SOS.
///
/// # Errors
/// As [`encode`].
pub fn headers(
    img: &ImageRef<'_>,
    quality: u8,
    restart_interval: u16,
) -> Result<Vec<u8>, CodecError> {
    let (w16, h16) = check(img)?;
    let mut out = Vec::with_capacity(640);
    write_headers(
        &mut out,
        w16,
        h16,
        &QuantTable::new(&LUMA_Q, quality),
        &QuantTable::new(&CHROMA_Q, quality),
        restart_interval,
    );
    Ok(out)
}

/// The entropy-coded data of the MCU rows `rows` of `img` as [`encode`] at
/// `quality` codes them right after a restart marker: DC predictions start
/// at 0 and the data ends padded to a whole byte. Joined with `RSTn`
/// markers under [`headers`] that declare a restart interval of the rows'
/// MCUs, such segments make a JPEG byte for byte equal to [`encode`]'s with
/// that interval.
///
/// # Errors
/// As [`encode`]; rows past the image code nothing.
pub fn scan(img: &ImageRef<'_>, quality: u8, rows: Range<usize>) -> Result<Vec<u8>, CodecError> {
    check(img)?;
    let cap = img.row_bytes() * 16 * rows.len().min(mcu_rows(img)) / 10 + 64;
    Ok(Scan::new(quality, Vec::with_capacity(cap)).code(img, rows, 0))
}

/// The tables of one quality and the bit writer of one entropy-coded stream.
struct Scan {
    luma_q: QuantTable,
    chroma_q: QuantTable,
    luma_t: Tables,
    chroma_t: Tables,
    dct: Dct,
    bw: BitWriter,
}

impl Scan {
    /// Tables for `quality`; the stream is appended to `out`.
    fn new(quality: u8, out: Vec<u8>) -> Self {
        let pos = out.len();
        Self {
            luma_q: QuantTable::new(&LUMA_Q, quality),
            chroma_q: QuantTable::new(&CHROMA_Q, quality),
            luma_t: Tables {
                dc: huffman_codes(&DC_LUMA_BITS, &DC_VALS),
                ac: huffman_codes(&AC_LUMA_BITS, &AC_LUMA_VALS),
            },
            chroma_t: Tables {
                dc: huffman_codes(&DC_CHROMA_BITS, &DC_VALS),
                ac: huffman_codes(&AC_CHROMA_BITS, &AC_CHROMA_VALS),
            },
            dct: Dct::new(),
            bw: BitWriter {
                buf: out,
                pos,
                acc: 0,
                nbits: 0,
            },
        }
    }

    /// Codes the MCU rows `rows` of a checked `img` (a restart marker every
    /// `restart_interval` MCUs, 0: none), flushes, and returns the output.
    fn code(mut self, img: &ImageRef<'_>, rows: Range<usize>, restart_interval: u16) -> Vec<u8> {
        let (cols, rows_px) = (img.cols(), img.rows());
        let mcu_cols = cols.div_ceil(16);
        let pw = mcu_cols * 16;
        let cw = pw / 2;
        let (dct, bw) = (&self.dct, &mut self.bw);

        let mut rgb = [vec![0f32; pw], vec![0f32; pw], vec![0f32; pw]];
        let mut yplane = vec![0f32; pw * 16];
        // Cb, Cr of two rows, then the 2×2 averages of the MCU row.
        let mut cb2 = vec![0f32; pw * 2];
        let mut cr2 = vec![0f32; pw * 2];
        let mut cbp = vec![0f32; cw * 8];
        let mut crp = vec![0f32; cw * 8];
        let mut ty = vec![0f32; pw * 16];
        let mut tcb = vec![0f32; cw * 8];
        let mut tcr = vec![0f32; cw * 8];
        let mut sd = Vec::new();
        let mut preds = [0i32; 3];
        let mut zz = [0i32; 64];
        let mut mcus_left = restart_interval;
        let mut restarts = 0u8;

        for my in rows.start..rows.end.min(rows_px.div_ceil(16)) {
            for pair in 0..8 {
                for half in 0..2 {
                    let v = (my * 16 + pair * 2 + half).min(rows_px - 1);
                    let stored = if img.top_down { v } else { rows_px - 1 - v };
                    let line = pair * 2 + half;
                    let (cb_dst, cr_dst) = (
                        &mut cb2[half * pw..(half + 1) * pw],
                        &mut cr2[half * pw..(half + 1) * pw],
                    );
                    convert_row(
                        img.row(stored),
                        img.format,
                        cols,
                        &mut rgb,
                        [&mut yplane[line * pw..(line + 1) * pw], cb_dst, cr_dst],
                    );
                }
                for (two, plane) in [(&mut cb2, &mut cbp), (&mut cr2, &mut crp)] {
                    // Rows summed in place, then horizontal pairs averaged.
                    let (c0, c1) = two.split_at_mut(pw);
                    for (a, &b) in c0.iter_mut().zip(&*c1) {
                        *a += b;
                    }
                    let o = &mut plane[pair * cw..(pair + 1) * cw];
                    for (o, p) in o.iter_mut().zip(c0.as_chunks::<2>().0) {
                        *o = 0.25 * (p[0] + p[1]);
                    }
                }
            }
            dct.vertical(&yplane, pw, pw, &mut ty[..pw * 8], &mut sd);
            dct.vertical(&yplane[pw * 8..], pw, pw, &mut ty[pw * 8..], &mut sd);
            dct.vertical(&cbp, cw, cw, &mut tcb, &mut sd);
            dct.vertical(&crp, cw, cw, &mut tcr, &mut sd);
            for mx in 0..mcu_cols {
                if restart_interval > 0 && mcus_left == 0 {
                    bw.flush();
                    bw.byte(0xff);
                    bw.byte(0xd0 + restarts);
                    restarts = (restarts + 1) % 8;
                    preds = [0; 3];
                    mcus_left = restart_interval;
                }
                bw.reserve();
                let x = mx * 16;
                for (top, ox) in [
                    (&ty[..], 0),
                    (&ty[..], 8),
                    (&ty[pw * 8..], 0),
                    (&ty[pw * 8..], 8),
                ] {
                    dct.horizontal_quant(top, pw, x + ox, &self.luma_q, &mut zz);
                    encode_block(bw, &zz, &mut preds[0], &self.luma_t);
                }
                dct.horizontal_quant(&tcb, cw, mx * 8, &self.chroma_q, &mut zz);
                encode_block(bw, &zz, &mut preds[1], &self.chroma_t);
                dct.horizontal_quant(&tcr, cw, mx * 8, &self.chroma_q, &mut zz);
                encode_block(bw, &zz, &mut preds[2], &self.chroma_t);
                mcus_left = mcus_left.wrapping_sub(1);
            }
        }
        bw.flush();
        let mut out = std::mem::take(&mut bw.buf);
        out.truncate(bw.pos);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::{DecodeLimits, jpeg};

    /// The `jpeg-encoder` crate's encoding of a top-down BGRX image (what
    /// `jpeg.rs` used before this encoder): the reference for size and PSNR.
    fn crate_encode(px: &[u8], w: u16, h: u16) -> Vec<u8> {
        crate_encode_q(px, w, h, 85)
    }

    fn crate_encode_q(px: &[u8], w: u16, h: u16, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        enc.encode(px, w, h, jpeg_encoder::ColorType::Bgra).unwrap();
        out
    }

    fn pattern(w: usize, h: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(w * h * 4);
        let mut s = 1u32;
        for y in 0..h {
            for x in 0..w {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let n = u8::try_from((s >> 16) % 16).unwrap();
                px.extend_from_slice(&[
                    u8::try_from((x * 7 + y) % 256).unwrap(),
                    u8::try_from((y * 5) % 256).unwrap().wrapping_add(n),
                    if (x / 5 + y / 3) % 2 == 0 { 200 } else { 30 },
                    0,
                ]);
            }
        }
        px
    }

    #[test]
    fn headers_and_scans_make_the_whole_encoding() {
        let px = pattern(100, 70);
        let img = ImageRef::new(&px, 100, 70, 400, PixelFormat::Rgb32, false).unwrap();
        assert_eq!((mcu_cols(&img), mcu_rows(&img)), (7, 5));
        let mut joined = headers(&img, 85, 0).unwrap();
        joined.extend_from_slice(&scan(&img, 85, 0..5).unwrap());
        joined.extend_from_slice(&[0xff, 0xd9]);
        assert_eq!(joined, encode(&img, 85, 0).unwrap());
        // Rows past the image code nothing; empty ranges too.
        assert!(scan(&img, 85, 5..9).unwrap().is_empty());
        assert!(scan(&img, 85, 3..3).unwrap().is_empty());
        // What JPEG cannot carry is refused by both.
        let pal = ImageRef::new(&px, 100, 70, 100, PixelFormat::Plt8, true).unwrap();
        headers(&pal, 85, 0).unwrap_err();
        scan(&pal, 85, 0..1).unwrap_err();
    }

    #[test]
    fn zigzag_is_the_standard_order() {
        assert_eq!(&ZIGZAG[..10], &[0, 1, 8, 16, 9, 2, 3, 10, 17, 24]);
        assert_eq!(&ZIGZAG[58..], &[61, 54, 47, 55, 62, 63]);
        let mut seen = [false; 64];
        for &z in &ZIGZAG {
            seen[z] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn odd_sizes_decode_as_well_as_the_crate_encoder() {
        for (w, h) in [
            (1usize, 1usize),
            (2, 2),
            (7, 3),
            (17, 33),
            (100, 1),
            (1, 100),
            (33, 17),
            (250, 31),
            (31, 250),
        ] {
            let px = pattern(w, h);
            let (w16, h16) = (u16::try_from(w).unwrap(), u16::try_from(h).unwrap());
            let img = ImageRef::new(
                &px,
                u32::from(w16),
                u32::from(h16),
                w * 4,
                PixelFormat::Rgb32,
                true,
            )
            .unwrap();
            let lim = DecodeLimits::default();
            let ours = encode(&img, 85, 0).unwrap();
            let dec = jpeg::decode(&ours, &lim).unwrap();
            assert_eq!((dec.width, dec.height), (img.width, img.height));
            let p = jpeg::psnr(&dec.pixels, &px);
            let theirs = jpeg::decode(&crate_encode(&px, w16, h16), &lim).unwrap();
            let pt = jpeg::psnr(&theirs.pixels, &px);
            assert!(p >= pt - 0.2, "{w}x{h}: {p} vs {pt}");
        }
    }

    #[test]
    fn extreme_qualities_and_contrast_decode() {
        // Black/white checkerboards give the largest coefficients (quality
        // 100 quantises by 1), quality 1 the coarsest tables.
        let (w, h) = (64usize, 48usize);
        let mut px = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            for x in 0..w {
                let v = if (x + y) % 2 == 0 || x < 8 { 255 } else { 0 };
                px.extend_from_slice(&[v, 255 - v, v, 0]);
            }
        }
        let img = ImageRef::new(&px, 64, 48, w * 4, PixelFormat::Rgb32, true).unwrap();
        let lim = DecodeLimits::default();
        for q in [1u8, 50, 100, 0, 255] {
            let dec = jpeg::decode(&encode(&img, q, 2).unwrap(), &lim).unwrap();
            assert_eq!((dec.width, dec.height), (64, 48));
            if (1..=100).contains(&q) {
                let theirs = jpeg::decode(&crate_encode_q(&px, 64, 48, q), &lim).unwrap();
                let (p, pt) = (
                    jpeg::psnr(&dec.pixels, &px),
                    jpeg::psnr(&theirs.pixels, &px),
                );
                assert!(p > pt - 0.2, "quality {q}: {p} vs {pt}");
            }
        }
    }

    #[test]
    fn formats_orientations_and_strides_encode_alike() {
        // The same visual image as RGB16 (5-bit channels, so every format
        // can hold it exactly), RGB24, RGB32 and RGBA, top-down and
        // bottom-up, tight and padded: the same JPEG bytes.
        let (w, h) = (37usize, 21usize);
        let mut s = 9u32;
        let rgb16: Vec<u16> = (0..w * h)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                u16::try_from((s >> 12) & 0x7fff).unwrap()
            })
            .collect();
        let ch = |v: u16, sh: u16| {
            let x = u8::try_from((v >> sh) & 31).unwrap();
            (x << 3) | (x >> 2)
        };
        let want = {
            let px: Vec<u8> = rgb16
                .iter()
                .flat_map(|&v| [ch(v, 0), ch(v, 5), ch(v, 10), 0])
                .collect();
            let img = ImageRef::new(&px, 37, 21, w * 4, PixelFormat::Rgb32, true).unwrap();
            encode(&img, 85, 3).unwrap()
        };
        for format in [
            PixelFormat::Rgb16,
            PixelFormat::Rgb24,
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
        ] {
            for top_down in [true, false] {
                for pad in [0usize, 5] {
                    let bpp = usize::try_from(format.bits_per_pixel() / 8).unwrap();
                    let stride = w * bpp + pad;
                    let mut px = vec![0xeeu8; stride * h];
                    for (i, &v) in rgb16.iter().enumerate() {
                        let (y, x) = (i / w, i % w);
                        let row = if top_down { y } else { h - 1 - y };
                        let at = row * stride + x * bpp;
                        let bytes: Vec<u8> = match format {
                            PixelFormat::Rgb16 => v.to_le_bytes().to_vec(),
                            PixelFormat::Rgb24 => vec![ch(v, 0), ch(v, 5), ch(v, 10)],
                            _ => vec![ch(v, 0), ch(v, 5), ch(v, 10), 0x55],
                        };
                        px[at..at + bpp].copy_from_slice(&bytes);
                    }
                    let img = ImageRef::new(&px, 37, 21, stride, format, top_down).unwrap();
                    let got = encode(&img, 85, 3).unwrap();
                    assert!(got == want, "{format:?} top_down={top_down} pad={pad}");
                }
            }
        }
        let pal = ImageRef::new(&[0u8; 4], 2, 2, 2, PixelFormat::Plt8, true).unwrap();
        assert!(matches!(
            encode(&pal, 85, 0),
            Err(CodecError::UnsupportedFormat { .. })
        ));
    }
}
