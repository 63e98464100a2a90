//! Bounded per-client outgoing queues with the SPICE ACK window.
//!
//! # Primer
//!
//! Display and cursor channels are flow-controlled: the server opens with
//! `SET_ACK {generation, window}`, the client answers `ACK_SYNC {generation}`
//! and then sends an empty `ACK` after every `window` messages it received.
//! The server stops sending while more than `2 × window` messages are
//! unacknowledged; an `ACK` of the current generation releases `window`.
//!
//! The producer (the display worker) never blocks on an outbox: it merges new
//! work into what is pending (the queue owner decides how, see
//! [`Outbox::with`]), and a queue that would grow past its cap is collapsed.
//! The consumer is the connection's writer thread, which waits in
//! [`Outbox::pop`] until an item is pending *and* the ACK window is open.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The ACK window used for display and cursor channels (`CLIENT_ACK_WINDOW`).
pub const ACK_WINDOW: u32 = 20;

/// ACK bookkeeping of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckWindow {
    /// Generation announced in the last SET_ACK.
    pub generation: u32,
    /// Window size announced.
    pub window: u32,
    /// Generation the client last confirmed with ACK_SYNC.
    pub client_generation: u32,
    /// Messages sent and not yet acknowledged.
    pub unacked: u32,
    /// False until SET_ACK is sent; then sending is flow-controlled.
    pub enabled: bool,
}

impl AckWindow {
    const fn new() -> Self {
        Self {
            generation: 0,
            window: ACK_WINDOW,
            client_generation: 0,
            unacked: 0,
            enabled: false,
        }
    }

    /// True when another message may be sent.
    pub const fn open(&self) -> bool {
        !self.enabled || self.unacked < self.window.saturating_mul(2)
    }
}

/// The state behind an outbox's lock.
#[derive(Debug)]
pub struct OutboxState<I> {
    /// Pending items, oldest first.
    pub items: VecDeque<I>,
    /// Set when the connection is gone; producers drop their work.
    pub closed: bool,
    /// Flow control.
    pub ack: AckWindow,
}

/// A bounded queue from the display worker to one client connection.
#[derive(Debug)]
pub struct Outbox<I> {
    state: Mutex<OutboxState<I>>,
    cv: Condvar,
    cap: usize,
}

impl<I> Outbox<I> {
    /// An empty outbox holding at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState {
                items: VecDeque::new(),
                closed: false,
                ack: AckWindow::new(),
            }),
            cv: Condvar::new(),
            cap,
        }
    }

    /// The item cap.
    pub const fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState<I>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock and wakes the writer.
    pub fn with<R>(&self, f: impl FnOnce(&mut OutboxState<I>) -> R) -> R {
        let r = f(&mut self.lock());
        self.cv.notify_all();
        r
    }

    /// Marks the outbox closed and wakes everyone.
    pub fn close(&self) {
        self.with(|s| {
            s.closed = true;
            s.items.clear();
        });
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits for the next item that may be sent now. `None` once closed.
    pub fn pop(&self) -> Option<I> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if s.ack.open()
                && let Some(i) = s.items.pop_front()
            {
                return Some(i);
            }
            // The timeout only guards against a lost wake-up.
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(500))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits until an item is pending *and* may be sent now, without taking
    /// it (the single consumer then inspects and pops it with [`Outbox::with`]).
    /// False once closed.
    pub fn wait_ready(&self) -> bool {
        let mut s = self.lock();
        loop {
            if s.closed {
                return false;
            }
            if s.ack.open() && !s.items.is_empty() {
                return true;
            }
            // The timeout only guards against a lost wake-up.
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(500))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Starts flow control with a new generation; returns (generation, window).
    pub fn start_ack(&self) -> (u32, u32) {
        self.with(|s| {
            s.ack.generation = s.ack.generation.wrapping_add(1);
            s.ack.enabled = true;
            s.ack.unacked = 0;
            (s.ack.generation, s.ack.window)
        })
    }

    /// Counts `n` messages as sent.
    pub fn sent(&self, n: u32) {
        let mut s = self.lock();
        if s.ack.enabled {
            s.ack.unacked = s.ack.unacked.saturating_add(n);
        }
    }

    /// The client confirmed a SET_ACK generation.
    pub fn ack_sync(&self, generation: u32) {
        self.with(|s| s.ack.client_generation = generation);
    }

    /// The client acknowledged a window of messages.
    pub fn ack(&self) {
        self.with(|s| {
            if s.ack.client_generation == s.ack.generation {
                s.ack.unacked = s.ack.unacked.saturating_sub(s.ack.window);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_blocks_until_ack() {
        let o: Outbox<u32> = Outbox::new(8);
        let (g, w) = o.start_ack();
        o.with(|s| s.items.push_back(1));
        o.sent(2 * w);
        assert!(!o.with(|s| s.ack.open()));
        o.ack(); // stale generation: ignored
        assert!(!o.with(|s| s.ack.open()));
        o.ack_sync(g);
        o.ack();
        assert_eq!(o.pop(), Some(1));
        o.close();
        assert_eq!(o.pop(), None);
    }
}
