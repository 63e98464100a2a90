//! The server: listener, sessions, and the public [`SpiceServer`] API.
//!
//! # Primer
//!
//! All channels of all clients arrive on one TCP port. Each accepted
//! connection runs the link handshake on its own thread (bounded in time and
//! in the number of connections that may be linking at once), then becomes a
//! channel of a session:
//!
//! * a main channel with connection id 0 starts a **new session**: it gets a
//!   fresh random session id, and every connection of the previous session is
//!   shut down (a new client replaces the old one);
//! * any other channel must name the current session id, or it is refused
//!   with `BAD_CONNECTION_ID`; a second connection for the same channel
//!   replaces the first.
//!
//! This server offers main, display:0, cursor:0 and inputs:0.
//!
//! ```no_run
//! use spice_server::command::{DisplaySink, SurfaceCreate, SurfaceFormat};
//! use spice_server::{NoInput, ServerConfig, SpiceServer};
//!
//! let config = ServerConfig {
//!     password: Some("secret".into()),
//!     ..ServerConfig::default()
//! };
//! let (server, mut display) = SpiceServer::start(config, Box::new(NoInput))?;
//! println!("connect with: spicy -h 127.0.0.1 -p {}", server.local_addr().port());
//! // The QXL device drives `display` (a DisplaySink); here we draw by hand.
//! display.create_primary(SurfaceCreate {
//!     surface_id: 0,
//!     format: SurfaceFormat::Xrgb32,
//!     width: 640,
//!     height: 480,
//!     stride: -2560,
//!     flags: 0,
//!     position: 0,
//!     initial: None,
//! });
//! let (_w, _h, _bgrx) = display.screenshot(0).expect("primary exists");
//! server.shutdown();
//! # Ok::<(), spice_server::Error>(())
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;
use crate::auth::{Ticketing, check_password};
use crate::channel::{self, Conn};
use crate::inputs::InputSink;
use crate::link::{self, Linked};
use crate::wire::{Caps, channel_type, display_cap, inputs_cap, link_err};
use crate::worker::{self, DisplayHandle};

/// Image compression, as libspice-server's `image-compression` setting
/// (`SpiceImageCompression`; QEMU's `image-compression=`).
///
/// Every choice is further restricted per client to what it decodes: no LZ4
/// without `SPICE_DISPLAY_CAP_LZ4_COMPRESSION`; no GLZ, ZLIB_GLZ, LZ_PLT or
/// LZ4 for clients without spice-common's canvas (spice-html5); no GLZ when
/// the client's GLZ window is 0, nor for images that are not part of a
/// drawable (surface contents and damage). See
/// [`crate::channel::display::images`] for the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageCompression {
    /// Uncompressed BITMAP images only.
    Off,
    /// Per image: photo-like images as QUIC, the others as GLZ (LZ where
    /// GLZ cannot be used).
    #[default]
    AutoGlz,
    /// Per image: photo-like images as QUIC, the others as LZ.
    AutoLz,
    /// QUIC where possible (not palette images, at least 3×3), else BITMAP.
    Quic,
    /// GLZ where possible, else LZ.
    Glz,
    /// LZ (LZ_RGB, LZ_PLT).
    Lz,
    /// LZ4 for RGB images of clients with the LZ4 cap, else LZ.
    Lz4,
}

impl ImageCompression {
    /// The mode a `SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION` value names
    /// (`SpiceImageCompression`: OFF 1, AUTO_GLZ 2, AUTO_LZ 3, QUIC 4, GLZ 5,
    /// LZ 6, LZ4 7); `None` for INVALID and unknown values.
    #[must_use]
    pub const fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Off,
            2 => Self::AutoGlz,
            3 => Self::AutoLz,
            4 => Self::Quic,
            5 => Self::Glz,
            6 => Self::Lz,
            7 => Self::Lz4,
            _ => return None,
        })
    }

    /// The QEMU / libspice-server name of this mode.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::AutoGlz => "auto_glz",
            Self::AutoLz => "auto_lz",
            Self::Quic => "quic",
            Self::Glz => "glz",
            Self::Lz => "lz",
            Self::Lz4 => "lz4",
        }
    }
}

