//! `cursor_*`: cursor shapes with every type and size (CVE-2021-4206/4207).

use spice_server::command::{Command, Cursor, CursorCmd, CursorType, Point16};

use super::{Fx, pattern};
use crate::error::Error;
use crate::qxl::decode::{CURSOR_CMD_SIZE, QXL_CMD_CURSOR, cursor_data_size};
use crate::qxl::guest::le;
use crate::qxl::mock::encode::write_embedded_chain;

const TYPES: [CursorType; 7] = [
    CursorType::Alpha,
    CursorType::Mono,
    CursorType::Color4,
    CursorType::Color8,
    CursorType::Color16,
    CursorType::Color24,
    CursorType::Color32,
];

/// Write a QXLCursor with the given header fields and `data` in a chain; a
/// SET command pointing at it. Returns the command's `QXLPHYSICAL`.
fn cursor_cmd(fx: &mut Fx, kind: u16, w: u16, h: u16, data_size: u32, data: &[u8]) -> u64 {
    let mut hdr = [0u8; 22];
    le::put_u16(&mut hdr, 8, kind);
    le::put_u16(&mut hdr, 10, w);
    le::put_u16(&mut hdr, 12, h);
    le::put_u32(&mut hdr, 18, data_size);
    let shape = write_embedded_chain(&fx.mem, &mut fx.heap, &hdr, data, Some(4096)).unwrap();
    // Patch the first chunk's data_size to what the chain really holds (already so).
    let mut cmd = [0u8; CURSOR_CMD_SIZE];
    le::put_u64(&mut cmd, 14, shape);
    fx.raw(&cmd)
}

fn shape(kind: CursorType, w: u16, h: u16) -> Cursor {
    Cursor {
        unique: 0xdead,
        kind,
        width: w,
        height: h,
        hot_spot_x: w / 2,
        hot_spot_y: h / 2,
        data: pattern(usize::try_from(cursor_data_size(kind, w, h)).unwrap()),
    }
}

#[test]
fn cursor_size_table() {
    assert_eq!(cursor_data_size(CursorType::Alpha, 64, 64), 16384);
    assert_eq!(cursor_data_size(CursorType::Mono, 64, 64), 1024);
    assert_eq!(cursor_data_size(CursorType::Mono, 9, 2), 8);
    assert_eq!(cursor_data_size(CursorType::Color4, 3, 2), 4 + 64 + 2);
    assert_eq!(cursor_data_size(CursorType::Color8, 3, 2), 6 + 1024 + 2);
    assert_eq!(cursor_data_size(CursorType::Color16, 3, 2), 12 + 2);
    assert_eq!(cursor_data_size(CursorType::Color24, 3, 2), 18 + 2);
    assert_eq!(cursor_data_size(CursorType::Color32, 3, 2), 24 + 2);
    // No overflow at the u16 limit (CVE-2021-4206: w*h*4 wrapped in 32 bits).
    assert_eq!(
        cursor_data_size(CursorType::Alpha, u16::MAX, u16::MAX),
        4 * 65535 * 65535
    );
}

#[test]
fn cursor_roundtrip_every_type() {
    let mut fx = Fx::new();
    for kind in TYPES {
        for (w, h) in [(0, 0), (1, 1), (7, 3), (8, 8), (9, 17), (64, 64)] {
            fx.assert_roundtrip(&Command::Cursor(CursorCmd::Set {
                position: Point16 { x: -5, y: 7 },
                visible: true,
                shape: shape(kind, w, h),
            }));
        }
    }
}

#[test]
fn cursor_move_hide_trail_roundtrip() {
    let mut fx = Fx::new();
    for c in [
        CursorCmd::Move {
            position: Point16 { x: 100, y: -1 },
        },
        CursorCmd::Hide,
        CursorCmd::Trail {
            length: 5,
            frequency: 9,
        },
    ] {
        fx.assert_roundtrip(&Command::Cursor(c));
    }
}

