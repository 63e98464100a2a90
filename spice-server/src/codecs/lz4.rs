//! LZ4 as SPICE frames it (image type `LZ4`, spice-server `lz4-encoder.c`,
//! spice-gtk `canvas_get_lz4`).
//!
//! ```text
//! u8  top_down (0/1)
//! u8  SpiceBitmapFmt: 16BIT 6, 24BIT 7, 32BIT 8, RGBA 9
//! repeated: u32 big-endian compressed length, raw LZ4 block
//! ```
//!
//! The blocks hold consecutive groups of tightly packed rows in stored order.
//! They are *linked*: each block is compressed with the previous 64 KiB of
//! input as its dictionary, so it may reference data of earlier blocks; the
//! client decodes them with one `LZ4_streamDecode_t` into one contiguous
//! buffer. Width and height are not in the stream (they come from the image
//! descriptor), so the decoder takes them as arguments.

use std::num::NonZeroU32;

use super::{CodecError, DecodeLimits, DecodedImage, ImageRef, PixelFormat};

/// LZ4's window: how far back a match may reach.
const WINDOW: usize = 64 * 1024;

/// `SpiceBitmapFmt` value of a pixel format LZ4 can carry.
fn spice_bitmap_fmt(format: PixelFormat) -> Result<u8, CodecError> {
    match format {
        PixelFormat::Rgb16 => Ok(6),
        PixelFormat::Rgb24 => Ok(7),
        PixelFormat::Rgb32 => Ok(8),
        PixelFormat::Rgba => Ok(9),
        _ => Err(CodecError::UnsupportedFormat {
            codec: "LZ4",
            format,
        }),
    }
}

/// Pixel format of a `SpiceBitmapFmt` value in an LZ4 header.
fn format_of(fmt: u8) -> Result<PixelFormat, CodecError> {
    match fmt {
        6 => Ok(PixelFormat::Rgb16),
        7 => Ok(PixelFormat::Rgb24),
        8 => Ok(PixelFormat::Rgb32),
        9 => Ok(PixelFormat::Rgba),
        other => Err(CodecError::BadImageType(u32::from(other))),
    }
}

/// Encodes `img` as one LZ4 block (the fastest, and what a client decodes best).
///
/// # Errors
/// [`CodecError::UnsupportedFormat`] for formats other than RGB16/24/32 and RGBA,
/// or an invalid [`ImageRef`].
pub fn encode(img: &ImageRef<'_>) -> Result<Vec<u8>, CodecError> {
    encode_blocks(img, None)
}

/// Encodes `img` as linked blocks of `rows_per_block` rows each (`None`: one
/// block). Each block may reference the previous 64 KiB of rows, exactly what
/// `LZ4_compress_fast_continue` on one stream allows.
///
/// # Errors
/// As [`encode`].
pub fn encode_blocks(
    img: &ImageRef<'_>,
    rows_per_block: Option<NonZeroU32>,
) -> Result<Vec<u8>, CodecError> {
    let fmt = header_fmt(img)?;
    let packed = packed_rows(img);
    let data: &[u8] = &packed;
    let row_bytes = img.row_bytes();
    let rows = img.rows();
    let rows_per_block = rows_per_block
        .map_or(rows, |n| usize::try_from(n.get()).unwrap_or(rows))
        .clamp(1, max_block_rows(row_bytes));
    let block_bytes = rows_per_block.saturating_mul(row_bytes);
    let n_blocks = data.len().div_ceil(block_bytes);
    let mut out = Vec::with_capacity(2 + n_blocks * 4 + data.len() / 8 + 1024);
    out.push(u8::from(img.top_down));
    out.push(fmt);
    let mut table = HashTable::new();
    let mut prev_base = 0;
    let mut start = 0;
    while start < data.len() {
        let end = (start + block_bytes).min(data.len());
        let base = start.saturating_sub(WINDOW);
        // Table positions are relative to the window start; move them along.
        table.rebase(base - prev_base);
        prev_base = base;
        let pos = out.len();
        out.extend_from_slice(&[0; 4]);
        let n = compress_block(&data[base..end], start - base, &mut table, &mut out)?;
        put_block_len(&mut out[pos..pos + 4], n)?;
        start = end;
    }
    Ok(out)
}