/// `jpeg-wan-compression` / `zlib-glz-wan-compression` (`SpiceWanCompression`).
///
/// `Auto` enables the codec for low-bandwidth clients only. This server does
/// not measure client bandwidth (spice-server's network test), so every
/// client counts as LAN and `Auto` behaves like `Never`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WanCompression {
    /// Only for low-bandwidth clients (none, see above).
    #[default]
    Auto,
    /// Never.
    Never,
    /// For every client.
    Always,
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (loopback by default).
    pub addr: IpAddr,
    /// TCP port (0 = pick a free one; read it back with [`SpiceServer::local_addr`]).
    pub port: u16,
    /// The ticket clients must present (at most 60 bytes).
    pub password: Option<String>,
    /// How long after [`SpiceServer::start`] (or [`SpiceServer::set_password`])
    /// the password stays valid; `None` = forever.
    pub ticket_expiry: Option<Duration>,
    /// Accept every client without checking its ticket.
    pub disable_ticketing: bool,
    /// Image compression for display updates (a client may override it
    /// with `PREFERRED_COMPRESSION`).
    pub image_compression: ImageCompression,
    /// JPEG (lossy) instead of QUIC for photo-like images.
    pub jpeg_wan_compression: WanCompression,
    /// zlib-wrapped GLZ (`ZLIB_GLZ_RGB`) when it is smaller than the GLZ data.
    pub zlib_glz_wan_compression: WanCompression,
    /// The VMM has an absolute pointing device: offer (and start in) client mouse mode.
    pub absolute_pointer: bool,
    /// Time a new connection has to finish the link handshake.
    pub handshake_timeout: Duration,
    /// Most connections that may be in the link handshake at once.
    pub max_pending_links: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 5900,
            password: None,
            ticket_expiry: None,
            disable_ticketing: false,
            image_compression: ImageCompression::AutoGlz,
            jpeg_wan_compression: WanCompression::Auto,
            zlib_glz_wan_compression: WanCompression::Auto,
            absolute_pointer: false,
            handshake_timeout: Duration::from_secs(10),
            max_pending_links: 64,
        }
    }
}

/// Longest a single socket write may make no progress before the client is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `SPICE_MOUSE_MODE_SERVER`.
pub const MOUSE_MODE_SERVER: u16 = 1;
/// `SPICE_MOUSE_MODE_CLIENT`.
pub const MOUSE_MODE_CLIENT: u16 = 2;

#[derive(Debug, Default)]
struct Sessions {
    id: u32,
    next_key: u64,
    conns: HashMap<u64, (u8, u8, TcpStream)>,
}

/// State shared by the listener and every connection thread.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) ticketing: Ticketing,
    pub(crate) display: DisplayHandle,
    pub(crate) inputs: Mutex<Box<dyn InputSink>>,
    sessions: Mutex<Sessions>,
    pub(crate) mouse_mode: AtomicU16,
    /// The guest's lock-key LEDs (`inputs::modifiers`).
    pub(crate) keyboard_modifiers: AtomicU16,
    /// The current inputs connection's writer, to push KEY_MODIFIERS.
    pub(crate) inputs_writer: Mutex<Option<channel::inputs::SharedWriter>>,
    shutdown: AtomicBool,
    pending_links: AtomicUsize,
    start: Instant,
}

impl Shared {
    /// Multimedia time in ms (wraps).
    pub(crate) fn mm_time(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_millis() % (1u128 << 32)).unwrap_or(0)
    }

    /// Nanoseconds since the server started (saturating).
    pub(crate) fn uptime_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Supported mouse modes mask.
    pub(crate) const fn supported_mouse_modes(&self) -> u16 {
        if self.config.absolute_pointer {
            MOUSE_MODE_SERVER | MOUSE_MODE_CLIENT
        } else {
            MOUSE_MODE_SERVER
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a connection from its session when its thread ends.
struct ConnGuard {
    shared: Arc<Shared>,
    key: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.sessions().conns.remove(&self.key);
    }
}

fn new_session_id(old: u32) -> u32 {
    loop {
        let id = getrandom::u32().unwrap_or_else(|_| {
            // No OS randomness: fall back to the clock (ids are not secrets).
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos())
        });
        if id != 0 && id != old {
            return id;
        }
    }
}

fn channel_caps(t: u8) -> Caps {
    match t {
        channel_type::DISPLAY => Caps::from_caps(&[display_cap::PREF_COMPRESSION]),
        channel_type::INPUTS => Caps::from_caps(&[inputs_cap::KEY_SCANCODE]),
        _ => Caps::default(),
    }
}

