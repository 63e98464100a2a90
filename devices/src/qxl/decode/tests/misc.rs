//! `message_*`, `monitors_config_*`, `memslot_*` through decoded pointers,
//! update commands and command types.

use spice_server::command::{Command, Head, MonitorsConfig, Rect, UpdateCmd};

use super::{Fx, SLOT1_SIZE, bitmap_image, copy_of, drawable, pattern};
use crate::error::Error;
use crate::qxl::chunks::phys_add;
use crate::qxl::decode::{
    Limits, QXL_CMD_DRAW, QXL_CMD_MESSAGE, QXL_CMD_NOP, QXL_CMD_UPDATE, QXL_COMMAND_FLAG_COMPAT,
    decode_monitors_config,
};
use crate::qxl::memslot::make_phys;
use crate::qxl::mock::encode::{EncodeOptions, encode_monitors_config, encode_monitors_config_raw};

// ---- messages --------------------------------------------------------------

#[test]
fn message_roundtrip() {
    let mut fx = Fx::new();
    fx.assert_roundtrip(&Command::Message(b"qxl: hello".to_vec()));
    fx.assert_roundtrip(&Command::Message(vec![]));
}

#[test]
fn message_unterminated_capped_at_100000() {
    let mut fx = Fx::new();
    let p = fx.raw(&vec![b'x'; 200_008]);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, p, 0),
        Err(Error::Unterminated(100_000))
    );
    // A NUL at text byte 100 000 is just outside the window.
    fx.write(phys_add(p, 8 + 100_000).unwrap(), &[0]);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, p, 0),
        Err(Error::Unterminated(100_000))
    );
    fx.write(phys_add(p, 8 + 99_999).unwrap(), &[0]);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, p, 0).unwrap().command,
        Command::Message(vec![b'x'; 99_999])
    );
}

