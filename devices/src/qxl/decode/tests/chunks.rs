//! `chunks_*`: the chunk walker against loops, caps and size games
//! (THREATS: CVE-2015-5260/5261 series, QEMU #1628).

use super::{Fx, pattern};
use crate::error::Error;
use crate::qxl::chunks::{ChunkHeader, ChunkStart, read_chunks};
use crate::qxl::decode::Limits;
use crate::qxl::mock::encode::{chunk_header, write_chunk, write_embedded_chain};

fn read(fx: &Fx, phys: u64, expected: Option<u64>) -> crate::error::Result<Vec<u8>> {
    read_chunks(
        &fx.mem,
        &fx.slots,
        ChunkStart::Pointer(phys),
        expected,
        &fx.limits,
    )
}

#[test]
fn chunks_single_and_split_chains() {
    let mut fx = Fx::new();
    let data = pattern(1000);
    for split in [None, Some(1), Some(7), Some(999), Some(1000), Some(5000)] {
        let p = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &data, split).unwrap();
        assert_eq!(read(&fx, p, Some(1000)).unwrap(), data, "{split:?}");
        assert_eq!(read(&fx, p, None).unwrap(), data, "{split:?}");
    }
}

#[test]
fn chunks_empty_chain() {
    let mut fx = Fx::new();
    let p = write_chunk(&fx.mem, &mut fx.heap, &[], 0).unwrap();
    assert_eq!(read(&fx, p, Some(0)).unwrap(), Vec::<u8>::new());
}

#[test]
fn chunks_self_loop() {
    let mut fx = Fx::new();
    let p = fx.raw(&[0u8; 40]);
    fx.write(p, &chunk_header(4, 0, p));
    assert_eq!(
        read(&fx, p, None),
        Err(Error::TooManyChunks(fx.limits.max_chunks))
    );
    // With an expected length the total passes it first.
    assert!(matches!(
        read(&fx, p, Some(400)),
        Err(Error::ChunkSizeMismatch {
            got: 404,
            expected: 400
        })
    ));
}

#[test]
fn chunks_two_cycle() {
    let mut fx = Fx::new();
    let a = fx.raw(&[0u8; 40]);
    let b = fx.raw(&[0u8; 40]);
    fx.write(a, &chunk_header(1, 0, b));
    fx.write(b, &chunk_header(1, 0, a));
    assert_eq!(
        read(&fx, a, None),
        Err(Error::TooManyChunks(fx.limits.max_chunks))
    );
}

#[test]
fn chunks_zero_size_loop() {
    let mut fx = Fx::new();
    let a = fx.raw(&[0u8; 20]);
    let b = fx.raw(&[0u8; 20]);
    fx.write(a, &chunk_header(0, 0, b));
    fx.write(b, &chunk_header(0, 0, a));
    // Empty chunks allocate nothing but still count: the loop ends.
    assert_eq!(
        read(&fx, a, Some(0)),
        Err(Error::TooManyChunks(fx.limits.max_chunks))
    );
    assert_eq!(
        read(&fx, b, None),
        Err(Error::TooManyChunks(fx.limits.max_chunks))
    );
}

#[test]
fn chunks_growing_sizes() {
    // QEMU #1628: each chunk's copy must use its own data_size, not the next one's.
    let mut fx = Fx::new();
    let data = pattern(1 + 2 + 4 + 8 + 16 + 32 + 64);
    let mut next = 0;
    let mut offsets = vec![];
    let mut off = 0;
    for k in 0..7 {
        offsets.push((off, 1usize << k));
        off += 1 << k;
    }
    for &(o, n) in offsets.iter().rev() {
        next = write_chunk(&fx.mem, &mut fx.heap, &data[o..o + n], next).unwrap();
    }
    assert_eq!(read(&fx, next, Some(127)).unwrap(), data);
    // Shrinking sizes too.
    let mut next2 = 0;
    for &(o, n) in &offsets {
        next2 = write_chunk(&fx.mem, &mut fx.heap, &data[o..o + n], next2).unwrap();
    }
    let mut expected = vec![];
    for &(o, n) in offsets.iter().rev() {
        expected.extend_from_slice(&data[o..o + n]);
    }
    assert_eq!(read(&fx, next2, Some(127)).unwrap(), expected);
}

