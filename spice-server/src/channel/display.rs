//! The display channel: surfaces and image updates.
//!
//! # Primer
//!
//! On connect the server sends `SET_ACK` and waits for the client's
//! `DISPLAY_INIT` (its cache sizes). Then, if a primary surface exists:
//! `SURFACE_CREATE` (id 0, 32-bit xRGB, flag PRIMARY), the whole surface as
//! one `DRAW_COPY`, and `MARK` (the client starts showing the primary).
//! Afterwards every damaged area of the primary is sent as a `DRAW_COPY` of
//! an image: an uncompressed top-down 32-bit `BITMAP`, or `LZ4` for clients
//! with `SPICE_DISPLAY_CAP_LZ4_COMPRESSION` (unless configured off or the
//! client asked for `PREFERRED_COMPRESSION` OFF).
//!
//! `DRAW_COPY` body: DisplayBase {surface_id u32, box Rect, clip type u8 = NONE},
//! src_bitmap ptr u32, src_area Rect, rop_descriptor u16 (OP_PUT),
//! scale_mode u8, QMask {flags u8, pos Point, bitmap ptr u32 = NULL}, then the
//! image: descriptor {id u64, type u8, flags u8, width u32, height u32} and
//! BITMAP {format u8, flags u8, x u32, y u32, stride u32, palette ptr u32, pixels}
//! or LZ4 {data_size u32, data}.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::outbox::Outbox;
use super::{Conn, handle_base, log_end, read_loop};
use crate::Error;
use crate::codecs::{ImageRef, PixelFormat, lz4};
use crate::command::{Rect, Ropd};
use crate::server::{ImageCompression, Shared};
use crate::wire::{MessageWriter, Reader, Writer, display_cap, msg_base, msg_display};
use crate::worker::{DISPLAY_OUTBOX_CAP, DisplayItem, SurfaceCell};

/// Largest client message on the display channel.
const MAX_DISPLAY_MSG: u32 = 4096;
/// `SPICE_SURFACE_FMT_32_xRGB`.
const SURFACE_FMT_32_XRGB: u32 = 32;
/// `SPICE_SURFACE_FLAGS_PRIMARY`.
const SURFACE_FLAGS_PRIMARY: u32 = 1;
/// `SPICE_IMAGE_TYPE_BITMAP`.
const IMAGE_TYPE_BITMAP: u8 = 0;
/// `SPICE_IMAGE_TYPE_LZ4`.
const IMAGE_TYPE_LZ4: u8 = 109;
/// `SPICE_BITMAP_FMT_32BIT`.
const BITMAP_FMT_32BIT: u8 = 8;
/// `SPICE_BITMAP_FLAGS_TOP_DOWN`.
const BITMAP_FLAGS_TOP_DOWN: u8 = 4;
/// `SPICE_IMAGE_COMPRESSION_OFF`.
const PREF_COMPRESSION_OFF: u8 = 1;
/// `SPICE_IMAGE_COMPRESSION_LZ4`.
const PREF_COMPRESSION_LZ4: u8 = 7;
/// Images smaller than this are sent uncompressed.
const MIN_COMPRESS_BYTES: usize = 256;

/// Encodes top-down 32-bit rows as SPICE LZ4 image data with the codecs
/// module's encoder (compression.md §6); `None` if it fails.
pub fn lz4_image_data(width: u32, height: u32, pixels: &[u8]) -> Option<Vec<u8>> {
    let stride = usize::try_from(width).ok()?.checked_mul(4)?;
    let img = ImageRef::new(pixels, width, height, stride, PixelFormat::Rgb32, true).ok()?;
    match lz4::encode(&img) {
        Ok(d) => Some(d),
        Err(e) => {
            log::warn!("LZ4 encoding failed, sending a bitmap: {e}");
            None
        }
    }
}

