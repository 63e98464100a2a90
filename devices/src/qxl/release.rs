//! Giving commands back to the guest: the release ring.
//!
//! # Primer
//!
//! Every guest command structure starts with an 8-byte `QXLReleaseInfo`, a
//! union of the guest's `id` for the resource (guest → device) and a `next`
//! link (device → guest). When the device no longer needs a command it
//! *releases* it. Releases are batched as QEMU does (`qxl_push_free_res`):
//!
//! 1. The first resource of a batch is the *head*: its id goes into the
//!    release-ring slot at `prod`, and its `release_info` is overwritten with
//!    `next = 0`.
//! 2. Each further resource's id is written into the previous resource's
//!    `release_info.next`, and its own `next` becomes 0: a linked list through
//!    guest memory.
//! 3. After [`FREE_BUNCH_SIZE`] resources, or on a flush (`FLUSH_RELEASE`,
//!    `NOTIFY_OOM`), the batch is *published*: `prod++`, and `DISPLAY` is raised
//!    if the new `prod` equals `notify_on_prod`.
//! 4. A batch is never published when `prod - cons + 1 == num_items`: one slot
//!    is always left for the batch under construction. The batch keeps growing
//!    until the guest consumes.
//!
//! The guest pops ids, and follows each chain through `next` until 0.
//!
//! This device copies every command out of guest memory when it decodes it, so
//! it releases each command right after decoding (copy-then-release). It reads
//! the id once, before decoding, and refuses to chain id 0 (the guest could
//! not tell it from "end of chain") or a `release_info` address already in the
//! unpublished batch (that would make a cycle the guest walks forever). The
//! head id is kept on the host and written into the ring slot only when the
//! batch is published, so a guest scribbling on unpublished slots changes
//! nothing. The unpublished batch is capped at [`MAX_BATCH`] entries: a guest
//! that never drains its release ring loses further releases instead of
//! growing host memory.

use std::collections::HashSet;
use std::sync::atomic::{Ordering, fence};

use vm_memory::GuestAddress;

use crate::error::Result;
use crate::qxl::abi::ring as off;
use crate::qxl::guest::GuestView;
use crate::qxl::ring::RingDesc;

pub use crate::qxl::abi::FREE_BUNCH_SIZE;

/// Cap on the number of resources in the unpublished batch.
pub const MAX_BATCH: usize = 1 << 16;

/// Outcome of [`ReleaseBatch::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The resource was chained into the batch.
    Queued,
    /// Id 0 is never released.
    ZeroId,
    /// This `release_info` address is already in the unpublished batch.
    Duplicate,
    /// The batch reached [`MAX_BATCH`].
    Overflow,
}

/// Outcome of [`ReleaseBatch::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The batch was empty: nothing to publish.
    Nothing,
    /// The release ring has no free slot (`prod - cons + 1 >= num_items`); the batch is kept.
    RingFull,
    /// The batch was published; `notify` is true when the guest asked for an
    /// interrupt (`prod == notify_on_prod`).
    Done {
        /// Raise `QXL_INTERRUPT_DISPLAY`.
        notify: bool,
    },
}

/// The release batch under construction.
#[derive(Debug, Default)]
pub struct ReleaseBatch {
    head_id: u64,
    last: Option<GuestAddress>,
    members: HashSet<u64>,
    oom_running: bool,
}

impl ReleaseBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the unpublished batch (device reset, as QEMU's `num_free_res = 0`).
    pub fn reset(&mut self) {
        self.head_id = 0;
        self.last = None;
        self.members.clear();
        self.oom_running = false;
    }

    /// Number of resources in the unpublished batch.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nothing is waiting to be published.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Mark an OOM run: while set, only flushes publish (everything released
    /// meanwhile accumulates in one batch).
    pub fn set_oom_running(&mut self, running: bool) {
        self.oom_running = running;
    }

    /// True when a non-flush publish is due (a full bunch and no OOM run).
    pub fn wants_publish(&self) -> bool {
        !self.oom_running && self.len() >= usize::try_from(FREE_BUNCH_SIZE).unwrap_or(32)
    }

    /// Chain the resource whose `release_info` is at device address `info` and
    /// whose id (read once by the caller) is `id`.
    pub fn push<V: GuestView + ?Sized>(
        &mut self,
        mem: &V,
        info: GuestAddress,
        id: u64,
    ) -> Result<Queued> {
        if id == 0 {
            return Ok(Queued::ZeroId);
        }
        if self.members.contains(&info.0) {
            return Ok(Queued::Duplicate);
        }
        if self.members.len() >= MAX_BATCH {
            return Ok(Queued::Overflow);
        }
        mem.write_u64(info, 0)?;
        match self.last {
            Some(last) => mem.write_u64(last, id)?,
            None => self.head_id = id,
        }
        self.members.insert(info.0);
        self.last = Some(info);
        Ok(Queued::Queued)
    }

    /// Publish the batch into the release ring if it has room.
    pub fn publish<V: GuestView + ?Sized>(
        &mut self,
        mem: &V,
        ring: &RingDesc,
    ) -> Result<Published> {
        if self.is_empty() {
            return Ok(Published::Nothing);
        }
        let h = ring.read_header(mem)?;
        if h.used().saturating_add(1) >= h.num_items {
            return Ok(Published::RingFull);
        }
        mem.write_u64(ring.item_addr(h.prod)?, self.head_id)?;
        // The chain and the head must be visible before `prod` moves.
        fence(Ordering::SeqCst);
        let prod = h.prod.wrapping_add(1);
        mem.write_u32(ring.field(off::PROD), prod)?;
        fence(Ordering::SeqCst);
        let notify_on_prod = mem.read_u32(ring.field(off::NOTIFY_ON_PROD))?;
        // QEMU keeps the next head slot zeroed; do the same for fidelity.
        mem.write_u64(ring.item_addr(prod)?, 0)?;
        self.head_id = 0;
        self.last = None;
        self.members.clear();
        Ok(Published::Done {
            notify: prod == notify_on_prod,
        })
    }
}
