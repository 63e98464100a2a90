//! A PCI host bridge with configuration mechanism #1 (ports `0xCF8`/`0xCFC`).
//!
//! # Primer
//!
//! On a PC, software reaches PCI configuration space through two I/O ports.
//! A dword written to `CONFIG_ADDRESS` (`0xCF8`) selects a register:
//!
//! | bits | meaning |
//! |---|---|
//! | 31 | enable: the next data access is a configuration cycle |
//! | 23..16 | bus |
//! | 15..11 | device (0..31) |
//! | 10..8 | function (0..7) |
//! | 7..2 | dword register number |
//!
//! The selected dword is then read or written through `CONFIG_DATA`
//! (`0xCFC..=0xCFF`): a byte, word or dword access at `0xCFC + k` touches
//! configuration offset `register + k`. A function that is not present reads
//! as all-ones (vendor id `0xFFFF`, which is how firmware scans a bus), and
//! writes to it are dropped. Only bus 0 exists here.
//!
//! [`PciRoot`] decodes the two ports and dispatches to [`PciFunction`]s. It
//! always carries a host bridge at 00:00.0 ([`HostBridge`], read-only, an
//! i440FX-style identity); the VMM adds its devices (the QXL function sits at
//! 00:02.0, like QEMU's first display adapter). What a configuration write
//! *means* (a BAR moved, decoding switched on) is the function's business: the
//! QXL function in [`crate::kvm`] re-maps its KVM memory slots and ioeventfds
//! after each write.

use std::collections::BTreeMap;

/// The `CONFIG_ADDRESS` port.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// The first `CONFIG_DATA` port (`0xCFC..=0xCFF` are all data).
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// `CONFIG_ADDRESS` enable bit.
const ENABLE: u32 = 1 << 31;

/// One PCI function's configuration space, as seen by the bus.
pub trait PciFunction: Send {
    /// Read `data.len()` bytes (1, 2 or 4) at configuration offset `offset`.
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// Write `data` (1, 2 or 4 bytes) at configuration offset `offset`.
    fn config_write(&mut self, offset: u16, data: &[u8]);
}

/// A device/function number on bus 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciSlot {
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciSlot {
    /// Slot `device`.`function` on bus 0; `None` when out of range.
    pub fn new(device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self { device, function })
    }
}

impl std::fmt::Display for PciSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00:{:02x}.{}", self.device, self.function)
    }
}

/// The host bridge at 00:00.0: a read-only type-0 header with Intel's
/// 440FX identity (8086:1237, class 06/00/00), as firmware expects to find.
#[derive(Debug, Clone)]
pub struct HostBridge {
    config: [u8; 256],
}

impl Default for HostBridge {
    fn default() -> Self {
        let mut config = [0u8; 256];
        config[0..2].copy_from_slice(&0x8086u16.to_le_bytes());
        config[2..4].copy_from_slice(&0x1237u16.to_le_bytes());
        // Command: memory + I/O decoding (the bridge always decodes).
        config[4] = 0x03;
        config[8] = 0x02; // revision
        config[0x0b] = 0x06; // class: bridge, host bridge (sub-class 0, prog-if 0)
        Self { config }
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = usize::from(offset)
                .checked_add(i)
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        log::trace!("pci 00:00.0: ignored write at {offset:#x} ({data:02x?})");
    }
}

/// Errors of the PCI bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// The slot already holds a function.
    #[error("PCI slot {0} is occupied")]
    SlotOccupied(PciSlot),
}

/// Bus 0 behind configuration mechanism #1.
pub struct PciRoot {
    address: u32,
    functions: BTreeMap<PciSlot, Box<dyn PciFunction>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("address", &format_args!("{:#010x}", self.address))
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus holding only the host bridge at 00:00.0.
    pub fn new() -> Self {
        let mut functions: BTreeMap<PciSlot, Box<dyn PciFunction>> = BTreeMap::new();
        functions.insert(
            PciSlot {
                device: 0,
                function: 0,
            },
            Box::new(HostBridge::default()),
        );
        Self {
            address: 0,
            functions,
        }
    }

    /// Plug `function` into `slot`.
    pub fn add_function(
        &mut self,
        slot: PciSlot,
        function: Box<dyn PciFunction>,
    ) -> Result<(), PciError> {
        if self.functions.contains_key(&slot) {
            return Err(PciError::SlotOccupied(slot));
        }
        self.functions.insert(slot, function);
        Ok(())
    }

    /// True for the ports this bus decodes (`0xCF8..=0xCFF`).
    pub fn handles(port: u16) -> bool {
        (CONFIG_ADDRESS_PORT..CONFIG_DATA_PORT + 4).contains(&port)
    }

