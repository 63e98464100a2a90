//! The display channel: surfaces, native draw messages and image updates.
//!
//! # Primer
//!
//! On connect the server sends `SET_ACK` and waits for the client's
//! `DISPLAY_INIT` (its cache sizes). The client then gets a *resync*: for
//! every surface it can have, `SURFACE_CREATE` (the primary, id 0, with flag
//! PRIMARY, first) and the whole surface as `DRAW_COPY`s of images, with
//! `MARK` after the primary (the client starts showing it).
//!
//! Afterwards the display worker (see [`crate::worker`]) queues, per client,
//! either native draw messages (marshalled here, [`draw_marshal`]) or damage:
//! areas of a surface sent as a `DRAW_COPY` of an image read from the canvas —
//! an uncompressed top-down `BITMAP` (32-bit, or RGBA for surfaces with
//! alpha), or `LZ4` for clients with `SPICE_DISPLAY_CAP_LZ4_COMPRESSION`
//! (unless configured off or the client asked for `PREFERRED_COMPRESSION`
//! OFF). Which draws go out natively depends on the client's caps:
//! `SPICE_DISPLAY_CAP_COMPOSITE` marks a client with spice-common's full
//! canvas (spice-gtk), which gets every draw type; other clients
//! (spice-html5) get native solid fills, plain copies and `COPY_BITS`, and
//! images for the rest.
//!
//! `DRAW_COPY` body: DisplayBase {surface_id u32, box Rect, clip type u8 = NONE},
//! src_bitmap ptr u32, src_area Rect, rop_descriptor u16 (OP_PUT),
//! scale_mode u8, QMask {flags u8, pos Point, bitmap ptr u32 = NULL}, then the
//! image: descriptor {id u64, type u8, flags u8, width u32, height u32} and
//! BITMAP {format u8, flags u8, x u32, y u32, stride u32, palette ptr u32, pixels}
//! or LZ4 {data_size u32, data}.

#[path = "draw_marshal.rs"]
pub mod draw_marshal;
#[path = "images.rs"]
pub mod images;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLockReadGuard};

use super::outbox::Outbox;
use super::{Conn, handle_base, log_end, read_loop};
use crate::Error;
use crate::canvas::Surface;
use crate::codecs::{ImageRef, PixelFormat, lz4};
use crate::command::{MonitorsConfig, Rect, Ropd, SurfaceFormat};
use crate::server::{ImageCompression, Shared, WanCompression};
use crate::wire::{MessageWriter, Reader, Writer, display_cap, msg_base, msg_display};
use crate::worker::{DISPLAY_OUTBOX_CAP, DisplayItem, DisplayStats, SurfaceCell};
use draw_marshal::NativeCaps;
use images::{ClientDecoders, ClientImages, ImageCounters, Policy, RES_TYPE_PIXMAP};

/// Largest client message on the display channel.
const MAX_DISPLAY_MSG: u32 = 4096;
/// `SPICE_SURFACE_FMT_32_xRGB`.
const SURFACE_FMT_32_XRGB: u32 = 32;
/// `SPICE_SURFACE_FMT_32_ARGB`.
const SURFACE_FMT_32_ARGB: u32 = 96;
/// `SPICE_SURFACE_FMT_8_A`.
const SURFACE_FMT_8_A: u32 = 8;
/// `SPICE_SURFACE_FLAGS_PRIMARY`.
const SURFACE_FLAGS_PRIMARY: u32 = 1;
/// `SPICE_MSG_DISPLAY_INVAL_LIST`.
pub const INVAL_LIST: u16 = 105;
/// `SPICE_MSG_DISPLAY_INVAL_ALL_PIXMAPS`.
pub const INVAL_ALL_PIXMAPS: u16 = 106;
/// `SPICE_MSG_DISPLAY_INVAL_PALETTE`.
pub const INVAL_PALETTE: u16 = 107;
/// `SPICE_DISPLAY_CAP_COMPOSITE`.
const CAP_COMPOSITE: u32 = 2;
/// `SPICE_DISPLAY_CAP_A8_SURFACE`.
const CAP_A8_SURFACE: u32 = 3;
/// `SPICE_DISPLAY_CAP_MONITORS_CONFIG`.
const CAP_MONITORS_CONFIG: u32 = 1;
/// `SPICE_MSG_DISPLAY_MONITORS_CONFIG`.
pub const MONITORS_CONFIG: u16 = 317;

