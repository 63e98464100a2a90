//! Pieces of bare-metal x86 guest code (assembled with `iced-x86`) that the
//! KVM guest tests share: a flat GDT, the 8259 PIC set-up and returning from
//! an interrupt. The vCPU starts in flat 32-bit protected mode without
//! paging (`QxlVm::set_entry`); these let the guest own its descriptor
//! tables and take interrupts.

// Each test file uses a subset.
#![allow(dead_code)]

use iced_x86::code_asm::*;

/// Installs a flat GDT (null, code 0x08, data 0x10, each base 0 and limit
/// 4 GiB) at `gdt` with its descriptor at `gdtr`, and reloads the data
/// segment registers from it.
pub fn flat_gdt(a: &mut CodeAssembler, gdt: u32, gdtr: u32) -> Result<(), IcedError> {
    a.mov(dword_ptr(gdt), 0u32)?;
    a.mov(dword_ptr(gdt + 4), 0u32)?;
    a.mov(dword_ptr(gdt + 8), 0x0000_ffffu32)?; // code: base 0, limit 4 GiB
    a.mov(dword_ptr(gdt + 12), 0x00cf_9a00u32)?;
    a.mov(dword_ptr(gdt + 16), 0x0000_ffffu32)?; // data
    a.mov(dword_ptr(gdt + 20), 0x00cf_9200u32)?;
    a.mov(word_ptr(gdtr), 23u32)?;
    a.mov(dword_ptr(gdtr + 2), gdt)?;
    a.lgdt(ptr(gdtr))?;
    a.mov(ax, 0x10u32)?;
    for seg in [ds, es, ss, fs, gs] {
        a.mov(seg, ax)?;
    }
    Ok(())
}

/// Programs the 8259 pair: master vectors from 0x20, slave from 0x28,
/// cascade on IRQ 2, 8086 mode, and only IRQ `irq` (0..8) unmasked (none
/// when `irq` is 8 or more).
pub fn pic_init(a: &mut CodeAssembler, irq: u32) -> Result<(), IcedError> {
    let mask = if irq < 8 { 0xff & !(1u32 << irq) } else { 0xff };
    for (port, val) in [
        (0x20u32, 0x11u32),
        (0xa0, 0x11),
        (0x21, 0x20),
        (0xa1, 0x28),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
        (0x21, mask),
        (0xa1, 0xff),
    ] {
        a.mov(al, val)?;
        a.out(port, al)?;
    }
    Ok(())
}

/// Returns from an interrupt without `iret`: restores EFLAGS (IF) from the
/// frame, then returns to EIP and drops CS and EFLAGS. On this host KVM
/// cannot emulate a protected-mode `iret` (the run ends with an emulation
/// failure), while `popfd` / `ret imm16` run. Same privilege level, same CS,
/// so nothing else in the frame matters.
pub fn interrupt_return(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.push(dword_ptr(esp + 8))?;
    a.popfd()?;
    a.ret_1(8)
}

/// The IOAPIC's register select and data window.
pub const IOAPIC_BASE: u32 = 0xfec0_0000;
/// The local APIC.
pub const LAPIC_BASE: u32 = 0xfee0_0000;

/// Enables the local APIC (spurious vector `spurious`, task priority 0) and
/// routes IOAPIC pin `pin` to `vector` on APIC 0: fixed delivery, physical
/// destination, active high, level-triggered when `level`, unmasked. The
/// handler must end with [`lapic_eoi`].
pub fn ioapic_route(
    a: &mut CodeAssembler,
    pin: u32,
    vector: u32,
    level: bool,
    spurious: u32,
) -> Result<(), IcedError> {
    a.mov(dword_ptr(LAPIC_BASE + 0x80), 0u32)?; // TPR
    a.mov(dword_ptr(LAPIC_BASE + 0xf0), 0x100 | spurious)?; // SVR: enable
    a.mov(dword_ptr(IOAPIC_BASE), 0x11 + 2 * pin)?; // redirection entry, high
    a.mov(dword_ptr(IOAPIC_BASE + 0x10), 0u32)?; // destination APIC 0
    a.mov(dword_ptr(IOAPIC_BASE), 0x10 + 2 * pin)?; // low: vector, flags
    a.mov(
        dword_ptr(IOAPIC_BASE + 0x10),
        vector | if level { 1 << 15 } else { 0 },
    )?;
    Ok(())
}

