//! A streaming reader of spice-server's `SPICE_REPLAY 1` recordings.
//!
//! # Primer
//!
//! When `SPICE_WORKER_RECORD_FILENAME` is set, libspice-server writes every
//! QXL command its display worker takes from the guest's rings, and every
//! message the VMM sends to that worker, into a recording
//! (`server/red-record-qxl.c`). The format (described in full in the project's
//! `spec/record-format.md`) is ASCII lines interleaved with raw binary blobs,
//! with no index and no length prefix per event: a reader must parse every
//! field, in order. A recording of a real guest is the closest thing to the
//! guest driver itself that a test can hold: the QXL structures as the driver
//! laid them out, field by field, including its image payloads.
//!
//! [`RecordReader`] reads such a stream from any [`BufRead`] one event at a
//! time (a recording can be hundreds of megabytes: it is never loaded whole)
//! and yields [`RecordEvent`]s:
//!
//! - worker messages ([`WorkerMessage`]: memslots, primary surface create /
//!   destroy with the recorded surface memory ([`RecordedPrimary`]), reset,
//!   update, OOM, monitors config, ...);
//! - QXL commands, converted into the owned [`spice_server::command::Command`]
//!   model that the device's decoder also produces (draws with every recorded
//!   field, surface, cursor, update and message commands).
//!
//! A recording is guest-derived input, so the reader treats it as hostile:
//! every number is range-checked against its C type, every size and count is
//! capped ([`RecordLimits`]), no allocation is sized by a declared length
//! before the bytes have actually arrived, and every problem is a typed
//! [`Error::Record`] naming the byte offset — never a panic. After an error
//! the reader yields nothing more.
//!
//! Decompression (the recordings in this project are zstd-compressed as a
//! whole) is the caller's business: wrap the decoder in a `BufReader`.

use std::io::{BufRead, ErrorKind, Read};

use spice_server::command::{
    BITMAP_DIRECT, Bitmap, BitmapFormat, Brush, COMPOSITE_HAS_MASK, COMPOSITE_HAS_MASK_TRANSFORM,
    COMPOSITE_HAS_SRC_TRANSFORM, Clip, Command, CopyOp, Cursor, CursorCmd, CursorType, DrawOp,
    Drawable, GlyphString, Image, ImageData, LINE_STYLED, LineAttr, Mask, Palette, Path, PathSeg,
    Point, Point16, PointFix, RasterGlyph, Rect, Ropd, STRING_RASTER_A1, STRING_RASTER_A4,
    STRING_RASTER_A8, SURFACE_FLAG_KEEP_DATA, ScaleMode, SurfaceCmd, SurfaceCreate, SurfaceFormat,
    Transform, UpdateCmd,
};

use crate::error::{Error, RecordFault, Result};

/// The first line of every recording.
pub const MAGIC_LINE: &[u8] = b"SPICE_REPLAY 1";

/// `SPICE_IMAGE_TYPE_BITMAP`.
const IMAGE_BITMAP: i64 = 0;
/// `SPICE_IMAGE_TYPE_QUIC`.
const IMAGE_QUIC: i64 = 1;
/// `SPICE_IMAGE_TYPE_SURFACE`.
const IMAGE_SURFACE: i64 = 104;

/// Caps the reader enforces; every one of them bounds memory or work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Longest text line (and blob header) in bytes.
    pub max_line: usize,
    /// Largest single blob in bytes.
    pub max_blob: u64,
    /// Largest sum of blob sizes in one event.
    pub max_event_bytes: u64,
    /// Most chunks in one `data_chunks` list.
    pub max_chunks: u32,
    /// Most palette entries.
    pub max_palette_entries: u32,
}

impl Default for RecordLimits {
    /// 256-byte lines, 64 MiB blobs and events (a 4096×4096 32-bit surface),
    /// 4096 chunks per list, 256 palette entries.
    fn default() -> Self {
        Self {
            max_line: 256,
            max_blob: 64 << 20,
            max_event_bytes: 64 << 20,
            max_chunks: 4096,
            max_palette_entries: 256,
        }
    }
}

/// A message the VMM sent to spice-server's display worker (`RedWorkerMessage`).
///
/// The recorder writes only the type: apart from the primary-surface creations
/// (whose body is [`RecordedPrimary`]) the parameters are not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[allow(missing_docs)] // The names are those of RED_WORKER_MESSAGE_*.
pub enum WorkerMessage {
    Nop = 0,
    Update = 1,
    Wakeup = 2,
    Oom = 3,
    Ready = 4,
    DisplayConnect = 5,
    DisplayDisconnect = 6,
    DisplayMigrate = 7,
    Start = 8,
    Stop = 9,
    CursorConnect = 10,
    CursorDisconnect = 11,
    CursorMigrate = 12,
    SetCompression = 13,
    SetStreamingVideo = 14,
    SetMouseMode = 15,
    AddMemslot = 16,
    DelMemslot = 17,
    ResetMemslots = 18,
    DestroySurfaces = 19,
    CreatePrimarySurface = 20,
    DestroyPrimarySurface = 21,
    ResetCursor = 22,
    ResetImageCache = 23,
    DestroySurfaceWait = 24,
    LoadvmCommands = 25,
    UpdateAsync = 26,
    AddMemslotAsync = 27,
    DestroySurfacesAsync = 28,
    CreatePrimarySurfaceAsync = 29,
    DestroyPrimarySurfaceAsync = 30,
    DestroySurfaceWaitAsync = 31,
    FlushSurfacesAsync = 32,
    DisplayChannelCreate = 33,
    CursorChannelCreate = 34,
    MonitorsConfigAsync = 35,
    DriverUnload = 36,
    GlScanout = 37,
    GlDrawAsync = 38,
    SetVideoCodecs = 39,
    CloseWorker = 40,
}

impl WorkerMessage {
    const ALL: [Self; 41] = [
        Self::Nop,
        Self::Update,
        Self::Wakeup,
        Self::Oom,
        Self::Ready,
        Self::DisplayConnect,
        Self::DisplayDisconnect,
        Self::DisplayMigrate,
        Self::Start,
        Self::Stop,
        Self::CursorConnect,
        Self::CursorDisconnect,
        Self::CursorMigrate,
        Self::SetCompression,
        Self::SetStreamingVideo,
        Self::SetMouseMode,
        Self::AddMemslot,
        Self::DelMemslot,
        Self::ResetMemslots,
        Self::DestroySurfaces,
        Self::CreatePrimarySurface,
        Self::DestroyPrimarySurface,
        Self::ResetCursor,
        Self::ResetImageCache,
        Self::DestroySurfaceWait,
        Self::LoadvmCommands,
        Self::UpdateAsync,
        Self::AddMemslotAsync,
        Self::DestroySurfacesAsync,
        Self::CreatePrimarySurfaceAsync,
        Self::DestroyPrimarySurfaceAsync,
        Self::DestroySurfaceWaitAsync,
        Self::FlushSurfacesAsync,
        Self::DisplayChannelCreate,
        Self::CursorChannelCreate,
        Self::MonitorsConfigAsync,
        Self::DriverUnload,
        Self::GlScanout,
        Self::GlDrawAsync,
        Self::SetVideoCodecs,
        Self::CloseWorker,
    ];

