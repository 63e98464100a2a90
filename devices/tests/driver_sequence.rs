//! Replays what Linux `drm/qxl` does from probe to first frame against the
//! device, checking every interrupt and ring index on the way: probe → create
//! primary → draw (a `DRAW_COPY` as `qxl_draw_dirty_fb` emits it) → update
//! area → cursor SET/MOVE → release.
#![cfg(feature = "test-utils")]

#[cfg(test)]
mod tests {
    use devices::qxl::abi::{interrupt, io};
    use devices::qxl::mock::driver::{MockQxlDriver, MockRing, RecordingSink, SinkEvent};
    use devices::qxl::{Mode, QxlConfig};
    use spice_server::command::{
        Clip, Command, CopyOp, Cursor, CursorCmd, CursorType, DrawOp, Drawable, Image, Point16,
        Rect,
    };
    use vm_memory::{Bytes, GuestAddress};

    /// The drawable `qxl_draw_dirty_fb` builds for one dirty rectangle of a
    /// `w × h` framebuffer: a top-down 32-bit bitmap of the clip's size, one
    /// clip rectangle, OPAQUE effect, ROP `OP_PUT`.
    pub(crate) fn dirty_fb_copy(clip: Rect, seed: u8) -> Command {
        let w = clip.width();
        let h = clip.height();
        let data: Vec<u8> = (0..w * h * 4)
            .map(|i| i.to_le_bytes()[0].wrapping_mul(seed))
            .collect();
        Command::Draw(Drawable {
            surface_id: 0,
            effect: 1,
            self_bitmap: None,
            bbox: clip,
            clip: Clip::Rects(vec![clip]),
            mm_time: 0,
            surfaces_dest: [-1; 3],
            surfaces_rects: [Rect::default(); 3],
            op: DrawOp::Copy(CopyOp::put(Image::rgb32(w, h, data))),
        })
    }

    fn cursor_set() -> Command {
        Command::Cursor(CursorCmd::Set {
            position: Point16 { x: 100, y: 50 },
            visible: true,
            shape: Cursor {
                unique: 0,
                kind: CursorType::Alpha,
                width: 64,
                height: 64,
                hot_spot_x: 1,
                hot_spot_y: 2,
                data: vec![0x7f; 64 * 64 * 4],
            },
        })
    }

