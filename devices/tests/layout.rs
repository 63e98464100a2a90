//! Layout tests: every `QXLRom` and `QXLRam` offset against the tables of
//! `shared/spec/qxl-device.md` §4–§6, the ROM contents QEMU writes, the mode
//! table, and the client monitors config CRC.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::QxlConfig;
    use devices::qxl::abi::{self, ram, ring, rom, surface_create as sc};
    use devices::qxl::guest::{GuestView, le};
    use devices::qxl::mock::driver::{MockQxlDriver, MockRing};
    use devices::qxl::rom::{
        ClientHead, NUM_MODES, crc32, filtered_modes, mode_table, write_client_monitors_config,
    };

    #[test]
    fn layout_rom_offsets_match_spec() {
        // (offset, size, field) from spec §4.
        let table: &[(usize, usize, &str)] = &[
            (rom::MAGIC, 0, "magic"),
            (rom::ID, 4, "id"),
            (rom::UPDATE_ID, 8, "update_id"),
            (rom::COMPRESSION_LEVEL, 12, "compression_level"),
            (rom::LOG_LEVEL, 16, "log_level"),
            (rom::MODE, 20, "mode"),
            (rom::MODES_OFFSET, 24, "modes_offset"),
            (rom::NUM_PAGES, 28, "num_pages"),
            (rom::PAGES_OFFSET, 32, "pages_offset"),
            (rom::DRAW_AREA_OFFSET, 36, "draw_area_offset"),
            (rom::SURFACE0_AREA_SIZE, 40, "surface0_area_size"),
            (rom::RAM_HEADER_OFFSET, 44, "ram_header_offset"),
            (rom::MM_CLOCK, 48, "mm_clock"),
            (rom::N_SURFACES, 52, "n_surfaces"),
            (rom::FLAGS, 56, "flags"),
            (rom::SLOTS_START, 64, "slots_start"),
            (rom::SLOTS_END, 65, "slots_end"),
            (rom::SLOT_GEN_BITS, 66, "slot_gen_bits"),
            (rom::SLOT_ID_BITS, 67, "slot_id_bits"),
            (rom::SLOT_GENERATION, 68, "slot_generation"),
            (rom::CLIENT_PRESENT, 69, "client_present"),
            (rom::CLIENT_CAPABILITIES, 70, "client_capabilities"),
            (
                rom::CLIENT_MONITORS_CONFIG_CRC,
                128,
                "client_monitors_config_crc",
            ),
            (
                rom::CLIENT_MONITORS_CONFIG,
                132,
                "client_monitors_config.count",
            ),
            (
                rom::CLIENT_MONITORS_CONFIG_HEADS,
                136,
                "client_monitors_config.heads",
            ),
            (rom::SIZE, 1160, "sizeof(QXLRom)"),
        ];
        for &(got, want, name) in table {
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(rom::CLIENT_CAPABILITIES_LEN, 58);
        assert_eq!(rom::CLIENT_MONITORS_CONFIG_SIZE, 4 + 64 * 16);
        assert_eq!(rom::MODE_SIZE, 32);
    }

    #[test]
    fn layout_ram_offsets_match_spec() {
        let table: &[(u64, u64, &str)] = &[
            (ram::MAGIC, 0, "magic"),
            (ram::INT_PENDING, 4, "int_pending"),
            (ram::INT_MASK, 8, "int_mask"),
            (ram::LOG_BUF, 12, "log_buf"),
            (ram::CMD_RING, 4108, "cmd_ring"),
            (ram::CMD_RING + ring::ITEMS, 4128, "cmd_ring.items"),
            (ram::CURSOR_RING, 4640, "cursor_ring"),
            (ram::CURSOR_RING + ring::ITEMS, 4660, "cursor_ring.items"),
            (ram::RELEASE_RING, 5172, "release_ring"),
            (ram::RELEASE_RING + ring::ITEMS, 5192, "release_ring.items"),
            (ram::UPDATE_AREA, 5256, "update_area"),
            (ram::UPDATE_SURFACE, 5272, "update_surface"),
            (ram::MEM_SLOT, 5276, "mem_slot.mem_start"),
            (ram::MEM_SLOT + 8, 5284, "mem_slot.mem_end"),
            (ram::CREATE_SURFACE, 5292, "create_surface"),
            (ram::FLAGS, 5332, "flags"),
            (ram::MONITORS_CONFIG, 5340, "monitors_config"),
            (ram::SIZE, 5348, "sizeof(QXLRam)"),
        ];
        for &(got, want, name) in table {
            assert_eq!(got, want, "{name}");
        }
        // Ring sizes: header 20 + 32 × 16 = 532, header 20 + 8 × 8 = 84.
        assert_eq!(ram::CURSOR_RING - ram::CMD_RING, 532);
        assert_eq!(ram::RELEASE_RING - ram::CURSOR_RING, 532);
        assert_eq!(ram::UPDATE_AREA - ram::RELEASE_RING, 84);
        assert_eq!(ram::LOG_BUF_LEN, 4096);
        assert_eq!(ram::HEADER_SIZE, 8192);
        // Ring header fields (spec §6).
        assert_eq!(
            [
                ring::NUM_ITEMS,
                ring::PROD,
                ring::NOTIFY_ON_PROD,
                ring::CONS,
                ring::NOTIFY_ON_CONS,
                ring::ITEMS
            ],
            [0, 4, 8, 12, 16, 20]
        );
        // QXLSurfaceCreate (spec §5).
        assert_eq!(
            [
                sc::WIDTH,
                sc::HEIGHT,
                sc::STRIDE,
                sc::FORMAT,
                sc::POSITION,
                sc::MOUSE_MODE,
                sc::FLAGS,
                sc::TYPE,
                sc::MEM,
                sc::SIZE
            ],
            [0, 4, 8, 12, 16, 20, 24, 28, 32, 40]
        );
    }

    #[test]
    fn layout_rom_contents_default_config() {
        let d = MockQxlDriver::new(QxlConfig::default()).unwrap();
        let r = d.device().rom();
        assert_eq!(r.len(), 8192);
        assert_eq!(d.device().config().rom_size(), 8192);
        let u = |o| le::u32_at(r, o);
        assert_eq!(u(rom::MAGIC), 0x4f52_5851);
        assert_eq!(&r[0..4], b"QXRO");
        assert_eq!(u(rom::ID), 0);
        assert_eq!(u(rom::UPDATE_ID), 0);
        assert_eq!(u(rom::MODES_OFFSET), 1160);
        let surface0 = 16u32 << 20;
        assert_eq!(u(rom::SURFACE0_AREA_SIZE), surface0);
        assert_eq!(u(rom::PAGES_OFFSET), surface0);
        assert_eq!(u(rom::DRAW_AREA_OFFSET), 0);
        assert_eq!(u(rom::RAM_HEADER_OFFSET), (64 << 20) - 8192);
        assert_eq!(u(rom::NUM_PAGES), ((64 << 20) - 8192 - surface0) / 4096);
        assert_eq!(u(rom::N_SURFACES), 1024);
        assert_eq!(le::u64_at(r, rom::FLAGS), 0);
        assert_eq!(
            &r[rom::SLOTS_START..=rom::CLIENT_PRESENT],
            &[1, 7, 8, 8, 0, 0]
        );
        assert_eq!(u(rom::CLIENT_MONITORS_CONFIG_CRC), 0);
        // The mode list: 128 entries for 16 MiB of vgamem, ids of the unfiltered table.
        assert_eq!(u(1160), 128);
        let first = (0..8).map(|i| u(1164 + i * 4)).collect::<Vec<_>>();
        assert_eq!(first, [0, 640, 480, 16, 1280, 187, 140, 0]);
        let last = 1164 + 127 * 32;
        assert_eq!(u(last), 134, "id of the last mode that fits");
        assert!(last + 32 <= 5900);
        // rom_read agrees with rom().
        let mut b = [0u8; 4];
        d.device().rom_read(rom::RAM_HEADER_OFFSET as u64, &mut b);
        assert_eq!(u32::from_le_bytes(b), (64 << 20) - 8192);
        let mut beyond = [0xaa; 2];
        d.device().rom_read(8191, &mut beyond);
        assert_eq!(beyond, [0, 0]);
    }

    #[test]
    fn layout_ram_header_after_reset() {
        let d = MockQxlDriver::new(QxlConfig::default()).unwrap();
        let base = d.ram_header().base();
        assert_eq!(base, (64 << 20) - 8192);
        let m = d.mem();
        let u = |o: u64| m.read_u32(vm_memory::GuestAddress(base + o)).unwrap();
        assert_eq!(u(ram::MAGIC), abi::RAM_MAGIC);
        assert_eq!(u(ram::INT_PENDING), 0);
        assert_eq!(u(ram::INT_MASK), 0);
        for (ring, n) in [(MockRing::Command, 32), (MockRing::Cursor, 32)] {
            let h = d.ring_header(ring).unwrap();
            assert_eq!(
                (
                    h.num_items,
                    h.prod,
                    h.notify_on_prod,
                    h.cons,
                    h.notify_on_cons
                ),
                (n, 0, 1, 0, 0)
            );
        }
        let h = d.release_ring_header().unwrap();
        assert_eq!(
            (
                h.num_items,
                h.prod,
                h.notify_on_prod,
                h.cons,
                h.notify_on_cons
            ),
            (8, 0, 1, 0, 0)
        );
    }

    #[test]
    fn layout_mode_table() {
        let all = mode_table();
        assert_eq!(all.len(), NUM_MODES);
        // Four entries per resolution: (16,0) (32,0) (16,1) (32,1).
        let m = &all[4 * 16..4 * 16 + 4];
        assert!(m.iter().all(|e| e.x_res == 1366 && e.y_res == 768));
        assert_eq!(
            m.iter()
                .map(|e| (e.bits, e.orientation))
                .collect::<Vec<_>>(),
            [(16, 0), (32, 0), (16, 1), (32, 1)]
        );
        assert_eq!((m[0].id, m[0].stride, m[1].stride), (64, 2732, 5464));
        assert_eq!((m[0].x_mili, m[0].y_mili), (401, 225));
        assert_eq!(
            all.last()
                .map(|e| (e.id, e.x_res, e.y_res, e.x_mili, e.y_mili)),
            Some((147, 8192, 4320, 2405, 1268))
        );
        for e in &all {
            assert_eq!(e.stride, e.x_res * e.bits / 8);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let mili = |v: u32| (f64::from(v) * 0.293_687_5) as u32;
            assert_eq!((e.x_mili, e.y_mili), (mili(e.x_res), mili(e.y_res)));
        }
        // Filtering by vgamem keeps unfiltered ids.
        for (mib, count) in [
            (8u64, 106usize),
            (16, 128),
            (32, 138),
            (64, 142),
            (256, 148),
        ] {
            let f = filtered_modes(mib << 20);
            assert_eq!(f.len(), count, "{mib} MiB");
            assert!(
                f.iter()
                    .all(|e| u64::from(e.y_res) * u64::from(e.stride) <= mib << 20)
            );
        }
        let ids: Vec<u32> = filtered_modes(16 << 20).iter().map(|e| e.id).collect();
        assert_eq!(&ids[ids.len() - 6..], &[124, 126, 128, 130, 132, 134]);
    }

    #[test]
    fn layout_client_monitors_config_crc() {
        // CRC-32, reflected poly 0xEDB88320, init 0, no final xor.
        assert_eq!(crc32(b"123456789"), 0x2dfd_2d88);
        let mut block = vec![0u8; 1028];
        block[0] = 1;
        block[12..16].copy_from_slice(&768u32.to_le_bytes());
        block[16..20].copy_from_slice(&1024u32.to_le_bytes());
        assert_eq!(crc32(&block), 0x3dec_149c);

        let mut r = vec![0u8; 8192];
        let head = ClientHead {
            x: 0,
            y: 0,
            width: 1024,
            height: 768,
        };
        assert!(write_client_monitors_config(&mut r, &[head], 64));
        assert_eq!(&r[132..132 + 1028], block.as_slice());
        assert_eq!(le::u32_at(&r, 128), 0x3dec_149c);
        assert_eq!(crc32(&r[132..1160]), le::u32_at(&r, 128));
        // Same content again: unchanged.
        assert!(!write_client_monitors_config(&mut r, &[head], 64));
        // Heads are top, left, bottom, right; count is capped.
        let heads: Vec<ClientHead> = (0..70)
            .map(|i| ClientHead {
                x: i * 10,
                y: 5,
                width: 100,
                height: 50,
            })
            .collect();
        assert!(write_client_monitors_config(&mut r, &heads, 4));
        assert_eq!(le::u16_at(&r, 132), 4);
        assert_eq!(
            [
                le::u32_at(&r, 136 + 16),
                le::u32_at(&r, 140 + 16),
                le::u32_at(&r, 144 + 16),
                le::u32_at(&r, 148 + 16)
            ],
            [5, 10, 55, 110]
        );
        assert_eq!(
            le::u32_at(&r, 136 + 4 * 16),
            0,
            "heads past count are zeroed"
        );
        write_client_monitors_config(&mut r, &heads, 64);
        assert_eq!(le::u16_at(&r, 132), 64);
    }
}