    /// The message for a `RedWorkerMessage` value, `None` for unknown values.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// True for the two messages that carry a [`RecordedPrimary`] body.
    pub const fn has_primary_body(self) -> bool {
        matches!(
            self,
            Self::CreatePrimarySurface | Self::CreatePrimarySurfaceAsync
        )
    }
}

/// The body of a recorded `CREATE_PRIMARY_SURFACE[_ASYNC]` message
/// (`QXLDevSurfaceCreate` plus the surface memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPrimary {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stride in bytes; negative = rows stored bottom-up.
    pub stride: i32,
    /// `SpiceSurfaceFmt`.
    pub format: u32,
    /// `position`.
    pub position: u32,
    /// `mouse_mode`.
    pub mouse_mode: u32,
    /// `QXL_SURF_FLAG_*` flags.
    pub flags: u32,
    /// `type` (0 = primary).
    pub kind: u32,
    /// The surface memory, `height * |stride|` bytes **in memory order** (the
    /// lowest address first: bottom row first for a negative stride), or empty
    /// when the recorder had no memory pointer.
    pub data: Vec<u8>,
}

/// What one event of a recording carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    /// A message to the display worker (`event N 1 TYPE TS`).
    Worker {
        /// The message.
        message: WorkerMessage,
        /// For the primary-surface creations: the surface.
        primary: Option<RecordedPrimary>,
    },
    /// A QXL command taken from a ring (`event N 0 TYPE TS`).
    Command {
        /// The command in the owned model.
        command: Command,
        /// True when the drawable was recorded as a `QXLCompatDrawable`
        /// (`bitmap_offset` / `bitmap_area` instead of the self bitmap and
        /// surface fields); the model holds its native equivalent.
        compat: bool,
    },
}

/// One event of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEvent {
    /// The recorder's event counter.
    pub counter: u32,
    /// Host `CLOCK_MONOTONIC` time of the event, in nanoseconds.
    pub timestamp_ns: u64,
    /// Byte offset of the event line in the (decompressed) stream.
    pub offset: u64,
    /// What happened.
    pub body: RecordBody,
}

/// Reads a `SPICE_REPLAY 1` stream event by event.
#[derive(Debug)]
pub struct RecordReader<R> {
    r: R,
    limits: RecordLimits,
    offset: u64,
    line_start: u64,
    line: Vec<u8>,
    event_bytes: u64,
    events: u64,
    finished: bool,
}

/// The tokens of one text line.
struct Tokens(Vec<String>);

impl<R: BufRead> RecordReader<R> {
    /// Check the `SPICE_REPLAY 1` header line of `r` and return a reader
    /// positioned at the first event, with the default [`RecordLimits`].
    pub fn new(r: R) -> Result<Self> {
        Self::with_limits(r, RecordLimits::default())
    }

    /// [`Self::new`] with explicit limits.
    pub fn with_limits(r: R, limits: RecordLimits) -> Result<Self> {
        let mut me = Self {
            r,
            limits,
            offset: 0,
            line_start: 0,
            line: Vec::new(),
            event_bytes: 0,
            events: 0,
            finished: false,
        };
        match me.read_until(b'\n') {
            Ok(()) if me.line.as_slice() == MAGIC_LINE => Ok(me),
            Ok(()) | Err(Error::Record { .. }) => Err(Error::Record {
                offset: 0,
                fault: RecordFault::BadMagic,
            }),
            Err(e) => Err(e),
        }
    }

    /// Bytes of the stream consumed so far.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Events read so far.
    pub const fn events(&self) -> u64 {
        self.events
    }

    /// The limits in force.
    pub const fn limits(&self) -> &RecordLimits {
        &self.limits
    }

    /// The next event, `Ok(None)` at a clean end of the stream (between
    /// events). After an error every later call returns `Ok(None)`.
    pub fn next_event(&mut self) -> Result<Option<RecordEvent>> {
        if self.finished {
            return Ok(None);
        }
        let res = self.parse_event();
        match &res {
            Ok(Some(_)) => self.events += 1,
            Ok(None) | Err(_) => self.finished = true,
        }
        res
    }

    // ------------------------------------------------------------------
    // Lexing.

    fn fault(&self, fault: RecordFault) -> Error {
        Error::Record {
            offset: self.line_start,
            fault,
        }
    }

    fn io_fault(&self, e: &std::io::Error) -> Error {
        self.fault(RecordFault::Io(e.kind()))
    }

    /// True at the end of the stream.
    fn at_eof(&mut self) -> Result<bool> {
        loop {
            match self.r.fill_buf() {
                Ok(b) => return Ok(b.is_empty()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_fault(&e)),
            }
        }
    }

