//! `surface_create_*`: surface parameters (CVE-2015-5260, CVE-2016-2150 class).

use spice_server::command::{Command, SurfaceCmd, SurfaceCreate, SurfaceFormat};

use super::{Fx, pattern};
use crate::error::Error;
use crate::qxl::decode::{
    QXL_CMD_SURFACE, SURFACE_CMD_SIZE, SurfaceMem, map_surface, read_surface_pixels,
};
use crate::qxl::guest::le;

const FORMATS: [SurfaceFormat; 6] = [
    SurfaceFormat::A1,
    SurfaceFormat::A8,
    SurfaceFormat::Rgb555,
    SurfaceFormat::Xrgb32,
    SurfaceFormat::Rgb565,
    SurfaceFormat::Argb32,
];

/// A raw QXLSurfaceCmd create.
#[allow(clippy::too_many_arguments)]
fn create_cmd(
    fx: &mut Fx,
    id: u32,
    format: u32,
    w: u32,
    h: u32,
    stride: i32,
    flags: u32,
    data: u64,
) -> u64 {
    let mut b = [0u8; SURFACE_CMD_SIZE];
    le::put_u32(&mut b, 8, id);
    b[12] = 0;
    le::put_u32(&mut b, 13, flags);
    le::put_u32(&mut b, 17, format);
    le::put_u32(&mut b, 21, w);
    le::put_u32(&mut b, 25, h);
    le::put_u32(&mut b, 29, u32::from_le_bytes(stride.to_le_bytes()));
    le::put_u64(&mut b, 33, data);
    fx.raw(&b)
}

fn surface(
    id: u32,
    format: SurfaceFormat,
    w: u32,
    h: u32,
    stride: i32,
    keep: bool,
) -> SurfaceCreate {
    let size = usize::try_from(h * stride.unsigned_abs()).unwrap();
    SurfaceCreate {
        surface_id: id,
        format,
        width: w,
        height: h,
        stride,
        flags: u32::from(keep),
        position: 0,
        initial: keep.then(|| pattern(size)),
    }
}

#[test]
fn surface_create_every_format_roundtrip() {
    let mut fx = Fx::new();
    for f in FORMATS {
        let row = (17 * f.bpp()).div_ceil(8).div_ceil(4) * 4;
        let stride = i32::try_from(row).unwrap();
        for s in [stride, -stride, stride + 8] {
            for keep in [false, true] {
                let c = surface(5, f, 17, 9, s, keep);
                let (p, ty) = fx.encode(
                    &Command::Surface(SurfaceCmd::Create(c.clone())),
                    &Default::default(),
                );
                let d = fx.decode(ty, p, 0).unwrap();
                assert_eq!(d.command, Command::Surface(SurfaceCmd::Create(c)));
                let m = d.surface_mem.unwrap();
                assert_eq!((m.width, m.height, m.stride, m.format), (17, 9, s, f));
            }
        }
    }
}

#[test]
fn surface_create_invalid_formats() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 4096]);
    for f in [0u32, 2, 4, 15, 24, 31, 33, 64, 81, 95, 97, u32::MAX] {
        let p = create_cmd(&mut fx, 1, f, 4, 4, 16, 0, mem);
        assert!(
            matches!(
                fx.decode(QXL_CMD_SURFACE, p, 0),
                Err(Error::InvalidValue { .. })
            ),
            "{f}"
        );
    }
}

#[test]
fn surface_create_ids_at_and_past_max() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 64]);
    let n = fx.limits.n_surfaces;
    let p = create_cmd(&mut fx, n - 1, 32, 4, 4, 16, 0, mem);
    fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    for id in [n, n + 1, u32::MAX, 0x8000_0000] {
        let p = create_cmd(&mut fx, id, 32, 4, 4, 16, 0, mem);
        assert_eq!(
            fx.decode(QXL_CMD_SURFACE, p, 0),
            Err(Error::SurfaceIdOutOfRange { id, max: n })
        );
        let mut b = [0u8; SURFACE_CMD_SIZE];
        le::put_u32(&mut b, 8, id);
        b[12] = 1;
        let p = fx.raw(&b);
        assert_eq!(
            fx.decode(QXL_CMD_SURFACE, p, 0),
            Err(Error::SurfaceIdOutOfRange { id, max: n })
        );
    }
}

#[test]
fn surface_create_stride_i32_min() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 64]);
    let p = create_cmd(&mut fx, 1, 32, 4, 1, i32::MIN, 0, mem);
    assert_eq!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::InvalidSurface("stride is i32::MIN"))
    );
}

#[test]
fn surface_create_stride_smaller_than_row() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 4096]);
    for f in FORMATS {
        let row = i32::try_from((64 * f.bpp()).div_ceil(8)).unwrap();
        for s in [row - 4, -(row - 4)] {
            let p = create_cmd(&mut fx, 1, f as u32, 64, 2, s, 0, mem);
            assert_eq!(
                fx.decode(QXL_CMD_SURFACE, p, 0),
                Err(Error::InvalidSurface("stride smaller than a row")),
                "{f:?} {s}"
            );
        }
        // Width so large that width * bpp overflows 32 bits.
        let p = create_cmd(&mut fx, 1, f as u32, u32::MAX, 1, 0x7fff_fffc, 0, mem);
        fx.decode(QXL_CMD_SURFACE, p, 0).unwrap_err();
    }
}

