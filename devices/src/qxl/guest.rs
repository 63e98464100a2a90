//! The one place guest memory is read and written.
//!
//! Every access the device makes to guest memory goes through [`GuestView`],
//! which has a blanket implementation for every [`GuestMemoryBackend`] (vm-memory's
//! guest-physical memory, e.g. `GuestMemoryMmap`). Decoders copy
//! each guest structure into a host buffer with one [`GuestView::read_bytes`]
//! call and then parse only that copy, so a guest that changes a field behind
//! the device's back cannot make it see two different values (no double fetch).
//! Tests implement the trait with a "racing guest" that changes memory after
//! every read to prove it.

use std::sync::atomic::{AtomicU32, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileMemory};

use crate::error::{Error, Result};

/// Byte-level access to the device's view of guest memory.
pub trait GuestView {
    /// Copy `buf.len()` bytes at `addr` into `buf`.
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<()>;

    /// Copy `buf` into guest memory at `addr`.
    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<()>;

    /// Atomically OR `bits` into the little-endian `u32` at `addr` (4-byte aligned) and
    /// return the previous value. Used for `int_pending`, which the guest clears
    /// concurrently with an atomic exchange.
    fn fetch_or_u32(&self, addr: GuestAddress, bits: u32) -> Result<u32>;

    /// Read a little-endian `u32`.
    fn read_u32(&self, addr: GuestAddress) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_bytes(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a little-endian `u32`.
    fn write_u32(&self, addr: GuestAddress, v: u32) -> Result<()> {
        self.write_bytes(addr, &v.to_le_bytes())
    }

    /// Read a little-endian `u64`.
    fn read_u64(&self, addr: GuestAddress) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_bytes(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write a little-endian `u64`.
    fn write_u64(&self, addr: GuestAddress, v: u64) -> Result<()> {
        self.write_bytes(addr, &v.to_le_bytes())
    }
}

impl<M: GuestMemoryBackend> GuestView for M {
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<()> {
        self.read_slice(buf, addr)
            .map_err(|_| Error::guest_memory(addr, buf.len()))
    }

    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<()> {
        self.write_slice(buf, addr)
            .map_err(|_| Error::guest_memory(addr, buf.len()))
    }

    fn fetch_or_u32(&self, addr: GuestAddress, bits: u32) -> Result<u32> {
        let err = || Error::guest_memory(addr, 4);
        let slice = self.get_slice(addr, 4).map_err(|_| err())?;
        let atomic = slice.get_atomic_ref::<AtomicU32>(0).map_err(|_| err())?;
        // The guest reads this field as little-endian; the atomic works in host order.
        Ok(u32::from_le(
            atomic.fetch_or(bits.to_le(), Ordering::SeqCst),
        ))
    }
}

/// Little-endian field readers over a host copy of a guest structure.
///
/// Offsets are constants from the packed QXL layouts; a read past the end of
/// the buffer yields 0 instead of panicking (callers size their buffers from
/// the same layout tables, so this only guards against programming errors).
pub mod le {
    /// Byte at `off`.
    pub fn u8_at(b: &[u8], off: usize) -> u8 {
        b.get(off).copied().unwrap_or(0)
    }

    /// Little-endian `u16` at `off`.
    pub fn u16_at(b: &[u8], off: usize) -> u16 {
        let mut a = [0u8; 2];
        if let Some(s) = b.get(off..off.saturating_add(2)) {
            a.copy_from_slice(s);
        }
        u16::from_le_bytes(a)
    }

    /// Little-endian `i16` at `off`.
    pub fn i16_at(b: &[u8], off: usize) -> i16 {
        i16::from_le_bytes(u16_at(b, off).to_le_bytes())
    }

    /// Little-endian `u32` at `off`.
    pub fn u32_at(b: &[u8], off: usize) -> u32 {
        let mut a = [0u8; 4];
        if let Some(s) = b.get(off..off.saturating_add(4)) {
            a.copy_from_slice(s);
        }
        u32::from_le_bytes(a)
    }

    /// Little-endian `i32` at `off`.
    pub fn i32_at(b: &[u8], off: usize) -> i32 {
        i32::from_le_bytes(u32_at(b, off).to_le_bytes())
    }

    /// Little-endian `u64` at `off`.
    pub fn u64_at(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        if let Some(s) = b.get(off..off.saturating_add(8)) {
            a.copy_from_slice(s);
        }
        u64::from_le_bytes(a)
    }

    /// Store a little-endian `u16` at `off` (ignored if out of bounds).
    pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
        if let Some(s) = b.get_mut(off..off.saturating_add(2)) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Store a little-endian `u32` at `off` (ignored if out of bounds).
    pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
        if let Some(s) = b.get_mut(off..off.saturating_add(4)) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Store a little-endian `u64` at `off` (ignored if out of bounds).
    pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
        if let Some(s) = b.get_mut(off..off.saturating_add(8)) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
}