#[test]
fn cursor_width_height_type_sweep_to_u16_max() {
    let mut fx = Fx::new();
    let dims = [0u16, 1, 7, 8, 9, 511, 512, 513, 4096, 32767, 32768, 65535];
    for kind in TYPES {
        for &w in &dims {
            for &h in &dims {
                let needed = cursor_data_size(kind, w, h);
                let ok_dims = w <= 512 && h <= 512;
                let data_size = u32::try_from(needed).unwrap_or(u32::MAX);
                // Only back the valid ones with real data; the others must fail
                // before the chain is touched.
                let data = if ok_dims {
                    pattern(usize::try_from(needed).unwrap())
                } else {
                    vec![]
                };
                fx.heap.next = 0x1000;
                let p = cursor_cmd(&mut fx, kind as u16, w, h, data_size, &data);
                let r = fx.decode(QXL_CMD_CURSOR, p, 0);
                if ok_dims {
                    let d = r.unwrap();
                    let Command::Cursor(CursorCmd::Set { shape, .. }) = d.command else {
                        panic!("not a SET");
                    };
                    assert_eq!(u64::try_from(shape.data.len()).unwrap(), needed);
                } else {
                    assert!(
                        matches!(r, Err(Error::TooLarge { .. })),
                        "{kind:?} {w}x{h}: {r:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn cursor_mono_vs_alpha_sizes() {
    let mut fx = Fx::new();
    let mono = cursor_data_size(CursorType::Mono, 32, 32);
    let data = pattern(usize::try_from(mono).unwrap());
    let p = cursor_cmd(
        &mut fx,
        CursorType::Mono as u16,
        32,
        32,
        u32::try_from(mono).unwrap(),
        &data,
    );
    fx.decode(QXL_CMD_CURSOR, p, 0).unwrap();
    // The same bytes labelled ALPHA are too few.
    let p = cursor_cmd(
        &mut fx,
        CursorType::Alpha as u16,
        32,
        32,
        u32::try_from(mono).unwrap(),
        &data,
    );
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::ChunkSizeMismatch {
            got: 256,
            expected: 4096
        })
    ));
}

#[test]
fn cursor_short_chunks() {
    let mut fx = Fx::new();
    // data_size says 16384 but the chain holds 16000 bytes.
    let p = cursor_cmd(&mut fx, 0, 64, 64, 16384, &pattern(16000));
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::ChunkSizeMismatch {
            got: 16000,
            expected: 16384
        })
    ));
    // The chain holds more than data_size.
    let p = cursor_cmd(&mut fx, 0, 64, 64, 16384, &pattern(16385));
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::ChunkSizeMismatch { .. })
    ));
}

#[test]
fn cursor_extra_data_is_dropped() {
    let mut fx = Fx::new();
    let p = cursor_cmd(&mut fx, 0, 2, 2, 20, &pattern(20));
    let Command::Cursor(CursorCmd::Set { shape, .. }) =
        fx.decode(QXL_CMD_CURSOR, p, 0).unwrap().command
    else {
        panic!()
    };
    assert_eq!(shape.data, pattern(16));
}

#[test]
fn cursor_data_size_cap() {
    let mut fx = Fx::new();
    let p = cursor_cmd(&mut fx, 0, 2, 2, u32::MAX, &[]);
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::TooLarge {
            what: "cursor data",
            ..
        })
    ));
}

#[test]
fn cursor_unknown_types() {
    let mut fx = Fx::new();
    let p = cursor_cmd(&mut fx, 7, 2, 2, 16, &pattern(16));
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::InvalidValue { .. })
    ));
    let p = cursor_cmd(&mut fx, 0x100, 2, 2, 16, &pattern(16));
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::InvalidValue { .. })
    ));
    let mut cmd = [0u8; CURSOR_CMD_SIZE];
    cmd[8] = 4;
    let p = fx.raw(&cmd);
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::InvalidValue { .. })
    ));
}

#[test]
fn cursor_null_or_bad_shape_pointer() {
    let mut fx = Fx::new();
    let cmd = [0u8; CURSOR_CMD_SIZE];
    let p = fx.raw(&cmd);
    assert_eq!(
        fx.decode(QXL_CMD_CURSOR, p, 0).map(|d| d.command),
        Err(Error::NullPointer("QXLCursorCmd.shape"))
    );
    let mut cmd = [0u8; CURSOR_CMD_SIZE];
    le::put_u64(&mut cmd, 14, Fx::phys(super::SLOT1_SIZE - 41));
    let p = fx.raw(&cmd);
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn cursor_cmd_is_150_bytes() {
    // spice-server maps the whole QXLCursorCmd: a command 149 bytes before the slot end fails.
    let fx = Fx::new();
    let p = Fx::phys(super::SLOT1_SIZE - 149);
    fx.write(p, &[0, 0, 0, 0, 0, 0, 0, 0, 2]);
    assert!(matches!(
        fx.decode(QXL_CMD_CURSOR, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
    let p = Fx::phys(super::SLOT1_SIZE - 150);
    fx.write(p, &[0, 0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(
        fx.decode(QXL_CMD_CURSOR, p, 0).unwrap().command,
        Command::Cursor(CursorCmd::Hide)
    );
}