/// The `SpiceSurfaceFmt` a surface of this guest format has on clients
/// (the canvas keeps 16-bit surfaces as 32-bit xRGB, and so do clients).
pub const fn client_surface_format(f: SurfaceFormat) -> u32 {
    match f {
        SurfaceFormat::Argb32 => SURFACE_FMT_32_ARGB,
        SurfaceFormat::A8 | SurfaceFormat::A1 => SURFACE_FMT_8_A,
        SurfaceFormat::Xrgb32 | SurfaceFormat::Rgb555 | SurfaceFormat::Rgb565 => {
            SURFACE_FMT_32_XRGB
        }
    }
}

/// True when images for this surface must carry alpha (RGBA, not 32BIT).
const fn has_alpha(f: SurfaceFormat) -> bool {
    matches!(
        f,
        SurfaceFormat::Argb32 | SurfaceFormat::A8 | SurfaceFormat::A1
    )
}

/// Encodes top-down 32-bit rows as SPICE LZ4 image data with the codecs
/// module's encoder (compression.md §6); `None` if it fails.
pub fn lz4_image_data(width: u32, height: u32, pixels: &[u8], rgba: bool) -> Option<Vec<u8>> {
    let stride = usize::try_from(width).ok()?.checked_mul(4)?;
    let fmt = if rgba {
        PixelFormat::Rgba
    } else {
        PixelFormat::Rgb32
    };
    let img = ImageRef::new(pixels, width, height, stride, fmt, true).ok()?;
    match lz4::encode(&img) {
        Ok(d) => Some(d),
        Err(e) => {
            log::warn!("LZ4 encoding failed, sending a bitmap: {e}");
            None
        }
    }
}

/// Builds a DRAW_COPY of `area` of `surface_id` from its BGRX (or BGRA when
/// `rgba`) top-down pixels, the image encoded and cached by `images`.
pub fn draw_copy_body(
    surface_id: u32,
    area: &Rect,
    pixels: &[u8],
    rgba: bool,
    images: &mut ClientImages,
    counters: Option<&ImageCounters>,
) -> Result<Vec<u8>, Error> {
    let (w, h) = (area.width(), area.height());
    let mut b = Writer::with_capacity(pixels.len() / 2 + 128);
    b.u32(surface_id).rect(area).u8(0); // DisplayBase, CLIP_TYPE_NONE
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
    images.put_pixels(&mut b, w, h, pixels, rgba, surface_id == 0, counters)?;
    Ok(b.finish())
}

/// What the display reader learnt from the client, for its writer.
#[derive(Debug, Default)]
struct ClientPrefs {
    /// `pixmap_cache_size` from DISPLAY_INIT (pixels).
    cache_pixels: AtomicU64,
    /// `glz_dictionary_window_size` from DISPLAY_INIT (pixels).
    glz_window: AtomicU32,
    /// PREFERRED_COMPRESSION value (0 = none yet).
    preferred: AtomicU8,
}

/// Pixels read from one surface for a pixel item.
struct Capture {
    id: u32,
    cell: SurfaceCell,
    format: SurfaceFormat,
    bounds: Rect,
    images: Vec<(Rect, Vec<u8>)>,
}

/// An item taken from the outbox, with the pixels it needs read atomically.
struct Ready {
    item: DisplayItem,
    captures: Vec<Capture>,
}

fn read_guard(c: &SurfaceCell) -> RwLockReadGuard<'_, Surface> {
    c.read().unwrap_or_else(PoisonError::into_inner)
}

