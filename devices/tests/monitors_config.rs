//! Guest monitors configuration through `MONITORS_CONFIG_ASYNC` (THREATS row 7,
//! CVE-2015-3247 class): count vs `max_allowed` vs the buffer, always
//! completing with `IO_CMD` and never latching a guest bug.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::QxlConfig;
    use devices::qxl::abi::io;
    use devices::qxl::memslot::make_phys;
    use devices::qxl::mock::driver::{MockQxlDriver, SinkEvent};
    use spice_server::command::{Head, MonitorsConfig};

    fn driver() -> MockQxlDriver {
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig {
            ram_size: 4 << 20,
            vram_size: 1 << 20,
            vgamem_size: 1 << 20,
            ..QxlConfig::default()
        })
        .unwrap();
        d.create_primary(64, 64, None).unwrap();
        d
    }

    fn head(id: u32, w: u32) -> Head {
        Head {
            id,
            surface_id: 0,
            width: w,
            height: 600,
            x: id * w,
            y: 0,
            flags: 0,
        }
    }

    fn last_config(d: &MockQxlDriver) -> Option<MonitorsConfig> {
        d.sink().events.iter().rev().find_map(|e| match e {
            SinkEvent::MonitorsConfig(c) => Some(c.clone()),
            _ => None,
        })
    }

    fn raw_config(d: &mut MockQxlDriver, count: u16, max_allowed: u16, heads: &[Head]) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&max_allowed.to_le_bytes());
        for h in heads {
            for v in [h.id, h.surface_id, h.width, h.height, h.x, h.y, h.flags] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        d.alloc_raw(&b).unwrap()
    }

    #[test]
    fn monitors_config_linux_layout_reaches_the_sink() {
        let mut d = driver();
        // Linux: 4 heads allocated, max_allowed 4, disabled heads 0x0.
        let cfg = MonitorsConfig {
            max_allowed: 4,
            heads: vec![
                head(0, 800),
                head(1, 1024),
                Head {
                    id: 2,
                    ..Head::default()
                },
                Head {
                    id: 3,
                    ..Head::default()
                },
            ],
        };
        d.monitors_config(&cfg).unwrap();
        assert_eq!(last_config(&d), Some(cfg));
        assert_eq!(d.device().metrics().snapshot().monitors_config_sent, 1);
    }

    #[test]
    fn monitors_config_count_vs_max_allowed() {
        let mut d = driver();
        let heads = [head(0, 640), head(1, 640), head(2, 640)];
        // count 0: ignored (still IO_CMD, which async_io checks).
        let p = raw_config(&mut d, 0, 4, &heads);
        d.monitors_config_at(p).unwrap();
        // count > max_allowed: ignored.
        let p = raw_config(&mut d, 3, 2, &heads);
        d.monitors_config_at(p).unwrap();
        assert_eq!(last_config(&d), None);
        let m = d.device().metrics().snapshot();
        assert_eq!((m.monitors_config_ignored, m.monitors_config_sent), (2, 0));
        // max_allowed 0 means "no limit given".
        let p = raw_config(&mut d, 3, 0, &heads);
        d.monitors_config_at(p).unwrap();
        assert_eq!(last_config(&d).map(|c| c.heads.len()), Some(3));
        // count < heads present: only count heads are read.
        let p = raw_config(&mut d, 1, 4, &heads);
        d.monitors_config_at(p).unwrap();
        assert_eq!(last_config(&d).map(|c| c.heads), Some(vec![heads[0]]));
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn monitors_config_count_beyond_buffer_or_limit() {
        let mut d = driver();
        // A count whose heads run past the end of memslot 1: rejected by the translator.
        let slot_size = d.device().slots().get(1).unwrap().size;
        let at = slot_size - 4 - 28;
        let mut b = Vec::new();
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&[0u8; 28]);
        let addr = d.addr_of(make_phys(1, 0, at)).unwrap();
        d.write_raw(addr, &b).unwrap();
        d.monitors_config_at(make_phys(1, 0, at)).unwrap();
        assert_eq!(last_config(&d), None);
        // Exactly one head fits: accepted.
        let mut b1 = b.clone();
        b1[0] = 1;
        d.write_raw(addr, &b1).unwrap();
        d.monitors_config_at(make_phys(1, 0, at)).unwrap();
        assert_eq!(last_config(&d).map(|c| c.heads.len()), Some(1));
        // More heads than the device keeps (16): the rest are dropped.
        let many: Vec<Head> = (0..40).map(|i| head(i, 10)).collect();
        let p = raw_config(&mut d, 40, 0, &many);
        d.monitors_config_at(p).unwrap();
        assert_eq!(last_config(&d).map(|c| c.heads.len()), Some(16));
        // u16::MAX heads claimed with max_allowed u16::MAX: capped read, no huge allocation.
        let p = raw_config(&mut d, u16::MAX, u16::MAX, &many);
        d.monitors_config_at(p).unwrap();
        assert_eq!(last_config(&d).map(|c| c.heads.len()), Some(16));
        assert!(!d.device().guest_bug());
    }

    #[test]
    fn monitors_config_bad_pointer_is_ignored() {
        let mut d = driver();
        for phys in [0u64, make_phys(6, 0, 0), make_phys(1, 9, 0x1000), u64::MAX] {
            d.monitors_config_at(phys).unwrap();
        }
        assert_eq!(last_config(&d), None);
        assert_eq!(d.device().metrics().snapshot().monitors_config_ignored, 4);
        assert!(!d.device().guest_bug());
        // Revision 3 has no such port: a guest bug.
        let mut d = MockQxlDriver::new(QxlConfig {
            revision: 3,
            ram_size: 4 << 20,
            vram_size: 1 << 20,
            vgamem_size: 1 << 20,
            ..QxlConfig::default()
        })
        .unwrap();
        d.out(io::MONITORS_CONFIG_ASYNC, 0);
        assert!(d.device().guest_bug());
    }
}
