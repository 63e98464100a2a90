//! Counters of what the device did and of every way a guest misbehaved.
//!
//! Each error path of the device increments exactly one counter here and logs
//! a `log::warn!`. The counters are `AtomicU64` so that the VMM can read them
//! from another thread (through a shared reference) while the device runs;
//! [`Metrics::snapshot`] copies them all into a plain [`MetricsSnapshot`] for
//! tests and for export.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// The device's counters. All start at 0 and only ever increase.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// A point-in-time copy of [`Metrics`] (same field names, plain integers).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Metrics {
            /// Copy every counter. Each counter is read atomically, but the set
            /// is not a consistent cut if the device runs concurrently.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

metrics! {
    /// Commands popped from the command ring and decoded successfully.
    cmd_ring_commands,
    /// Commands popped from the cursor ring and decoded successfully.
    cursor_ring_commands,
    /// Decode errors: memslot id, generation, inactive slot, or range outside the slot.
    decode_errors_memslot,
    /// Decode errors: a guest memory access failed.
    decode_errors_guest_memory,
    /// Decode errors: chunk chains (too many chunks, size mismatch).
    decode_errors_chunks,
    /// Decode errors: sizes too large or overflowing.
    decode_errors_size,
    /// Decode errors: a field with an undefined value (including unknown command types).
    decode_errors_invalid_value,
    /// Decode errors: surface id or surface parameters.
    decode_errors_surface,
    /// Decode errors of any other kind.
    decode_errors_other,
    /// Commands whose type does not belong to the ring they came from.
    wrong_ring_commands,
    /// Guest bugs latched (each raises `QXL_INTERRUPT_ERROR`).
    guest_bugs,
    /// Ring headers found corrupt (wrong `num_items`, impossible indices).
    ring_errors,
    /// Ring processing calls that stopped at their per-call budget with work left.
    ring_budget_exhausted,
    /// Resources chained into a release batch.
    releases_queued,
    /// Release batches published to the release ring.
    release_batches_published,
    /// Publications held back because the release ring was full.
    release_ring_full,
    /// Commands whose release id was 0 (never released).
    release_zero_ids,
    /// Commands whose `release_info` address was already in the unpublished batch.
    release_duplicate_ids,
    /// Commands whose `release_info` could not be translated or read (never released).
    release_untranslatable,
    /// Releases dropped because the unpublished batch reached its size cap.
    release_batch_overflow,
    /// Writes into guest memory that failed while building or publishing a batch.
    release_write_errors,
    /// Interrupt raises (calls that OR bits into `int_pending`).
    interrupts_raised,
    /// Times the INTx line was asserted (every evaluation with a pending unmasked bit).
    irq_asserts,
    /// Times the INTx line was deasserted.
    irq_deasserts,
    /// Accesses to the RAM header that failed (device memory not backed).
    ram_access_errors,
    /// I/O port writes received.
    io_writes,
    /// I/O port reads received (always answered 0xff).
    io_reads,
    /// Port writes ignored because a guest bug is latched.
    io_ignored_guest_bug,
    /// Port writes ignored because the device is in VGA mode.
    io_ignored_vga_mode,
    /// Async operations started.
    async_started,
    /// Async operations completed (`QXL_INTERRUPT_IO_CMD` raised).
    async_completed,
    /// `UPDATE_AREA[_ASYNC]` requests handed to the sink.
    update_area_requests,
    /// `UPDATE_AREA` results that could not be written into guest memory.
    update_area_write_errors,
    /// `NOTIFY_OOM` runs (only counted when the release ring was empty).
    oom_runs,
    /// `QXL_IO_LOG` messages printed.
    log_messages,
    /// Guest monitors configurations passed to the sink.
    monitors_config_sent,
    /// Guest monitors configurations ignored (decode error, count 0 or above max_allowed).
    monitors_config_ignored,
    /// Client monitors configurations written into the ROM.
    client_monitors_config_written,
    /// Client monitors configurations refused (revision or guest `int_mask`).
    client_monitors_config_refused,
    /// Surfaces whose memory could not be read or mapped (create primary / keep data).
    surface_errors,
}

/// Increment a counter by one.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