/// The areas of each surface a pixel item sends.
fn item_areas(item: &DisplayItem, id: u32, s: &Surface) -> Vec<Rect> {
    match item {
        DisplayItem::Damage(_, _, rects) => rects.clone(),
        DisplayItem::Create(i, _, true) if *i == id => vec![s.bounds()],
        DisplayItem::Resync(_) => vec![s.bounds()],
        _ => Vec::new(),
    }
}

/// Takes the next item that may be sent. Pixel items are popped while the
/// read locks of their surfaces are held (so the worker cannot render into
/// them, nor queue a draw behind them, in between) and their pixels copied.
fn next_ready(outbox: &Outbox<DisplayItem>) -> Option<Ready> {
    loop {
        if !outbox.wait_ready() {
            return None;
        }
        let mut sources = outbox.with(|s| s.items.front().map(DisplayItem::pixel_sources))?;
        if sources.is_empty() {
            if let Some(item) = outbox.with(|s| s.items.pop_front()) {
                return Some(Ready {
                    item,
                    captures: Vec::new(),
                });
            }
            continue;
        }
        sources.sort_by_key(|(id, _)| *id);
        let guards: Vec<_> = sources.iter().map(|(_, c)| read_guard(c)).collect();
        let got = outbox.with(|s| {
            let same = s.items.front().is_some_and(|f| {
                let now = f.pixel_sources();
                now.len() == sources.len()
                    && now
                        .iter()
                        .all(|(_, c)| sources.iter().any(|(_, k)| Arc::ptr_eq(c, k)))
            });
            if !same {
                return None;
            }
            let item = s.items.pop_front()?;
            let captures = sources
                .iter()
                .zip(&guards)
                .map(|((id, cell), g)| Capture {
                    id: *id,
                    cell: Arc::clone(cell),
                    format: g.format(),
                    bounds: g.bounds(),
                    images: item_areas(&item, *id, g)
                        .iter()
                        .filter_map(|r| g.read_rect(r))
                        .collect(),
                })
                .collect();
            Some(Ready { item, captures })
        });
        drop(guards);
        if got.is_some() {
            return got;
        }
    }
}

struct Sender<'a> {
    out: MessageWriter<std::net::TcpStream>,
    outbox: &'a Outbox<DisplayItem>,
    stats: &'a DisplayStats,
    /// Surfaces created on the client.
    known: BTreeMap<u32, SurfaceCell>,
    /// Codecs and caches of this client.
    images: ClientImages,
    prefs: &'a ClientPrefs,
    /// Server defaults the client's preference overrides.
    base: Policy,
    /// The caches were reset on the client (first message after DISPLAY_INIT).
    started: bool,
}

