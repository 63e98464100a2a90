//! The display worker: owns every surface, renders guest commands into the
//! software canvas, and feeds display and cursor clients.
//!
//! # Primer
//!
//! The QXL device calls [`DisplaySink`] methods on a [`DisplayHandle`]; each
//! call becomes a message on a bounded `crossbeam-channel` to the worker
//! thread (`update_area` and [`DisplayHandle::screenshot`] are request/reply).
//! The worker renders every drawable at once, so the canvas is always up to
//! date, and hands each display client's [`Outbox`] either the drawable
//! itself (sent as its native SPICE draw message, see
//! [`crate::channel::display::draw_marshal`]) or, when that is not possible,
//! the *damage* it caused (sent as images read from the canvas). The worker
//! never touches a socket.
//!
//! # Collapse rule (per client)
//!
//! A draw goes out natively only when the client can render it (its caps, its
//! surfaces), its queue holds fewer than [`DISPLAY_OUTBOX_CAP`] items and
//! [`MAX_QUEUED_DRAW_BYTES`] bytes of drawables, **and no pixel item (damage,
//! a surface's full content, a resync) is pending for it**. Otherwise the draw
//! becomes damage: its rectangles are merged into the pending damage of its
//! target surface. So while a client has pending damage, every later draw for
//! it becomes damage too, and a native draw can never overtake (or be applied
//! on top of) pixels it depends on. A queue that would still grow past
//! [`DISPLAY_OUTBOX_HARD_CAP`] (surface churn) is replaced by one `Resync`:
//! the client's surfaces are recreated from the canvas.
//!
//! Pixel items are read by the client's writer thread when it gets to send
//! them, while it holds the read locks of the surfaces involved *and* the
//! outbox lock; the worker renders a draw and queues it under the target's
//! write lock. Hence every draw is either already in the pixels read, or
//! queued natively after them — never both.
//!
//! Late joiners get a `Resync`: every surface they can have, whole, as images.
//! Off-screen surfaces are created on clients (SURFACE_CREATE) except A1, A8
//! unless the client has `SPICE_DISPLAY_CAP_A8_SURFACE`, and ARGB for clients
//! without spice-common's canvas (spice-html5); those stay server-side and
//! draws reading them reach the client as damage.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::Error;
use crate::canvas::{self, DrawOutcome, Pixels, Surface, SurfaceSource};
use crate::channel::display::draw_marshal::{self, NativeCaps};
use crate::channel::display::images::ImageCounters;
use crate::channel::outbox::{Outbox, OutboxState};
use crate::command::{
    AreaPixels, Brush, Command, Cursor, CursorCmd, DisplaySink, DrawOp, Drawable, ImageData,
    MonitorsConfig, Point16, Rect, SurfaceCmd, SurfaceCreate, SurfaceFormat,
};

/// A surface shared between the worker (writer) and client connections (readers).
pub type SurfaceCell = Arc<RwLock<Surface>>;

/// Most surfaces a guest may have at once (QXL's usual `n_surfaces`).
pub const MAX_SURFACES: u32 = 1024;
/// Most bytes all surfaces together may occupy (each is 4 bytes per pixel).
pub const MAX_TOTAL_SURFACE_BYTES: usize = 1 << 30;
/// Capacity of the worker's inbox.
const INBOX: usize = 1024;
/// Most rectangles one pending damage item keeps before collapsing to its bounding box.
pub const MAX_DAMAGE_RECTS: usize = 32;
/// Items a display client's outbox holds before draws for it become damage.
pub const DISPLAY_OUTBOX_CAP: usize = 64;
/// Items a display client's outbox holds before it is replaced by a resync.
pub const DISPLAY_OUTBOX_HARD_CAP: usize = 2 * DISPLAY_OUTBOX_CAP;
/// Bytes of drawables a display client's outbox holds before draws become damage.
pub const MAX_QUEUED_DRAW_BYTES: usize = 64 << 20;
/// Items a cursor client's outbox holds before it is collapsed to the current state.
pub const CURSOR_OUTBOX_CAP: usize = 64;
/// Most heads forwarded in a monitors configuration (spice-server's
/// device-side `MAX_MONITORS_COUNT`).
pub const MAX_MONITORS: usize = 16;