/// Images smaller than this are not worth a thread in [`encode_parallel`].
pub const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// Encodes `img` like [`encode`] on up to `threads` threads: the rows are cut
/// into `threads` bands of whole rows, each compressed on its own thread as one
/// block that references only its own band. The blocks concatenate into one
/// valid SPICE LZ4 stream (a linked stream's block need not reference the
/// previous one), decoded like any other by [`decode`] and spice-gtk. Images
/// below [`PARALLEL_MIN_BYTES`], or `threads` ≤ 1, take the single-thread path
/// ([`encode`]). The ratio is a hair lower than [`encode`]'s: nothing matches
/// across bands.
///
/// # Errors
/// As [`encode`].
pub fn encode_parallel(img: &ImageRef<'_>, threads: usize) -> Result<Vec<u8>, CodecError> {
    let fmt = header_fmt(img)?;
    let row_bytes = img.row_bytes();
    let rows = img.rows();
    let total = row_bytes.saturating_mul(rows);
    let threads = threads
        .min(rows)
        .min(total / (PARALLEL_MIN_BYTES / 2).max(1))
        .max(1);
    if threads <= 1 || total < PARALLEL_MIN_BYTES {
        return encode(img);
    }
    let packed = packed_rows(img);
    let data: &[u8] = &packed;
    // Bands of whole rows, at most one block's worth of rows each.
    let band_rows = rows.div_ceil(threads).min(max_block_rows(row_bytes));
    let bands: Vec<&[u8]> = data.chunks(band_rows * row_bytes).collect();
    // The calling thread takes the first band.
    let blocks = super::on_threads(&bands, |b| compress_band(b))
        .into_iter()
        .map(|r| r.unwrap_or_else(|_| Err(CodecError::Lz4("encoder thread panicked".into()))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(2 + blocks.iter().map(|b| b.len() + 4).sum::<usize>());
    out.push(u8::from(img.top_down));
    out.push(fmt);
    for b in &blocks {
        let mut len = [0u8; 4];
        put_block_len(&mut len, b.len())?;
        out.extend_from_slice(&len);
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// One band as one self-contained LZ4 block.
fn compress_band(band: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    compress_block(band, 0, &mut HashTable::new(), &mut out)?;
    Ok(out)
}

/// Validates `img` and returns its `SpiceBitmapFmt`.
fn header_fmt(img: &ImageRef<'_>) -> Result<u8, CodecError> {
    img.validate()?;
    spice_bitmap_fmt(img.format)
}

/// The rows of `img` as one contiguous buffer (borrowed when already packed).
fn packed_rows<'a>(img: &ImageRef<'a>) -> std::borrow::Cow<'a, [u8]> {
    let row_bytes = img.row_bytes();
    let rows = img.rows();
    if img.stride == row_bytes {
        std::borrow::Cow::Borrowed(&img.pixels[..row_bytes * rows])
    } else {
        let mut v = Vec::with_capacity(row_bytes * rows);
        for r in 0..rows {
            v.extend_from_slice(img.row(r));
        }
        std::borrow::Cow::Owned(v)
    }
}

/// Writes a block's length as a big-endian `u32`.
fn put_block_len(dst: &mut [u8], n: usize) -> Result<(), CodecError> {
    let len = u32::try_from(n).map_err(|_| CodecError::Lz4("block too large".into()))?;
    dst.copy_from_slice(&len.to_be_bytes());
    Ok(())
}

// ----- LZ4 block compressor -----
//
// The LZ4 block format: sequences of a token (high nibble: literal count, low
// nibble: match length - 4; 15 means more length bytes follow, 255 meaning
// "add 255 and read another"), the literals, a little-endian `u16` offset
// back (1..=65535) and the match length bytes. The last sequence has literals
// only; the last match must start at least `MFLIMIT` bytes before the end of
// the block and the last `LAST_LITERALS` bytes are literals.
//
// Matches are found like LZ4's fast mode: a hash table of the last position
// seen for each 5-byte hash, probed at a stride that grows the longer no
// match turns up (incompressible data is skipped quickly), a match extended
// backwards over the pending literals and forwards eight bytes at a time.

/// Largest input bytes of one block (LZ4 caps blocks near 2 GiB; positions in
/// the hash table are `u32`).
const MAX_BLOCK: usize = 1 << 30;
/// Shortest match.
const MIN_MATCH: usize = 4;
/// A match starts at least this many bytes before the end of the block.
const MFLIMIT: usize = 12;
/// The block ends with at least this many literals.
const LAST_LITERALS: usize = 5;
/// Farthest offset.
const MAX_DISTANCE: usize = 65_535;
/// `log2` of the hash table's entries (16 KiB of `u32`, in L1).
const HASH_LOG: u32 = 12;
/// Misses before the probe stride grows by one (`2^SKIP_TRIGGER`).
const SKIP_TRIGGER: u32 = 6;

/// Rows of one block at most (at least one).
fn max_block_rows(row_bytes: usize) -> usize {
    (MAX_BLOCK / row_bytes.max(1)).max(1)
}

/// Worst-case compressed size of `n` input bytes (all literals).
#[cfg(test)]
const fn max_block_size(n: usize) -> usize {
    n + n / 255 + 16
}

/// Last position seen per hash, relative to the current window's start.
struct HashTable(Box<[u32; 1 << HASH_LOG]>);

impl HashTable {
    fn new() -> Self {
        Self(Box::new([0; 1 << HASH_LOG]))
    }

    /// Moves the window start `shift` bytes forward. Positions before the new
    /// start become 0: any stored position is only a candidate that the
    /// compressor verifies.
    fn rebase(&mut self, shift: usize) {
        if shift == 0 {
            return;
        }
        let shift = u32::try_from(shift).unwrap_or(u32::MAX);
        for p in self.0.iter_mut() {
            *p = p.saturating_sub(shift);
        }
    }
}

/// Eight bytes at `i`, little-endian.
#[inline(always)]
fn read_u64(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[i..i + 8]);
    u64::from_le_bytes(b)
}

/// Four bytes at `i`, little-endian.
#[inline(always)]
fn read_u32(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[i..i + 4]);
    u32::from_le_bytes(b)
}

