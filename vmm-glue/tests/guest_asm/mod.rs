//! Pieces of bare-metal x86 guest code (assembled with `iced-x86`) that the
//! KVM guest tests share: a flat GDT, the 8259 PIC set-up and returning from
//! an interrupt. The vCPU starts in flat 32-bit protected mode without
//! paging (`QxlVm::set_entry`); these let the guest own its descriptor
//! tables and take interrupts.

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
/// cascade on IRQ 2, 8086 mode, and only IRQ `irq` (0..8) unmasked.
pub fn pic_init(a: &mut CodeAssembler, irq: u32) -> Result<(), IcedError> {
    for (port, val) in [
        (0x20u32, 0x11u32),
        (0xa0, 0x11),
        (0x21, 0x20),
        (0xa1, 0x28),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
        (0x21, 0xff & !(1 << irq)),
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