#[test]
fn chunks_total_above_cap() {
    let mut fx = Fx::new();
    // One chunk claiming 4 GiB - 1: refused before any translation or allocation.
    let p = fx.raw(&chunk_header(u32::MAX, 0, 0));
    assert!(matches!(
        read(&fx, p, None),
        Err(Error::TooLarge {
            size: 0xffff_ffff,
            ..
        })
    ));
    // A loop of 1000-byte chunks against a 4096-byte cap.
    fx.limits = Limits {
        max_chunk_data: 4096,
        ..Limits::default()
    };
    let a = fx.raw(&[0u8; 1020]);
    fx.write(a, &chunk_header(1000, 0, a));
    assert!(matches!(
        read(&fx, a, None),
        Err(Error::TooLarge {
            size: 5000,
            cap: 4096,
            ..
        })
    ));
    // An expected length above the cap is refused up front.
    assert!(matches!(
        read(&fx, a, Some(4097)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn chunks_sum_past_2gib_with_default_limits() {
    // Chunks of 0x7fff_ffff bytes each: the first one is past the default cap.
    let mut fx = Fx::new();
    let a = fx.raw(&[0u8; 20]);
    fx.write(a, &chunk_header(0x7fff_ffff, 0, a));
    assert!(matches!(read(&fx, a, None), Err(Error::TooLarge { .. })));
    // Raise the cap to u64::MAX: the data is then translated, and is not in the slot.
    fx.limits.max_chunk_data = u64::MAX;
    assert!(matches!(read(&fx, a, None), Err(Error::OutsideSlot { .. })));
}

#[test]
fn chunks_more_than_max_chunks() {
    let mut fx = Fx::new();
    fx.limits.max_chunks = 8;
    let data = pattern(9);
    let p9 = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &data, Some(1)).unwrap();
    assert_eq!(read(&fx, p9, Some(9)), Err(Error::TooManyChunks(8)));
    let p8 = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &data[..8], Some(1)).unwrap();
    assert_eq!(read(&fx, p8, Some(8)).unwrap(), &data[..8]);
}

#[test]
fn chunks_expected_length_must_match_exactly() {
    let mut fx = Fx::new();
    let p = write_embedded_chain(&fx.mem, &mut fx.heap, &[], &pattern(100), Some(30)).unwrap();
    assert_eq!(
        read(&fx, p, Some(101)),
        Err(Error::ChunkSizeMismatch {
            got: 100,
            expected: 101
        })
    );
    assert!(matches!(
        read(&fx, p, Some(99)),
        Err(Error::ChunkSizeMismatch { expected: 99, .. })
    ));
}

#[test]
fn chunks_data_past_slot_end() {
    let mut fx = Fx::new();
    // A chunk header 30 bytes before the slot end claiming 11 bytes of data.
    let p = Fx::phys(super::SLOT1_SIZE - 30);
    fx.write(p, &chunk_header(10, 0, 0));
    read(&fx, p, Some(10)).unwrap();
    fx.write(p, &chunk_header(11, 0, 0));
    assert!(matches!(
        read(&fx, p, Some(11)),
        Err(Error::OutsideSlot { .. })
    ));
    // A header straddling the end.
    let q = Fx::phys(super::SLOT1_SIZE - 19);
    assert!(matches!(read(&fx, q, None), Err(Error::OutsideSlot { .. })));
    let _ = &mut fx;
}

#[test]
fn chunks_next_pointer_checked_like_any_pointer() {
    let mut fx = Fx::new();
    for bad in [
        crate::qxl::memslot::make_phys(super::SLOT, 0, 0x2000), // generation
        crate::qxl::memslot::make_phys(5, 0, 0x2000),           // inactive slot
        crate::qxl::memslot::make_phys(8, 0, 0x2000),           // slot id == NUM_MEMSLOTS
        crate::qxl::memslot::make_phys(0xff, 0xff, 0xffff_ffff_ffff),
        Fx::phys(super::SLOT1_SIZE),
    ] {
        let p = write_chunk(&fx.mem, &mut fx.heap, &[1, 2], bad).unwrap();
        assert!(read(&fx, p, None).is_err(), "{bad:#x}");
    }
}

#[test]
fn chunks_chain_may_cross_slots() {
    let mut fx = Fx::new();
    let other = crate::qxl::memslot::make_phys(super::SLOT2, 0, 0x100);
    fx.write(other, &[]);
    let addr = fx.slots.translate(other, 24).unwrap();
    crate::qxl::mock::encode::write_chunk_at(&fx.mem, addr, 4, 0, &[9, 8, 7, 6]).unwrap();
    let p = write_chunk(&fx.mem, &mut fx.heap, &[1, 2], other).unwrap();
    assert_eq!(read(&fx, p, Some(6)).unwrap(), vec![1, 2, 9, 8, 7, 6]);
}

#[test]
fn chunks_embedded_first_header() {
    let mut fx = Fx::new();
    let p =
        write_embedded_chain(&fx.mem, &mut fx.heap, &[0xaa; 4], &pattern(50), Some(20)).unwrap();
    let mut hdr = [0u8; 20];
    let a = fx.slots.translate(p, 24).unwrap();
    crate::qxl::guest::GuestView::read_bytes(
        &fx.mem,
        crate::qxl::chunks::addr_add(a, 4).unwrap(),
        &mut hdr,
    )
    .unwrap();
    let start = ChunkStart::Embedded {
        header: ChunkHeader::parse(&hdr),
        data: crate::qxl::chunks::phys_add(p, 24).unwrap(),
    };
    assert_eq!(
        read_chunks(&fx.mem, &fx.slots, start, Some(50), &fx.limits).unwrap(),
        pattern(50)
    );
}

#[test]
fn chunks_phys_add_does_not_carry_into_generation() {
    use crate::qxl::chunks::phys_add;
    let p = crate::qxl::memslot::make_phys(1, 3, crate::qxl::memslot::OFFSET_MASK - 4);
    assert_eq!(phys_add(p, 4).unwrap(), p + 4);
    assert!(matches!(phys_add(p, 5), Err(Error::PhysOverflow { .. })));
    phys_add(p, u64::MAX).unwrap_err();
}