/// Hash of the five bytes at the bottom of `v` (the bytes at a position).
#[inline(always)]
fn hash5(v: u64) -> usize {
    const PRIME: u64 = 0x00cf_1bbc_dcbb;
    usize::try_from((v << 24).wrapping_mul(PRIME) >> (64 - HASH_LOG)).unwrap_or(0)
}

/// Length of the common prefix of `d[a..]` and `d[b..]` (`b < a`), not reaching
/// `limit`.
#[inline(always)]
fn common_len(d: &[u8], a: usize, b: usize, limit: usize) -> usize {
    // Most matches are short: the first eight bytes straight away.
    if a + 8 <= limit {
        let diff = read_u64(d, a) ^ read_u64(d, b);
        if diff != 0 {
            return diff.trailing_zeros() as usize / 8;
        }
        8 + long_common_len(d, a + 8, b + 8, limit)
    } else {
        long_common_len(d, a, b, limit)
    }
}

/// [`common_len`] past its first eight bytes: 32 bytes at a time, then 8,
/// then the tail.
#[inline(never)]
fn long_common_len(d: &[u8], a: usize, b: usize, limit: usize) -> usize {
    let n = limit.saturating_sub(a);
    let (x, y) = (&d[a..a + n], &d[b..b + n]);
    let (xs, _) = x.as_chunks::<32>();
    let (ys, _) = y.as_chunks::<32>();
    let mut done = 0;
    for (p, q) in xs.iter().zip(ys) {
        let (p, q) = (p.as_chunks::<8>().0, q.as_chunks::<8>().0);
        let diff = p.iter().zip(q).fold(0, |acc, (a, b)| {
            acc | (u64::from_le_bytes(*a) ^ u64::from_le_bytes(*b))
        });
        if diff != 0 {
            break;
        }
        done += 32;
    }
    let (xs, x_tail) = x[done..].as_chunks::<8>();
    let (ys, y_tail) = y[done..].as_chunks::<8>();
    for (k, (p, q)) in xs.iter().zip(ys).enumerate() {
        let diff = u64::from_le_bytes(*p) ^ u64::from_le_bytes(*q);
        if diff != 0 {
            return done + k * 8 + diff.trailing_zeros() as usize / 8;
        }
    }
    done + xs.len() * 8
        + x_tail
            .iter()
            .zip(y_tail)
            .take_while(|(p, q)| p == q)
            .count()
}

