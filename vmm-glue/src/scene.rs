//! Synthetic guests: deterministic scenes that draw the way a QXL driver does.
//!
//! # Primer
//!
//! `qxl-vmm demo` needs a guest without a kernel. A [`Scene`] plays that guest's
//! desktop: it keeps its own framebuffer (what a real guest keeps in its dumb
//! buffer) and, for every frame, returns the QXL commands a driver would send
//! to bring the device's primary surface up to date — solid areas as
//! `DRAW_FILL`, scrolled areas as `COPY_BITS`, everything else as `DRAW_COPY`
//! of a top-down 32-bit bitmap, the way Linux `drm/qxl` sends dirty rectangles —
//! plus cursor commands. Replaying every frame's commands onto a surface must
//! give exactly [`Scene::framebuffer`]; tests rely on that.
//!
//! Scenes are deterministic: frame `n` is always the same pixels.

// Scenes compute their own small, bounded coordinates and colours (nothing here
// comes from a guest or a client), so plain numeric casts are safe and clearer.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_lossless
)]

use std::path::Path;

use spice_server::command::{
    Brush, Command, CopyOp, Cursor, CursorCmd, CursorType, DrawOp, Drawable, Image, Point, Point16,
    Rect, Ropd,
};

use crate::error::{Error, Result};

/// What a scene sends for one frame.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    /// Commands for the command ring (draws on surface 0).
    pub draws: Vec<Command>,
    /// Commands for the cursor ring.
    pub cursor: Vec<Command>,
}

/// A synthetic guest desktop.
pub trait Scene: Send {
    /// Width and height of the primary surface the scene draws on.
    fn size(&self) -> (u32, u32);
    /// Advance to frame `n` (0, 1, 2, … in order) and return its commands.
    fn frame(&mut self, n: u64) -> Frame;
    /// The scene's own framebuffer after the last frame: BGRX, top-down, stride = width × 4.
    fn framebuffer(&self) -> &[u8];
}

/// A BGRX framebuffer with the drawing helpers scenes need.
#[derive(Debug, Clone)]
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        let (w, h) = (w as usize, h as usize);
        Self {
            w,
            h,
            px: vec![0; w * h * 4],
        }
    }

    fn clamp(&self, r: Rect) -> Option<(usize, usize, usize, usize)> {
        let bounds = Rect::new(
            0,
            0,
            i32::try_from(self.w).ok()?,
            i32::try_from(self.h).ok()?,
        );
        let r = r.intersect(&bounds)?;
        Some((
            usize::try_from(r.left).ok()?,
            usize::try_from(r.top).ok()?,
            usize::try_from(r.right).ok()?,
            usize::try_from(r.bottom).ok()?,
        ))
    }

    fn fill(&mut self, r: Rect, color: u32) {
        let Some((l, t, rr, b)) = self.clamp(r) else {
            return;
        };
        let c = color.to_le_bytes();
        for y in t..b {
            let row = &mut self.px[(y * self.w + l) * 4..(y * self.w + rr) * 4];
            for p in row.chunks_exact_mut(4) {
                p.copy_from_slice(&c);
            }
        }
    }

    fn put(&mut self, x: usize, y: usize, color: u32) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 4;
            self.px[i..i + 4].copy_from_slice(&color.to_le_bytes());
        }
    }

    /// Copy the rectangle `r` out as tightly packed rows.
    fn extract(&self, r: Rect) -> Option<(u32, u32, Vec<u8>)> {
        let (l, t, rr, b) = self.clamp(r)?;
        let mut out = Vec::with_capacity((rr - l) * (b - t) * 4);
        for y in t..b {
            out.extend_from_slice(&self.px[(y * self.w + l) * 4..(y * self.w + rr) * 4]);
        }
        Some((u32::try_from(rr - l).ok()?, u32::try_from(b - t).ok()?, out))
    }

    /// Move `src` (a rectangle of the size of `dst`) to `dst`, like COPY_BITS.
    fn copy_bits(&mut self, dst: Rect, src: Point) {
        let Some((l, t, rr, b)) = self.clamp(dst) else {
            return;
        };
        let (sx, sy) = (src.x.max(0) as usize, src.y.max(0) as usize);
        let rows: Vec<usize> = if sy < t {
            (0..b - t).rev().collect()
        } else {
            (0..b - t).collect()
        };
        for dy in rows {
            let s = ((sy + dy) * self.w + sx) * 4;
            let d = ((t + dy) * self.w + l) * 4;
            let n = (rr - l) * 4;
            if s + n <= self.px.len() && d + n <= self.px.len() {
                self.px.copy_within(s..s + n, d);
            }
        }
    }
}