    #[test]
    fn driver_sequence_linux_probe_draw_update_cursor_release() {
        let mut d = MockQxlDriver::new(QxlConfig::default()).unwrap();
        assert_eq!(d.device().mode(), Mode::Vga);

        // Probe: RESET, int_mask, two MEMSLOT_ADD_ASYNC each completing with IO_CMD.
        d.probe().unwrap();
        assert_eq!(d.irq_log(), &[interrupt::IO_CMD, interrupt::IO_CMD]);
        assert!(d.device().slots().get(1).is_some());
        assert!(d.device().slots().get(2).is_some());
        assert!(!d.device().guest_bug());
        assert!(!d.device().irq_level(), "UPDATE_IRQ must drop the line");

        // Create primary (1024x768, KEEP_DATA, slot 2).
        let (w, h) = (1024u32, 768u32);
        let init: Vec<u8> = vec![0x11; usize::try_from(w * h * 4).unwrap()];
        d.create_primary(w, h, Some(&init)).unwrap();
        assert_eq!(d.irq_counts().io_cmd, 3);
        assert_eq!(d.device().mode(), Mode::Native);
        let created = d
            .sink()
            .events
            .iter()
            .find_map(|e| match e {
                SinkEvent::CreatePrimary(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (created.width, created.height, created.stride),
            (1024, 768, 4096)
        );
        assert_eq!(created.initial.as_deref(), Some(init.as_slice()));

        // Draw: one DRAW_COPY with one clip rect; prod 0→1 reaches notify_on_prod 1.
        let clip = Rect::new(16, 8, 48, 40);
        let draw = dirty_fb_copy(clip, 3);
        let draw_id = d.push_command(&draw).unwrap();
        let cmd = d.ring_header(MockRing::Command).unwrap();
        assert_eq!((cmd.prod, cmd.cons, cmd.notify_on_prod), (1, 1, 2));
        assert_eq!(d.sink().commands().last().copied(), Some(&draw));
        assert_eq!(
            d.device().pending_releases(),
            1,
            "released at once, not yet published"
        );
        assert_eq!(d.irq_counts().display, 0);

        // Update area: the rendered pixels land in the primary's guest memory.
        d.update_area(0, clip).unwrap();
        assert_eq!(d.irq_counts().io_cmd, 4);
        let prim = *d.device().primary_surface().unwrap();
        for (x, y) in [(16u32, 8u32), (47, 39), (30, 20)] {
            let mut px = [0u8; 4];
            d.mem()
                .read_slice(
                    &mut px,
                    GuestAddress(prim.addr.0 + u64::from(y) * 4096 + u64::from(x) * 4),
                )
                .unwrap();
            assert_eq!(
                u32::from_le_bytes(px),
                RecordingSink::pattern_pixel(0, x, y)
            );
        }
        let mut outside = [0u8; 4];
        d.mem()
            .read_slice(&mut outside, GuestAddress(prim.addr.0 + 8 * 4096 + 15 * 4))
            .unwrap();
        assert_eq!(outside, [0x11; 4], "pixels outside the area are untouched");

        // Cursor SET then MOVE on the cursor ring.
        let set_id = d.push_command(&cursor_set()).unwrap();
        let mv = Command::Cursor(CursorCmd::Move {
            position: Point16 { x: 200, y: 100 },
        });
        let move_id = d.push_command(&mv).unwrap();
        let cur = d.ring_header(MockRing::Cursor).unwrap();
        assert_eq!((cur.prod, cur.cons, cur.notify_on_prod), (2, 2, 3));
        assert_eq!(d.sink().commands().last().copied(), Some(&mv));
        assert_eq!(d.irq_counts().cursor, 0);

        // Releases: nothing published yet; the guest arms notify_on_prod = 1.
        assert_eq!(d.drain_releases().unwrap(), Vec::<u64>::new());
        let rel = d.release_ring_header().unwrap();
        assert_eq!((rel.prod, rel.cons, rel.notify_on_prod), (0, 0, 1));
        // NOTIFY_OOM with an empty release ring flushes the partial batch → DISPLAY.
        d.notify_oom();
        assert_eq!(d.irq_counts().display, 1);
        assert_eq!(d.drain_releases().unwrap(), vec![draw_id, set_id, move_id]);
        assert_eq!(d.outstanding(), 0);
        let rel = d.release_ring_header().unwrap();
        assert_eq!((rel.prod, rel.cons, rel.notify_on_prod), (1, 1, 2));

        // Every interrupt the handler saw, in order.
        assert_eq!(
            d.irq_log(),
            &[
                interrupt::IO_CMD,
                interrupt::IO_CMD,
                interrupt::IO_CMD,
                interrupt::IO_CMD,
                interrupt::DISPLAY
            ]
        );
        assert!(!d.device().guest_bug());
        let m = d.device().metrics().snapshot();
        assert_eq!(m.cmd_ring_commands, 1);
        assert_eq!(m.cursor_ring_commands, 2);
        assert_eq!(m.release_batches_published, 1);
        assert_eq!(m.guest_bugs, 0);
    }

    #[test]
    fn driver_sequence_surface_create_update_destroy() {
        use spice_server::command::{SurfaceCmd, SurfaceCreate, SurfaceFormat};
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig::default()).unwrap();
        d.create_primary(640, 480, None).unwrap();
        // A bottom-up off-screen surface, as the eviction path reads it back.
        let s = SurfaceCreate {
            surface_id: 1,
            format: SurfaceFormat::Xrgb32,
            width: 64,
            height: 32,
            stride: -256,
            flags: 1,
            position: 0,
            initial: Some(vec![0x22; 64 * 32 * 4]),
        };
        d.push_command(&Command::Surface(SurfaceCmd::Create(s)))
            .unwrap();
        let sm = *d.device().surface(1).unwrap();
        d.update_area(1, Rect::new(0, 0, 64, 32)).unwrap();
        // Row y is at addr + (height - 1 - y) * 256.
        for (x, y) in [(0u32, 0u32), (63, 31), (5, 7)] {
            let mut px = [0u8; 4];
            let off = u64::from(31 - y) * 256 + u64::from(x) * 4;
            d.mem()
                .read_slice(&mut px, GuestAddress(sm.addr.0 + off))
                .unwrap();
            assert_eq!(
                u32::from_le_bytes(px),
                RecordingSink::pattern_pixel(1, x, y)
            );
        }
        d.push_command(&Command::Surface(SurfaceCmd::Destroy { surface_id: 1 }))
            .unwrap();
        assert!(d.device().surface(1).is_none());
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap().len(), 2);
        assert_eq!(d.outstanding(), 0);
    }

    #[test]
    fn driver_sequence_full_command_ring_waits_for_display() {
        use devices::qxl::mock::driver::NotifyMode;
        let mut d = MockQxlDriver::with_linux_probe(QxlConfig::default()).unwrap();
        d.create_primary(128, 128, None).unwrap();
        d.set_notify_mode(NotifyMode::Eventfd);
        let draw = dirty_fb_copy(Rect::new(0, 0, 4, 4), 1);
        for _ in 0..32 {
            d.push_command(&draw).unwrap();
        }
        assert_eq!(
            d.notifications(),
            1,
            "only the first push reaches notify_on_prod"
        );
        let h = d.ring_header(MockRing::Command).unwrap();
        assert_eq!(h.prod.wrapping_sub(h.cons), 32, "ring full");
        // The 33rd push finds the ring full, arms notify_on_cons, the device drains it.
        d.push_command(&draw).unwrap();
        // One handler run sees DISPLAY for both notify_on_cons and the published batch of 32.
        assert_eq!(d.irq_counts().display, 1);
        assert_eq!(d.device().metrics().snapshot().release_batches_published, 1);
        assert_eq!(d.notifications(), 2, "the device re-armed notify_on_prod");
        d.run_worker();
        assert_eq!(d.sink().commands().len(), 33);
        d.out(io::FLUSH_RELEASE, 0);
        assert_eq!(d.drain_releases().unwrap().len(), 33);
    }
}