/// Writes the 255-run of a length beyond its token nibble.
#[inline(always)]
fn put_len(out: &mut [u8], mut op: usize, mut rest: usize) -> usize {
    if rest >= 255 {
        let n = rest / 255;
        out[op..op + n].fill(255);
        op += n;
        rest -= n * 255;
    }
    out[op] = u8::try_from(rest).unwrap_or(0);
    op + 1
}

/// Writes the token and literals `d[from..to]`; returns the token's position
/// and the output position after the literals.
#[inline(always)]
fn put_literals(d: &[u8], from: usize, to: usize, out: &mut [u8], op: usize) -> (usize, usize) {
    let n = to - from;
    let token = op;
    let mut op = op + 1;
    if n >= 15 {
        out[token] = 0xf0;
        op = put_len(out, op, n - 15);
    } else {
        out[token] = u8::try_from(n << 4).unwrap_or(0);
    }
    if n <= 16 && from + 16 <= d.len() && op + 16 <= out.len() {
        // A fixed 16-byte copy (the output has room, the extra bytes are
        // overwritten next).
        out[op..op + 16].copy_from_slice(&d[from..from + 16]);
    } else {
        out[op..op + n].copy_from_slice(&d[from..to]);
    }
    (token, op + n)
}

/// Makes `out` at least `need` bytes long (zeros; they are overwritten).
#[cold]
#[inline(never)]
fn grow(out: &mut Vec<u8>, need: usize) {
    out.resize(need.max(out.len() * 2), 0);
}