#[test]
fn message_unterminated_at_slot_end() {
    let fx = Fx::new();
    let p = Fx::phys(SLOT1_SIZE - 58);
    fx.write(p, &[b'y'; 58]);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, p, 0),
        Err(Error::Unterminated(50))
    );
    // NUL on the slot's last byte.
    fx.write(Fx::phys(SLOT1_SIZE - 1), &[0]);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, p, 0).unwrap().command,
        Command::Message(vec![b'y'; 49])
    );
    // Header alone at the very end: empty window.
    let q = Fx::phys(SLOT1_SIZE - 8);
    assert_eq!(
        fx.decode(QXL_CMD_MESSAGE, q, 0),
        Err(Error::Unterminated(0))
    );
    let r = Fx::phys(SLOT1_SIZE - 7);
    assert!(matches!(
        fx.decode(QXL_CMD_MESSAGE, r, 0),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn message_limit_is_configurable() {
    let mut fx = Fx::new();
    fx.limits.max_message_len = 4;
    let (p, ty) = fx.encode(
        &Command::Message(b"abcd".to_vec()),
        &EncodeOptions::default(),
    );
    assert_eq!(fx.decode(ty, p, 0), Err(Error::Unterminated(4)));
    let (p, ty) = fx.encode(
        &Command::Message(b"abc".to_vec()),
        &EncodeOptions::default(),
    );
    assert_eq!(
        fx.decode(ty, p, 0).unwrap().command,
        Command::Message(b"abc".to_vec())
    );
}

// ---- monitors config -------------------------------------------------------

fn heads(n: u32) -> Vec<Head> {
    (0..n)
        .map(|i| Head {
            id: i,
            surface_id: 0,
            width: 1024 + i,
            height: 768,
            x: 1024 * i,
            y: 0,
            flags: i & 1,
        })
        .collect()
}

#[test]
fn monitors_config_roundtrip() {
    let mut fx = Fx::new();
    for (max_allowed, n) in [(4u16, 1u32), (4, 4), (0, 3), (16, 16)] {
        let cfg = MonitorsConfig {
            max_allowed,
            heads: heads(n),
        };
        let p = encode_monitors_config(&fx.mem, &mut fx.heap, &cfg).unwrap();
        assert_eq!(
            decode_monitors_config(&fx.mem, &fx.slots, p, &fx.limits).unwrap(),
            cfg
        );
    }
}

#[test]
fn monitors_config_count_zero_or_above_max_allowed() {
    let mut fx = Fx::new();
    let p = encode_monitors_config_raw(&fx.mem, &mut fx.heap, 0, 4, &heads(4)).unwrap();
    assert!(matches!(
        decode_monitors_config(&fx.mem, &fx.slots, p, &fx.limits),
        Err(Error::InvalidValue { value: 0, .. })
    ));
    let p = encode_monitors_config_raw(&fx.mem, &mut fx.heap, 5, 4, &heads(5)).unwrap();
    assert!(matches!(
        decode_monitors_config(&fx.mem, &fx.slots, p, &fx.limits),
        Err(Error::InvalidValue { value: 5, .. })
    ));
}

#[test]
fn monitors_config_heads_capped() {
    let mut fx = Fx::new();
    let p = encode_monitors_config_raw(&fx.mem, &mut fx.heap, 64, 0, &heads(64)).unwrap();
    let cfg = decode_monitors_config(&fx.mem, &fx.slots, p, &fx.limits).unwrap();
    assert_eq!(cfg.heads, heads(16));
    // The cap is what is read: a huge count with only 16 heads in memory works.
    let q = Fx::phys(SLOT1_SIZE - 4 - 16 * 28);
    fx.write(q, &[0xff, 0xff, 0, 0]);
    let cfg = decode_monitors_config(&fx.mem, &fx.slots, q, &fx.limits).unwrap();
    assert_eq!(cfg.heads.len(), 16);
    fx.limits = Limits {
        max_monitors: 17,
        ..Limits::default()
    };
    assert!(matches!(
        decode_monitors_config(&fx.mem, &fx.slots, q, &fx.limits),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn monitors_config_bad_pointer() {
    let fx = Fx::new();
    for p in [
        0u64,
        make_phys(9, 0, 0),
        make_phys(1, 0, 0x100),
        Fx::phys(SLOT1_SIZE - 3),
    ] {
        decode_monitors_config(&fx.mem, &fx.slots, p, &fx.limits).unwrap_err();
    }
}

// ---- update, NOP, unknown --------------------------------------------------

#[test]
fn update_cmd_roundtrip_and_compat() {
    let mut fx = Fx::new();
    let u = UpdateCmd {
        area: Rect::new(1, 2, 3, 4),
        update_id: 99,
        surface_id: 5,
    };
    fx.assert_roundtrip(&Command::Update(u));
    // QXLCompatUpdateCmd is 28 bytes and has no surface id.
    let p = Fx::phys(SLOT1_SIZE - 28);
    let mut b = [0u8; 28];
    b[8..12].copy_from_slice(&7i32.to_le_bytes());
    b[24..28].copy_from_slice(&3u32.to_le_bytes());
    fx.write(p, &b);
    fx.decode(QXL_CMD_UPDATE, p, 0).unwrap_err();
    assert_eq!(
        fx.decode(QXL_CMD_UPDATE, p, QXL_COMMAND_FLAG_COMPAT)
            .unwrap()
            .command,
        Command::Update(UpdateCmd {
            area: Rect {
                top: 7,
                ..Rect::default()
            },
            update_id: 3,
            surface_id: 0
        })
    );
}

#[test]
fn command_types_nop_and_unknown() {
    let mut fx = Fx::new();
    let p = fx.raw(&[0u8; 256]);
    for t in [QXL_CMD_NOP, 6, 0xffff_ffff] {
        assert!(matches!(
            fx.decode(t, p, 0),
            Err(Error::InvalidValue {
                field: "QXLCommand.type",
                ..
            })
        ));
    }
}

// ---- memslot checks through decoded pointers -------------------------------

#[test]
fn memslot_bad_pointers_everywhere() {
    let bad = [
        make_phys(8, 0, 0x2000),           // slot id == NUM_MEMSLOTS (CVE-2019-3813)
        make_phys(0xff, 0, 0x2000),        // far out of range
        make_phys(4, 0, 0x2000),           // inactive
        make_phys(super::SLOT, 0, 0x2000), // wrong generation
        Fx::phys(SLOT1_SIZE),              // offset at the slot end
        Fx::phys(0xffff_ffff_ffff),        // offset way past
    ];
    let mut fx = Fx::new();
    // The command itself.
    for &b in &bad {
        fx.decode(QXL_CMD_DRAW, b, 0).unwrap_err();
        fx.decode(QXL_CMD_MESSAGE, b, 0).unwrap_err();
    }
    // A pointer inside the command: the source image of a COPY.
    let d = drawable(copy_of(bitmap_image(2, 2)));
    for &b in &bad {
        let (p, ty) = fx.encode(&Command::Draw(d.clone()), &EncodeOptions::default());
        fx.write(phys_add(p, 123).unwrap(), &b.to_le_bytes());
        let r = fx.decode(ty, p, 0);
        assert!(
            matches!(
                r,
                Err(Error::SlotIdOutOfRange { .. }
                    | Error::SlotInactive(_)
                    | Error::SlotGeneration { .. }
                    | Error::OutsideSlot { .. })
            ),
            "{b:#x}: {r:?}"
        );
    }
}

#[test]
fn memslot_pointer_into_other_slot() {
    let mut fx = Fx::new();
    // A whole drawable in slot 2 (generation 0) is fine.
    let mut heap2 = crate::qxl::mock::encode::GuestHeap::new(
        super::SLOT2,
        0,
        super::SLOT2_BASE,
        0,
        super::SLOT2_SIZE,
    );
    let cmd = Command::Draw(drawable(copy_of(bitmap_image(2, 2))));
    let (p, ty) = crate::qxl::mock::encode::encode_command(&fx.mem, &mut heap2, &cmd, 1).unwrap();
    assert_eq!(fx.decode(ty, p, 0).unwrap().command, cmd);
    let _ = &mut fx;
}

#[test]
fn command_budget_caps_total_copy() {
    let mut fx = Fx::new();
    let cmd = Command::Draw(drawable(copy_of(bitmap_image(64, 64))));
    fx.limits.max_command_bytes = 64 * 64 * 4 - 1;
    let (p, ty) = fx.encode(&cmd, &EncodeOptions::default());
    assert!(matches!(fx.decode(ty, p, 0), Err(Error::TooLarge { .. })));
    fx.limits.max_command_bytes = 64 * 64 * 4;
    assert_eq!(fx.decode(ty, p, 0).unwrap().command, cmd);
    let _ = pattern(0);
}