/// What a display client's writer has to do next.
#[derive(Debug)]
pub enum DisplayItem {
    /// Create this surface on the client (`PRIMARY` when the id is 0); when the
    /// flag is set, also send its whole content (and MARK after a primary).
    Create(u32, SurfaceCell, bool),
    /// Destroy this surface on the client.
    Destroy(u32),
    /// Send this drawable as its native draw message (approximate size in bytes).
    Draw(Arc<Drawable>, usize),
    /// Send these areas of this surface as images read from the canvas.
    Damage(u32, SurfaceCell, Vec<Rect>),
    /// Make the client's surfaces exactly these (primary first), each sent whole.
    Resync(Vec<(u32, SurfaceCell)>),
    /// The device was reset: send DISPLAY_RESET.
    Reset,
    /// The guest's monitors configuration (only queued for clients with the
    /// MONITORS_CONFIG cap).
    MonitorsConfig(Arc<MonitorsConfig>),
}

impl DisplayItem {
    /// The surfaces whose pixels the writer reads to send this item (empty
    /// for items that need no pixels).
    pub fn pixel_sources(&self) -> Vec<(u32, SurfaceCell)> {
        match self {
            Self::Create(id, c, true) | Self::Damage(id, c, _) => vec![(*id, Arc::clone(c))],
            Self::Resync(list) => list.clone(),
            Self::Create(_, _, false)
            | Self::Destroy(_)
            | Self::Draw(..)
            | Self::Reset
            | Self::MonitorsConfig(_) => Vec::new(),
        }
    }

    fn needs_pixels(&self) -> bool {
        matches!(
            self,
            Self::Create(_, _, true) | Self::Damage(..) | Self::Resync(_)
        )
    }

    fn draw_bytes(&self) -> usize {
        match self {
            Self::Draw(_, n) => *n,
            _ => 0,
        }
    }
}

/// Whether a client gets surface `id` of format `f` (the others stay server-side).
///
/// Clients without spice-common's canvas (spice-html5) get no off-screen ARGB
/// surfaces: a browser canvas keeps 8-bit premultiplied alpha, so pixels read
/// back from a half-transparent surface come out off by one. Copies from such a
/// surface reach them as images of the result instead.
pub const fn client_has_format(caps: &NativeCaps, id: u32, f: SurfaceFormat) -> bool {
    match f {
        SurfaceFormat::A1 => false,
        SurfaceFormat::A8 => caps.a8_surface && caps.full_canvas,
        SurfaceFormat::Argb32 => caps.full_canvas || id == 0,
        SurfaceFormat::Rgb555 | SurfaceFormat::Rgb565 | SurfaceFormat::Xrgb32 => true,
    }
}

/// Counters of the display messages sent to clients, by message type.
#[derive(Debug)]
pub struct DisplayStats {
    counts: Vec<std::sync::atomic::AtomicU64>,
    bytes: Vec<std::sync::atomic::AtomicU64>,
    /// Images sent, by image type.
    pub images: ImageCounters,
}

impl Default for DisplayStats {
    fn default() -> Self {
        let v = || {
            (0..512)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect()
        };
        Self {
            counts: v(),
            bytes: v(),
            images: ImageCounters::default(),
        }
    }
}

