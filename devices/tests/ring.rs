//! Ring robustness: a corrupt `num_items`, `prod` far ahead of `cons`, a guest
//! that keeps producing (bounded work per call), commands on the wrong ring,
//! and the notify_on_prod / notify_on_cons protocol.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::abi::{cmd, interrupt, io, ram, ring};
    use devices::qxl::guest::GuestView;
    use devices::qxl::mock::driver::{
        MockQxlDriver, MockRing, NotifyMode, RecordingIrq, RecordingSink,
    };
    use devices::qxl::ring::RingDesc;
    use devices::qxl::{QxlConfig, QxlDevice};
    use spice_server::command::{Command, CursorCmd, Point16};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    fn driver() -> MockQxlDriver {
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig {
            ram_size: 4 << 20,
            vram_size: 1 << 20,
            vgamem_size: 1 << 20,
            ..QxlConfig::default()
        })
        .unwrap();
        d.create_primary(32, 32, None).unwrap();
        d
    }

    #[test]
    fn ring_corrupt_num_items_is_guest_bug() {
        for bad in [0u32, 16, 31, 33, 64, u32::MAX] {
            let mut d = driver();
            d.set_notify_mode(NotifyMode::Eventfd);
            d.push_command(&Command::Message(b"x".to_vec())).unwrap();
            d.write_ring_field(MockRing::Command, ring::NUM_ITEMS, bad)
                .unwrap();
            assert!(!d.device_mut().process_cmd_ring());
            assert!(d.device().guest_bug(), "num_items {bad}");
            assert_eq!(
                d.ring_header(MockRing::Command).unwrap().cons,
                0,
                "nothing popped"
            );
            assert_eq!(d.device().metrics().snapshot().ring_errors, 1);
            assert!(d.sink().commands().is_empty());
        }
        // Same for the cursor ring.
        let mut d = driver();
        d.write_ring_field(MockRing::Cursor, ring::NUM_ITEMS, 8)
            .unwrap();
        d.out(io::NOTIFY_CURSOR, 0);
        assert!(d.device().guest_bug());
    }

    #[test]
    fn ring_prod_far_ahead_of_cons_is_guest_bug() {
        let mut d = driver();
        d.write_ring_field(MockRing::Command, ring::PROD, 1000)
            .unwrap();
        d.out(io::NOTIFY_CMD, 0);
        assert!(d.device().guest_bug());
        assert_eq!(d.ring_header(MockRing::Command).unwrap().cons, 0);
        // cons past prod (prod - cons wraps to a huge value): the same.
        let mut d = driver();
        d.write_ring_field(MockRing::Command, ring::CONS, 5)
            .unwrap();
        d.out(io::NOTIFY_CMD, 0);
        assert!(d.device().guest_bug());
        // Exactly full (prod - cons == num_items) is legal, also across the u32 wrap.
        let mut d = driver();
        d.set_notify_mode(NotifyMode::Eventfd);
        d.write_ring_field(MockRing::Command, ring::CONS, u32::MAX - 10)
            .unwrap();
        d.write_ring_field(MockRing::Command, ring::PROD, u32::MAX - 10)
            .unwrap();
        for _ in 0..32 {
            d.push_command(&Command::Message(b"y".to_vec())).unwrap();
        }
        assert!(!d.device_mut().process_cmd_ring());
        assert!(!d.device().guest_bug());
        assert_eq!(d.sink().commands().len(), 32);
        assert_eq!(d.ring_header(MockRing::Command).unwrap().cons, 21);
    }

    /// A guest that refills the command ring every time the device consumes:
    /// each write of `cons` moves `prod` to `cons + 32`.
    struct ProducingGuest {
        mem: GuestMemoryMmap,
        cons: GuestAddress,
        prod: GuestAddress,
    }

    impl GuestView for ProducingGuest {
        fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> devices::error::Result<()> {
            self.mem.read_bytes(addr, buf)
        }

        fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> devices::error::Result<()> {
            self.mem.write_bytes(addr, buf)?;
            if addr == self.cons && buf.len() == 4 {
                let cons = u32::from_le_bytes(buf.try_into().unwrap());
                self.mem.write_u32(self.prod, cons.wrapping_add(32))?;
            }
            Ok(())
        }

        fn fetch_or_u32(&self, addr: GuestAddress, bits: u32) -> devices::error::Result<u32> {
            self.mem.fetch_or_u32(addr, bits)
        }
    }

    #[test]
    fn ring_guest_that_keeps_producing_gets_bounded_work() {
        let config = QxlConfig {
            vga: false,
            ram_size: 1 << 20,
            vram_size: 4096,
            vgamem_size: 64 << 10,
            ..QxlConfig::default()
        };
        let size = usize::try_from(config.device_memory_size()).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
        let header = (1u64 << 20) - 8192;
        let desc_base = header + ram::CMD_RING;
        let guest = ProducingGuest {
            mem,
            cons: GuestAddress(desc_base + ring::CONS),
            prod: GuestAddress(desc_base + ring::PROD),
        };
        let mut dev = QxlDevice::new(
            config,
            guest,
            RecordingIrq::default(),
            RecordingSink::default(),
        )
        .unwrap();
        // Fill the ring with NOPs (they fail to decode; popping is what counts).
        dev.mem()
            .mem
            .write_u32(GuestAddress(desc_base + ring::PROD), 32)
            .unwrap();
        for round in 1..=3u32 {
            assert!(dev.process_cmd_ring(), "work left after round {round}");
            let cons = dev
                .mem()
                .read_u32(GuestAddress(desc_base + ring::CONS))
                .unwrap();
            assert_eq!(cons, round * 4 * 32, "4 × ring size per call");
            let notify = dev
                .mem()
                .read_u32(GuestAddress(desc_base + ring::NOTIFY_ON_PROD))
                .unwrap();
            assert_eq!(notify, cons + 32 + 1, "re-armed so the guest kicks again");
        }
        let m = dev.metrics().snapshot();
        assert_eq!(m.ring_budget_exhausted, 3);
        assert_eq!(m.decode_errors_invalid_value, 3 * 128);
        assert!(!dev.guest_bug());
    }

    #[test]
    fn ring_notify_on_cons_and_notify_on_prod() {
        let mut d = driver();
        d.set_notify_mode(NotifyMode::Eventfd);
        for i in 0..5u8 {
            d.push_command(&Command::Message(vec![b'a' + i])).unwrap();
        }
        // The guest asks for DISPLAY when cons reaches 3.
        d.write_ring_field(MockRing::Command, ring::NOTIFY_ON_CONS, 3)
            .unwrap();
        let before = d.irq_counts().display;
        d.run_worker();
        assert_eq!(d.irq_counts().display, before + 1);
        let h = d.ring_header(MockRing::Command).unwrap();
        assert_eq!((h.prod, h.cons, h.notify_on_prod), (5, 5, 6));
        // Cursor ring pops raise CURSOR at notify_on_cons.
        d.write_ring_field(MockRing::Cursor, ring::NOTIFY_ON_CONS, 1)
            .unwrap();
        d.push_command(&Command::Cursor(CursorCmd::Hide)).unwrap();
        d.run_worker();
        assert_eq!(d.irq_counts().cursor, 1);
    }

    #[test]
    fn ring_wrong_ring_commands_are_dropped_but_released() {
        let mut d = driver();
        let mv = Command::Cursor(CursorCmd::Move {
            position: Point16 { x: 1, y: 2 },
        });
        // A cursor command on the command ring, a message on the cursor ring.
        let (p1, k1) = d.encode_command(&mv, 11).unwrap();
        d.track_release(11, p1).unwrap();
        d.push_raw(MockRing::Command, p1, k1).unwrap();
        let (p2, k2) = d
            .encode_command(&Command::Message(b"m".to_vec()), 12)
            .unwrap();
        d.track_release(12, p2).unwrap();
        d.push_raw(MockRing::Cursor, p2, k2).unwrap();
        assert!(d.sink().commands().is_empty());
        assert_eq!(d.device().metrics().snapshot().wrong_ring_commands, 2);
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap(), vec![11, 12]);
        assert!(!d.device().guest_bug());
        // NOP and unknown types are decode errors, not guest bugs.
        d.push_raw(MockRing::Command, 0, cmd::NOP).unwrap();
        d.push_raw(MockRing::Command, 0, 77).unwrap();
        assert!(!d.device().guest_bug());
        assert_eq!(
            d.device().metrics().snapshot().decode_errors_invalid_value,
            2
        );
    }

    #[test]
    fn ring_surface_id_out_of_range_is_guest_bug() {
        use spice_server::command::SurfaceCmd;
        let mut d = driver();
        d.push_command(&Command::Surface(SurfaceCmd::Destroy { surface_id: 5000 }))
            .unwrap();
        assert!(d.device().guest_bug(), "QEMU's command tracking flags it");
        let pending = d
            .mem()
            .read_u32(d.ram_header().addr(ram::INT_PENDING))
            .unwrap();
        assert_eq!(pending & interrupt::ERROR, interrupt::ERROR);
        // And the rings stop.
        d.push_raw(MockRing::Command, 0, cmd::DRAW).unwrap();
        assert_eq!(d.ring_header(MockRing::Command).unwrap().cons, 1);
        let _ = RingDesc::command(&d.ram_header());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Random ring headers, ring items, RAM parameter blocks and port writes:
        /// the device never panics, and every decoded command went through the
        /// translator (the sink only sees owned values).
        #[test]
        fn ring_random_guest_never_panics(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 1348),
            ops in proptest::collection::vec((0u64..34, proptest::prelude::any::<u8>()), 1..40),
        ) {
            let mut d = driver();
            // Overwrite everything from the command ring to the end of QXLRam.
            let at = d.ram_header().addr(ram::CMD_RING);
            d.write_raw(at, &header[..usize::try_from(ram::SIZE - ram::CMD_RING).unwrap()]).unwrap();
            for (port, value) in ops {
                d.device_mut().io_write(port, value);
                d.device_mut().process_cmd_ring();
                d.device_mut().process_cursor_ring();
                d.service_irq();
            }
            d.device_mut().io_write(io::RESET, 0);
            proptest::prop_assert!(!d.device().guest_bug());
        }
    }
}