/// Compresses `window[start..]` as one LZ4 block appended to `out`; matches
/// may reach back into `window[..start]`. `table` holds positions in `window`
/// (from earlier blocks of the same stream, or zeros). Returns the block's
/// length.
fn compress_block(
    window: &[u8],
    start: usize,
    table: &mut HashTable,
    out_vec: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    if window.len() >= u32::MAX as usize {
        return Err(CodecError::Lz4("block too large".into()));
    }
    let d = window;
    let end = d.len();
    let table = &mut *table.0;
    let mut anchor = start;
    let first = out_vec.len();
    let mut op = first;
    // Room for a sixteenth of the input (screen content compresses well);
    // grown as needed before each sequence.
    out_vec.resize(op + (end - start) / 16 + 64, 0);
    let mut out: &mut [u8] = out_vec;
    if end - start > MFLIMIT {
        // Matches start before `ip_limit` and end by `match_limit`.
        let ip_limit = end - MFLIMIT + 1;
        let match_limit = end - LAST_LITERALS;
        let pos32 = |p: usize| u32::try_from(p).unwrap_or(u32::MAX);
        let mut ip = start;
        table[hash5(read_u64(d, ip)) & ((1 << HASH_LOG) - 1)] = pos32(ip);
        ip += 1;
        let mut fwd_v = read_u64(d, ip);
        'search: loop {
            // Find a match, probing faster the longer none turns up.
            let mut fwd = ip;
            let mut attempts = 1u32 << SKIP_TRIGGER;
            let mut cand;
            loop {
                let v = fwd_v;
                ip = fwd;
                fwd += (attempts >> SKIP_TRIGGER) as usize;
                attempts += 1;
                if fwd > ip_limit {
                    break 'search;
                }
                let slot = &mut table[hash5(v) & ((1 << HASH_LOG) - 1)];
                cand = *slot as usize;
                *slot = pos32(ip);
                fwd_v = read_u64(d, fwd);
                // `v as u32`: the four bytes at `ip`.
                if cand + MAX_DISTANCE >= ip
                    && read_u32(d, cand) == u32::try_from(v & 0xffff_ffff).unwrap_or(0)
                {
                    break;
                }
            }
            // Extend backwards over the pending literals.
            while ip > anchor && cand > 0 && d[ip - 1] == d[cand - 1] {
                ip -= 1;
                cand -= 1;
            }
            // Room for the literals, the token, the offset and the match's
            // first length bytes.
            let need = op + (ip - anchor) + (ip - anchor) / 255 + 64;
            if need > out.len() {
                grow(out_vec, need);
                out = out_vec;
            }
            let (mut token, lit_end) = put_literals(d, anchor, ip, out, op);
            op = lit_end;
            loop {
                // The match at `ip` from `cand` (room for its offset and its
                // first length bytes, and the next token).
                if op + 32 > out.len() {
                    grow(out_vec, op + 32);
                    out = out_vec;
                }
                let offset = u16::try_from(ip - cand).unwrap_or(0);
                out[op..op + 2].copy_from_slice(&offset.to_le_bytes());
                op += 2;
                let ml = common_len(d, ip + MIN_MATCH, cand + MIN_MATCH, match_limit);
                ip += MIN_MATCH + ml;
                if ml >= 15 {
                    let need = op + ml / 255 + 64;
                    if need > out.len() {
                        grow(out_vec, need);
                        out = out_vec;
                    }
                    out[token] |= 15;
                    op = put_len(out, op, ml - 15);
                } else {
                    out[token] |= u8::try_from(ml).unwrap_or(0);
                }
                anchor = ip;
                if ip >= ip_limit {
                    break 'search;
                }
                table[hash5(read_u64(d, ip - 2)) & ((1 << HASH_LOG) - 1)] = pos32(ip - 2);
                // A match right here?
                let slot = &mut table[hash5(read_u64(d, ip)) & ((1 << HASH_LOG) - 1)];
                cand = *slot as usize;
                *slot = pos32(ip);
                if cand + MAX_DISTANCE >= ip && read_u32(d, cand) == read_u32(d, ip) {
                    token = op;
                    out[token] = 0;
                    op += 1;
                    continue;
                }
                break;
            }
            ip += 1;
            fwd_v = read_u64(d, ip);
        }
    }
    // The last literals.
    let need = op + (end - anchor) + (end - anchor) / 255 + 64;
    if need > out.len() {
        grow(out_vec, need);
        out = out_vec;
    }
    let (_, lit_end) = put_literals(d, anchor, end, out, op);
    out_vec.truncate(lit_end);
    Ok(lit_end - first)
}

/// Decodes an LZ4 image of `width` × `height` pixels with default limits.
///
/// # Errors
/// Any malformed stream: see [`decode_with_limits`].
pub fn decode(data: &[u8], width: u32, height: u32) -> Result<DecodedImage, CodecError> {
    decode_with_limits(data, width, height, &DecodeLimits::default())
}