    /// The selected function and configuration offset for a data access at
    /// `port`, or `None` when configuration cycles are disabled, the bus is
    /// not 0 or the access would cross the dword.
    fn target(&self, port: u16, len: usize) -> Option<(PciSlot, u16)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        if bus != 0 {
            return None;
        }
        let byte = port.checked_sub(CONFIG_DATA_PORT)?;
        if usize::from(byte) + len > 4 {
            return None;
        }
        let device = u8::try_from((self.address >> 11) & 0x1f).ok()?;
        let function = u8::try_from((self.address >> 8) & 0x7).ok()?;
        let register = u16::try_from(self.address & 0xfc).ok()?;
        Some((PciSlot { device, function }, register + byte))
    }

    /// An `in` from one of the bus's ports.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        if port == CONFIG_ADDRESS_PORT && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
            return;
        }
        let target = self.target(port, data.len());
        match target.and_then(|(slot, off)| self.functions.get_mut(&slot).map(|f| (f, off))) {
            Some((f, off)) => f.config_read(off, data),
            None => data.fill(0xff),
        }
    }

    /// An `out` to one of the bus's ports.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) {
        if port == CONFIG_ADDRESS_PORT {
            if let Ok(dword) = <[u8; 4]>::try_from(data) {
                // Bits 1..0 are reserved (read as 0).
                self.address = u32::from_le_bytes(dword) & !0x3;
            }
            return;
        }
        let target = self.target(port, data.len());
        if let Some((f, off)) =
            target.and_then(|(slot, off)| self.functions.get_mut(&slot).map(|f| (f, off)))
        {
            f.config_write(off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u16, Vec<u8>)>);

    impl PciFunction for std::sync::Arc<std::sync::Mutex<Recorder>> {
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            for (i, d) in data.iter_mut().enumerate() {
                *d = u8::try_from((usize::from(offset) + i) & 0xff).unwrap_or(0);
            }
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            if let Ok(mut r) = self.lock() {
                r.0.push((offset, data.to_vec()));
            }
        }
    }

    fn select(root: &mut PciRoot, device: u32, function: u32, reg: u32) {
        let a = ENABLE | (device << 11) | (function << 8) | reg;
        root.pio_write(CONFIG_ADDRESS_PORT, &a.to_le_bytes());
    }

    #[test]
    fn host_bridge_and_empty_slots() {
        let mut root = PciRoot::new();
        select(&mut root, 0, 0, 0);
        let mut id = [0u8; 4];
        root.pio_read(CONFIG_DATA_PORT, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1237_8086);
        select(&mut root, 5, 0, 0);
        root.pio_read(CONFIG_DATA_PORT, &mut id);
        assert_eq!(id, [0xff; 4]);
        // Disabled cycles read all-ones too.
        root.pio_write(CONFIG_ADDRESS_PORT, &0u32.to_le_bytes());
        root.pio_read(CONFIG_DATA_PORT, &mut id);
        assert_eq!(id, [0xff; 4]);
    }

    #[test]
    fn byte_and_word_accesses_reach_the_right_offset() {
        let mut root = PciRoot::new();
        let rec = std::sync::Arc::new(std::sync::Mutex::new(Recorder::default()));
        let slot = PciSlot::new(2, 0).unwrap_or(PciSlot {
            device: 2,
            function: 0,
        });
        assert_eq!(root.add_function(slot, Box::new(rec.clone())), Ok(()));
        assert_eq!(
            root.add_function(slot, Box::new(rec.clone())),
            Err(PciError::SlotOccupied(slot))
        );
        select(&mut root, 2, 0, 0x10);
        let mut b = [0u8; 1];
        root.pio_read(CONFIG_DATA_PORT + 3, &mut b);
        assert_eq!(b, [0x13]);
        let mut w = [0u8; 2];
        root.pio_read(CONFIG_DATA_PORT + 2, &mut w);
        assert_eq!(w, [0x12, 0x13]);
        root.pio_write(CONFIG_DATA_PORT + 1, &[0xaa]);
        root.pio_write(CONFIG_DATA_PORT, &[1, 2, 3, 4]);
        // A word at 0xCFF would cross the dword: dropped.
        root.pio_write(CONFIG_DATA_PORT + 3, &[9, 9]);
        let got = rec.lock().map(|r| r.0.clone()).unwrap_or_default();
        assert_eq!(got, vec![(0x11, vec![0xaa]), (0x10, vec![1, 2, 3, 4])]);
        // The address register reads back (reserved low bits clear).
        let mut a = [0u8; 4];
        root.pio_read(CONFIG_ADDRESS_PORT, &mut a);
        assert_eq!(u32::from_le_bytes(a), ENABLE | (2 << 11) | 0x10);
    }
}