fn copy_cmd(canvas: &Canvas, r: Rect) -> Option<Command> {
    let (w, h, data) = canvas.extract(r)?;
    let bbox = Rect::new(
        r.left,
        r.top,
        r.left + i32::try_from(w).ok()?,
        r.top + i32::try_from(h).ok()?,
    );
    Some(draw(
        bbox,
        DrawOp::Copy(CopyOp::put(Image::rgb32(w, h, data))),
    ))
}

fn draw(bbox: Rect, op: DrawOp) -> Command {
    Command::Draw(Drawable::on_primary(bbox, op))
}

fn fill_cmd(r: Rect, color: u32) -> Command {
    draw(
        r,
        DrawOp::Fill {
            brush: Brush::Solid(color),
            rop: Ropd(Ropd::OP_PUT),
            mask: None,
        },
    )
}

/// A 32×32 ALPHA arrow cursor with its hot spot at the tip.
pub fn arrow_cursor() -> Cursor {
    let (w, h) = (32usize, 32usize);
    let mut data = vec![0u8; w * h * 4];
    for y in 0..20 {
        for x in 0..=y.min(13) {
            let edge = x == 0 || x == y.min(13) || y == 19;
            let c: u32 = if edge { 0xff00_0000 } else { 0xffff_ffff };
            let i = (y * w + x) * 4;
            data[i..i + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
    Cursor {
        unique: 0x5158_4c00_0000_0001,
        kind: CursorType::Alpha,
        width: 32,
        height: 32,
        hot_spot_x: 0,
        hot_spot_y: 0,
        data,
    }
}

/// A cheap deterministic hash for patterns.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Draw a line of "glyph-like" text: each character a 6×10 cell with a
/// deterministic pattern, so it reads like text at a glance.
fn text(canvas: &mut Canvas, x: usize, y: usize, s: &str, fg: u32) {
    for (i, ch) in s.bytes().enumerate() {
        if ch == b' ' {
            continue;
        }
        let bits = mix(u64::from(ch) * 0x9e37_79b9);
        for gy in 0..8 {
            for gx in 0..5 {
                let on =
                    (bits >> ((gy * 5 + gx) % 64)) & 1 == 1 || gx == 0 && ch.is_ascii_uppercase();
                if on {
                    canvas.put(x + i * 6 + gx, y + 1 + gy, fg);
                }
            }
        }
    }
}

/// The animated desktop of `qxl-vmm demo`: a gradient wallpaper, a task bar
/// with a clock, a terminal that scrolls, a window that moves, a video-like
/// region, and a cursor that travels around.
#[derive(Debug, Clone)]
pub struct DesktopScene {
    canvas: Canvas,
    wallpaper: Canvas,
    window: (i32, i32),
}

const TERM: Rect = Rect {
    left: 40,
    top: 60,
    right: 520,
    bottom: 380,
};
const VIDEO: Rect = Rect {
    left: 600,
    top: 80,
    right: 920,
    bottom: 320,
};
const WIN_W: i32 = 260;
const WIN_H: i32 = 160;
const LINE_H: i32 = 12;

impl DesktopScene {
    /// A desktop of `width` × `height` (at least 1024 × 768 looks right).
    pub fn new(width: u32, height: u32) -> Self {
        let mut wallpaper = Canvas::new(width, height);
        let (w, h) = (wallpaper.w, wallpaper.h);
        for y in 0..h {
            for x in 0..w {
                let r = (x * 255 / w.max(1)) as u32;
                let g = (y * 200 / h.max(1)) as u32;
                let b = 160u32;
                wallpaper.put(x, y, 0xff00_0000 | (r << 16) | (g << 8) | b);
            }
        }
        Self {
            canvas: Canvas::new(width, height),
            wallpaper,
            window: (120, 420),
        }
    }

    fn bar(&self) -> Rect {
        let h = i32::try_from(self.canvas.h).unwrap_or(0);
        let w = i32::try_from(self.canvas.w).unwrap_or(0);
        Rect::new(0, h - 28, w, h)
    }

    fn window_rect(&self) -> Rect {
        Rect::new(
            self.window.0,
            self.window.1,
            self.window.0 + WIN_W,
            self.window.1 + WIN_H,
        )
    }

    fn paint_window(&mut self) -> Rect {
        let r = self.window_rect();
        self.canvas.fill(r, 0xffe8_e8e8);
        self.canvas
            .fill(Rect::new(r.left, r.top, r.right, r.top + 20), 0xff30_60c0);
        let (x, y) = (r.left as usize, r.top as usize);
        text(&mut self.canvas, x + 6, y + 5, "Files", 0xffff_ffff);
        for i in 0..8 {
            text(
                &mut self.canvas,
                x + 10,
                y + 28 + i * 15,
                "document-report.txt",
                0xff20_2020,
            );
        }
        r
    }

    fn restore_wallpaper(&mut self, r: Rect) {
        if let Some((l, t, rr, b)) = self.canvas.clamp(r) {
            for y in t..b {
                let s = (y * self.canvas.w + l) * 4..(y * self.canvas.w + rr) * 4;
                self.canvas.px[s.clone()].copy_from_slice(&self.wallpaper.px[s]);
            }
        }
    }
}

impl Scene for DesktopScene {
    fn size(&self) -> (u32, u32) {
        (self.canvas.w as u32, self.canvas.h as u32)
    }

    fn framebuffer(&self) -> &[u8] {
        &self.canvas.px
    }

    fn frame(&mut self, n: u64) -> Frame {
        let mut f = Frame::default();
        let full = Rect::new(0, 0, self.canvas.w as i32, self.canvas.h as i32);
        if n == 0 {
            self.canvas.px.copy_from_slice(&self.wallpaper.px);
            f.draws.extend(copy_cmd(&self.canvas, full));
            let bar = self.bar();
            self.canvas.fill(bar, 0xff20_2428);
            f.draws.push(fill_cmd(bar, 0xff20_2428));
            self.canvas.fill(TERM, 0xff10_1010);
            f.draws.push(fill_cmd(TERM, 0xff10_1010));
            let w = self.paint_window();
            f.draws.extend(copy_cmd(&self.canvas, w));
            f.cursor.push(Command::Cursor(CursorCmd::Set {
                position: Point16 { x: 300, y: 300 },
                visible: true,
                shape: arrow_cursor(),
            }));
        }
        // Terminal: scroll one line up (COPY_BITS) and print a new line at the bottom.
        let inner = Rect::new(TERM.left + 4, TERM.top + 4, TERM.right - 4, TERM.bottom - 4);
        let dst = Rect::new(inner.left, inner.top, inner.right, inner.bottom - LINE_H);
        let src = Point {
            x: inner.left,
            y: inner.top + LINE_H,
        };
        self.canvas.copy_bits(dst, src);
        f.draws.push(draw(dst, DrawOp::CopyBits { src_pos: src }));
        let line = Rect::new(inner.left, inner.bottom - LINE_H, inner.right, inner.bottom);
        self.canvas.fill(line, 0xff10_1010);
        let msg = format!(
            "$ make -j2   [{n:5}] compiling crate_{} ... ok",
            mix(n) % 97
        );
        text(
            &mut self.canvas,
            line.left as usize + 2,
            line.top as usize,
            &msg,
            0xff40_e040,
        );
        f.draws.extend(copy_cmd(&self.canvas, line));
        // Video-like region: a moving plasma with noise.
        if let Some((l, t, r, b)) = self.canvas.clamp(VIDEO) {
            for y in t..b {
                for x in l..r {
                    let v = mix((x as u64) << 20 ^ (y as u64) << 4 ^ n) & 0x1f;
                    let p = ((x as u64 + n * 3) % 256) as u32;
                    let q = ((y as u64 + n * 2) % 256) as u32;
                    let c =
                        0xff00_0000 | (p << 16) | (q << 8) | (((p ^ q) as u64 + v) as u32 % 256);
                    self.canvas.put(x, y, c);
                }
            }
        }
        f.draws.extend(copy_cmd(&self.canvas, VIDEO));
        // Every 4th frame the window moves right by 8 pixels (wrapping).
        if n % 4 == 3 {
            let old = self.window_rect();
            self.restore_wallpaper(old);
            let max_x = (self.canvas.w as i32 - WIN_W - 10).max(10);
            self.window.0 = if self.window.0 + 8 > max_x {
                10
            } else {
                self.window.0 + 8
            };
            let new = self.paint_window();
            let union = Rect::new(
                old.left.min(new.left),
                old.top,
                old.right.max(new.right),
                old.bottom,
            );
            f.draws.extend(copy_cmd(&self.canvas, union));
        }
        // Clock in the task bar.
        let bar = self.bar();
        let clock = Rect::new(bar.right - 90, bar.top + 6, bar.right - 8, bar.top + 22);
        self.canvas.fill(clock, 0xff20_2428);
        let t = format!("{:02}:{:02}", (n / 60) % 24, n % 60);
        text(
            &mut self.canvas,
            clock.left as usize + 8,
            clock.top as usize + 2,
            &t,
            0xffff_ffff,
        );
        f.draws.extend(copy_cmd(&self.canvas, clock));
        // The cursor travels along a Lissajous curve.
        let a = n as f64 * 0.05;
        let (w, h) = (self.canvas.w as f64, self.canvas.h as f64);
        f.cursor.push(Command::Cursor(CursorCmd::Move {
            position: Point16 {
                x: (w / 2.0 + (w / 2.5) * a.sin()) as i16,
                y: (h / 2.0 + (h / 2.5) * (a * 1.3).cos()) as i16,
            },
        }));
        f
    }
}

/// Shows each PNG of a directory full-screen in turn (`--scene slideshow:DIR`).
///
/// The primary surface takes the size of the largest image; smaller images are
/// centred on black. Each image stays for `frames_per_slide` frames.
#[derive(Debug, Clone)]
pub struct SlideshowScene {
    canvas: Canvas,
    slides: Vec<(u32, u32, Vec<u8>)>,
    frames_per_slide: u64,
}

impl SlideshowScene {
    /// Load every `*.png` in `dir` (sorted by name), converted to BGRX.
    pub fn load(dir: &Path, frames_per_slide: u64) -> Result<Self> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
            .collect();
        paths.sort();
        let mut slides = Vec::new();
        for p in &paths {
            slides.push(load_png_bgrx(p)?);
        }
        let (w, h) = slides
            .iter()
            .fold((0, 0), |(w, h), s| (w.max(s.0), h.max(s.1)));
        if slides.is_empty() {
            return Err(Error::Scene(format!("no PNG files in {}", dir.display())));
        }
        Ok(Self {
            canvas: Canvas::new(w, h),
            slides,
            frames_per_slide: frames_per_slide.max(1),
        })
    }
}

/// Decode a PNG file into (width, height, BGRX pixels with X = 0).
pub fn load_png_bgrx(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let file = std::fs::File::open(path)?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| Error::Scene(format!("{}: {e}", path.display())))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::Scene(format!("{}: {e}", path.display())))?;
    let (w, h) = (info.width, info.height);
    let channels = info.color_type.samples();
    let mut out = Vec::with_capacity(w as usize * h as usize * 4);
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        let (r, g, b) = match channels {
            1 | 2 => (px[0], px[0], px[0]),
            _ => (px[0], px[1], px[2]),
        };
        out.extend_from_slice(&[b, g, r, 0]);
    }
    Ok((w, h, out))
}