/// Decodes an LZ4 image of `width` × `height` pixels (from the image
/// descriptor), like spice-gtk's `canvas_get_lz4`: blocks are decoded in order
/// into one buffer, each may reference the previous 64 KiB of output. Stricter
/// than the client, the decoded size must be exactly `height` packed rows.
///
/// # Errors
/// [`CodecError::Truncated`] for a missing header or block, [`CodecError::BadImageType`]
/// for an unknown format byte, [`CodecError::BadDimensions`]/[`CodecError::TooLarge`]
/// against `limits`, [`CodecError::Lz4`] or [`CodecError::Corrupt`] for bad blocks.
pub fn decode_with_limits(
    data: &[u8],
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<DecodedImage, CodecError> {
    let [top_down, fmt, rest @ ..] = data else {
        return Err(CodecError::Truncated);
    };
    let top_down = *top_down != 0;
    let format = format_of(*fmt)?;
    let row_bytes = format.row_bytes(width);
    let total = limits.check(width, height, row_bytes)?;
    let mut out = vec![0u8; total];
    let mut written = 0usize;
    let mut input = rest;
    loop {
        let Some((len_bytes, tail)) = input.split_first_chunk::<4>() else {
            return Err(CodecError::Truncated);
        };
        let len =
            usize::try_from(u32::from_be_bytes(*len_bytes)).map_err(|_| CodecError::Truncated)?;
        if len > tail.len() {
            return Err(CodecError::Truncated);
        }
        let (block, tail) = tail.split_at(len);
        let (done, free) = out.split_at_mut(written);
        let dict = &done[done.len().saturating_sub(WINDOW)..];
        let n = lz4_flex::block::decompress_into_with_dict(block, free, dict)
            .map_err(|e| CodecError::Lz4(e.to_string()))?;
        if n == 0 {
            return Err(CodecError::Corrupt("LZ4 block decodes to nothing"));
        }
        written += n;
        input = tail;
        if input.is_empty() {
            break;
        }
    }
    if written != total {
        return Err(CodecError::Corrupt("LZ4 data shorter than the image"));
    }
    Ok(DecodedImage {
        width,
        height,
        format,
        top_down,
        stride: row_bytes,
        pixels: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32, format: PixelFormat, seed: u32) -> Vec<u8> {
        let n = format.row_bytes(width) * usize::try_from(height).unwrap();
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Mostly repetitive with some noise so that matches span blocks.
                if (s >> 16).is_multiple_of(4) {
                    u8::try_from((s >> 24) & 0xff).unwrap()
                } else {
                    u8::try_from(i % 61).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn lz4_round_trip_single_and_linked_blocks() {
        for format in [
            PixelFormat::Rgb16,
            PixelFormat::Rgb24,
            PixelFormat::Rgb32,
            PixelFormat::Rgba,
        ] {
            let (w, h) = (97, 131);
            let px = image(w, h, format, 7);
            let img = ImageRef::new(&px, w, h, format.row_bytes(w), format, false).unwrap();
            for rows in [
                None,
                NonZeroU32::new(1),
                NonZeroU32::new(7),
                NonZeroU32::new(200),
            ] {
                let enc = encode_blocks(&img, rows).unwrap();
                assert_eq!(enc[0], 0);
                let dec = decode(&enc, w, h).unwrap();
                assert_eq!(dec.pixels, px, "{format:?} {rows:?}");
                assert!(!dec.top_down);
            }
        }
    }

    #[test]
    fn lz4_linked_blocks_reference_previous_blocks() {
        // Identical rows: with one row per block every block after the first must
        // be a pure back-reference into the previous block, hence tiny.
        let (w, h) = (300u32, 20u32);
        let row: Vec<u8> = (0..w * 4)
            .map(|i| u8::try_from((i * 37) % 251).unwrap())
            .collect();
        let px: Vec<u8> = (0..h).flat_map(|_| row.iter().copied()).collect();
        let img = ImageRef::new(&px, w, h, 1200, PixelFormat::Rgb32, true).unwrap();
        let enc = encode_blocks(&img, NonZeroU32::new(1)).unwrap();
        assert!(enc.len() < 1200 + 20 * 40, "{}", enc.len());
        let dec = decode(&enc, w, h).unwrap();
        assert_eq!(dec.pixels, px);
        assert!(dec.top_down);
    }

    #[test]
    fn lz4_strided_input() {
        let (w, h) = (5u32, 3u32);
        let stride = 32;
        let px: Vec<u8> = (0..stride * 3)
            .map(|i| u8::try_from(i % 256).unwrap())
            .collect();
        let img = ImageRef::new(&px, w, h, stride, PixelFormat::Rgb24, true).unwrap();
        let dec = decode(&encode(&img).unwrap(), w, h).unwrap();
        for r in 0..3 {
            assert_eq!(&dec.pixels[r * 15..r * 15 + 15], img.row(r));
        }
    }

    #[test]
    fn lz4_rejects_garbage() {
        decode(&[], 1, 1).unwrap_err();
        decode(&[1], 1, 1).unwrap_err();
        decode(&[1, 8], 1, 1).unwrap_err();
        decode(&[1, 5, 0, 0, 0, 0], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 9, 1], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 0], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 1, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 0, 1).unwrap_err();
        decode(&[1, 8, 0, 0, 0, 1, 0x40], 100_000, 100_000).unwrap_err();
        // A block claiming more output than the image.
        let px = [0u8; 64];
        let img = ImageRef::new(&px, 16, 1, 64, PixelFormat::Rgb32, true).unwrap();
        let enc = encode(&img).unwrap();
        decode(&enc, 15, 1).unwrap_err();
        decode(&enc, 17, 1).unwrap_err();
        decode(&enc, 16, 1).unwrap();
        // Every truncation fails cleanly.
        for cut in 0..enc.len() {
            decode(&enc[..cut], 16, 1).unwrap_err();
        }
    }

    /// The blocks of an encoded stream, decoded one by one with `lz4_flex`
    /// (each with the output so far as its dictionary), concatenated.
    fn flex_decode(enc: &[u8], total: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = &enc[2..];
        while !rest.is_empty() {
            let len = usize::try_from(u32::from_be_bytes(rest[..4].try_into().unwrap())).unwrap();
            let block = &rest[4..4 + len];
            let dict = out[out.len().saturating_sub(WINDOW)..].to_vec();
            let dec =
                lz4_flex::block::decompress_with_dict(block, total - out.len(), &dict).unwrap();
            out.extend_from_slice(&dec);
            rest = &rest[4 + len..];
        }
        out
    }

    /// Every encoder entry point on `px` (packed rows of `w` RGB32 pixels):
    /// both decoders give `px` back.
    fn check_all(px: &[u8], w: u32, format: PixelFormat) {
        let row = format.row_bytes(w);
        let h = u32::try_from(px.len() / row).unwrap();
        let img = ImageRef::new(px, w, h, row, format, true).unwrap();
        let mut encs = vec![encode(&img).unwrap()];
        for rows in [1, 3, 64] {
            encs.push(encode_blocks(&img, NonZeroU32::new(rows)).unwrap());
        }
        for threads in [2, 3, 8] {
            encs.push(encode_parallel(&img, threads).unwrap());
        }
        for enc in encs {
            assert_eq!(decode(&enc, w, h).unwrap().pixels, px);
            assert_eq!(flex_decode(&enc, px.len()), px);
        }
    }

    #[test]
    fn lz4_block_edge_lengths() {
        // Lengths around the format's limits (13 bytes minimum for a match, the
        // last 12 bytes never start one): runs, periodic data and noise.
        let mut s = 9u32;
        for n in 0..300usize {
            for kind in 0..3 {
                let d: Vec<u8> = (0..n)
                    .map(|i| {
                        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        match kind {
                            0 => 7,
                            1 => u8::try_from(i % 5).unwrap(),
                            _ => u8::try_from(s >> 24).unwrap(),
                        }
                    })
                    .collect();
                let mut out = vec![1, 2, 3];
                let len = compress_block(&d, 0, &mut HashTable::new(), &mut out).unwrap();
                assert!(len <= max_block_size(n));
                assert_eq!(out.len(), len + 3);
                let dec = lz4_flex::block::decompress(&out[3..], n).unwrap();
                assert_eq!(dec, d, "{n} {kind}");
            }
        }
        // Many short sequences (a few literals, a 4-5 byte match): the output
        // outgrows a quarter of the input.
        let mut d: Vec<u8> = Vec::new();
        for i in 0..100_000usize {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if i % 8 < 3 || d.len() < 64 {
                d.push(u8::try_from(s >> 24).unwrap());
            } else {
                d.push(d[d.len() - 37]);
            }
        }
        let mut out = Vec::new();
        let len = compress_block(&d, 0, &mut HashTable::new(), &mut out).unwrap();
        assert!(len > d.len() / 4, "{len}");
        assert_eq!(lz4_flex::block::decompress(&out, d.len()).unwrap(), d);
        // RGB16 rows of every small width through the framing.
        for w in 1..40u32 {
            let px = image(w, 3, PixelFormat::Rgb16, w);
            check_all(&px, w, PixelFormat::Rgb16);
        }
    }

    proptest::proptest! {
        #[test]
        fn lz4_round_trips(
            parts in proptest::collection::vec((0u8..4, 1usize..300, proptest::num::u8::ANY), 1..40),
            w in 1u32..64,
        ) {
            // A mix of runs, repeats of earlier data and noise.
            let mut px: Vec<u8> = Vec::new();
            let mut s = 1u32;
            for (kind, len, b) in parts {
                for k in 0..len {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let v = match kind {
                        0 => b,
                        1 => px.get(px.len().saturating_sub(usize::from(b) + 1)).copied().unwrap_or(b),
                        2 => u8::try_from(s >> 24).unwrap(),
                        _ => u8::try_from(k % 7).unwrap() ^ b,
                    };
                    px.push(v);
                }
            }
            let row = PixelFormat::Rgb32.row_bytes(w);
            let rows = px.len().div_ceil(row).max(1);
            px.resize(rows * row, 0);
            check_all(&px, w, PixelFormat::Rgb32);
        }
    }

    #[test]
    fn lz4_parallel_big_image() {
        // Over PARALLEL_MIN_BYTES: bands really are compressed apart.
        let (w, h) = (700u32, 400u32);
        let px = image(w, h, PixelFormat::Rgb32, 3);
        let img = ImageRef::new(&px, w, h, 2800, PixelFormat::Rgb32, false).unwrap();
        let one = encode(&img).unwrap();
        for threads in [1, 2, 4, 7] {
            let par = encode_parallel(&img, threads).unwrap();
            assert_eq!(par[..2], one[..2]);
            assert_eq!(decode(&par, w, h).unwrap().pixels, px);
            assert_eq!(flex_decode(&par, px.len()), px);
            // Within a few percent of one block.
            assert!(
                par.len() < one.len() + one.len() / 20,
                "{} vs {}",
                par.len(),
                one.len()
            );
        }
        // Strided input packs its rows first.
        let stride = 2816;
        let mut strided = vec![0u8; stride * 400];
        for r in 0..400 {
            strided[r * stride..r * stride + 2800].copy_from_slice(&px[r * 2800..r * 2800 + 2800]);
        }
        let img = ImageRef::new(&strided, w, h, stride, PixelFormat::Rgb32, false).unwrap();
        assert_eq!(
            decode(&encode_parallel(&img, 3).unwrap(), w, h)
                .unwrap()
                .pixels,
            px
        );
    }

    #[test]
    fn lz4_corpus_round_trips() {
        let dir =
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "png") {
                continue;
            }
            let file = std::io::BufReader::new(std::fs::File::open(&p).unwrap());
            let mut reader = png::Decoder::new(file).read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            let samples = info.color_type.samples();
            let mut bgrx = Vec::new();
            for px in buf[..info.buffer_size()].chunks_exact(samples) {
                bgrx.extend_from_slice(&[px[2 % samples], px[1 % samples], px[0], 0]);
            }
            let img = ImageRef::new(
                &bgrx,
                info.width,
                info.height,
                info.width as usize * 4,
                PixelFormat::Rgb32,
                true,
            )
            .unwrap();
            for enc in [encode(&img).unwrap(), encode_parallel(&img, 4).unwrap()] {
                assert_eq!(flex_decode(&enc, bgrx.len()), bgrx, "{}", p.display());
                assert_eq!(decode(&enc, info.width, info.height).unwrap().pixels, bgrx);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn lz4_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                    w in 1u32..40, h in 1u32..40) {
            let _ = decode(&data, w, h);
        }
    }
}
