//! I/O ports with QEMU semantics: revision gating, VGA-mode rules, the single
//! outstanding async operation, the guest-bug latch, cancel paths that still
//! complete with `IO_CMD`, and interrupt masking / `UPDATE_IRQ`.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::abi::{interrupt, io, ram, rom};
    use devices::qxl::guest::{GuestView, le};
    use devices::qxl::memslot::make_phys;
    use devices::qxl::mock::driver::{MockQxlDriver, MockRing, SinkEvent};
    use devices::qxl::ram::SurfaceCreateRaw;
    use devices::qxl::rom::crc32;
    use devices::qxl::{Mode, QxlConfig};
    use spice_server::command::Rect;
    use vm_memory::GuestAddress;

    fn config(revision: u8) -> QxlConfig {
        QxlConfig {
            revision,
            ram_size: 4 << 20,
            vram_size: 2 << 20,
            vgamem_size: 1 << 20,
            n_surfaces: 16,
            ..QxlConfig::default()
        }
    }

    /// Probed (Linux sequence) and with a primary, so out of VGA mode.
    fn probed(revision: u8) -> MockQxlDriver {
        let mut d = MockQxlDriver::with_linux_probe(config(revision)).unwrap();
        d.create_primary(64, 64, None).unwrap();
        d
    }

    /// Probed, no primary, mode undefined (a secondary `qxl`).
    fn undefined(revision: u8) -> MockQxlDriver {
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig {
            vga: false,
            ..config(revision)
        })
        .unwrap();
        assert_eq!(d.device().mode(), Mode::Undefined);
        d.service_irq();
        d
    }

    /// ERROR interrupts raised: handled ones plus a still-pending (masked) one.
    /// Linux's mask does not include ERROR.
    fn errors(d: &MockQxlDriver) -> u64 {
        d.irq_counts().error + u64::from(pending(d) & interrupt::ERROR != 0)
    }

    fn pending(d: &MockQxlDriver) -> u32 {
        d.mem()
            .read_u32(d.ram_header().addr(ram::INT_PENDING))
            .unwrap()
    }

    fn ram_addr(d: &MockQxlDriver, off: u64) -> GuestAddress {
        d.ram_header().addr(off)
    }

    fn bugs(d: &MockQxlDriver) -> u64 {
        d.device().metrics().snapshot().guest_bugs
    }

    #[test]
    fn ports_io_read_returns_ff() {
        let mut d = probed(5);
        for p in 0..32 {
            assert_eq!(d.device_mut().io_read(p), 0xff);
        }
    }

    #[test]
    fn ports_revision_gating() {
        // Revision 3: MONITORS_CONFIG_ASYNC (24) and anything above FLUSH_RELEASE is a guest bug.
        let mut d = MockQxlDriver::new(config(3)).unwrap();
        d.out(io::RESET, 0);
        d.set_int_mask(interrupt::LINUX_MASK).unwrap();
        d.out(io::MONITORS_CONFIG_ASYNC, 0);
        assert!(d.device().guest_bug());
        assert_eq!(errors(&d), 1);
        // Revision 2 has no async ports.
        let mut d = MockQxlDriver::new(config(2)).unwrap();
        d.out(io::MEMSLOT_ADD_ASYNC, 1);
        assert!(d.device().guest_bug());
        // Revision 1 has no memslot ports.
        let mut d = MockQxlDriver::new(config(1)).unwrap();
        d.out(io::MEMSLOT_ADD, 1);
        assert!(d.device().guest_bug());
        // Revision 4/5: undefined ports 25..31 and DETACH/ATTACH_PRIMARY are guest bugs
        // outside VGA mode.
        for port in [25u64, 31, io::DETACH_PRIMARY, io::ATTACH_PRIMARY] {
            let mut d = probed(5);
            d.out(port, 0);
            assert!(d.device().guest_bug(), "port {port}");
            assert_eq!(errors(&d), 1);
        }
        // Revision 4 accepts MONITORS_CONFIG_ASYNC.
        let mut d = probed(4);
        d.out(io::MONITORS_CONFIG_ASYNC, 0);
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn ports_async_double_issue_is_guest_bug() {
        let mut d = probed(5);
        d.device_mut().set_deferred_async_completion(true);
        d.out(io::FLUSH_SURFACES_ASYNC, 0);
        assert_eq!(d.device().async_in_flight(), Some(io::FLUSH_SURFACES_ASYNC));
        let io_cmd = d.irq_counts().io_cmd;
        // A sync port is fine while the async op is in flight.
        d.out(io::UPDATE_IRQ, 0);
        assert!(!d.device().guest_bug());
        d.out(io::DESTROY_ALL_SURFACES_ASYNC, 0);
        assert!(d.device().guest_bug());
        assert_eq!(errors(&d), 1);
        assert_eq!(d.irq_counts().io_cmd, io_cmd, "no completion yet");
        // The first op still completes.
        assert!(d.device_mut().complete_async());
        d.service_irq();
        assert_eq!(d.irq_counts().io_cmd, io_cmd + 1);
        assert!(!d.device_mut().complete_async());
    }

    #[test]
    fn ports_deferred_completion_raises_io_cmd_later() {
        let mut d = probed(5);
        d.device_mut().set_deferred_async_completion(true);
        let before = d.irq_counts().io_cmd;
        d.out(io::MONITORS_CONFIG_ASYNC, 0);
        assert_eq!(d.irq_counts().io_cmd, before);
        d.device_mut().complete_async();
        d.service_irq();
        assert_eq!(d.irq_counts().io_cmd, before + 1);
        d.out(io::DESTROY_PRIMARY_ASYNC, 0);
        assert_eq!(
            d.device().async_in_flight(),
            Some(io::DESTROY_PRIMARY_ASYNC)
        );
        d.device_mut().complete_async();
        d.service_irq();
        assert_eq!(d.irq_counts().io_cmd, before + 2);
        // Cancel paths complete at once even when deferred (no primary left).
        d.out(io::DESTROY_PRIMARY_ASYNC, 0);
        assert_eq!(d.irq_counts().io_cmd, before + 3);
        assert_eq!(d.device().async_in_flight(), None);
    }

    #[test]
    fn ports_guest_bug_ignores_all_but_reset() {
        let mut d = probed(5);
        d.out(io::DETACH_PRIMARY, 0);
        assert!(d.device().guest_bug());
        let ignored = d.device().metrics().snapshot().io_ignored_guest_bug;
        // MEMSLOT_ADD, CREATE_PRIMARY, notifications: all ignored.
        d.out(io::MEMSLOT_ADD, 3);
        assert!(d.device().slots().get(3).is_none());
        let before = d.irq_counts().io_cmd;
        d.out(io::CREATE_PRIMARY_ASYNC, 0);
        assert_eq!(d.irq_counts().io_cmd, before, "no IO_CMD while latched");
        assert_eq!(d.device().mode(), Mode::Native);
        d.push_raw(MockRing::Command, 0, 1).unwrap();
        assert_eq!(
            d.ring_header(MockRing::Command).unwrap().cons,
            0,
            "rings not consumed"
        );
        assert!(!d.device_mut().process_cmd_ring());
        assert_eq!(
            d.device().metrics().snapshot().io_ignored_guest_bug,
            ignored + 3
        );
        // RESET clears the latch, memslots, and the rings.
        d.out(io::RESET, 0);
        assert!(!d.device().guest_bug());
        assert!(d.device().slots().get(1).is_none());
        assert_eq!(d.device().mode(), Mode::Vga);
        assert_eq!(d.ring_header(MockRing::Command).unwrap().prod, 0);
    }

    #[test]
    fn ports_vga_mode_rules() {
        let mut d = MockQxlDriver::new(config(5)).unwrap();
        assert_eq!(d.device().mode(), Mode::Vga);
        d.set_int_mask(interrupt::LINUX_MASK).unwrap();
        let sink_events = d.sink().events.len();
        // Async ports other than MEMSLOT_ADD/CREATE_PRIMARY: IO_CMD, nothing else.
        for (n, port) in [
            io::UPDATE_AREA_ASYNC,
            io::DESTROY_PRIMARY_ASYNC,
            io::DESTROY_SURFACE_ASYNC,
            io::DESTROY_ALL_SURFACES_ASYNC,
            io::FLUSH_SURFACES_ASYNC,
            io::MONITORS_CONFIG_ASYNC,
            io::FLUSH_RELEASE,
        ]
        .into_iter()
        .enumerate()
        {
            d.out(port, 0);
            assert_eq!(d.irq_counts().io_cmd, n as u64 + 1, "port {port}");
        }
        // Sync ports (and unknown ones) are silently ignored.
        for port in [
            io::UPDATE_AREA,
            io::NOTIFY_OOM,
            io::DESTROY_PRIMARY,
            io::DESTROY_ALL_SURFACES,
            25,
        ] {
            d.out(port, 0);
        }
        assert!(!d.device().guest_bug());
        assert_eq!(d.sink().events.len(), sink_events);
        assert_eq!(d.device().mode(), Mode::Vga);
        assert_eq!(d.device().metrics().snapshot().io_ignored_vga_mode, 12);
        // Rings are not consumed in VGA mode.
        d.push_raw(MockRing::Command, 0, 1).unwrap();
        assert_eq!(d.ring_header(MockRing::Command).unwrap().cons, 0);
        // MEMSLOT_ADD and CREATE_PRIMARY work and leave VGA mode.
        d.memslot_add(1, d.bars().ram, 3 << 20).unwrap();
        assert!(d.device().slots().get(1).is_some());
        d.memslot_add(2, d.bars().vram, 2 << 20).unwrap();
        d.create_primary(64, 64, None).unwrap();
        assert_eq!(d.device().mode(), Mode::Native);
        // The pending NOP is consumed now (and dropped as invalid).
        d.out(io::NOTIFY_CMD, 0);
        assert_eq!(d.ring_header(MockRing::Command).unwrap().cons, 1);
        // Legacy VGA register writes return revision 4 to VGA mode, not revision 5.
        d.device_mut().legacy_vga_write();
        assert_eq!(d.device().mode(), Mode::Native);
        let mut d4 = probed(4);
        d4.device_mut().legacy_vga_write();
        assert_eq!(d4.device().mode(), Mode::Vga);
        assert!(d4.device().primary_surface().is_none());
        assert_eq!(d4.sink().events.last(), Some(&SinkEvent::DestroyPrimary));
    }

    #[test]
    fn ports_secondary_device_resets_to_undefined() {
        let mut d = MockQxlDriver::new(QxlConfig {
            vga: false,
            ..config(5)
        })
        .unwrap();
        assert_eq!(d.device().mode(), Mode::Undefined);
        d.out(io::RESET, 0);
        assert_eq!(d.device().mode(), Mode::Undefined);
        d.probe().unwrap();
        d.out(io::UPDATE_AREA_ASYNC, 0);
        assert!(!d.device().guest_bug(), "empty update area is cancelled");
    }

    #[test]
    fn ports_cancel_paths_raise_io_cmd() {
        let mut d = undefined(5);
        let mut expect = d.irq_counts().io_cmd;
        // DESTROY_PRIMARY without a primary: cancelled, no bug.
        d.out(io::DESTROY_PRIMARY_ASYNC, 0);
        expect += 1;
        assert_eq!(d.irq_counts().io_cmd, expect);
        assert!(!d.device().guest_bug());
        // Empty update area: cancelled, no bug.
        d.update_area(0, Rect::new(5, 5, 5, 10)).unwrap();
        expect += 1;
        assert_eq!(d.irq_counts().io_cmd, expect);
        assert!(!d.device().guest_bug());
        assert!(
            !d.sink()
                .events
                .iter()
                .any(|e| matches!(e, SinkEvent::UpdateArea { .. }))
        );
        // Invalid values: guest bug, and IO_CMD anyway.
        for (port, value) in [
            (io::CREATE_PRIMARY_ASYNC, 1u8),
            (io::DESTROY_PRIMARY_ASYNC, 1),
            (io::DESTROY_SURFACE_ASYNC, 16),
            (io::MEMSLOT_ADD_ASYNC, 8),
        ] {
            let mut d = probed(5);
            let before = d.irq_counts();
            d.out(port, value);
            assert!(d.device().guest_bug(), "port {port} value {value}");
            let after = d.irq_counts();
            assert_eq!(after.io_cmd, before.io_cmd + 1, "port {port}");
            assert_eq!(errors(&d), 1);
            assert_eq!(d.device().async_in_flight(), None);
        }
        assert_eq!(d.irq_counts().io_cmd, expect);
    }

    #[test]
    fn ports_update_area_validation() {
        // Negative or inverted rectangles and ids above n_surfaces are guest bugs.
        for (surface, area) in [
            (0, Rect::new(-1, 0, 10, 10)),
            (0, Rect::new(10, 0, 5, 10)),
            (17, Rect::new(0, 0, 10, 10)),
        ] {
            let mut d = probed(5);
            d.update_area(surface, area).unwrap();
            assert!(d.device().guest_bug(), "{surface} {area:?}");
        }
        // id == n_surfaces reaches the renderer (QEMU compares with `>`), which knows nothing.
        let mut d = probed(5);
        d.update_area(16, Rect::new(0, 0, 10, 10)).unwrap();
        assert!(!d.device().guest_bug());
        // Areas larger than the surface are clipped when written back.
        d.update_area(0, Rect::new(0, 0, 1000, 1000)).unwrap();
        assert!(!d.device().guest_bug());
        assert_eq!(d.device().metrics().snapshot().update_area_write_errors, 0);
    }

    #[test]
    fn ports_masked_interrupts_set_pending_but_keep_line_low() {
        let mut d = probed(5);
        d.set_int_mask(0).unwrap();
        let asserts = d.device().irq().asserts();
        d.device_mut().io_write(io::FLUSH_SURFACES_ASYNC, 0);
        assert_eq!(pending(&d) & interrupt::IO_CMD, interrupt::IO_CMD);
        assert!(!d.device().irq().level());
        assert_eq!(d.device().irq().asserts(), asserts);
        // Polling driver (xf86-video-qxl UMS) sees the bit.
        assert_eq!(d.poll_int_pending(interrupt::IO_CMD), interrupt::IO_CMD);
        // Unmasking + UPDATE_IRQ raises the line for a still-pending bit.
        d.device_mut().io_write(io::FLUSH_SURFACES_ASYNC, 0);
        d.mem()
            .write_u32(ram_addr(&d, ram::INT_MASK), interrupt::IO_CMD)
            .unwrap();
        d.device_mut().io_write(io::UPDATE_IRQ, 0);
        assert!(d.device().irq().level());
    }

    #[test]
    fn ports_update_irq_drops_the_line_and_asserts_are_repeated() {
        let mut d = probed(5);
        let irq0 = (d.device().irq().asserts(), d.device().irq().deasserts());
        d.device_mut().io_write(io::FLUSH_SURFACES_ASYNC, 0);
        d.device_mut().io_write(io::FLUSH_SURFACES_ASYNC, 0);
        assert!(d.device().irq().level());
        // Every evaluation that finds the line asserted re-asserts it (irqfd resample).
        assert_eq!(d.device().irq().asserts(), irq0.0 + 2);
        // The guest clears int_pending; UPDATE_IRQ drops the line once.
        d.mem()
            .write_u32(ram_addr(&d, ram::INT_PENDING), 0)
            .unwrap();
        d.device_mut().io_write(io::UPDATE_IRQ, 0);
        assert!(!d.device().irq().level());
        assert!(!d.device().irq_level());
        assert_eq!(d.device().irq().deasserts(), irq0.1 + 1);
        d.device_mut().io_write(io::UPDATE_IRQ, 0);
        assert_eq!(
            d.device().irq().deasserts(),
            irq0.1 + 1,
            "no repeated deassert"
        );
        // INTx disable in the command register masks the line.
        d.device_mut().io_write(io::FLUSH_SURFACES_ASYNC, 0);
        assert!(d.device().irq().level());
        d.device_mut()
            .pci_config_write(4, &(0x0407u16).to_le_bytes());
        assert!(!d.device().irq().level());
        let mut st = [0u8; 2];
        d.device().pci_config_read(6, &mut st);
        assert_eq!(
            st[0] & 0x08,
            0x08,
            "status still shows the pending interrupt"
        );
        d.device_mut()
            .pci_config_write(4, &(0x0007u16).to_le_bytes());
        assert!(d.device().irq().level());
    }

    #[test]
    fn ports_memslot_add_rules() {
        let mut d = MockQxlDriver::new(config(5)).unwrap();
        d.out(io::RESET, 0);
        d.set_int_mask(interrupt::LINUX_MASK).unwrap();
        let bars = d.bars();
        // Slot over the VRAM BAR: offsets map into the VRAM part of device memory.
        d.memslot_add(2, bars.vram + 0x1000, 0x2000).unwrap();
        let s = *d.device().slots().get(2).unwrap();
        assert_eq!(
            (s.local_start, s.size, s.virt_start, s.generation),
            ((4 << 20) + 0x1000, 0x2000, 0, 0)
        );
        assert_eq!(
            d.device()
                .slots()
                .translate(make_phys(2, 0, 0x10), 4)
                .unwrap(),
            GuestAddress((4 << 20) + 0x1010)
        );
        assert_eq!(d.device().rom()[rom::SLOT_GENERATION], 0);
        // Adding an active slot is a guest bug.
        d.memslot_add(2, bars.vram, 0x1000).unwrap();
        assert!(d.device().guest_bug());
        // Ranges outside every BAR, straddling a BAR end, or inverted.
        for (start, end) in [
            (0x1000u64, 0x2000u64),
            (bars.ram + (4 << 20) - 0x1000, bars.ram + (4 << 20) + 0x1000),
            (bars.ram + 0x2000, bars.ram + 0x1000),
            (bars.rom, bars.rom + 0x1000),
        ] {
            let mut d = MockQxlDriver::new(config(5)).unwrap();
            d.out(io::RESET, 0);
            let mut b = [0u8; 16];
            le::put_u64(&mut b, 0, start);
            le::put_u64(&mut b, 8, end);
            d.mem()
                .write_bytes(ram_addr(&d, ram::MEM_SLOT), &b)
                .unwrap();
            d.out(io::MEMSLOT_ADD, 1);
            assert!(d.device().guest_bug(), "{start:#x}..{end:#x}");
            assert!(d.device().slots().get(1).is_none());
        }
        // MEMSLOT_DEL removes; out of range is a bug.
        let mut d = probed(5);
        d.out(io::MEMSLOT_DEL, 1);
        assert!(d.device().slots().get(1).is_none());
        assert!(!d.device().guest_bug());
        d.out(io::MEMSLOT_DEL, 8);
        assert!(d.device().guest_bug());
    }

    #[test]
    fn ports_create_primary_rules() {
        let mut d = probed(5);
        // A second CREATE_PRIMARY without DESTROY: guest bug, but it still proceeds.
        d.create_primary(32, 32, None).unwrap();
        assert!(d.device().guest_bug());
        assert_eq!(d.device().primary_surface().map(|s| s.width), Some(32));
        // Stride not a multiple of 4, stride i32::MIN, larger than vgamem.
        let bad = [
            SurfaceCreateRaw {
                stride: 62,
                ..raw(16, 16)
            },
            SurfaceCreateRaw {
                stride: i32::MIN,
                ..raw(16, 16)
            },
            raw(1024, 1024),
            SurfaceCreateRaw {
                format: 7,
                ..raw(16, 16)
            },
            SurfaceCreateRaw {
                mem: make_phys(5, 0, 0),
                ..raw(16, 16)
            },
        ];
        for r in bad {
            let mut d = undefined(5);
            d.create_primary_raw(&r).unwrap();
            assert!(d.device().guest_bug(), "{r:?}");
            assert!(d.device().primary_surface().is_none());
        }
        // DESTROY_PRIMARY then CREATE again is fine; mode follows.
        let mut d = probed(5);
        d.destroy_primary().unwrap();
        assert_eq!(d.device().mode(), Mode::Undefined);
        d.create_primary(64, 64, None).unwrap();
        assert!(!d.device().guest_bug());
        assert_eq!(bugs(&d), 0);
    }

    fn raw(w: u32, h: u32) -> SurfaceCreateRaw {
        SurfaceCreateRaw {
            width: w,
            height: h,
            stride: i32::try_from(w * 4).unwrap(),
            format: 32,
            position: 0,
            mouse_mode: 0,
            flags: 0,
            kind: 0,
            mem: make_phys(2, 0, 0),
        }
    }

    #[test]
    fn ports_surface_ports_reach_the_sink() {
        let mut d = probed(5);
        d.async_io(io::DESTROY_SURFACE_ASYNC, 3).unwrap();
        d.out(io::DESTROY_SURFACE_WAIT, 0);
        d.async_io(io::FLUSH_SURFACES_ASYNC, 0).unwrap();
        d.async_io(io::DESTROY_ALL_SURFACES_ASYNC, 0).unwrap();
        assert_eq!(d.device().mode(), Mode::Undefined);
        assert!(d.device().primary_surface().is_none());
        let tail: Vec<_> = d
            .sink()
            .events
            .iter()
            .rev()
            .take(4)
            .rev()
            .cloned()
            .collect();
        assert_eq!(
            tail,
            [
                SinkEvent::DestroySurfaceWait(3),
                SinkEvent::DestroySurfaceWait(0),
                SinkEvent::FlushSurfaces,
                SinkEvent::DestroyAllSurfaces
            ]
        );
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn ports_set_mode_compat() {
        let compat = || QxlConfig {
            vgamem_size: 2 << 20,
            ..config(1)
        };
        let mut d = MockQxlDriver::new(compat()).unwrap();
        // 2 MiB of vgamem: the compat primary is always 32-bit, stride -x*4.
        let modes = d.device().modes().to_vec();
        assert_eq!(modes[0].id, 0);
        let i32bpp = modes.iter().position(|m| m.bits == 32).unwrap();
        d.out(io::SET_MODE, u8::try_from(i32bpp).unwrap());
        assert!(!d.device().guest_bug());
        assert_eq!(d.device().mode(), Mode::Compat);
        let m = modes[i32bpp];
        let p = *d.device().primary_surface().unwrap();
        assert_eq!(
            (p.width, p.height, p.stride),
            (m.x_res, m.y_res, -i32::try_from(m.x_res * 4).unwrap())
        );
        assert_eq!(p.addr, GuestAddress(0));
        let slot0 = *d.device().slots().get(0).unwrap();
        assert_eq!((slot0.virt_start, slot0.local_start), (d.bars().ram, 0));
        assert_eq!(
            le::u32_at(d.device().rom(), rom::MODE),
            u32::try_from(i32bpp).unwrap()
        );
        // A 16-bit mode whose 32-bit primary would not fit vgamem: QEMU flags it.
        let mut d = MockQxlDriver::new(compat()).unwrap();
        let big16 = modes
            .iter()
            .position(|m| m.bits == 16 && u64::from(m.x_res * 4 * m.y_res) > 2 << 20)
            .unwrap();
        d.out(io::SET_MODE, u8::try_from(big16).unwrap());
        assert!(d.device().guest_bug());
        // Index past the filtered list.
        let mut d = MockQxlDriver::new(compat()).unwrap();
        d.out(io::SET_MODE, u8::try_from(modes.len()).unwrap());
        assert!(d.device().guest_bug());
    }

    #[test]
    fn ports_log_reads_log_buf_once() {
        let mut d = probed(5);
        let mut text = b"hello from the guest\n".to_vec();
        text.resize(4096, b'x'); // no NUL at all: bounded by the buffer
        d.mem()
            .write_bytes(ram_addr(&d, ram::LOG_BUF), &text)
            .unwrap();
        d.out(io::LOG, 0);
        assert_eq!(d.device().metrics().snapshot().log_messages, 1);
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn ports_client_present_and_client_monitors_config() {
        let mut d = probed(5);
        d.device_mut().set_client_present(&[0xa5; 70]);
        d.service_irq();
        let r = d.device().rom();
        assert_eq!(r[rom::CLIENT_PRESENT], 1);
        assert_eq!(&r[70..128], &[0xa5; 58]);
        // CLIENT is not in Linux's mask: pending but no interrupt.
        assert_eq!(pending(&d) & interrupt::CLIENT, interrupt::CLIENT);

        assert!(
            d.device_mut()
                .set_client_monitors_config(&[(0, 0, 1024, 768), (1024, 0, 800, 600)])
        );
        d.service_irq();
        assert_eq!(d.irq_counts().client_monitors_config, 1);
        let r = d.device().rom();
        assert_eq!(le::u16_at(r, 132), 2);
        assert_eq!(le::u32_at(r, 128), crc32(&r[132..1160]));
        assert_eq!(
            [
                le::u32_at(r, 152),
                le::u32_at(r, 156),
                le::u32_at(r, 160),
                le::u32_at(r, 164)
            ],
            [0, 1024, 600, 1824]
        );
        // Unchanged: handled, no interrupt.
        assert!(
            d.device_mut()
                .set_client_monitors_config(&[(0, 0, 1024, 768), (1024, 0, 800, 600)])
        );
        d.service_irq();
        assert_eq!(d.irq_counts().client_monitors_config, 1);
        // It survives a reset (shadow ROM).
        d.out(io::RESET, 0);
        assert_eq!(le::u16_at(d.device().rom(), 132), 2);

        // Refusals: int_mask 0, ~0, or without the bit; revision < 4.
        for mask in [0u32, u32::MAX, interrupt::IO_CMD] {
            let mut d = probed(5);
            d.set_int_mask(mask).unwrap();
            assert!(
                !d.device_mut()
                    .set_client_monitors_config(&[(0, 0, 640, 480)]),
                "{mask:#x}"
            );
            assert_eq!(le::u16_at(d.device().rom(), 132), 0);
        }
        let mut d = MockQxlDriver::new(config(3)).unwrap();
        d.set_int_mask(interrupt::LINUX_MASK).unwrap();
        assert!(
            !d.device_mut()
                .set_client_monitors_config(&[(0, 0, 640, 480)])
        );
        d.device_mut().set_client_present(&[1]);
        assert_eq!(d.device().rom()[rom::CLIENT_PRESENT], 0);
        // max_outputs caps the count.
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig {
            max_outputs: 2,
            ..config(5)
        })
        .unwrap();
        assert!(
            d.device_mut()
                .set_client_monitors_config(&[(0, 0, 1, 1); 5])
        );
        assert_eq!(le::u16_at(d.device().rom(), 132), 2);
    }
}
