//! The QXL device's event-loop glue: ioeventfd kicks and irqfd resamples.
//!
//! # Primer
//!
//! Following Firecracker's split, the device logic stays in
//! [`devices::qxl::QxlDevice`] and this file only owns file descriptors and
//! turns their events into calls:
//!
//! | token | fd | action |
//! |---|---|---|
//! | [`NOTIFY_CMD`] | ioeventfd on I/O BAR + 0 | [`QxlDevice::process_cmd_ring`](devices::qxl::QxlDevice::process_cmd_ring) until the ring is empty |
//! | [`NOTIFY_CURSOR`] | ioeventfd on I/O BAR + 1 | [`QxlDevice::process_cursor_ring`](devices::qxl::QxlDevice::process_cursor_ring) likewise |
//! | [`RESAMPLE`] | the irqfd's resample fd | the guest EOI'd INTx: re-assert if the device still drives it |
//!
//! The subscriber runs on its own thread ([`EventThread`]), so the guest's
//! `out` to a notify port returns at once and command processing overlaps
//! with the guest. Each ring is processed in bounded batches, taking the
//! device lock once per batch so the vCPU thread's synchronous ports are
//! served in between; if a ring still has work after [`MAX_BATCHES`] batches
//! the handler re-signals its own eventfd and yields to the other events.
//! If the device lock is poisoned, the handler unregisters its events rather
//! than panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::qxl::IrqLine;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use spice_server::command::DisplaySink;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::SharedQxl;

/// Event token: `NOTIFY_CMD` ioeventfd.
pub const NOTIFY_CMD: u32 = 0;
/// Event token: `NOTIFY_CURSOR` ioeventfd.
pub const NOTIFY_CURSOR: u32 = 1;
/// Event token: the irqfd resample fd.
pub const RESAMPLE: u32 = 2;

/// Ring batches processed per event before yielding.
pub const MAX_BATCHES: usize = 64;

/// Counters of the handler.
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// `NOTIFY_CMD` events.
    pub cmd_kicks: AtomicU64,
    /// `NOTIFY_CURSOR` events.
    pub cursor_kicks: AtomicU64,
    /// Resample signals: KVM's end-of-interrupt notifications of the line
    /// (several may be read in one wakeup; the eventfd sums them).
    pub resamples: AtomicU64,
    /// Resamples that found the line still asserted and re-raised it.
    pub reasserts: AtomicU64,
}

/// The `MutEventSubscriber` for one QXL device.
pub struct QxlEventHandler<S: DisplaySink> {
    dev: SharedQxl<S>,
    notify_cmd: EventFd,
    notify_cursor: EventFd,
    resample: EventFd,
    stats: Arc<HandlerStats>,
}

impl<S: DisplaySink> std::fmt::Debug for QxlEventHandler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QxlEventHandler")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: DisplaySink> QxlEventHandler<S> {
    /// A handler over `dev` owning the two notify ioeventfds and the resample fd
    /// (as returned by [`crate::kvm::QxlVm::event_fds`]).
    pub fn new(
        dev: SharedQxl<S>,
        (notify_cmd, notify_cursor, resample): (EventFd, EventFd, EventFd),
    ) -> Self {
        Self {
            dev,
            notify_cmd,
            notify_cursor,
            resample,
            stats: Arc::new(HandlerStats::default()),
        }
    }

    /// The counters (shared; readable while the handler runs).
    pub fn stats(&self) -> Arc<HandlerStats> {
        Arc::clone(&self.stats)
    }

    fn unregister_all(&self, ops: &mut EventOps) {
        for (fd, token) in [
            (&self.notify_cmd, NOTIFY_CMD),
            (&self.notify_cursor, NOTIFY_CURSOR),
            (&self.resample, RESAMPLE),
        ] {
            let _ = ops.remove(Events::with_data(fd, token, EventSet::IN));
        }
    }

    /// Drain one ring. Returns false when the device lock is poisoned.
    fn process_ring(&self, cursor: bool) -> bool {
        for _ in 0..MAX_BATCHES {
            let Ok(mut dev) = self.dev.lock() else {
                return false;
            };
            let more = if cursor {
                dev.process_cursor_ring()
            } else {
                dev.process_cmd_ring()
            };
            if !more {
                return true;
            }
        }
        // Still busy: come back after the other events had their turn.
        let fd = if cursor {
            &self.notify_cursor
        } else {
            &self.notify_cmd
        };
        if let Err(e) = fd.write(1) {
            log::error!("qxl: cannot re-kick the ring: {e}");
        }
        true
    }

    fn resample(&self) -> bool {
        let Ok(dev) = self.dev.lock() else {
            return false;
        };
        if dev.irq_level() {
            self.stats.reasserts.fetch_add(1, Ordering::Relaxed);
            dev.irq().set_level(true);
        }
        true
    }
}