impl DisplayStats {
    /// Counts one message of type `ty`.
    pub fn count(&self, ty: u16) {
        if let Some(c) = self.counts.get(usize::from(ty)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts `n` body bytes of a message of type `ty`.
    pub fn count_bytes(&self, ty: u16, n: usize) {
        if let Some(c) = self.bytes.get(usize::from(ty)) {
            c.fetch_add(
                u64::try_from(n).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Body bytes of messages of type `ty` sent so far.
    pub fn bytes_sent(&self, ty: u16) -> u64 {
        self.bytes
            .get(usize::from(ty))
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Messages of type `ty` sent so far (all display clients together).
    pub fn sent(&self, ty: u16) -> u64 {
        self.counts
            .get(usize::from(ty))
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The cursor as the guest last set it.
#[derive(Debug, Clone, Default)]
pub struct CursorState {
    /// Current shape, if any was set.
    pub shape: Option<Arc<Cursor>>,
    /// Hot-spot position on the primary.
    pub position: Point16,
    /// Shown or hidden.
    pub visible: bool,
    /// Trail length and frequency.
    pub trail: (u16, u16),
}

/// What a cursor client's writer has to do next.
#[derive(Debug, Clone)]
pub enum CursorItem {
    /// Send CURSOR_INIT with this state.
    Init(CursorState),
    /// Send CURSOR_SET.
    Set(CursorState),
    /// Send CURSOR_MOVE.
    Move(Point16),
    /// Send CURSOR_HIDE.
    Hide,
    /// Send CURSOR_TRAIL.
    Trail(u16, u16),
    /// Send CURSOR_RESET.
    Reset,
}

/// A screenshot: width, height and BGRX pixels, top-down, `width * 4` per row.
pub type Screenshot = (u32, u32, Vec<u8>);

enum WorkerMsg {
    Command(Command),
    CreatePrimary(SurfaceCreate),
    DestroyPrimary,
    DestroySurfaceWait(u32),
    DestroyAll,
    UpdateArea(u32, Rect, Sender<Option<AreaPixels>>),
    Flush,
    MonitorsConfig(MonitorsConfig),
    Reset,
    Screenshot(u32, Sender<Option<Screenshot>>),
    AddDisplayClient(Arc<Outbox<DisplayItem>>, NativeCaps),
    AddCursorClient(Arc<Outbox<CursorItem>>),
    Sync(Sender<()>),
}

/// The device's (and the server's) handle on the display worker.
///
/// Cloneable and `Send`; every clone talks to the same worker. Calls queue
/// work and return at once (unless the worker's bounded inbox is full, which
/// only happens while it renders — it never waits on the network).
#[derive(Clone, Debug)]
pub struct DisplayHandle {
    tx: Sender<WorkerMsg>,
    stats: Arc<DisplayStats>,
}

impl std::fmt::Debug for WorkerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerMsg")
    }
}

impl DisplayHandle {
    fn post(&self, m: WorkerMsg) {
        if self.tx.send(m).is_err() {
            log::warn!("display worker is gone; dropping a request");
        }
    }

    /// The current pixels of a surface (after every command sent before this
    /// call was rendered): `(width, height, BGRX top-down)`.
    pub fn screenshot(&self, surface_id: u32) -> Option<Screenshot> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send(WorkerMsg::Screenshot(surface_id, tx)).ok()?;
        rx.recv().ok().flatten()
    }

    /// Waits until every request sent before this call was handled.
    pub fn sync(&self) -> Result<(), Error> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(WorkerMsg::Sync(tx))
            .map_err(|_| Error::WorkerGone)?;
        rx.recv().map_err(|_| Error::WorkerGone)
    }

    /// Display messages of type `ty` sent to clients so far (all display
    /// connections together); e.g. `302` counts native DRAW_FILLs.
    pub fn messages_sent(&self, ty: u16) -> u64 {
        self.stats.sent(ty)
    }

    /// Body bytes (without headers) of display messages of type `ty` sent so far.
    pub fn bytes_sent(&self, ty: u16) -> u64 {
        self.stats.bytes_sent(ty)
    }

    /// Images of `SpiceImageType` `ty` sent so far (all display connections
    /// together) and the bytes they took, descriptor included; e.g. `103`
    /// counts pixmap cache hits (`FROM_CACHE`).
    pub fn images_sent(&self, ty: u8) -> (u64, u64) {
        self.stats.images.sent(ty)
    }

    /// The counters display connections update.
    pub(crate) fn stats(&self) -> &Arc<DisplayStats> {
        &self.stats
    }

    pub(crate) fn add_display_client(&self, o: Arc<Outbox<DisplayItem>>, caps: NativeCaps) {
        self.post(WorkerMsg::AddDisplayClient(o, caps));
    }

    pub(crate) fn add_cursor_client(&self, o: Arc<Outbox<CursorItem>>) {
        self.post(WorkerMsg::AddCursorClient(o));
    }
}

impl DisplaySink for DisplayHandle {
    fn command(&mut self, cmd: Command) {
        self.post(WorkerMsg::Command(cmd));
    }
    fn create_primary(&mut self, surface: SurfaceCreate) {
        self.post(WorkerMsg::CreatePrimary(surface));
    }
    fn destroy_primary(&mut self) {
        self.post(WorkerMsg::DestroyPrimary);
    }
    fn destroy_surface_wait(&mut self, surface_id: u32) {
        self.post(WorkerMsg::DestroySurfaceWait(surface_id));
    }
    fn destroy_all_surfaces(&mut self) {
        self.post(WorkerMsg::DestroyAll);
    }
    fn update_area(&mut self, surface_id: u32, area: Rect) -> Option<AreaPixels> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(WorkerMsg::UpdateArea(surface_id, area, tx))
            .ok()?;
        rx.recv().ok().flatten()
    }
    fn flush_surfaces(&mut self) {
        self.post(WorkerMsg::Flush);
    }
    fn monitors_config(&mut self, config: MonitorsConfig) {
        self.post(WorkerMsg::MonitorsConfig(config));
    }
    fn reset(&mut self) {
        self.post(WorkerMsg::Reset);
    }
}

/// Starts the worker thread.
pub fn spawn() -> Result<(DisplayHandle, JoinHandle<()>), Error> {
    let (tx, rx) = crossbeam_channel::bounded(INBOX);
    let join = std::thread::Builder::new()
        .name("spice-display-worker".into())
        .spawn(move || Worker::default().run(&rx))?;
    Ok((
        DisplayHandle {
            tx,
            stats: Arc::new(DisplayStats::default()),
        },
        join,
    ))
}

fn read_lock(c: &SurfaceCell) -> std::sync::RwLockReadGuard<'_, Surface> {
    c.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock(c: &SurfaceCell) -> std::sync::RwLockWriteGuard<'_, Surface> {
    c.write().unwrap_or_else(PoisonError::into_inner)
}

/// Pixels of other surfaces a drawable reads, fetched before the target is locked.
struct Prefetched(Vec<(u32, Rect, Pixels)>);

impl SurfaceSource for Prefetched {
    fn read(&self, id: u32, area: &Rect) -> Option<Pixels> {
        self.0
            .iter()
            .find(|(i, a, _)| *i == id && a == area)
            .map(|(_, _, p)| p.clone())
    }
}

fn surface_reads(op: &DrawOp) -> Vec<(u32, Rect)> {
    let mut v = Vec::new();
    let mut image = |img: &crate::command::Image, area: Rect| {
        if let ImageData::Surface(id) = img.data {
            v.push((id, area));
        }
    };
    let full = |img: &crate::command::Image| {
        Rect::new(
            0,
            0,
            i32::try_from(img.width).unwrap_or(0),
            i32::try_from(img.height).unwrap_or(0),
        )
    };
    match op {
        DrawOp::Copy(c) | DrawOp::Blend(c) => image(&c.src, c.src_area),
        DrawOp::Opaque { src, src_area, .. }
        | DrawOp::Rop3 { src, src_area, .. }
        | DrawOp::Transparent { src, src_area, .. }
        | DrawOp::AlphaBlend { src, src_area, .. } => image(src, *src_area),
        _ => {}
    }
    if let DrawOp::Fill {
        brush: Brush::Pattern { image: img, .. },
        ..
    } = op
    {
        image(img, full(img));
    }
    v
}

/// A display client as the worker sees it.
struct DisplayClient {
    outbox: Arc<Outbox<DisplayItem>>,
    caps: NativeCaps,
}

#[derive(Default)]
struct Worker {
    surfaces: HashMap<u32, SurfaceCell>,
    formats: HashMap<u32, SurfaceFormat>,
    display_clients: Vec<DisplayClient>,
    cursor_clients: Vec<Arc<Outbox<CursorItem>>>,
    cursor: CursorState,
    unsupported_logged: u32,
    /// The guest's last monitors configuration.
    monitors: Option<Arc<MonitorsConfig>>,
}

/// The surfaces a client with `caps` has, primary first.
fn client_surfaces(
    surfaces: &HashMap<u32, SurfaceCell>,
    formats: &HashMap<u32, SurfaceFormat>,
    caps: &NativeCaps,
) -> Vec<(u32, SurfaceCell)> {
    let mut v: Vec<(u32, SurfaceCell)> = surfaces
        .iter()
        .filter(|(id, _)| {
            formats
                .get(id)
                .is_some_and(|f| client_has_format(caps, **id, *f))
        })
        .map(|(id, c)| (*id, Arc::clone(c)))
        .collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

/// Replaces a client's whole backlog by one resync of its surfaces.
fn collapse_to_resync(s: &mut OutboxState<DisplayItem>, all: Vec<(u32, SurfaceCell)>) {
    s.items.clear();
    s.items.push_back(DisplayItem::Resync(all));
}

/// Queues a non-draw item, collapsing a backlog that grew past the hard cap.
fn push_item(
    s: &mut OutboxState<DisplayItem>,
    item: DisplayItem,
    all: impl FnOnce() -> Vec<(u32, SurfaceCell)>,
) {
    if s.closed {
        return;
    }
    if s.items.len() >= DISPLAY_OUTBOX_HARD_CAP {
        collapse_to_resync(s, all());
    } else {
        s.items.push_back(item);
    }
}

/// Adds damage of surface `id` to a client's queue: merged into the pending
/// damage of that surface, or nothing when a full refresh of it is pending.
fn add_damage(
    s: &mut OutboxState<DisplayItem>,
    id: u32,
    cell: &SurfaceCell,
    rects: &[Rect],
    all: impl FnOnce() -> Vec<(u32, SurfaceCell)>,
) {
    if s.closed || rects.iter().all(Rect::is_empty) {
        return;
    }
    for item in &mut s.items {
        match item {
            DisplayItem::Damage(_, c, pending) if Arc::ptr_eq(c, cell) => {
                merge_rects(pending, rects);
                return;
            }
            DisplayItem::Create(_, c, true) if Arc::ptr_eq(c, cell) => return,
            DisplayItem::Resync(list) if list.iter().any(|(_, c)| Arc::ptr_eq(c, cell)) => {
                return;
            }
            _ => {}
        }
    }
    let mut v = Vec::new();
    merge_rects(&mut v, rects);
    push_item(s, DisplayItem::Damage(id, Arc::clone(cell), v), all);
}

impl Worker {
    fn run(mut self, rx: &Receiver<WorkerMsg>) {
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            self.handle(msg);
        }
        for c in &self.display_clients {
            c.outbox.close();
        }
        for c in &self.cursor_clients {
            c.close();
        }
        log::debug!("display worker exits");
    }

    fn handle(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Command(c) => self.command(c),
            WorkerMsg::CreatePrimary(s) => {
                if s.surface_id != 0 {
                    log::warn!("create_primary with surface id {}: using 0", s.surface_id);
                }
                self.create_surface(&SurfaceCreate { surface_id: 0, ..s });
            }
            WorkerMsg::DestroyPrimary => self.destroy_surface(0),
            WorkerMsg::DestroySurfaceWait(id) => {
                log::trace!("destroy_surface_wait({id}): nothing pending");
            }
            WorkerMsg::Flush => {
                // Commands are rendered as they arrive: nothing is pending.
            }
            WorkerMsg::DestroyAll => self.destroy_all(),
            WorkerMsg::UpdateArea(id, area, reply) => {
                let px = self.surfaces.get(&id).and_then(|c| {
                    read_lock(c)
                        .read_rect_native(&area)
                        .map(|(area, stride, data)| AreaPixels { area, stride, data })
                });
                let _ = reply.send(px);
            }
            WorkerMsg::MonitorsConfig(m) => self.monitors_config(m),
            WorkerMsg::Reset => {
                self.monitors = None;
                self.destroy_all();
                self.display_clients.retain(|c| !c.outbox.is_closed());
                for c in &self.display_clients {
                    c.outbox.with(|s| {
                        push_item(s, DisplayItem::Reset, Vec::new);
                    });
                }
                self.cursor = CursorState::default();
                // spice-gtk accepts SET only between INIT and RESET: re-init at once.
                self.cursor_push(|| CursorItem::Reset);
                self.cursor_push(|| CursorItem::Init(CursorState::default()));
            }
            WorkerMsg::Screenshot(id, reply) => {
                let shot = self.surfaces.get(&id).map(|c| {
                    let s = read_lock(c);
                    (s.width(), s.height(), s.bytes().to_vec())
                });
                let _ = reply.send(shot);
            }
            WorkerMsg::AddDisplayClient(o, caps) => {
                let all = client_surfaces(&self.surfaces, &self.formats, &caps);
                let monitors = self.monitors.clone().filter(|_| caps.monitors_config);
                o.with(|s| {
                    s.items.push_back(DisplayItem::Resync(all));
                    if let Some(m) = monitors {
                        s.items.push_back(DisplayItem::MonitorsConfig(m));
                    }
                });
                self.display_clients.retain(|c| !c.outbox.is_closed());
                self.display_clients.push(DisplayClient { outbox: o, caps });
            }
            WorkerMsg::AddCursorClient(o) => {
                let st = self.cursor.clone();
                o.with(|s| s.items.push_back(CursorItem::Init(st)));
                self.cursor_clients.retain(|c| !c.is_closed());
                self.cursor_clients.push(o);
            }
            WorkerMsg::Sync(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Keep the guest's monitors configuration (for late joiners) and forward
    /// it to the clients that understand it. Like spice-server, a config with
    /// no heads or more heads than the guest allows is ignored, and at most
    /// [`MAX_MONITORS`] heads are kept.
    fn monitors_config(&mut self, mut m: MonitorsConfig) {
        if m.heads.is_empty() || (m.max_allowed != 0 && m.heads.len() > usize::from(m.max_allowed))
        {
            log::warn!(
                "ignoring a monitors config with {} heads (max_allowed {})",
                m.heads.len(),
                m.max_allowed
            );
            return;
        }
        m.heads.truncate(MAX_MONITORS);
        let m = Arc::new(m);
        self.monitors = Some(Arc::clone(&m));
        self.display_clients.retain(|c| !c.outbox.is_closed());
        for c in self
            .display_clients
            .iter()
            .filter(|c| c.caps.monitors_config)
        {
            // At most one queued config per client: a newer one replaces it,
            // so a guest repeating MONITORS_CONFIG_ASYNC cannot grow a queue.
            c.outbox.with(|s| {
                if !s.closed {
                    s.items
                        .retain(|i| !matches!(i, DisplayItem::MonitorsConfig(_)));
                    s.items
                        .push_back(DisplayItem::MonitorsConfig(Arc::clone(&m)));
                }
            });
        }
    }

    fn destroy_all(&mut self) {
        let mut ids: Vec<u32> = self.surfaces.keys().copied().collect();
        // Off-screen surfaces first, the primary last.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for id in ids {
            self.destroy_surface(id);
        }
    }

    fn create_surface(&mut self, s: &SurfaceCreate) {
        if s.surface_id >= MAX_SURFACES {
            log::warn!("surface id {} out of range", s.surface_id);
            return;
        }
        let need =
            usize::try_from(u64::from(s.width) * u64::from(s.height) * 4).unwrap_or(usize::MAX);
        let used: usize = self
            .surfaces
            .iter()
            .filter(|(id, _)| **id != s.surface_id)
            .map(|(_, c)| read_lock(c).bytes().len())
            .sum();
        if used.saturating_add(need) > MAX_TOTAL_SURFACE_BYTES {
            log::warn!(
                "surface {} ({}x{}) refused: surfaces would use more than {MAX_TOTAL_SURFACE_BYTES} bytes",
                s.surface_id,
                s.width,
                s.height
            );
            return;
        }
        let made = match &s.initial {
            Some(init) => Surface::with_initial(
                s.width,
                s.height,
                s.format,
                usize::try_from(s.stride.unsigned_abs()).unwrap_or(0),
                init,
            ),
            None => Surface::new(s.width, s.height, s.format),
        };
        let surf = match made {
            Ok(x) => x,
            Err(e) => {
                log::warn!("surface {} not created: {e}", s.surface_id);
                return;
            }
        };
        if self.surfaces.contains_key(&s.surface_id) {
            self.destroy_surface(s.surface_id);
        }
        let cell = Arc::new(RwLock::new(surf));
        self.surfaces.insert(s.surface_id, Arc::clone(&cell));
        self.formats.insert(s.surface_id, s.format);
        // Clients always get the primary whole (spicy-screenshot shoots at the
        // first invalidate); an off-screen surface only when it has content.
        let content = s.surface_id == 0 || s.initial.is_some();
        self.display_clients.retain(|c| !c.outbox.is_closed());
        for c in &self.display_clients {
            if !client_has_format(&c.caps, s.surface_id, s.format) {
                continue;
            }
            let all = || client_surfaces(&self.surfaces, &self.formats, &c.caps);
            c.outbox.with(|st| {
                push_item(
                    st,
                    DisplayItem::Create(s.surface_id, Arc::clone(&cell), content),
                    all,
                );
            });
        }
    }

    fn destroy_surface(&mut self, id: u32) {
        if self.surfaces.remove(&id).is_none() {
            return;
        }
        let format = self.formats.remove(&id);
        self.display_clients.retain(|c| !c.outbox.is_closed());
        for c in &self.display_clients {
            if !format.is_some_and(|f| client_has_format(&c.caps, id, f)) {
                continue;
            }
            let all = || client_surfaces(&self.surfaces, &self.formats, &c.caps);
            c.outbox
                .with(|st| push_item(st, DisplayItem::Destroy(id), all));
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Draw(d) => self.draw(d),
            Command::Surface(SurfaceCmd::Create(s)) => {
                if s.surface_id == 0 {
                    log::warn!("QXL_CMD_SURFACE may not create surface 0");
                } else {
                    self.create_surface(&s);
                }
            }
            Command::Surface(SurfaceCmd::Destroy { surface_id }) => {
                if surface_id == 0 {
                    log::warn!("QXL_CMD_SURFACE may not destroy surface 0");
                } else {
                    self.destroy_surface(surface_id);
                }
            }
            Command::Cursor(cc) => self.cursor_cmd(cc),
            Command::Update(_) | Command::Message(_) => {}
        }
    }

    fn draw(&mut self, d: Drawable) {
        let Some(target) = self.surfaces.get(&d.surface_id).cloned() else {
            log::debug!("draw to unknown surface {}", d.surface_id);
            return;
        };
        let mut pre = Vec::new();
        for (id, area) in surface_reads(&d.op) {
            if let Some(px) = self.surfaces.get(&id).and_then(|c| {
                let s = read_lock(c);
                let (r, bytes) = s.read_rect(&area)?;
                (r == area).then(|| Pixels {
                    width: r.width(),
                    height: r.height(),
                    data: bytes
                        .chunks_exact(4)
                        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
                        .collect(),
                })
            }) {
                pre.push((id, area, px));
            }
        }
        let d = Arc::new(d);
        // The target stays write-locked until the draw is queued for every
        // client (see the module docs: pixel reads and native draws never overlap).
        let mut guard = write_lock(&target);
        let outcome = canvas::draw(&mut guard, &d, &Prefetched(pre));
        let rects = match outcome {
            DrawOutcome::Drawn(r) => r,
            DrawOutcome::Unsupported(what, r) => {
                if self.unsupported_logged < 16 {
                    self.unsupported_logged += 1;
                    log::info!("not rendered yet: {what} on surface {}", d.surface_id);
                }
                r
            }
        };
        self.display_clients.retain(|c| !c.outbox.is_closed());
        if !self.display_clients.is_empty() {
            let size = draw_marshal::approx_size(&d);
            for c in &self.display_clients {
                self.queue_draw(c, &d, size, &target, &rects);
            }
        }
        drop(guard);
    }

    /// Queues a rendered draw for one client: natively, or as damage.
    fn queue_draw(
        &self,
        c: &DisplayClient,
        d: &Arc<Drawable>,
        size: usize,
        target: &SurfaceCell,
        rects: &[Rect],
    ) {
        let has_surface = |id: u32| {
            self.formats
                .get(&id)
                .is_some_and(|f| client_has_format(&c.caps, id, *f))
        };
        if !has_surface(d.surface_id) {
            // The client does not have the target; draws reading it become damage.
            return;
        }
        let all = || client_surfaces(&self.surfaces, &self.formats, &c.caps);
        c.outbox.with(|s| {
            if s.closed {
                return;
            }
            let pending = s.items.iter().any(DisplayItem::needs_pixels);
            let bytes: usize = s.items.iter().map(DisplayItem::draw_bytes).sum();
            let native = !pending
                && s.items.len() < DISPLAY_OUTBOX_CAP
                && bytes.saturating_add(size) <= MAX_QUEUED_DRAW_BYTES
                && draw_marshal::draw_msg_type(&d.op).is_some()
                && draw_marshal::check_native(d, &c.caps, &has_surface).is_ok();
            if native {
                s.items.push_back(DisplayItem::Draw(Arc::clone(d), size));
            } else {
                add_damage(s, d.surface_id, target, rects, all);
            }
        });
    }

    fn cursor_push(&mut self, item: impl Fn() -> CursorItem) {
        self.cursor_clients.retain(|c| !c.is_closed());
        let state = self.cursor.clone();
        for c in &self.cursor_clients {
            c.with(|s| {
                if s.items.len() >= CURSOR_OUTBOX_CAP {
                    // Too far behind: replace the backlog by the current state.
                    s.items.clear();
                    s.items.push_back(CursorItem::Set(state.clone()));
                } else {
                    s.items.push_back(item());
                }
            });
        }
    }

    fn cursor_cmd(&mut self, c: CursorCmd) {
        match c {
            CursorCmd::Set {
                position,
                visible,
                shape,
            } => {
                self.cursor.shape = Some(Arc::new(shape));
                self.cursor.position = position;
                self.cursor.visible = visible;
                let st = self.cursor.clone();
                self.cursor_push(|| CursorItem::Set(st.clone()));
            }
            CursorCmd::Move { position } => {
                self.cursor.position = position;
                let was_hidden = !self.cursor.visible;
                self.cursor.visible = true;
                if was_hidden {
                    let st = self.cursor.clone();
                    self.cursor_push(|| CursorItem::Set(st.clone()));
                } else {
                    self.cursor_push(|| CursorItem::Move(position));
                }
            }
            CursorCmd::Hide => {
                self.cursor.visible = false;
                self.cursor_push(|| CursorItem::Hide);
            }
            CursorCmd::Trail { length, frequency } => {
                self.cursor.trail = (length, frequency);
                self.cursor_push(|| CursorItem::Trail(length, frequency));
            }
        }
    }
}

/// Adds `new` to `pending`, dropping contained rectangles and collapsing to
/// the bounding box past [`MAX_DAMAGE_RECTS`].
pub fn merge_rects(pending: &mut Vec<Rect>, new: &[Rect]) {
    for r in new {
        if r.is_empty() {
            continue;
        }
        if pending.iter().any(|p| p.intersect(r) == Some(*r)) {
            continue;
        }
        pending.retain(|p| r.intersect(p) != Some(*p));
        pending.push(*r);
    }
    if pending.len() > MAX_DAMAGE_RECTS
        && let Some(first) = pending.first().copied()
    {
        let bb = pending.iter().fold(first, |a, b| canvas::union_box(&a, b));
        pending.clear();
        pending.push(bb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Clip, Ropd, SurfaceFormat};

    fn primary(w: u32, h: u32) -> SurfaceCreate {
        SurfaceCreate {
            surface_id: 0,
            format: SurfaceFormat::Xrgb32,
            width: w,
            height: h,
            stride: -i32::try_from(w * 4).unwrap_or(0),
            flags: 0,
            position: 0,
            initial: None,
        }
    }

    fn fill(r: Rect, color: u32) -> Command {
        Command::Draw(Drawable {
            surface_id: 0,
            effect: 0,
            self_bitmap: None,
            bbox: r,
            clip: Clip::None,
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op: DrawOp::Fill {
                brush: Brush::Solid(color),
                rop: Ropd(Ropd::OP_PUT),
                mask: None,
            },
        })
    }

    #[test]
    fn renders_and_answers_update_area() -> Result<(), Error> {
        let (mut h, _j) = spawn()?;
        h.create_primary(primary(16, 8));
        h.command(fill(Rect::new(2, 2, 4, 4), 0x00ab_cdef));
        let px = h.update_area(0, Rect::new(2, 2, 3, 3));
        assert_eq!(px.map(|p| p.data), Some(vec![0xef, 0xcd, 0xab, 0]));
        let shot = h.screenshot(0).ok_or(Error::WorkerGone)?;
        assert_eq!((shot.0, shot.1, shot.2.len()), (16, 8, 16 * 8 * 4));
        assert!(h.screenshot(5).is_none());
        Ok(())
    }

    #[test]
    fn slow_client_queue_stays_bounded() -> Result<(), Error> {
        let (mut h, _j) = spawn()?;
        h.create_primary(primary(64, 64));
        let o = Arc::new(Outbox::new(DISPLAY_OUTBOX_CAP));
        let caps = NativeCaps {
            full_canvas: true,
            composite: true,
            ..NativeCaps::default()
        };
        h.add_display_client(Arc::clone(&o), caps);
        for i in 0..10_000 {
            let x = i % 60;
            h.command(fill(Rect::new(x, x, x + 2, x + 2), 0xff));
            if i % 7 == 0 {
                h.sync()?;
            }
        }
        h.sync()?;
        // At most the native cap, plus the one damage item every later draw merged into.
        let (n, last_is_pixels) = o.with(|s| {
            (
                s.items.len(),
                s.items.back().is_some_and(DisplayItem::needs_pixels),
            )
        });
        assert!(n <= DISPLAY_OUTBOX_CAP + 1, "{n}");
        assert!(last_is_pixels);
        Ok(())
    }

    #[test]
    fn surface_memory_is_bounded() -> Result<(), Error> {
        let (mut h, _j) = spawn()?;
        h.create_primary(primary(64, 64));
        for id in 1..40 {
            h.command(Command::Surface(SurfaceCmd::Create(SurfaceCreate {
                surface_id: id,
                ..primary(8192, 8192)
            })));
        }
        h.sync()?;
        let alive = (1..40).filter(|&id| h.screenshot(id).is_some()).count();
        assert_eq!(alive, 3, "1 GiB / 256 MiB surfaces, minus the primary");
        assert!(h.screenshot(0).is_some());
        Ok(())
    }

    #[test]
    fn merge_collapses() {
        let mut v = Vec::new();
        for i in 0..100 {
            merge_rects(&mut v, &[Rect::new(i * 3, 0, i * 3 + 1, 1)]);
        }
        assert!(v.len() <= MAX_DAMAGE_RECTS);
        merge_rects(&mut v, &[Rect::new(-10, -10, 1000, 1000)]);
        assert_eq!(v, vec![Rect::new(-10, -10, 1000, 1000)]);
    }
}