/// Builds a DRAW_COPY of `area` of surface 0 from its BGRX top-down pixels.
pub fn draw_copy_body(area: &Rect, pixels: &[u8], lz4: bool) -> Result<Vec<u8>, Error> {
    let (w, h) = (area.width(), area.height());
    let mut b = Writer::with_capacity(pixels.len() + 128);
    b.u32(0).rect(area).u8(0); // DisplayBase, CLIP_TYPE_NONE
    let src = b.ptr();
    b.rect(&Rect::new(
        0,
        0,
        i32::try_from(w).map_err(|_| Error::Malformed("width"))?,
        i32::try_from(h).map_err(|_| Error::Malformed("height"))?,
    ));
    b.u16(Ropd::OP_PUT).u8(0); // rop, scale mode
    b.u8(0).i32(0).i32(0).u32(0); // QMask: no mask
    b.fill_ptr(src)?;
    let compressed = if lz4 && pixels.len() >= MIN_COMPRESS_BYTES {
        lz4_image_data(w, h, pixels).filter(|d| d.len() < pixels.len())
    } else {
        None
    };
    let image_type = if compressed.is_some() {
        IMAGE_TYPE_LZ4
    } else {
        IMAGE_TYPE_BITMAP
    };
    b.u64(0).u8(image_type).u8(0).u32(w).u32(h);
    match compressed {
        Some(d) => {
            b.u32(u32::try_from(d.len()).map_err(|_| Error::Malformed("image size"))?)
                .bytes(&d);
        }
        None => {
            let stride = w.checked_mul(4).ok_or(Error::Malformed("stride"))?;
            b.u8(BITMAP_FMT_32BIT)
                .u8(BITMAP_FLAGS_TOP_DOWN)
                .u32(w)
                .u32(h)
                .u32(stride)
                .u32(0) // no palette
                .bytes(pixels);
        }
    }
    Ok(b.finish())
}

struct Sender<'a> {
    out: MessageWriter<std::net::TcpStream>,
    outbox: &'a Outbox<DisplayItem>,
    lz4: &'a AtomicBool,
    known: Option<SurfaceCell>,
}