impl Scene for SlideshowScene {
    fn size(&self) -> (u32, u32) {
        (self.canvas.w as u32, self.canvas.h as u32)
    }

    fn framebuffer(&self) -> &[u8] {
        &self.canvas.px
    }

    fn frame(&mut self, n: u64) -> Frame {
        let mut f = Frame::default();
        if !n.is_multiple_of(self.frames_per_slide) {
            return f;
        }
        let idx = (n / self.frames_per_slide) as usize % self.slides.len();
        let (sw, sh, ref px) = self.slides[idx];
        let (cw, ch) = (self.canvas.w, self.canvas.h);
        let full = Rect::new(0, 0, cw as i32, ch as i32);
        self.canvas.fill(full, 0);
        let (ox, oy) = ((cw - sw as usize) / 2, (ch - sh as usize) / 2);
        for y in 0..sh as usize {
            let d = ((oy + y) * cw + ox) * 4;
            self.canvas.px[d..d + sw as usize * 4]
                .copy_from_slice(&px[y * sw as usize * 4..(y + 1) * sw as usize * 4]);
        }
        f.draws.extend(copy_cmd(&self.canvas, full));
        if n == 0 {
            f.cursor.push(Command::Cursor(CursorCmd::Hide));
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spice_server::command::{BitmapFormat, ImageData};

    /// A minimal applier for the three operations scenes emit.
    fn apply(c: &mut Canvas, cmd: &Command) {
        let Command::Draw(d) = cmd else {
            panic!("scene draws must be draw commands")
        };
        match &d.op {
            DrawOp::Fill {
                brush: Brush::Solid(color),
                ..
            } => c.fill(d.bbox, *color),
            DrawOp::CopyBits { src_pos } => c.copy_bits(d.bbox, *src_pos),
            DrawOp::Copy(op) => {
                let ImageData::Bitmap(b) = &op.src.data else {
                    panic!("scene copies are bitmaps")
                };
                assert!(b.is_top_down());
                assert_eq!(b.format, BitmapFormat::Rgb32);
                for y in 0..b.height as usize {
                    for x in 0..b.width as usize {
                        let i = y * b.stride as usize + x * 4;
                        let px = u32::from_le_bytes(b.data[i..i + 4].try_into().unwrap());
                        c.put(d.bbox.left as usize + x, d.bbox.top as usize + y, px);
                    }
                }
            }
            other => panic!("unexpected op {other:?}"),
        }
    }

    #[test]
    fn desktop_scene_commands_reproduce_its_framebuffer() {
        let mut scene = DesktopScene::new(1024, 768);
        let mut surface = Canvas::new(1024, 768);
        let mut cursor_cmds = 0;
        for n in 0..12 {
            let f = scene.frame(n);
            for cmd in &f.draws {
                apply(&mut surface, cmd);
            }
            cursor_cmds += f.cursor.len();
            assert!(surface.px == scene.framebuffer(), "frame {n} differs");
        }
        // One SET, then one MOVE per frame.
        assert_eq!(cursor_cmds, 13);
    }

    #[test]
    fn desktop_scene_is_deterministic() {
        let mut a = DesktopScene::new(800, 600);
        let mut b = DesktopScene::new(800, 600);
        for n in 0..6 {
            assert_eq!(
                format!("{:?}", a.frame(n).draws),
                format!("{:?}", b.frame(n).draws)
            );
        }
        assert!(a.framebuffer() == b.framebuffer());
    }

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        let f = std::fs::File::create(path).unwrap();
        let mut e = png::Encoder::new(f, w, h);
        e.set_color(png::ColorType::Rgb);
        let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
        e.write_header().unwrap().write_image_data(&data).unwrap();
    }

    #[test]
    fn slideshow_scene_shows_each_png_centred() {
        let dir = std::env::temp_dir().join(format!("qxl-slideshow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_png(&dir.join("a.png"), 8, 6, [255, 0, 0]);
        write_png(&dir.join("b.png"), 4, 2, [0, 0, 255]);
        std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
        let mut s = SlideshowScene::load(&dir, 2).unwrap();
        assert_eq!(s.size(), (8, 6));
        let mut surface = Canvas::new(8, 6);
        for n in 0..4 {
            for cmd in &s.frame(n).draws {
                apply(&mut surface, cmd);
            }
            assert!(surface.px == s.framebuffer());
        }
        // Frame 2 shows b.png centred on black: BGRX blue at (2..6, 2..4).
        let px = |x: usize, y: usize| &s.framebuffer()[(y * 8 + x) * 4..(y * 8 + x) * 4 + 4];
        assert_eq!(px(3, 2), &[255, 0, 0, 0]);
        assert_eq!(px(0, 0), &[0, 0, 0, 0]);
        // No frame between slide changes.
        assert!(s.frame(5).draws.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        let empty =
            std::env::temp_dir().join(format!("qxl-slideshow-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        SlideshowScene::load(&empty, 1).unwrap_err();
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn arrow_cursor_has_alpha_size() {
        let c = arrow_cursor();
        assert_eq!(c.data.len(), 32 * 32 * 4);
    }
}