    /// Read into `self.line` up to (and consuming, not storing) `delim`.
    fn read_until(&mut self, delim: u8) -> Result<()> {
        self.line.clear();
        self.line_start = self.offset;
        loop {
            let buf = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_fault(&e)),
            };
            if buf.is_empty() {
                return Err(self.fault(RecordFault::Truncated));
            }
            let (chunk, found) = match buf.iter().position(|&b| b == delim) {
                Some(i) => (buf.get(..i).unwrap_or_default(), true),
                None => (buf, false),
            };
            if self.line.len().saturating_add(chunk.len()) > self.limits.max_line {
                return Err(self.fault(RecordFault::LineTooLong));
            }
            self.line.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(found);
            self.r.consume(used);
            self.offset = self
                .offset
                .saturating_add(u64::try_from(used).unwrap_or(u64::MAX));
            if found {
                return Ok(());
            }
        }
    }

    /// Read one text line and split it at single spaces.
    fn tokens(&mut self, what: &'static str) -> Result<Tokens> {
        self.read_until(b'\n')?;
        let s =
            std::str::from_utf8(&self.line).map_err(|_| self.fault(RecordFault::Expected(what)))?;
        Ok(Tokens(s.split(' ').map(str::to_owned).collect()))
    }

    /// Check that `t` is `words...` followed by exactly `n` integers; return them.
    fn numbers(&self, t: &Tokens, words: &[&'static str], n: usize) -> Result<Vec<i64>> {
        let what = words.last().copied().unwrap_or("line");
        if t.0.len() != words.len() + n || t.0.iter().zip(words).any(|(a, b)| a != b) {
            return Err(self.fault(RecordFault::Expected(what)));
        }
        t.0.iter()
            .skip(words.len())
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| self.fault(RecordFault::BadNumber(what)))
            })
            .collect()
    }

    /// A line `words... v1 .. vN`.
    fn nums<const N: usize>(&mut self, words: &[&'static str]) -> Result<[i64; N]> {
        let what = words.last().copied().unwrap_or("line");
        let t = self.tokens(what)?;
        let v = self.numbers(&t, words, N)?;
        <[i64; N]>::try_from(v).map_err(|_| self.fault(RecordFault::Expected(what)))
    }

    /// A line `key value`.
    fn kv(&mut self, key: &'static str) -> Result<i64> {
        let [v] = self.nums::<1>(&[key])?;
        Ok(v)
    }

    /// A line `key value` with an unsigned 64-bit value (`%PRIu64`).
    fn kv_u64(&mut self, key: &'static str) -> Result<u64> {
        let t = self.tokens(key)?;
        match t.0.as_slice() {
            [k, v] if k == key => v
                .parse::<u64>()
                .map_err(|_| self.fault(RecordFault::BadNumber(key))),
            _ => Err(self.fault(RecordFault::Expected(key))),
        }
    }

    /// A line that is exactly `word`.
    fn word(&mut self, word: &'static str) -> Result<()> {
        let t = self.tokens(word)?;
        self.numbers(&t, &[word], 0).map(|_| ())
    }

    fn rect(&mut self, name: &'static str) -> Result<Rect> {
        let [top, left, bottom, right] = self.nums::<4>(&["rect", name])?;
        Ok(Rect {
            top: self.i32(top, name)?,
            left: self.i32(left, name)?,
            bottom: self.i32(bottom, name)?,
            right: self.i32(right, name)?,
        })
    }

    fn point(&mut self, key: &'static str) -> Result<Point> {
        let [x, y] = self.nums::<2>(&[key])?;
        Ok(Point {
            x: self.i32(x, key)?,
            y: self.i32(y, key)?,
        })
    }

    fn point16(&mut self, key: &'static str) -> Result<Point16> {
        let [x, y] = self.nums::<2>(&[key])?;
        Ok(Point16 {
            x: self.conv(x, key)?,
            y: self.conv(y, key)?,
        })
    }

    fn flag(&mut self, key: &'static str) -> Result<bool> {
        match self.kv(key)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.fault(RecordFault::OutOfRange(key))),
        }
    }

    // ------------------------------------------------------------------
    // Numbers.

    fn conv<T: TryFrom<i64>>(&self, v: i64, what: &'static str) -> Result<T> {
        T::try_from(v).map_err(|_| self.fault(RecordFault::OutOfRange(what)))
    }

    fn i32(&self, v: i64, what: &'static str) -> Result<i32> {
        self.conv(v, what)
    }

    /// A `uint32_t` printed with `%d`: negative values are its upper half.
    fn u32_bits(&self, v: i64, what: &'static str) -> Result<u32> {
        if let Ok(u) = u32::try_from(v) {
            return Ok(u);
        }
        i32::try_from(v)
            .map(|i| u32::from_ne_bytes(i.to_ne_bytes()))
            .map_err(|_| self.fault(RecordFault::OutOfRange(what)))
    }

    fn kv_u8(&mut self, key: &'static str) -> Result<u8> {
        let v = self.kv(key)?;
        self.conv(v, key)
    }

    fn kv_u16(&mut self, key: &'static str) -> Result<u16> {
        let v = self.kv(key)?;
        self.conv(v, key)
    }

    fn kv_u32(&mut self, key: &'static str) -> Result<u32> {
        let v = self.kv(key)?;
        self.u32_bits(v, key)
    }

    fn kv_i32(&mut self, key: &'static str) -> Result<i32> {
        let v = self.kv(key)?;
        self.i32(v, key)
    }

    // ------------------------------------------------------------------
    // Blobs.

    /// `binary 0 <prefix> <size>:<bytes>\n`.
    fn blob(&mut self, prefix: &'static str) -> Result<Vec<u8>> {
        self.read_until(b':')?;
        let size = {
            let s = std::str::from_utf8(&self.line)
                .map_err(|_| self.fault(RecordFault::Expected("binary")))?;
            let t: Vec<&str> = s.split(' ').collect();
            match t.as_slice() {
                ["binary", "0", p, size] if *p == prefix => size
                    .parse::<u64>()
                    .map_err(|_| self.fault(RecordFault::BadNumber(prefix)))?,
                ["binary", "1", ..] => return Err(self.fault(RecordFault::CompressedBlob)),
                ["binary", "0", _, _] => return Err(self.fault(RecordFault::Expected(prefix))),
                _ => return Err(self.fault(RecordFault::Expected("binary"))),
            }
        };
        if size > self.limits.max_blob {
            return Err(self.fault(RecordFault::BlobTooLarge));
        }
        self.event_bytes = self.event_bytes.saturating_add(size);
        if self.event_bytes > self.limits.max_event_bytes {
            return Err(self.fault(RecordFault::EventTooLarge));
        }
        // Grow with the bytes that actually arrive: the declared size is not trusted.
        let first = usize::try_from(size.min(1 << 20)).unwrap_or(0);
        let mut data = Vec::with_capacity(first);
        let got = (&mut self.r)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| self.io_fault(&e))?;
        self.offset = self
            .offset
            .saturating_add(u64::try_from(got).unwrap_or(u64::MAX));
        if u64::try_from(got).ok() != Some(size) {
            return Err(self.fault(RecordFault::Truncated));
        }
        let mut nl = [0u8; 1];
        match self.r.read(&mut nl) {
            Ok(1) if nl[0] == b'\n' => {
                self.offset = self.offset.saturating_add(1);
                Ok(data)
            }
            Ok(1) => Err(self.fault(RecordFault::Expected("newline after blob"))),
            Ok(_) => Err(self.fault(RecordFault::Truncated)),
            Err(e) => Err(self.io_fault(&e)),
        }
    }

    /// `data_chunks <extra> <total>` and `extra + 1` blobs, concatenated.
    fn chunks(&mut self, prefix: &'static str) -> Result<Vec<u8>> {
        let [extra, total] = self.nums::<2>(&["data_chunks"])?;
        let extra: u32 = self.conv(extra, "data_chunks")?;
        if extra >= self.limits.max_chunks {
            return Err(self.fault(RecordFault::TooManyChunks));
        }
        let total: u64 = self.conv(total, "data_chunks")?;
        if total > self.limits.max_event_bytes {
            return Err(self.fault(RecordFault::EventTooLarge));
        }
        let mut out = Vec::new();
        for _ in 0..=extra {
            let b = self.blob(prefix)?;
            if out.is_empty() {
                out = b;
            } else {
                out.extend_from_slice(&b);
            }
            if u64::try_from(out.len()).unwrap_or(u64::MAX) > total {
                return Err(self.fault(RecordFault::SizeMismatch("data_chunks")));
            }
        }
        if u64::try_from(out.len()).ok() != Some(total) {
            return Err(self.fault(RecordFault::SizeMismatch("data_chunks")));
        }
        Ok(out)
    }

    // ------------------------------------------------------------------
    // Events.

    fn parse_event(&mut self) -> Result<Option<RecordEvent>> {
        if self.at_eof()? {
            return Ok(None);
        }
        self.event_bytes = 0;
        let offset = self.offset;
        let t = self.tokens("event")?;
        let (counter, what, kind, ts) = match t.0.as_slice() {
            [e, c, w, k, ts] if e == "event" => (
                c.parse::<u32>()
                    .map_err(|_| self.fault(RecordFault::BadNumber("event counter")))?,
                w.parse::<u8>()
                    .map_err(|_| self.fault(RecordFault::BadNumber("event kind")))?,
                k.parse::<u32>()
                    .map_err(|_| self.fault(RecordFault::BadNumber("event type")))?,
                ts.parse::<u64>()
                    .map_err(|_| self.fault(RecordFault::BadNumber("event timestamp")))?,
            ),
            _ => return Err(self.fault(RecordFault::Expected("event"))),
        };
        let body = match what {
            0 => {
                let (command, compat) = self.command(kind)?;
                RecordBody::Command { command, compat }
            }
            1 => {
                let message = WorkerMessage::from_u32(kind)
                    .ok_or_else(|| self.fault(RecordFault::UnknownType("worker message")))?;
                let primary = if message.has_primary_body() {
                    Some(self.primary()?)
                } else {
                    None
                };
                RecordBody::Worker { message, primary }
            }
            _ => return Err(self.fault(RecordFault::UnknownType("event kind"))),
        };
        Ok(Some(RecordEvent {
            counter,
            timestamp_ns: ts,
            offset,
            body,
        }))
    }

    fn primary(&mut self) -> Result<RecordedPrimary> {
        let [w, h, stride, format] = self.nums::<4>(&[])?;
        let [position, mouse_mode, flags, kind] = self.nums::<4>(&[])?;
        let p = RecordedPrimary {
            width: self.u32_bits(w, "primary width")?,
            height: self.u32_bits(h, "primary height")?,
            stride: self.i32(stride, "primary stride")?,
            format: self.u32_bits(format, "primary format")?,
            position: self.u32_bits(position, "primary position")?,
            mouse_mode: self.u32_bits(mouse_mode, "primary mouse_mode")?,
            flags: self.u32_bits(flags, "primary flags")?,
            kind: self.u32_bits(kind, "primary type")?,
            data: Vec::new(),
        };
        let size = u64::from(p.stride.unsigned_abs()).saturating_mul(u64::from(p.height));
        let data = self.blob("data")?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if len != 0 && len != size {
            return Err(self.fault(RecordFault::SizeMismatch("primary data")));
        }
        Ok(RecordedPrimary { data, ..p })
    }

    fn command(&mut self, kind: u32) -> Result<(Command, bool)> {
        match kind {
            1 => {
                let (d, compat) = self.drawable()?;
                Ok((Command::Draw(d), compat))
            }
            2 => {
                self.word("update")?;
                let area = self.rect("area")?;
                let update_id = self.kv_u32("update_id")?;
                let surface_id = self.kv_u32("surface_id")?;
                Ok((
                    Command::Update(UpdateCmd {
                        area,
                        update_id,
                        surface_id,
                    }),
                    false,
                ))
            }
            3 => Ok((Command::Cursor(self.cursor_cmd()?), false)),
            4 => Ok((Command::Message(self.blob("message")?), false)),
            5 => Ok((Command::Surface(self.surface_cmd()?), false)),
            _ => Err(self.fault(RecordFault::UnknownType("command type"))),
        }
    }

    fn surface_cmd(&mut self) -> Result<SurfaceCmd> {
        self.word("surface_cmd")?;
        let surface_id = self.kv_u32("surface_id")?;
        let kind = self.kv_u8("type")?;
        let flags = self.kv_u32("flags")?;
        match kind {
            0 => {
                let f = self.kv_u32("u.surface_create.format")?;
                let format = SurfaceFormat::from_u32(f)
                    .ok_or_else(|| self.fault(RecordFault::UnknownType("surface format")))?;
                let width = self.kv_u32("u.surface_create.width")?;
                let height = self.kv_u32("u.surface_create.height")?;
                let stride = self.kv_i32("u.surface_create.stride")?;
                let initial = if flags & SURFACE_FLAG_KEEP_DATA != 0 {
                    let data = self.blob("data")?;
                    let row = stride.unsigned_abs();
                    let size = u64::from(row).saturating_mul(u64::from(height));
                    if u64::try_from(data.len()).ok() != Some(size) {
                        return Err(self.fault(RecordFault::SizeMismatch("surface data")));
                    }
                    // The model wants the top row first whatever the stride's sign.
                    match usize::try_from(row) {
                        Ok(r) if stride < 0 && r > 0 => {
                            Some(data.chunks(r).rev().flatten().copied().collect())
                        }
                        _ => Some(data),
                    }
                } else {
                    None
                };
                Ok(SurfaceCmd::Create(SurfaceCreate {
                    surface_id,
                    format,
                    width,
                    height,
                    stride,
                    flags,
                    position: 0,
                    initial,
                }))
            }
            1 => Ok(SurfaceCmd::Destroy { surface_id }),
            _ => Err(self.fault(RecordFault::UnknownType("surface_cmd type"))),
        }
    }

    fn cursor_cmd(&mut self) -> Result<CursorCmd> {
        self.word("cursor_cmd")?;
        match self.kv_u8("type")? {
            0 => {
                let position = self.point16("point16")?;
                let visible = self.kv_u8("u.set.visible")? != 0;
                let unique = self.kv_u64("header.unique")?;
                let t = self.kv_u16("header.type")?;
                let kind = CursorType::from_u16(t)
                    .ok_or_else(|| self.fault(RecordFault::UnknownType("cursor type")))?;
                let width = self.kv_u16("header.width")?;
                let height = self.kv_u16("header.height")?;
                let hot_spot_x = self.kv_u16("header.hot_spot_x")?;
                let hot_spot_y = self.kv_u16("header.hot_spot_y")?;
                let data_size = self.kv_u32("data_size")?;
                let data = self.chunks("cursor")?;
                if u64::try_from(data.len()).ok() != Some(u64::from(data_size)) {
                    return Err(self.fault(RecordFault::SizeMismatch("cursor data_size")));
                }
                Ok(CursorCmd::Set {
                    position,
                    visible,
                    shape: Cursor {
                        unique,
                        kind,
                        width,
                        height,
                        hot_spot_x,
                        hot_spot_y,
                        data,
                    },
                })
            }
            1 => Ok(CursorCmd::Move {
                position: self.point16("point16")?,
            }),
            2 => Ok(CursorCmd::Hide),
            3 => Ok(CursorCmd::Trail {
                length: self.kv_u16("u.trail.length")?,
                frequency: self.kv_u16("u.trail.frequency")?,
            }),
            _ => Err(self.fault(RecordFault::UnknownType("cursor_cmd type"))),
        }
    }

    fn drawable(&mut self) -> Result<(Drawable, bool)> {
        self.word("drawable")?;
        let bbox = self.rect("bbox")?;
        let clip = match self.kv("type")? {
            0 => Clip::None,
            1 => {
                let n = self.kv_u32("num_rects")?;
                let data = self.chunks("clip_rects")?;
                if u64::try_from(data.len()).ok() != Some(u64::from(n).saturating_mul(16)) {
                    return Err(self.fault(RecordFault::SizeMismatch("clip_rects")));
                }
                Clip::Rects(data.chunks_exact(16).map(rect_at).collect())
            }
            _ => return Err(self.fault(RecordFault::UnknownType("clip type"))),
        };
        let effect = self.kv_u8("effect")?;
        let mm_time = self.kv_u32("mm_time")?;
        let t = self.tokens("self_bitmap")?;
        let compat = t.0.first().is_some_and(|k| k == "bitmap_offset");
        let (self_bitmap, surface_id, surfaces_dest, surfaces_rects) = if compat {
            let [off] = <[i64; 1]>::try_from(self.numbers(&t, &["bitmap_offset"], 1)?)
                .map_err(|_| self.fault(RecordFault::Expected("bitmap_offset")))?;
            let off: u16 = self.conv(off, "bitmap_offset")?;
            let area = self.rect("bitmap_area")?;
            ((off != 0).then_some(area), 0, [-1; 3], [Rect::default(); 3])
        } else {
            let [sb] = <[i64; 1]>::try_from(self.numbers(&t, &["self_bitmap"], 1)?)
                .map_err(|_| self.fault(RecordFault::Expected("self_bitmap")))?;
            let sb: u8 = self.conv(sb, "self_bitmap")?;
            let area = self.rect("self_bitmap_area")?;
            let surface_id = self.kv_u32("surface_id")?;
            let mut dest = [-1i32; 3];
            let mut rects = [Rect::default(); 3];
            for (d, r) in dest.iter_mut().zip(rects.iter_mut()) {
                *d = self.kv_i32("surfaces_dest")?;
                *r = self.rect("surfaces_rects")?;
            }
            ((sb != 0).then_some(area), surface_id, dest, rects)
        };
        let op = self.draw_op(compat)?;
        Ok((
            Drawable {
                surface_id,
                effect,
                self_bitmap,
                bbox,
                clip,
                mm_time,
                surfaces_dest,
                surfaces_rects,
                op,
            },
            compat,
        ))
    }

    fn draw_op(&mut self, compat: bool) -> Result<DrawOp> {
        Ok(match self.kv("type")? {
            0 => DrawOp::Nop,
            1 => DrawOp::Fill {
                brush: self.brush()?,
                rop: Ropd(self.kv_u16("rop_descriptor")?),
                mask: self.qmask()?,
            },
            2 => DrawOp::Opaque {
                src: self.required_image()?,
                src_area: self.rect("src_area")?,
                brush: self.brush()?,
                rop: Ropd(self.kv_u16("rop_descriptor")?),
                scale_mode: self.scale_mode()?,
                mask: self.qmask()?,
            },
            3 => DrawOp::Copy(self.copy_op()?),
            4 => DrawOp::CopyBits {
                src_pos: self.point("point")?,
            },
            5 => DrawOp::Blend(self.copy_op()?),
            6 => DrawOp::Blackness {
                mask: self.qmask()?,
            },
            7 => DrawOp::Whiteness {
                mask: self.qmask()?,
            },
            8 => DrawOp::Invers {
                mask: self.qmask()?,
            },
            9 => DrawOp::Rop3 {
                src: self.required_image()?,
                src_area: self.rect("src_area")?,
                brush: self.brush()?,
                rop3: self.kv_u8("rop3")?,
                scale_mode: self.scale_mode()?,
                mask: self.qmask()?,
            },
            10 => self.stroke()?,
            11 => self.text()?,
            12 => DrawOp::Transparent {
                src: self.required_image()?,
                src_area: self.rect("src_area")?,
                src_color: self.kv_u32("src_color")?,
                true_color: self.kv_u32("true_color")?,
            },
            13 => {
                let alpha_flags = if compat {
                    0
                } else {
                    self.kv_u16("alpha_flags")?
                };
                DrawOp::AlphaBlend {
                    alpha_flags,
                    alpha: self.kv_u8("alpha")?,
                    src: self.required_image()?,
                    src_area: self.rect("src_area")?,
                }
            }
            14 if !compat => self.composite()?,
            _ => return Err(self.fault(RecordFault::UnknownType("draw type"))),
        })
    }

    fn copy_op(&mut self) -> Result<CopyOp> {
        Ok(CopyOp {
            src: self.required_image()?,
            src_area: self.rect("src_area")?,
            rop: Ropd(self.kv_u16("rop_descriptor")?),
            scale_mode: self.scale_mode()?,
            mask: self.qmask()?,
        })
    }

    fn scale_mode(&mut self) -> Result<ScaleMode> {
        match self.kv("scale_mode")? {
            0 => Ok(ScaleMode::Interpolate),
            1 => Ok(ScaleMode::Nearest),
            _ => Err(self.fault(RecordFault::OutOfRange("scale_mode"))),
        }
    }

    fn stroke(&mut self) -> Result<DrawOp> {
        let data = self.chunks("path")?;
        let path =
            parse_path(&data).ok_or_else(|| self.fault(RecordFault::SizeMismatch("path")))?;
        let flags = self.kv_u8("attr.flags")?;
        let style = if flags & LINE_STYLED != 0 {
            let nseg = self.kv_u8("attr.style_nseg")?;
            let b = self.blob("style")?;
            if b.len() != usize::from(nseg) * 4 {
                return Err(self.fault(RecordFault::SizeMismatch("style")));
            }
            b.chunks_exact(4).map(|c| i32_at(c, 0)).collect()
        } else {
            Vec::new()
        };
        Ok(DrawOp::Stroke {
            path,
            attr: LineAttr {
                flags,
                style,
                ..LineAttr::default()
            },
            brush: self.brush()?,
            fore_mode: self.kv_u16("fore_mode")?,
            back_mode: self.kv_u16("back_mode")?,
        })
    }

    fn text(&mut self) -> Result<DrawOp> {
        let data_size = self.kv_u32("data_size")?;
        let length = self.kv_u16("length")?;
        let flags = self.kv_u16("flags")?;
        let data = self.chunks("string")?;
        if u64::try_from(data.len()).ok() != Some(u64::from(data_size)) {
            return Err(self.fault(RecordFault::SizeMismatch("string data_size")));
        }
        let string = parse_glyphs(&data, length, flags)
            .ok_or_else(|| self.fault(RecordFault::SizeMismatch("string glyphs")))?;
        Ok(DrawOp::Text {
            string,
            back_area: self.rect("back_area")?,
            fore_brush: self.brush()?,
            back_brush: self.brush()?,
            fore_mode: self.kv_u16("fore_mode")?,
            back_mode: self.kv_u16("back_mode")?,
        })
    }

    fn composite(&mut self) -> Result<DrawOp> {
        let mut flags = self.kv_u32("flags")?;
        let src = self.required_image()?;
        let src_transform = if self.flag("src_transform")? {
            flags |= COMPOSITE_HAS_SRC_TRANSFORM;
            Some(self.transform()?)
        } else {
            None
        };
        let mask = if self.flag("mask")? {
            flags |= COMPOSITE_HAS_MASK;
            Some(self.required_image()?)
        } else {
            None
        };
        let mask_transform = if self.flag("mask_transform")? {
            flags |= COMPOSITE_HAS_MASK_TRANSFORM;
            Some(self.transform()?)
        } else {
            None
        };
        Ok(DrawOp::Composite {
            flags,
            src,
            src_transform,
            mask,
            mask_transform,
            src_origin: self.point16("src_origin")?,
            mask_origin: self.point16("mask_origin")?,
        })
    }

    fn transform(&mut self) -> Result<Transform> {
        let b = self.blob("transform")?;
        if b.len() != 24 {
            return Err(self.fault(RecordFault::SizeMismatch("transform")));
        }
        let mut t = [0u32; 6];
        for (v, c) in t.iter_mut().zip(b.chunks_exact(4)) {
            *v = u32_at(c, 0);
        }
        Ok(Transform(t))
    }

    fn brush(&mut self) -> Result<Brush> {
        match self.kv("type")? {
            0 => Ok(Brush::None),
            1 => Ok(Brush::Solid(self.kv_u32("u.color")?)),
            2 => Ok(Brush::Pattern {
                image: self.required_image()?,
                pos: self.point("point")?,
            }),
            _ => Err(self.fault(RecordFault::UnknownType("brush type"))),
        }
    }

    fn qmask(&mut self) -> Result<Option<Mask>> {
        let flags = self.kv_u8("flags")?;
        let pos = self.point("point")?;
        Ok(self.image()?.map(|bitmap| Mask {
            flags,
            pos,
            bitmap: Box::new(bitmap),
        }))
    }

    fn required_image(&mut self) -> Result<Box<Image>> {
        self.image()?
            .map(Box::new)
            .ok_or_else(|| self.fault(RecordFault::NullImage))
    }

    fn image(&mut self) -> Result<Option<Image>> {
        if !self.flag("image")? {
            return Ok(None);
        }
        let id = self.kv_u64("descriptor.id")?;
        let kind = self.kv("descriptor.type")?;
        let flags = self.kv_u8("descriptor.flags")?;
        let width = self.kv_u32("descriptor.width")?;
        let height = self.kv_u32("descriptor.height")?;
        let data = match kind {
            IMAGE_BITMAP => ImageData::Bitmap(self.bitmap()?),
            IMAGE_QUIC => {
                let size = self.kv_u32("quic.data_size")?;
                let data = self.chunks("quic.data")?;
                if u64::try_from(data.len()).ok() != Some(u64::from(size)) {
                    return Err(self.fault(RecordFault::SizeMismatch("quic.data_size")));
                }
                ImageData::Quic(data)
            }
            IMAGE_SURFACE => ImageData::Surface(self.kv_u32("surface_image.surface_id")?),
            _ => return Err(self.fault(RecordFault::UnknownType("image type"))),
        };
        Ok(Some(Image {
            id,
            flags,
            width,
            height,
            data,
        }))
    }

    fn bitmap(&mut self) -> Result<Bitmap> {
        let f = self.kv_u8("bitmap.format")?;
        let format = BitmapFormat::from_u8(f)
            .ok_or_else(|| self.fault(RecordFault::UnknownType("bitmap format")))?;
        let flags = self.kv_u8("bitmap.flags")?;
        let width = self.kv_u32("bitmap.x")?;
        let height = self.kv_u32("bitmap.y")?;
        let stride = self.kv_u32("bitmap.stride")?;
        let palette = if self.flag("has_palette")? {
            let n = self.kv_u16("qp.num_ents")?;
            if u32::from(n) > self.limits.max_palette_entries {
                return Err(self.fault(RecordFault::OutOfRange("qp.num_ents")));
            }
            let unique = self.kv_u64("unique")?;
            let mut entries = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                entries.push(self.kv_u32("ents")?);
            }
            Some(Palette { unique, entries })
        } else {
            None
        };
        let size = u64::from(height).saturating_mul(u64::from(stride));
        if size > self.limits.max_blob {
            return Err(self.fault(RecordFault::BlobTooLarge));
        }
        let data = if flags & BITMAP_DIRECT != 0 {
            self.blob("image_data_flat")?
        } else {
            self.chunks("bitmap.data")?
        };
        if u64::try_from(data.len()).ok() != Some(size) {
            return Err(self.fault(RecordFault::SizeMismatch("bitmap data")));
        }
        Ok(Bitmap {
            format,
            flags,
            width,
            height,
            stride,
            palette,
            data,
        })
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<RecordEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(u32_at(b, off).to_le_bytes())
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// A packed `QXLRect` (top, left, bottom, right).
fn rect_at(b: &[u8]) -> Rect {
    Rect {
        top: i32_at(b, 0),
        left: i32_at(b, 4),
        bottom: i32_at(b, 8),
        right: i32_at(b, 12),
    }
}