#[test]
fn surface_create_stride_not_multiple_of_4() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 64]);
    let p = create_cmd(&mut fx, 1, 8, 3, 1, 3, 0, mem);
    assert_eq!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::InvalidSurface("stride is not a multiple of 4"))
    );
}

#[test]
fn surface_create_stride_times_height_overflow() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 64]);
    for (h, s) in [
        (u32::MAX, 4),
        (2, 0x4000_0000),
        (0x8000, 0x1_0000),
        (u32::MAX, -0x7fff_fffc),
        (0x2_0000, 0x4000),
    ] {
        let p = create_cmd(&mut fx, 1, 32, 1, h, s, 0, mem);
        assert_eq!(
            fx.decode(QXL_CMD_SURFACE, p, 0),
            Err(Error::InvalidSurface("height * stride above 2^31 - 1")),
            "{h} {s}"
        );
    }
}

#[test]
fn surface_create_larger_than_memory() {
    let mut fx = Fx::new();
    // 1024 x 1024 x 4 = 4 MiB does not fit in the 2 MiB slot.
    let p = create_cmd(&mut fx, 1, 32, 1024, 1024, 4096, 1, Fx::phys(0));
    assert!(matches!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
    // One byte past the slot end.
    let start = super::SLOT1_SIZE - 4096;
    let p = create_cmd(&mut fx, 1, 32, 16, 64, 64, 0, Fx::phys(start));
    fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    let p = create_cmd(&mut fx, 1, 32, 16, 64, 64, 0, Fx::phys(start + 4));
    assert!(matches!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
    // Negative stride: data is the lowest address, the area extends upwards.
    let p = create_cmd(&mut fx, 1, 32, 16, 64, -64, 0, Fx::phys(start + 4));
    assert!(matches!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::OutsideSlot { .. })
    ));
}

#[test]
fn surface_create_negative_stride_pixels_top_first() {
    let mut fx = Fx::new();
    // Memory from the lowest address: row 2, row 1, row 0.
    let mem = fx.raw(&[2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0]);
    let p = create_cmd(&mut fx, 1, 32, 1, 3, -4, 1, mem);
    let d = fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    let Command::Surface(SurfaceCmd::Create(c)) = d.command else {
        panic!()
    };
    assert_eq!(c.initial.unwrap(), vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    let p = create_cmd(&mut fx, 1, 32, 1, 3, 4, 1, mem);
    let d = fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    let Command::Surface(SurfaceCmd::Create(c)) = d.command else {
        panic!()
    };
    assert_eq!(c.initial.unwrap(), vec![2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0]);
    // Without KEEP_DATA nothing is copied.
    let p = create_cmd(&mut fx, 1, 32, 1, 3, 4, 0, mem);
    let d = fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    let Command::Surface(SurfaceCmd::Create(c)) = d.command else {
        panic!()
    };
    assert_eq!(c.initial, None);
}

#[test]
fn surface_create_zero_size_and_destroy() {
    let mut fx = Fx::new();
    let mem = fx.raw(&[0u8; 4]);
    let p = create_cmd(&mut fx, 1, 32, 0, 0, 0, 1, mem);
    let d = fx.decode(QXL_CMD_SURFACE, p, 0).unwrap();
    assert_eq!(d.surface_mem.unwrap().size(), 0);
    fx.assert_roundtrip(&Command::Surface(SurfaceCmd::Destroy { surface_id: 1023 }));
    let mut b = [0u8; SURFACE_CMD_SIZE];
    b[12] = 2;
    let p = fx.raw(&b);
    assert!(matches!(
        fx.decode(QXL_CMD_SURFACE, p, 0),
        Err(Error::InvalidValue { .. })
    ));
}

#[test]
fn surface_create_map_surface_direct() {
    let fx = Fx::new();
    let m = map_surface(
        &fx.mem,
        &fx.slots,
        Fx::phys(0x2000),
        8,
        8,
        -32,
        96,
        &fx.limits,
    )
    .unwrap();
    assert_eq!(
        m,
        SurfaceMem {
            addr: vm_memory::GuestAddress(super::SLOT1_BASE + 0x2000),
            stride: -32,
            width: 8,
            height: 8,
            format: SurfaceFormat::Argb32,
        }
    );
    assert_eq!(read_surface_pixels(&fx.mem, &m).unwrap().len(), 256);
    // A1: 33 pixels need 5 bytes, stride 8 is fine, stride 4 is not.
    map_surface(
        &fx.mem,
        &fx.slots,
        Fx::phys(0x2000),
        33,
        1,
        8,
        1,
        &fx.limits,
    )
    .unwrap();
    map_surface(
        &fx.mem,
        &fx.slots,
        Fx::phys(0x2000),
        33,
        1,
        4,
        1,
        &fx.limits,
    )
    .unwrap_err();
    // Memslot checks apply (bad generation).
    let bad = crate::qxl::memslot::make_phys(super::SLOT, 0, 0x2000);
    assert!(matches!(
        map_surface(&fx.mem, &fx.slots, bad, 8, 8, 32, 32, &fx.limits),
        Err(Error::SlotGeneration { .. })
    ));
}
