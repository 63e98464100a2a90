//! PCI configuration space: identity, class per variant, BAR sizing probes for
//! every BAR, the 64-bit BAR only when configured, revision selection and the
//! I/O BAR size per revision.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::Error;
    use devices::qxl::QxlConfig;
    use devices::qxl::mock::driver::MockQxlDriver;
    use devices::qxl::pci;

    fn cfg_u32(d: &MockQxlDriver, off: u16) -> u32 {
        let mut b = [0u8; 4];
        d.device().pci_config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn small(revision: u8, vga: bool) -> QxlConfig {
        QxlConfig {
            revision,
            vga,
            ram_size: 2 << 20,
            vram_size: 1 << 20,
            vgamem_size: 512 << 10,
            ..QxlConfig::default()
        }
    }

    #[test]
    fn pci_identity_and_class_per_variant() {
        for (vga, class) in [(true, 0x0300_0000u32), (false, 0x0380_0000)] {
            let d = MockQxlDriver::new(small(5, vga)).unwrap();
            assert_eq!(cfg_u32(&d, 0), 0x0100_1b36, "vendor/device");
            assert_eq!(cfg_u32(&d, 0x08), class | 5, "class code + revision");
            assert_eq!(cfg_u32(&d, 0x2c), 0x1100_1af4, "subsystem");
            let mut b = [0u8; 4];
            d.device().pci_config_read(0x0c, &mut b);
            assert_eq!(b[2], 0, "header type 0, single function");
            d.device().pci_config_read(0x3c, &mut b);
            assert_eq!(b[1], 1, "INTA#");
            assert_eq!(cfg_u32(&d, 0x34) & 0xff, 0, "no capabilities");
            assert_eq!(cfg_u32(&d, 0x30), 0, "no expansion ROM BAR");
            assert_eq!(cfg_u32(&d, 0x100), 0, "beyond the config space");
        }
    }

    #[test]
    fn pci_revision_selectable_and_io_bar_size() {
        for (rev, io) in [(1u8, 8u64), (2, 16), (3, 32), (4, 32), (5, 32)] {
            let mut d = MockQxlDriver::new(small(rev, true)).unwrap();
            assert_eq!(cfg_u32(&d, 0x08) & 0xff, u32::from(rev));
            assert_eq!(d.device().config().io_size(), io);
            assert_eq!(d.size_bar(3), (io, 1), "I/O BAR of revision {rev}");
        }
        for bad in [0u8, 6, 255] {
            let e = MockQxlDriver::new(small(bad, true)).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        }
    }

    #[test]
    fn pci_bar_sizing_probe_each_bar() {
        let mut d = MockQxlDriver::new(small(5, true)).unwrap();
        assert_eq!(d.size_bar(0), (2 << 20, 0), "RAM: mem32 non-prefetchable");
        assert_eq!(d.size_bar(1), (1 << 20, 0), "VRAM: mem32");
        assert_eq!(d.size_bar(2), (8192, 0), "ROM: mem32");
        assert_eq!(d.size_bar(3), (32, 1), "I/O");
        assert_eq!(d.size_bar(4), (0, 0), "no BAR4 by default");
        assert_eq!(d.size_bar(5), (0, 0));
        // The probe leaves the programmed bases intact.
        let bars = d.bars();
        assert_eq!(d.device().bar_address(0), Some(bars.ram));
        assert_eq!(d.device().bar_address(1), Some(bars.vram));
        assert_eq!(d.device().bar_address(2), Some(bars.rom));
        assert_eq!(d.device().bar_address(3), Some(0xc000));
        assert_eq!(d.device().bar_address(4), None);
        assert_eq!(d.device().bar_address(5), None);
    }

    #[test]
    fn pci_vram64_bar_only_when_configured() {
        let same = QxlConfig {
            vram64_size: 1 << 20,
            ..small(5, true)
        };
        let mut d = MockQxlDriver::new(same).unwrap();
        assert_eq!(d.size_bar(4), (0, 0), "vram64 == vram: no BAR4");
        let big = QxlConfig {
            vram64_size: 4 << 20,
            ..small(5, true)
        };
        let mut d = MockQxlDriver::new(big).unwrap();
        assert_eq!(d.size_bar(4), (4 << 20, 0xc), "mem64 prefetchable");
        assert_eq!(d.device().bar_address(4), Some(1 << 40));
        assert_eq!(
            d.device().config().device_memory_size(),
            (2 << 20) + (4 << 20)
        );
        assert_eq!(d.device().config().vram_local_base(), 2 << 20);
        // Revision 1 forces 4 KiB VRAM BARs.
        let mut d = MockQxlDriver::new(QxlConfig {
            vram64_size: 4 << 20,
            ..small(1, true)
        })
        .unwrap();
        assert_eq!(d.size_bar(1), (4096, 0));
        assert_eq!(d.size_bar(4), (0, 0));
    }

    #[test]
    fn pci_unaligned_and_partial_writes() {
        let mut d = MockQxlDriver::new(small(5, true)).unwrap();
        let bars = d.bars();
        // Byte-wise all-ones on BAR0 gives the size mask too.
        for i in 0..4u16 {
            d.device_mut().pci_config_write(0x10 + i, &[0xff]);
        }
        assert_eq!(cfg_u32(&d, 0x10), !((2u32 << 20) - 1));
        assert_eq!(
            d.device().bar_address(0),
            None,
            "all-ones reaches 4 GiB: unmapped"
        );
        // A 16-bit write at an odd offset straddling BAR0's top bytes.
        d.device_mut()
            .pci_config_write(0x10, &0x8000_0000u32.to_le_bytes());
        d.device_mut().pci_config_write(0x12, &[0x40, 0xc0]);
        assert_eq!(cfg_u32(&d, 0x10), 0xc040_0000 & !((2u32 << 20) - 1));
        // Read-only fields ignore writes.
        d.device_mut().pci_config_write(0, &[0, 0, 0, 0]);
        assert_eq!(cfg_u32(&d, 0), 0x0100_1b36);
        d.device_mut().pci_config_write(0x3d, &[4]);
        let mut b = [0u8; 2];
        d.device().pci_config_read(0x3c, &mut b);
        assert_eq!(b[1], 1);
        // Interrupt line is read/write.
        d.device_mut().pci_config_write(0x3c, &[11]);
        d.device().pci_config_read(0x3c, &mut b);
        assert_eq!(b[0], 11);
        // Disabling memory decoding unmaps the memory BARs but not the I/O BAR.
        d.device_mut()
            .pci_config_write(0x10, &u32::try_from(bars.ram).unwrap().to_le_bytes());
        d.device_mut()
            .pci_config_write(4, &pci::COMMAND_IO.to_le_bytes());
        assert_eq!(d.device().bar_address(0), None);
        assert_eq!(d.device().bar_address(3), Some(0xc000));
        // Only the writable command bits stick.
        d.device_mut().pci_config_write(4, &0xffffu16.to_le_bytes());
        let mut c = [0u8; 2];
        d.device().pci_config_read(4, &mut c);
        assert_eq!(u16::from_le_bytes(c), 0x0547);
    }

    #[test]
    fn pci_config_validation() {
        let bad = [
            QxlConfig {
                ram_size: 3 << 20,
                ..QxlConfig::default()
            },
            QxlConfig {
                vgamem_size: 64 << 20,
                ..QxlConfig::default()
            },
            QxlConfig {
                vram_size: 1000,
                ..QxlConfig::default()
            },
            QxlConfig {
                vram64_size: 3 << 26,
                ..QxlConfig::default()
            },
            QxlConfig {
                n_surfaces: 0,
                ..QxlConfig::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?}"
            );
        }
        QxlConfig::default().validate().unwrap();
    }
}