impl Sender<'_> {
    fn send(&mut self, ty: u16, body: &[u8]) -> Result<(), Error> {
        self.out.send(ty, body)?;
        self.outbox.sent(1);
        self.stats.count(ty);
        self.stats.count_bytes(ty, body.len());
        Ok(())
    }

    /// Applies what the reader learnt (cache size, GLZ window, preference);
    /// on the first call, clears the client's caches.
    fn refresh(&mut self) -> Result<(), Error> {
        let mut p = self.base;
        p.client.glz_window = self.prefs.glz_window.load(Ordering::Relaxed);
        if let Some(m) = ImageCompression::from_wire(self.prefs.preferred.load(Ordering::Relaxed)) {
            p.mode = m;
        }
        if p != self.images.policy {
            log::debug!(
                "display: image compression {} for this client",
                p.mode.name()
            );
            self.images.policy = p;
        }
        if !self.started {
            self.started = true;
            let pixels = self.prefs.cache_pixels.load(Ordering::Relaxed);
            self.images.pixmaps = images::PixmapCache::new(pixels);
            // A new client window: a new dictionary (ids from 0).
            self.images.glz = (p.client.glz_window > 0 && p.client.full_canvas)
                .then(|| crate::codecs::glz::GlzDictionary::new(p.client.glz_window));
            // Only clients that get the pixmap cache (spice-common's canvas)
            // are told to drop theirs: spice-html5 does not implement
            // INVAL_ALL_PIXMAPS.
            if p.client.full_canvas {
                self.send(INVAL_ALL_PIXMAPS, &[0])?; // no wait list
            }
            self.send(msg_display::INVAL_ALL_PALETTES, &[])?;
        }
        Ok(())
    }

    /// Sends the invalidations the message just marshalled needs first.
    fn invalidations(&mut self) -> Result<(), Error> {
        let (pixmaps, palettes) = self.images.take_invalidations();
        for chunk in pixmaps.chunks(usize::from(u16::MAX)) {
            let mut w = Writer::with_capacity(2 + 9 * chunk.len());
            w.u16(u16::try_from(chunk.len()).unwrap_or(u16::MAX));
            for id in chunk {
                w.u8(RES_TYPE_PIXMAP).u64(*id);
            }
            self.send(INVAL_LIST, &w.finish())?;
        }
        for id in palettes {
            let mut w = Writer::new();
            w.u64(id);
            self.send(INVAL_PALETTE, &w.finish())?;
        }
        Ok(())
    }

    fn destroy(&mut self, id: u32) -> Result<(), Error> {
        if self.known.remove(&id).is_some() {
            let mut w = Writer::new();
            w.u32(id);
            self.send(msg_display::SURFACE_DESTROY, &w.finish())?;
        }
        Ok(())
    }

    fn create(
        &mut self,
        id: u32,
        cell: &SurfaceCell,
        format: SurfaceFormat,
        bounds: &Rect,
    ) -> Result<(), Error> {
        if self.known.contains_key(&id) {
            self.destroy(id)?;
        }
        let mut w = Writer::new();
        w.u32(id)
            .u32(bounds.width())
            .u32(bounds.height())
            .u32(client_surface_format(format))
            .u32(if id == 0 { SURFACE_FLAGS_PRIMARY } else { 0 });
        self.send(msg_display::SURFACE_CREATE, &w.finish())?;
        self.known.insert(id, Arc::clone(cell));
        Ok(())
    }

    fn images(&mut self, c: &Capture) -> Result<(), Error> {
        if !self
            .known
            .get(&c.id)
            .is_some_and(|k| Arc::ptr_eq(k, &c.cell))
        {
            return Ok(());
        }
        for (r, px) in &c.images {
            self.images.begin_message();
            let body = draw_copy_body(
                c.id,
                r,
                px,
                has_alpha(c.format),
                &mut self.images,
                Some(&self.stats.images),
            )?;
            self.invalidations()?;
            self.send(msg_display::DRAW_COPY, &body)?;
        }
        Ok(())
    }

    fn ready(&mut self, r: Ready) -> Result<(), Error> {
        match r.item {
            DisplayItem::Create(id, cell, _) => {
                let (format, bounds) = match r.captures.first() {
                    Some(c) => (c.format, c.bounds),
                    None => {
                        let g = read_guard(&cell);
                        (g.format(), g.bounds())
                    }
                };
                self.create(id, &cell, format, &bounds)?;
                for c in &r.captures {
                    self.images(c)?;
                }
                if id == 0 {
                    self.send(msg_display::MARK, &[])?;
                }
            }
            DisplayItem::Destroy(id) => self.destroy(id)?,
            DisplayItem::MonitorsConfig(m) => {
                let body = monitors_config_body(&m)?;
                self.send(MONITORS_CONFIG, &body)?;
            }
            DisplayItem::Draw(d, _) => {
                if self.known.contains_key(&d.surface_id) {
                    self.images.begin_message();
                    let (ty, body) = draw_marshal::marshal_draw_with(
                        &d,
                        &mut self.images,
                        Some(&self.stats.images),
                    )?;
                    self.invalidations()?;
                    self.send(ty, &body)?;
                }
            }
            DisplayItem::Damage(..) => {
                for c in &r.captures {
                    self.images(c)?;
                }
            }
            DisplayItem::Resync(list) => {
                let stale: Vec<u32> = self
                    .known
                    .iter()
                    .filter(|(id, k)| !list.iter().any(|(i, c)| i == *id && Arc::ptr_eq(c, k)))
                    .map(|(id, _)| *id)
                    .collect();
                // Off-screen surfaces first, the primary last.
                for id in stale.into_iter().rev() {
                    self.destroy(id)?;
                }
                for c in &r.captures {
                    let fresh = !self.known.contains_key(&c.id);
                    if fresh {
                        self.create(c.id, &c.cell, c.format, &c.bounds)?;
                    }
                    self.images(c)?;
                    if fresh && c.id == 0 {
                        self.send(msg_display::MARK, &[])?;
                    }
                }
            }
            DisplayItem::Reset => {
                let ids: Vec<u32> = self.known.keys().rev().copied().collect();
                for id in ids {
                    self.destroy(id)?;
                }
                self.send(msg_display::RESET, &[])?;
                // spice-gtk drops its palettes on RESET; its pixmaps are
                // dropped too, so that a reset starts from empty caches.
                self.images.palettes.clear();
                self.images.pixmaps.clear();
                if self.images.policy.client.full_canvas {
                    self.send(INVAL_ALL_PIXMAPS, &[0])?;
                }
            }
        }
        Ok(())
    }
}