impl Sender<'_> {
    fn send(&mut self, ty: u16, body: &[u8]) -> Result<(), Error> {
        self.out.send(ty, body)?;
        self.outbox.sent(1);
        Ok(())
    }

    fn send_area(&mut self, cell: &SurfaceCell, area: &Rect) -> Result<(), Error> {
        let read = cell
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_rect(area);
        if let Some((r, px)) = read {
            let body = draw_copy_body(&r, &px, self.lz4.load(Ordering::Relaxed))?;
            self.send(msg_display::DRAW_COPY, &body)?;
        }
        Ok(())
    }

    fn item(&mut self, item: DisplayItem) -> Result<(), Error> {
        match item {
            DisplayItem::Primary(p) => {
                if let (Some(a), Some(b)) = (&self.known, &p)
                    && Arc::ptr_eq(a, b)
                {
                    return Ok(());
                }
                if self.known.take().is_some() {
                    let mut w = Writer::new();
                    w.u32(0);
                    self.send(msg_display::SURFACE_DESTROY, &w.finish())?;
                }
                if let Some(cell) = p {
                    let bounds = cell
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .bounds();
                    let mut w = Writer::new();
                    w.u32(0)
                        .u32(bounds.width())
                        .u32(bounds.height())
                        .u32(SURFACE_FMT_32_XRGB)
                        .u32(SURFACE_FLAGS_PRIMARY);
                    self.send(msg_display::SURFACE_CREATE, &w.finish())?;
                    self.send_area(&cell, &bounds)?;
                    self.send(msg_display::MARK, &[])?;
                    self.known = Some(cell);
                }
            }
            DisplayItem::Reset => {
                if self.known.take().is_some() {
                    let mut w = Writer::new();
                    w.u32(0);
                    self.send(msg_display::SURFACE_DESTROY, &w.finish())?;
                }
                self.send(msg_display::RESET, &[])?;
            }
            DisplayItem::Damage(cell, rects) => {
                if self.known.as_ref().is_some_and(|k| Arc::ptr_eq(k, &cell)) {
                    for r in &rects {
                        self.send_area(&cell, r)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs a display channel connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: &Conn) -> Result<(), Error> {
    let outbox = Arc::new(Outbox::new(DISPLAY_OUTBOX_CAP));
    let client_lz4 = conn.request.channel_caps.has(display_cap::LZ4_COMPRESSION);
    let lz4 = Arc::new(AtomicBool::new(
        client_lz4 && shared.config.image_compression == ImageCompression::Auto,
    ));
    log::info!(
        "{}: image updates as {}",
        conn.name(),
        if lz4.load(Ordering::Relaxed) {
            "LZ4"
        } else {
            "BITMAP"
        }
    );
    let mut sender = Sender {
        out: MessageWriter::new(conn.stream.try_clone()?, conn.header),
        outbox: &outbox,
        lz4: &lz4,
        known: None,
    };
    let (generation, window) = outbox.start_ack();
    let mut w = Writer::new();
    w.u32(generation).u32(window);
    sender.out.send(msg_base::SET_ACK, &w.finish())?;

    let reader = {
        let outbox = Arc::clone(&outbox);
        let lz4 = Arc::clone(&lz4);
        let stream = conn.stream.try_clone()?;
        let header = conn.header;
        let display = shared.display.clone();
        let name = conn.name();
        std::thread::Builder::new()
            .name("spice-display-rx".into())
            .spawn(move || {
                let mut registered = false;
                let end = read_loop(&stream, header, MAX_DISPLAY_MSG, |msg| {
                    if handle_base(&msg, Some(&*outbox))? {
                        return Ok(());
                    }
                    let mut r = Reader::new(&msg.body);
                    match msg.ty {
                        msg_display::C_INIT => {
                            let _cache_id = r.u8()?;
                            let _cache_size = r.u64()?;
                            let _glz_id = r.u8()?;
                            let _glz_window = r.u32()?;
                            if !registered {
                                registered = true;
                                display.add_display_client(Arc::clone(&outbox));
                            }
                        }
                        msg_display::C_PREFERRED_COMPRESSION => match r.u8()? {
                            PREF_COMPRESSION_OFF => lz4.store(false, Ordering::Relaxed),
                            PREF_COMPRESSION_LZ4 if client_lz4 => {
                                lz4.store(true, Ordering::Relaxed)
                            }
                            other => log::debug!("preferred compression {other}: keeping current"),
                        },
                        msg_display::C_STREAM_REPORT
                        | msg_display::C_GL_DRAW_DONE
                        | msg_display::C_PREFERRED_VIDEO_CODEC_TYPE => {}
                        other => log::debug!("display: ignoring message {other}"),
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
        if let Err(e) = sender.item(item) {
            result = Err(e);
            break;
        }
    }
    outbox.close();
    conn.shutdown();
    let _ = reader.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_copy_bitmap_layout() -> Result<(), Error> {
        let px = vec![7u8; 2 * 3 * 4];
        let b = draw_copy_body(&Rect::new(10, 20, 12, 23), &px, false)?;
        // fixed part 57 bytes, then the image at offset 57
        assert_eq!(&b[21..25], &57u32.to_le_bytes());
        assert_eq!(b[57 + 8], IMAGE_TYPE_BITMAP);
        assert_eq!(&b[57 + 10..57 + 14], &2u32.to_le_bytes());
        assert_eq!(b[57 + 18], BITMAP_FMT_32BIT);
        assert_eq!(b[57 + 19], BITMAP_FLAGS_TOP_DOWN);
        assert_eq!(&b[57 + 28..57 + 32], &8u32.to_le_bytes());
        assert_eq!(b.len(), 57 + 36 + px.len());
        Ok(())
    }

    #[test]
    fn lz4_draw_copy_round_trips() -> Result<(), Error> {
        let (w, h) = (100u32, 400u32);
        let px: Vec<u8> = (0..w * h * 4)
            .map(|i| u8::try_from(i % 7).unwrap_or(0))
            .collect();
        let b = draw_copy_body(&Rect::new(0, 0, 100, 400), &px, true)?;
        assert_eq!(b[57 + 8], IMAGE_TYPE_LZ4);
        let r = Reader::new(&b);
        let mut r = r.at(57 + 18)?;
        let n = usize::try_from(r.u32()?).unwrap_or(0);
        let data = r.bytes(n)?;
        assert_eq!(r.remaining(), 0);
        assert_eq!(&data[..2], &[1, BITMAP_FMT_32BIT]);
        let img = lz4::decode(data, w, h).map_err(|_| Error::Malformed("lz4"))?;
        assert_eq!(img.pixels, px);
        Ok(())
    }
}