/// Decides whether a linked connection joins a session; returns the session
/// id and the guard, or the link error to report.
fn admit(
    shared: &Arc<Shared>,
    linked: &Linked,
    stream: &TcpStream,
) -> Result<(u32, ConnGuard), u32> {
    let req = &linked.request;
    let available = matches!(
        (req.channel_type, req.channel_id),
        (
            channel_type::MAIN
                | channel_type::DISPLAY
                | channel_type::CURSOR
                | channel_type::INPUTS,
            0
        )
    );
    if !available {
        return Err(link_err::CHANNEL_NOT_AVAILABLE);
    }
    let clone = stream.try_clone().map_err(|_| link_err::ERROR)?;
    let mut s = shared.sessions();
    if req.channel_type == channel_type::MAIN {
        if req.connection_id != 0 {
            log::info!(
                "main channel with connection id {:#x} (migration is not supported): new session",
                req.connection_id
            );
        }
        for (_, (t, i, old)) in s.conns.drain() {
            log::info!(
                "closing {}:{i} of the previous session",
                channel::channel_name(t)
            );
            let _ = old.shutdown(Shutdown::Both);
        }
        s.id = new_session_id(s.id);
    } else {
        if s.id == 0 || req.connection_id != s.id {
            return Err(link_err::BAD_CONNECTION_ID);
        }
        let dup: Vec<u64> = s
            .conns
            .iter()
            .filter(|(_, (t, i, _))| *t == req.channel_type && *i == req.channel_id)
            .map(|(k, _)| *k)
            .collect();
        for k in dup {
            if let Some((_, _, old)) = s.conns.remove(&k) {
                let _ = old.shutdown(Shutdown::Both);
            }
        }
    }
    s.next_key = s.next_key.wrapping_add(1);
    let key = s.next_key;
    s.conns
        .insert(key, (req.channel_type, req.channel_id, clone));
    Ok((
        s.id,
        ConnGuard {
            shared: Arc::clone(shared),
            key,
        },
    ))
}

/// Decrements the pending-link counter when the handshake is over.
struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn handle_connection(shared: &Arc<Shared>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.config.handshake_timeout));
    let pending = PendingGuard(&shared.pending_links);
    let linked = match link::handshake(
        &mut stream,
        &shared.ticketing,
        shared.config.handshake_timeout,
        channel_caps,
    ) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("{peer}: link refused: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    drop(pending);
    let (session_id, guard) = match admit(shared, &linked, &stream) {
        Ok(x) => x,
        Err(code) => {
            log::warn!(
                "{peer}: {}:{} refused with link error {code}",
                channel::channel_name(linked.request.channel_type),
                linked.request.channel_id
            );
            let _ = std::io::Write::write_all(&mut stream, &code.to_le_bytes());
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    // A client that stops reading for this long is dropped rather than keeping
    // a writer thread blocked forever.
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Err(e) = std::io::Write::write_all(&mut stream, &link_err::OK.to_le_bytes()) {
        log::debug!("{peer}: {e}");
        return;
    }
    let conn = Conn {
        stream,
        header: linked.header,
        request: linked.request,
        session_id,
    };
    let name = conn.name();
    log::info!(
        "{name}: linked (session {session_id:#x}, {:?} header)",
        conn.header
    );
    let result = match conn.request.channel_type {
        channel_type::MAIN => channel::main::run(shared, &conn),
        channel_type::DISPLAY => channel::display::run(shared, &conn),
        channel_type::CURSOR => channel::cursor::run(shared, &conn),
        channel_type::INPUTS => channel::inputs::run(shared, &conn),
        _ => Err(Error::ChannelNotAvailable {
            channel_type: conn.request.channel_type,
            channel_id: conn.request.channel_id,
        }),
    };
    conn.shutdown();
    if let Err(e) = result {
        channel::log_end(&name, &e);
    }
    drop(guard);
}

/// Reports the guest's keyboard lock LEDs to the clients of one server (see
/// [`SpiceServer::keyboard_modifiers_handle`]).
#[derive(Clone)]
pub struct KeyboardModifiersHandle(Arc<Shared>);

impl std::fmt::Debug for KeyboardModifiersHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyboardModifiersHandle").finish()
    }
}