/// The body of `SPICE_MSG_DISPLAY_MONITORS_CONFIG`: count u16, max_allowed u16,
/// then per head monitor_id, surface_id, width, height, x, y, flags (u32 each).
pub fn monitors_config_body(m: &MonitorsConfig) -> Result<Vec<u8>, Error> {
    let count = u16::try_from(m.heads.len()).map_err(|_| Error::Malformed("monitor count"))?;
    let mut w = Writer::new();
    w.u16(count).u16(m.max_allowed);
    for h in &m.heads {
        w.u32(h.id)
            .u32(h.surface_id)
            .u32(h.width)
            .u32(h.height)
            .u32(h.x)
            .u32(h.y)
            .u32(h.flags);
    }
    Ok(w.finish())
}

/// Runs a display channel connection until it closes.
pub(crate) fn run(shared: &Arc<Shared>, conn: &Conn) -> Result<(), Error> {
    let outbox = Arc::new(Outbox::new(DISPLAY_OUTBOX_CAP));
    let client_lz4 = conn.request.channel_caps.has(display_cap::LZ4_COMPRESSION);
    let composite = conn.request.channel_caps.has(CAP_COMPOSITE);
    let caps = NativeCaps {
        full_canvas: composite,
        composite,
        a8_surface: conn.request.channel_caps.has(CAP_A8_SURFACE),
        monitors_config: conn.request.channel_caps.has(CAP_MONITORS_CONFIG),
        lz4: false,
    };
    let cfg = &shared.config;
    let wan = |w: WanCompression| w == WanCompression::Always;
    let base = Policy {
        mode: cfg.image_compression,
        jpeg: wan(cfg.jpeg_wan_compression),
        zlib_glz: wan(cfg.zlib_glz_wan_compression),
        client: ClientDecoders {
            full_canvas: caps.full_canvas,
            lz4: client_lz4,
            glz_window: 0,
        },
    };
    log::info!(
        "{}: image compression {} (client: {}{}), JPEG {}",
        conn.name(),
        base.mode.name(),
        if caps.full_canvas {
            "spice-common canvas"
        } else {
            "limited decoders"
        },
        if client_lz4 { ", LZ4" } else { "" },
        if base.jpeg { "on" } else { "off" }
    );
    let stats = Arc::clone(shared.display.stats());
    let prefs = Arc::new(ClientPrefs::default());
    let mut sender = Sender {
        out: MessageWriter::new(conn.stream.try_clone()?, conn.header),
        outbox: &outbox,
        stats: &stats,
        known: BTreeMap::new(),
        images: ClientImages::new(base, 0),
        prefs: &prefs,
        base,
        started: false,
    };
    let (generation, window) = outbox.start_ack();
    let mut w = Writer::new();
    w.u32(generation).u32(window);
    sender.out.send(msg_base::SET_ACK, &w.finish())?;

    let reader = {
        let outbox = Arc::clone(&outbox);
        let prefs = Arc::clone(&prefs);
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
                            let cache_size = r.u64()?;
                            let _glz_id = r.u8()?;
                            let glz_window = r.u32()?;
                            if !registered {
                                // i64 / i32 on the wire: negative means none.
                                let cache = if i64::try_from(cache_size).is_ok() {
                                    cache_size
                                } else {
                                    0
                                };
                                let glz = if i32::try_from(glz_window).is_ok() {
                                    glz_window
                                } else {
                                    0
                                };
                                prefs.cache_pixels.store(cache, Ordering::Relaxed);
                                prefs.glz_window.store(glz, Ordering::Relaxed);
                                registered = true;
                                display.add_display_client(Arc::clone(&outbox), caps);
                            }
                        }
                        msg_display::C_PREFERRED_COMPRESSION => {
                            let v = r.u8()?;
                            match ImageCompression::from_wire(v) {
                                Some(m) => {
                                    log::info!("display: client prefers {} compression", m.name());
                                    prefs.preferred.store(v, Ordering::Relaxed);
                                }
                                None => log::debug!("preferred compression {v}: keeping current"),
                            }
                        }
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
    while let Some(r) = next_ready(&outbox) {
        if let Err(e) = sender.refresh().and_then(|()| sender.ready(r)) {
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
    use images::{BITMAP_FLAGS_TOP_DOWN, IMAGE_TYPE_BITMAP, IMAGE_TYPE_LZ4};

    fn ctx(mode: ImageCompression) -> ClientImages {
        ClientImages::new(
            Policy {
                mode,
                jpeg: false,
                zlib_glz: false,
                client: ClientDecoders {
                    full_canvas: true,
                    lz4: true,
                    glz_window: 0,
                },
            },
            0,
        )
    }

    #[test]
    fn draw_copy_bitmap_layout() -> Result<(), Error> {
        let px = vec![7u8; 2 * 3 * 4];
        let mut c = ctx(ImageCompression::Off);
        let b = draw_copy_body(0, &Rect::new(10, 20, 12, 23), &px, false, &mut c, None)?;
        // fixed part 57 bytes, then the image at offset 57
        assert_eq!(&b[21..25], &57u32.to_le_bytes());
        assert_eq!(b[57 + 8], IMAGE_TYPE_BITMAP);
        assert_eq!(&b[57 + 10..57 + 14], &2u32.to_le_bytes());
        assert_eq!(b[57 + 18], 8); // 32BIT
        assert_eq!(b[57 + 19], BITMAP_FLAGS_TOP_DOWN);
        assert_eq!(&b[57 + 28..57 + 32], &8u32.to_le_bytes());
        assert_eq!(b.len(), 57 + 36 + px.len());
        Ok(())
    }

    #[test]
    fn lz4_draw_copy_round_trips() -> Result<(), Error> {
        let (w, h) = (100u32, 400u32);
        // X bytes 0: sent as 32BIT (mixed X bytes would travel as RGBA)
        let px: Vec<u8> = (0..w * h * 4)
            .map(|i| {
                if i % 4 == 3 {
                    0
                } else {
                    u8::try_from(i % 7).unwrap_or(0)
                }
            })
            .collect();
        let mut c = ctx(ImageCompression::Lz4);
        let b = draw_copy_body(0, &Rect::new(0, 0, 100, 400), &px, false, &mut c, None)?;
        assert_eq!(b[57 + 8], IMAGE_TYPE_LZ4);
        let r = Reader::new(&b);
        let mut r = r.at(57 + 18)?;
        let n = usize::try_from(r.u32()?).unwrap_or(0);
        let data = r.bytes(n)?;
        assert_eq!(r.remaining(), 0);
        assert_eq!(&data[..2], &[1, 8]);
        let img = lz4::decode(data, w, h).map_err(|_| Error::Malformed("lz4"))?;
        assert_eq!(img.pixels, px);
        Ok(())
    }
}