/// The segments of a `QXLPath`'s data: `{flags u32, count u32, count × QXLPointFix}`.
fn parse_path(mut data: &[u8]) -> Option<Path> {
    let mut segments = Vec::new();
    while !data.is_empty() {
        let flags = u32_at(data.get(..8)?, 0);
        let count = usize::try_from(u32_at(data, 4)).ok()?;
        let len = count.checked_mul(8)?.checked_add(8)?;
        let seg = data.get(8..len)?;
        let points = seg
            .chunks_exact(8)
            .map(|p| PointFix {
                x: i32_at(p, 0),
                y: i32_at(p, 4),
            })
            .collect();
        segments.push(PathSeg { flags, points });
        data = data.get(len..)?;
    }
    Some(Path { segments })
}

/// `length` packed `QXLRasterGlyph`s: render_pos, glyph_origin, width u16,
/// height u16, then `height * ceil(width * bpp / 8)` bytes.
fn parse_glyphs(mut data: &[u8], length: u16, flags: u16) -> Option<GlyphString> {
    let bpp: usize = match flags & (STRING_RASTER_A1 | STRING_RASTER_A4 | STRING_RASTER_A8) {
        STRING_RASTER_A1 => 1,
        STRING_RASTER_A4 => 4,
        STRING_RASTER_A8 => 8,
        _ => return None,
    };
    let mut glyphs = Vec::new();
    for _ in 0..length {
        let h = data.get(..20)?;
        let width = u16_at(h, 16);
        let height = u16_at(h, 18);
        let row = (usize::from(width) * bpp).div_ceil(8);
        let len = row * usize::from(height);
        let end = 20usize.checked_add(len)?;
        glyphs.push(RasterGlyph {
            render_pos: Point {
                x: i32_at(h, 0),
                y: i32_at(h, 4),
            },
            glyph_origin: Point {
                x: i32_at(h, 8),
                y: i32_at(h, 12),
            },
            width,
            height,
            data: data.get(20..end)?.to_vec(),
        });
        data = data.get(end..)?;
    }
    Some(GlyphString { flags, glyphs })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn blob(prefix: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!("binary 0 {prefix} {}:", data.len()).into_bytes();
        v.extend_from_slice(data);
        v.push(b'\n');
        v
    }

    fn copy_draw(counter: u32, stride: u32, w: u32, h: u32) -> Vec<u8> {
        let mut v = format!(
            "event {counter} 0 1 100\ndrawable\nrect bbox 0 0 {h} {w}\ntype 1\nnum_rects 1\ndata_chunks 0 16\n"
        )
        .into_bytes();
        let mut r = Vec::new();
        for x in [
            0i32,
            0,
            i32::try_from(h).unwrap(),
            i32::try_from(w).unwrap(),
        ] {
            r.extend_from_slice(&x.to_le_bytes());
        }
        v.extend(blob("clip_rects", &r));
        v.extend_from_slice(
            format!(
                "effect 1\nmm_time -5\nself_bitmap 0\nrect self_bitmap_area 0 0 0 0\nsurface_id 0\n\
surfaces_dest -1\nrect surfaces_rects 0 0 0 0\nsurfaces_dest -1\nrect surfaces_rects 0 0 0 0\n\
surfaces_dest -1\nrect surfaces_rects 0 0 0 0\ntype 3\nimage 1\ndescriptor.id 7\ndescriptor.type 0\n\
descriptor.flags 0\ndescriptor.width {w}\ndescriptor.height {h}\nbitmap.format 8\nbitmap.flags 4\n\
bitmap.x {w}\nbitmap.y {h}\nbitmap.stride {stride}\nhas_palette 0\ndata_chunks 1 {}\n",
                stride * h
            )
            .as_bytes(),
        );
        let px: Vec<u8> = (0..stride * h).map(|i| (i % 251) as u8).collect();
        let (a, b) = px.split_at(px.len() / 2);
        v.extend(blob("bitmap.data", a));
        v.extend(blob("bitmap.data", b));
        v.extend_from_slice(
            b"rect src_area 0 0 2 2\nrop_descriptor 8\nscale_mode 0\nflags 0\npoint 0 0\nimage 0\n",
        );
        v
    }

    fn sample() -> Vec<u8> {
        let mut v = b"SPICE_REPLAY 1\n".to_vec();
        v.extend_from_slice(b"event 0 1 22 5\n");
        v.extend_from_slice(b"event 1 1 29 6\n4 2 -16 32\n0 1 1 0\n");
        v.extend(blob("data", &[9u8; 32]));
        v.extend(copy_draw(2, 16, 2, 2));
        v.extend_from_slice(b"event 3 0 3 7\ncursor_cmd\ntype 1\npoint16 -3 40\n");
        v.extend_from_slice(
            b"event 4 0 3 8\ncursor_cmd\ntype 0\npoint16 1 2\nu.set.visible 1\n\
header.unique 18446744073709551615\nheader.type 0\nheader.width 1\nheader.height 1\n\
header.hot_spot_x 0\nheader.hot_spot_y 0\ndata_size 4\ndata_chunks 0 4\n",
        );
        v.extend(blob("cursor", &[1, 2, 3, 4]));
        v.extend_from_slice(b"event 5 0 4 9\n");
        v.extend(blob("message", b"hello"));
        v.extend_from_slice(b"event 6 0 5 10\nsurface_cmd\nsurface_id 3\ntype 0\nflags 1\n\
u.surface_create.format 32\nu.surface_create.width 1\nu.surface_create.height 2\nu.surface_create.stride -4\n");
        v.extend(blob("data", &[1, 1, 1, 1, 2, 2, 2, 2]));
        v.extend_from_slice(
            b"event 7 0 2 11\nupdate\nrect area 1 2 3 4\nupdate_id 5\nsurface_id 0\n",
        );
        v
    }

    fn read_all(data: &[u8]) -> Result<Vec<RecordEvent>> {
        RecordReader::new(data)?.collect()
    }

    #[test]
    fn parses_every_kind_of_event() {
        let evs = read_all(&sample()).unwrap();
        assert_eq!(evs.len(), 8);
        assert_eq!(
            evs[0].body,
            RecordBody::Worker {
                message: WorkerMessage::ResetCursor,
                primary: None
            }
        );
        let RecordBody::Worker {
            message: WorkerMessage::CreatePrimarySurfaceAsync,
            primary: Some(p),
        } = &evs[1].body
        else {
            panic!("{:?}", evs[1].body)
        };
        assert_eq!(
            (p.width, p.height, p.stride, p.format, p.flags),
            (4, 2, -16, 32, 1)
        );
        assert_eq!(p.data.len(), 32);
        let RecordBody::Command {
            command: Command::Draw(d),
            compat: false,
        } = &evs[2].body
        else {
            panic!()
        };
        assert_eq!(d.bbox, Rect::new(0, 0, 2, 2));
        assert_eq!(d.mm_time, u32::MAX - 4);
        assert_eq!(d.clip, Clip::Rects(vec![Rect::new(0, 0, 2, 2)]));
        let DrawOp::Copy(c) = &d.op else { panic!() };
        let ImageData::Bitmap(b) = &c.src.data else {
            panic!()
        };
        assert_eq!((b.width, b.height, b.stride, b.data.len()), (2, 2, 16, 32));
        assert_eq!(b.data[17], 17);
        assert!(c.mask.is_none());
        assert_eq!(
            evs[3].body,
            RecordBody::Command {
                command: Command::Cursor(CursorCmd::Move {
                    position: Point16 { x: -3, y: 40 }
                }),
                compat: false
            }
        );
        let RecordBody::Command {
            command: Command::Cursor(CursorCmd::Set { shape, .. }),
            ..
        } = &evs[4].body
        else {
            panic!()
        };
        assert_eq!(shape.unique, u64::MAX);
        assert_eq!(shape.data, [1, 2, 3, 4]);
        assert_eq!(
            evs[5].body,
            RecordBody::Command {
                command: Command::Message(b"hello".to_vec()),
                compat: false
            }
        );
        let RecordBody::Command {
            command: Command::Surface(SurfaceCmd::Create(s)),
            ..
        } = &evs[6].body
        else {
            panic!()
        };
        // Bottom-up in memory, top row first in the model.
        assert_eq!(s.initial.as_deref(), Some(&[2, 2, 2, 2, 1, 1, 1, 1][..]));
        assert_eq!(evs[7].counter, 7);
        assert_eq!(evs[7].timestamp_ns, 11);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_clean_prefix() {
        let data = sample();
        let full = read_all(&data).unwrap();
        for cut in 0..data.len() {
            match read_all(&data[..cut]) {
                Ok(evs) => {
                    // Only a cut exactly between events parses cleanly.
                    assert!(evs.len() < full.len(), "cut {cut}");
                    assert_eq!(evs[..], full[..evs.len()], "cut {cut}");
                    let next = full[evs.len()].offset;
                    assert_eq!(u64::try_from(cut).unwrap(), next, "cut {cut}");
                }
                Err(Error::Record { .. }) => {}
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
    }

    #[test]
    fn every_byte_flip_is_handled() {
        let data = sample();
        for i in 0..data.len() {
            for v in [0u8, b'9', b'-', b' ', b'\n', 0xff] {
                let mut d = data.clone();
                d[i] = v;
                // Whatever happens, no panic; errors are typed.
                for ev in RecordReader::new(&d[..]).into_iter().flatten() {
                    if let Err(e) = ev {
                        assert!(matches!(e, Error::Record { .. }), "{e}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Random splices of a valid recording: typed errors or events, never a
        /// panic, and nothing read past the input.
        #[test]
        fn random_mutations_never_panic(
            edits in proptest::collection::vec((0usize..4096, 0u8..=255, 0usize..3), 1..8)
        ) {
            let mut d = sample();
            for (at, byte, how) in edits {
                let at = at % (d.len() + 1);
                match how {
                    0 => d.insert(at, byte),
                    1 if at < d.len() => { d.remove(at); }
                    _ => if let Some(b) = d.get_mut(at) { *b = byte },
                }
            }
            if let Ok(mut r) = RecordReader::new(&d[..]) {
                loop {
                    match r.next_event() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            proptest::prop_assert!(matches!(e, Error::Record { .. }), "untyped error {}", e);
                            proptest::prop_assert!(matches!(r.next_event(), Ok(None)), "events after an error");
                            break;
                        }
                    }
                }
                proptest::prop_assert!(r.offset() <= u64::try_from(d.len()).unwrap());
            }
        }
    }

    #[test]
    fn rejects_bad_magic_and_huge_sizes() {
        assert!(matches!(
            RecordReader::new(&b"SPICE_REPLAY 2\n"[..]),
            Err(Error::Record {
                fault: RecordFault::BadMagic,
                ..
            })
        ));
        assert!(matches!(
            RecordReader::new(&b""[..]),
            Err(Error::Record {
                fault: RecordFault::BadMagic,
                ..
            })
        ));
        let huge = b"SPICE_REPLAY 1\nevent 0 1 20 1\n1 1 4 32\n0 0 0 0\nbinary 0 data 99999999999:";
        let err = read_all(huge).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Record {
                    fault: RecordFault::BlobTooLarge,
                    ..
                }
            ),
            "{err}"
        );
        let chunks = b"SPICE_REPLAY 1\nevent 0 0 4 1\nbinary 1 message 5:3:abc\n";
        assert!(matches!(
            read_all(chunks).unwrap_err(),
            Error::Record {
                fault: RecordFault::CompressedBlob,
                ..
            }
        ));
        let long = [b"SPICE_REPLAY 1\nevent ".to_vec(), vec![b'1'; 10_000]].concat();
        assert!(matches!(
            read_all(&long).unwrap_err(),
            Error::Record {
                fault: RecordFault::LineTooLong,
                ..
            }
        ));
        let many =
            b"SPICE_REPLAY 1\nevent 0 0 3 1\ncursor_cmd\ntype 0\npoint16 0 0\nu.set.visible 1\n\
header.unique 0\nheader.type 0\nheader.width 1\nheader.height 1\nheader.hot_spot_x 0\n\
header.hot_spot_y 0\ndata_size 4\ndata_chunks 4000000000 4\n";
        assert!(matches!(
            read_all(many).unwrap_err(),
            Error::Record {
                fault: RecordFault::TooManyChunks,
                ..
            }
        ));
        let unknown = b"SPICE_REPLAY 1\nevent 0 1 41 1\n";
        assert!(matches!(
            read_all(unknown).unwrap_err(),
            Error::Record {
                fault: RecordFault::UnknownType("worker message"),
                ..
            }
        ));
    }

    #[test]
    fn mismatched_sizes_are_rejected() {
        // Bitmap stride 16 × 2 rows needs 32 bytes; declare 3 rows.
        let d = String::from_utf8_lossy(&copy_draw(0, 16, 2, 2))
            .replace("bitmap.y 2", "bitmap.y 3")
            .into_bytes();
        let data = [b"SPICE_REPLAY 1\n".to_vec(), d].concat();
        assert!(matches!(
            read_all(&data).unwrap_err(),
            Error::Record {
                fault: RecordFault::SizeMismatch("bitmap data"),
                ..
            }
        ));
    }

    #[test]
    fn compat_drawables_are_recognised() {
        let mut v = b"SPICE_REPLAY 1\nevent 0 0 1 1\ndrawable\nrect bbox 0 0 1 1\ntype 0\neffect 0\n\
mm_time 0\nbitmap_offset 0\nrect bitmap_area 0 0 0 0\ntype 13\nalpha 128\nimage 1\ndescriptor.id 1\n\
descriptor.type 104\ndescriptor.flags 0\ndescriptor.width 1\ndescriptor.height 1\n\
surface_image.surface_id 2\nrect src_area 0 0 1 1\n"
            .to_vec();
        v.extend_from_slice(b"event 1 0 1 2\ndrawable\nrect bbox 0 0 1 1\ntype 0\neffect 0\n");
        let evs = RecordReader::new(&v[..]).unwrap();
        let all: Vec<_> = evs.collect();
        let RecordBody::Command {
            command: Command::Draw(d),
            compat: true,
        } = &all[0].as_ref().unwrap().body
        else {
            panic!("{all:?}")
        };
        assert_eq!(d.surfaces_dest, [-1; 3]);
        assert!(matches!(d.op, DrawOp::AlphaBlend { alpha: 128, .. }));
        assert!(matches!(
            all[1],
            Err(Error::Record {
                fault: RecordFault::Truncated,
                ..
            })
        ));
        assert_eq!(all.len(), 2);
    }
}