impl<S: DisplaySink> MutEventSubscriber for QxlEventHandler<S> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let token = events.data();
        let fd = match token {
            NOTIFY_CMD => &self.notify_cmd,
            NOTIFY_CURSOR => &self.notify_cursor,
            RESAMPLE => &self.resample,
            _ => {
                log::error!("qxl: unexpected event token {token}");
                return;
            }
        };
        // Consume the counter (the number of signals since the last read);
        // EAGAIN (already drained) is fine.
        let signals = fd.read().unwrap_or(0);
        let ok = match token {
            NOTIFY_CMD => {
                self.stats.cmd_kicks.fetch_add(1, Ordering::Relaxed);
                self.process_ring(false)
            }
            NOTIFY_CURSOR => {
                self.stats.cursor_kicks.fetch_add(1, Ordering::Relaxed);
                self.process_ring(true)
            }
            _ => {
                self.stats
                    .resamples
                    .fetch_add(signals.max(1), Ordering::Relaxed);
                self.resample()
            }
        };
        if !ok {
            log::error!("qxl: device lock poisoned; the event handler stops");
            self.unregister_all(ops);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, token) in [
            (&self.notify_cmd, NOTIFY_CMD),
            (&self.notify_cursor, NOTIFY_CURSOR),
            (&self.resample, RESAMPLE),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, token, EventSet::IN)) {
                log::error!("qxl: cannot register event {token}: {e}");
            }
        }
    }
}

/// An event-manager loop on its own thread, serving a [`QxlEventHandler`] and
/// any other device's subscriber (e.g. [`crate::virtio::VirtioNotifyHandler`]).
#[derive(Debug)]
pub struct EventThread {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

/// The error of [`EventThread::spawn`].
#[derive(Debug, thiserror::Error)]
pub enum EventThreadError {
    /// The event manager could not be built or the subscriber added.
    #[error("event manager: {0}")]
    EventManager(String),
    /// The thread could not be spawned.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A subscriber the [`EventThread`] owns.
pub type BoxedSubscriber = Box<dyn MutEventSubscriber + Send>;

impl EventThread {
    /// Run `handler` in an `EventManager` on a new thread until [`Self::stop`].
    pub fn spawn<S: DisplaySink + Send + 'static>(
        handler: QxlEventHandler<S>,
    ) -> Result<Self, EventThreadError> {
        Self::spawn_all(vec![Box::new(handler)])
    }

    /// Run every subscriber in one `EventManager` on a new thread until
    /// [`Self::stop`].
    pub fn spawn_all(subscribers: Vec<BoxedSubscriber>) -> Result<Self, EventThreadError> {
        let mut manager = EventManager::<BoxedSubscriber>::new()
            .map_err(|e| EventThreadError::EventManager(e.to_string()))?;
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let join = std::thread::Builder::new()
            .name("vmm-events".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::SeqCst) {
                    if let Err(e) = manager.run_with_timeout(50) {
                        log::error!("event loop: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })?;
        Ok(Self {
            stop,
            join: Some(join),
        })
    }

    /// Stop the loop and join the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for EventThread {
    fn drop(&mut self) {
        self.stop();
    }
}