/// Signals end of interrupt to the local APIC (for a level-triggered IOAPIC
/// pin, KVM then clears Remote IRR and fires the irqfd's resample fd).
pub fn lapic_eoi(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dword_ptr(LAPIC_BASE + 0xb0), 0u32)
}

/// Where a guest keeps one virtqueue: descriptor table, available (driver)
/// ring and used (device) ring, each in identity-mapped RAM.
#[derive(Debug, Clone, Copy)]
pub struct QueueRings {
    /// Descriptor table (16-byte aligned).
    pub desc: u32,
    /// Available ring (2-byte aligned).
    pub avail: u32,
    /// Used ring (4-byte aligned).
    pub used: u32,
}

/// A virtio-input device's eventq and statusq laid out from `base` (page
/// aligned), a page for each ring: eventq descriptors, available and used
/// ring, then the same for the statusq.
pub const fn input_queues(base: u32) -> [QueueRings; 2] {
    [
        QueueRings {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        },
        QueueRings {
            desc: base + 0x3000,
            avail: base + 0x4000,
            used: base + 0x5000,
        },
    ]
}

/// Brings up the virtio-mmio device at `base` as Linux's `virtio_mmio` +
/// `virtio` drivers do: reset, ACKNOWLEDGE, DRIVER, accept VERSION_1 only,
/// FEATURES_OK, each queue (`size` entries, its ring addresses, ready),
/// DRIVER_OK. With `record`, the registers read on the way are stored as
/// dwords from that address: DeviceFeatures (high word), Status after
/// FEATURES_OK, each queue's QueueNumMax, Status after DRIVER_OK.
pub fn virtio_mmio_init(
    a: &mut CodeAssembler,
    base: u32,
    queues: &[QueueRings],
    size: u32,
    record: Option<u32>,
) -> Result<(), IcedError> {
    let reg = |off: u32| dword_ptr(base + off);
    let mut out = record;
    let mut keep = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        if let Some(at) = out.as_mut() {
            a.mov(dword_ptr(*at), eax)?;
            *at += 4;
        }
        Ok(())
    };
    a.mov(reg(0x70), 0u32)?; // reset
    a.mov(reg(0x70), 1u32)?; // ACKNOWLEDGE
    a.mov(reg(0x70), 3u32)?; // DRIVER
    a.mov(reg(0x14), 1u32)?; // DeviceFeaturesSel = high word
    a.mov(eax, reg(0x10))?;
    keep(a)?;
    a.mov(reg(0x24), 1u32)?;
    a.mov(reg(0x20), 1u32)?; // VERSION_1
    a.mov(reg(0x24), 0u32)?;
    a.mov(reg(0x20), 0u32)?;
    a.mov(reg(0x70), 0xbu32)?; // FEATURES_OK
    a.mov(eax, reg(0x70))?;
    keep(a)?;
    for (q, rings) in (0u32..).zip(queues) {
        a.mov(reg(0x30), q)?;
        a.mov(eax, reg(0x34))?; // QueueNumMax
        keep(a)?;
        a.mov(reg(0x38), size)?;
        a.mov(reg(0x80), rings.desc)?;
        a.mov(reg(0x84), 0u32)?;
        a.mov(reg(0x90), rings.avail)?;
        a.mov(reg(0x94), 0u32)?;
        a.mov(reg(0xa0), rings.used)?;
        a.mov(reg(0xa4), 0u32)?;
        a.mov(reg(0x44), 1u32)?; // QueueReady
    }
    a.mov(reg(0x70), 0xfu32)?; // DRIVER_OK
    a.mov(eax, reg(0x70))?;
    keep(a)
}

/// Posts `count` device-writable buffers of `len` bytes, from `buf` on, as
/// descriptors 0.. of `rings`, and publishes them in the available ring.
pub fn post_buffers(
    a: &mut CodeAssembler,
    rings: QueueRings,
    buf: u32,
    len: u32,
    count: u32,
) -> Result<(), IcedError> {
    for i in 0..count {
        let d = rings.desc + 16 * i;
        a.mov(dword_ptr(d), buf + len * i)?;
        a.mov(dword_ptr(d + 4), 0u32)?;
        a.mov(dword_ptr(d + 8), len)?;
        a.mov(dword_ptr(d + 12), 2u32)?; // flags WRITE, next 0
        a.mov(word_ptr(rings.avail + 4 + 2 * i), i)?;
    }
    a.mov(word_ptr(rings.avail), 0u32)?;
    a.mov(word_ptr(rings.avail + 2), count)
}