impl KeyboardModifiersHandle {
    /// As [`SpiceServer::set_keyboard_modifiers`].
    pub fn set(&self, modifiers: u16) {
        self.0
            .keyboard_modifiers
            .store(modifiers, Ordering::Release);
        channel::inputs::push_modifiers(&self.0, modifiers);
    }
}

/// A running SPICE server.
pub struct SpiceServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpiceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiceServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl SpiceServer {
    /// Generates the ticket key, starts the display worker and the listener.
    ///
    /// Returns the server and the [`DisplayHandle`] the QXL device drives.
    pub fn start(
        config: ServerConfig,
        input_sink: Box<dyn InputSink>,
    ) -> Result<(SpiceServer, DisplayHandle), Error> {
        if let Some(p) = &config.password {
            check_password(p)?;
        }
        let ticketing = Ticketing::new(config.disable_ticketing)?;
        ticketing.set_password(
            config.password.as_deref(),
            config.ticket_expiry.map(|d| Instant::now() + d),
        )?;
        let listener = TcpListener::bind((config.addr, config.port))?;
        let local_addr = listener.local_addr()?;
        let (display, _worker) = worker::spawn()?;
        let mouse = if config.absolute_pointer {
            MOUSE_MODE_CLIENT
        } else {
            MOUSE_MODE_SERVER
        };
        let shared = Arc::new(Shared {
            config,
            ticketing,
            display: display.clone(),
            inputs: Mutex::new(input_sink),
            sessions: Mutex::new(Sessions::default()),
            mouse_mode: AtomicU16::new(mouse),
            keyboard_modifiers: AtomicU16::new(0),
            inputs_writer: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            pending_links: AtomicUsize::new(0),
            start: Instant::now(),
        });
        let acc_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("spice-accept".into())
            .spawn(move || accept_loop(&acc_shared, &listener))?;
        log::info!("SPICE server listening on {local_addr}");
        Ok((
            SpiceServer {
                shared,
                local_addr,
                accept: Some(accept),
            },
            display,
        ))
    }

    /// The address the listener is bound to.
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the ticket (`None` = nobody may connect unless ticketing is
    /// disabled), valid for `expiry` from now.
    pub fn set_password(
        &self,
        password: Option<&str>,
        expiry: Option<Duration>,
    ) -> Result<(), Error> {
        self.shared
            .ticketing
            .set_password(password, expiry.map(|d| Instant::now() + d))
    }

    /// Reports the guest's keyboard lock LEDs (`inputs::modifiers` bits) to
    /// the client: sent at once as `KEY_MODIFIERS` if an inputs channel is
    /// open, and in `INPUTS_INIT` to later ones.
    pub fn set_keyboard_modifiers(&self, modifiers: u16) {
        self.keyboard_modifiers_handle().set(modifiers);
    }

    /// A cloneable handle doing [`Self::set_keyboard_modifiers`] from another
    /// thread (a keyboard device's LED callback), without owning the server.
    pub fn keyboard_modifiers_handle(&self) -> KeyboardModifiersHandle {
        KeyboardModifiersHandle(Arc::clone(&self.shared))
    }

    /// The current session id (0 = no client).
    pub fn session_id(&self) -> u32 {
        self.shared.sessions().id
    }

    /// Number of open channel connections of the current session.
    pub fn connection_count(&self) -> usize {
        self.shared.sessions().conns.len()
    }

    /// Closes every client connection and stops listening.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut s = self.shared.sessions();
            for (_, (_, _, c)) in s.conns.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
            s.id = 0;
        }
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(j) = self.accept.take() {
            let _ = j.join();
        }
        log::info!("SPICE server on {} stopped", self.local_addr);
    }
}

impl Drop for SpiceServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let n = shared.pending_links.fetch_add(1, Ordering::AcqRel);
        if n >= shared.config.max_pending_links {
            shared.pending_links.fetch_sub(1, Ordering::AcqRel);
            log::warn!("too many connections in the link handshake; dropping one");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let s = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("spice-conn".into())
            .spawn(move || handle_connection(&s, stream));
        if let Err(e) = spawned {
            shared.pending_links.fetch_sub(1, Ordering::AcqRel);
            log::warn!("cannot start a connection thread: {e}");
        }
    }
}
