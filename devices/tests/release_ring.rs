//! Release ring (THREATS row 6, CVE-2019-12155 class): QEMU's batching of 32,
//! flushes, OOM only on an empty ring, hold-back when the ring is full, and
//! the ids the device must never release: 0, duplicates, untranslatable.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::QxlConfig;
    use devices::qxl::abi::{cmd, io, ring};
    use devices::qxl::memslot::make_phys;
    use devices::qxl::mock::driver::{MockQxlDriver, MockRing, NotifyMode};
    use spice_server::command::Command;

    fn driver() -> MockQxlDriver {
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig {
            ram_size: 8 << 20,
            vram_size: 4 << 20,
            vgamem_size: 1 << 20,
            ..QxlConfig::default()
        })
        .unwrap();
        d.create_primary(64, 64, None).unwrap();
        d
    }

    fn msg(i: u32) -> Command {
        Command::Message(format!("m{i}").into_bytes())
    }

    #[test]
    fn release_ring_batches_of_32() {
        let mut d = driver();
        let ids: Vec<u64> = (0..40).map(|i| d.push_command(&msg(i)).unwrap()).collect();
        let h = d.release_ring_header().unwrap();
        assert_eq!((h.prod, h.cons), (1, 0), "one batch of 32 published");
        assert_eq!(d.device().pending_releases(), 8);
        assert_eq!(d.irq_counts().display, 1, "release notify_on_prod was 1");
        // The batch is one chain, in release order.
        assert_eq!(d.drain_releases().unwrap(), ids[..32].to_vec());
        // The remaining 8 wait for a flush.
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(
            d.irq_counts().display,
            2,
            "the guest re-armed notify_on_prod"
        );
        assert_eq!(d.drain_releases().unwrap(), ids[32..].to_vec());
        assert_eq!(d.outstanding(), 0);
        let m = d.device().metrics().snapshot();
        assert_eq!((m.releases_queued, m.release_batches_published), (40, 2));
    }

    #[test]
    fn release_ring_flush_with_nothing_pending_publishes_nothing() {
        let mut d = driver();
        d.out(io::FLUSH_RELEASE, 0);
        d.notify_oom();
        let h = d.release_ring_header().unwrap();
        assert_eq!((h.prod, h.cons), (0, 0));
        assert_eq!(d.irq_counts().display, 0);
    }

    #[test]
    fn release_ring_oom_only_when_ring_empty() {
        let mut d = driver();
        let a = d.push_command(&msg(0)).unwrap();
        d.out(io::FLUSH_RELEASE, 0);
        let b = d.push_command(&msg(1)).unwrap();
        // The ring holds a published batch: OOM is ignored.
        d.notify_oom();
        assert_eq!(d.release_ring_header().unwrap().prod, 1);
        assert_eq!(d.device().pending_releases(), 1);
        assert_eq!(d.device().metrics().snapshot().oom_runs, 0);
        assert_eq!(d.drain_releases().unwrap(), vec![a]);
        // Now empty: OOM processes pending commands and flushes the partial batch.
        d.set_notify_mode(NotifyMode::Eventfd);
        let c = d.push_command(&msg(2)).unwrap();
        assert_eq!(d.device().pending_releases(), 1, "c not consumed yet");
        d.notify_oom();
        assert_eq!(d.device().metrics().snapshot().oom_runs, 1);
        assert_eq!(d.drain_releases().unwrap(), vec![b, c]);
    }

    #[test]
    fn release_ring_oom_collects_everything_into_one_batch() {
        let mut d = driver();
        d.set_notify_mode(NotifyMode::Eventfd);
        // 40 commands queued but not consumed (ring holds 32, the rest wait).
        let mut ids = Vec::new();
        for i in 0..32 {
            ids.push(d.push_command(&msg(i)).unwrap());
        }
        d.notify_oom();
        // No batch of 32 was published early: one flush at the end.
        assert_eq!(d.release_ring_header().unwrap().prod, 1);
        assert_eq!(d.drain_releases().unwrap(), ids);
    }

    #[test]
    fn release_ring_full_holds_back() {
        let mut d = driver();
        // Eight slots: at most seven published batches, one kept for the batch under construction.
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(d.push_command(&msg(i)).unwrap());
            d.out(io::FLUSH_RELEASE, 0);
        }
        let h = d.release_ring_header().unwrap();
        assert_eq!((h.prod, h.cons), (7, 0));
        assert_eq!(h.num_items, ring::RELEASE_RING_SIZE);
        assert_eq!(
            d.device().pending_releases(),
            3,
            "the rest keeps growing the batch"
        );
        assert!(d.device().metrics().snapshot().release_ring_full >= 3);
        let first = d.drain_releases().unwrap();
        assert_eq!(first, ids[..7].to_vec());
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap(), ids[7..].to_vec());
        assert_eq!(d.outstanding(), 0);
    }

    #[test]
    fn release_ring_zero_id_is_never_released() {
        let mut d = driver();
        let (phys, kind) = d.encode_command(&msg(0), 0).unwrap();
        d.push_raw(MockRing::Command, phys, kind).unwrap();
        assert_eq!(d.sink().commands().len(), 1, "decoded anyway");
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.release_ring_header().unwrap().prod, 0);
        let m = d.device().metrics().snapshot();
        assert_eq!((m.release_zero_ids, m.releases_queued), (1, 0));
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn release_ring_duplicate_release_info_chained_once() {
        let mut d = driver();
        let id = 0xdead_beef;
        let (phys, kind) = d.encode_command(&msg(0), id).unwrap();
        d.track_release(id, phys).unwrap();
        // The same structure three times before a flush: a cycle if chained twice.
        for _ in 0..3 {
            d.push_raw(MockRing::Command, phys, kind).unwrap();
        }
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap(), vec![id]);
        let m = d.device().metrics().snapshot();
        // The first push chains it; its id is then overwritten by next = 0, so the
        // repeats read id 0 — or are caught as duplicates if the guest restored it.
        assert_eq!(m.releases_queued, 1);
        assert_eq!(m.release_zero_ids + m.release_duplicate_ids, 2);
        // A guest that rewrites the id each time is caught by the duplicate check.
        let (phys, kind) = d.encode_command(&msg(1), 77).unwrap();
        d.track_release(77, phys).unwrap();
        let addr = d.addr_of(phys).unwrap();
        for _ in 0..3 {
            d.write_raw(addr, &77u64.to_le_bytes()).unwrap();
            d.push_raw(MockRing::Command, phys, kind).unwrap();
        }
        // The device skipped the repeats without touching the field, so it still
        // holds the guest's last write (77); a chain 77 → 77 would be the guest's
        // own doing. Put back the `next = 0` the device wrote on the first chain.
        d.write_raw(addr, &0u64.to_le_bytes()).unwrap();
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap(), vec![77]);
        assert_eq!(d.device().metrics().snapshot().release_duplicate_ids, 2);
        assert_eq!(d.outstanding(), 0);
    }

    #[test]
    fn release_ring_untranslatable_ids_are_skipped() {
        let mut d = driver();
        let slot1_end = d.device().slots().get(1).unwrap().size;
        for phys in [
            0u64,
            make_phys(5, 0, 0x100),         // inactive slot
            make_phys(9, 0, 0x100),         // slot id past the table
            make_phys(1, 3, 0x100),         // wrong generation
            make_phys(1, 0, slot1_end - 4), // release_info straddles the slot end
        ] {
            d.push_raw(MockRing::Command, phys, cmd::DRAW).unwrap();
        }
        d.out(io::FLUSH_RELEASE, 0);
        let m = d.device().metrics().snapshot();
        assert_eq!(m.release_untranslatable, 5);
        assert_eq!(m.releases_queued, 0);
        assert_eq!(m.decode_errors_memslot, 5);
        assert_eq!(d.release_ring_header().unwrap().prod, 0);
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn release_ring_corrupt_header_is_guest_bug() {
        let mut d = driver();
        d.push_command(&msg(0)).unwrap();
        let desc = devices::qxl::ring::RingDesc::release(&d.ram_header());
        d.write_raw(desc.header, &5u32.to_le_bytes()).unwrap();
        d.out(io::FLUSH_RELEASE, 0);
        assert!(d.device().guest_bug());
        assert_eq!(d.device().metrics().snapshot().ring_errors, 1);
    }

    #[test]
    fn release_ring_mock_heap_recycles_after_releases() {
        // Far more commands than the mock's heap holds: the mock gets its
        // releases back (drain, OOM, drain) and reuses the heap.
        let mut d = driver();
        let big = Command::Message(vec![b'z'; 60_000]);
        for _ in 0..400 {
            d.push_command(&big).unwrap();
        }
        d.out(io::FLUSH_RELEASE, 0);
        d.drain_releases().unwrap();
        assert_eq!(d.outstanding(), 0);
        assert_eq!(d.released().len(), 400);
        assert!(!d.device().guest_bug());
    }
}
