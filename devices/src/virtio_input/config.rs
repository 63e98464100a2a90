//! The virtio-input config space (`struct virtio_input_config`, spec §5.8.4).
//!
//! # Layout
//!
//! ```text
//! 0   u8 select      (driver writes)
//! 1   u8 subsel      (driver writes)
//! 2   u8 size        (device answers: bytes valid in the union, 0 = none)
//! 3   u8 reserved[5]
//! 8   union u[128]   string / bitmap / virtio_input_absinfo / virtio_input_devids
//! ```
//!
//! The answer is computed from `select`/`subsel` on every read, so the only
//! state a guest can change is those two bytes.

use super::evdev::{
    ABS_X, ABS_Y, BTN_EXTRA, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, BTN_SIDE, BUS_VIRTUAL, EV_ABS,
    EV_KEY, EV_LED, EV_REL, EV_REP, LED_CAPSL, LED_NUML, LED_SCROLLL, REL_WHEEL, REL_X, REL_Y,
    REP_DELAY, REP_PERIOD,
};
use super::keymap;

/// `VIRTIO_INPUT_CFG_UNSET`.
pub const CFG_UNSET: u8 = 0x00;
/// `VIRTIO_INPUT_CFG_ID_NAME`.
pub const CFG_ID_NAME: u8 = 0x01;
/// `VIRTIO_INPUT_CFG_ID_SERIAL`.
pub const CFG_ID_SERIAL: u8 = 0x02;
/// `VIRTIO_INPUT_CFG_ID_DEVIDS`.
pub const CFG_ID_DEVIDS: u8 = 0x03;
/// `VIRTIO_INPUT_CFG_PROP_BITS`.
pub const CFG_PROP_BITS: u8 = 0x10;
/// `VIRTIO_INPUT_CFG_EV_BITS`.
pub const CFG_EV_BITS: u8 = 0x11;
/// `VIRTIO_INPUT_CFG_ABS_INFO`.
pub const CFG_ABS_INFO: u8 = 0x12;

/// Offset of the union in the config space.
pub const UNION_OFFSET: u64 = 8;
/// Size of the union.
pub const UNION_SIZE: usize = 128;
/// Size of the whole config space.
pub const CONFIG_SIZE: u64 = 136;

/// Largest value of the tablet's absolute axes (QEMU's `INPUT_EVENT_ABS_MAX`).
pub const ABS_MAX: u32 = 0x7fff;

/// Which device a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// A PC keyboard: every key of [`keymap`], autorepeat, the three lock LEDs.
    Keyboard,
    /// An absolute pointer (client mouse mode): X/Y in `0..=ABS_MAX`, five
    /// buttons, a wheel.
    Tablet,
    /// A relative mouse (server mouse mode): X/Y motion, five buttons, a wheel.
    Mouse,
}

/// `virtio_input_absinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsInfo {
    /// Minimum value.
    pub min: u32,
    /// Maximum value.
    pub max: u32,
    /// Fuzz.
    pub fuzz: u32,
    /// Flat.
    pub flat: u32,
    /// Resolution.
    pub res: u32,
}

/// `virtio_input_devids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevIds {
    /// `BUS_*`.
    pub bustype: u16,
    /// Vendor id.
    pub vendor: u16,
    /// Product id.
    pub product: u16,
    /// Version.
    pub version: u16,
}

/// What a virtio-input device tells the driver about itself, and the
/// `select`/`subsel` registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputConfig {
    kind: InputKind,
    name: String,
    serial: String,
    ids: DevIds,
    props: Vec<u8>,
    ev_bits: Vec<(u8, Vec<u8>)>,
    abs: Vec<(u8, AbsInfo)>,
    select: u8,
    subsel: u8,
}

/// Sets bit `bit` in a little-endian bitmap, growing it as needed (at most
/// [`UNION_SIZE`] bytes; larger bits are ignored).
fn set_bit(map: &mut Vec<u8>, bit: u16) {
    let byte = usize::from(bit / 8);
    if byte >= UNION_SIZE {
        return;
    }
    if map.len() <= byte {
        map.resize(byte + 1, 0);
    }
    if let Some(b) = map.get_mut(byte) {
        *b |= 1 << (bit % 8);
    }
}

fn bitmap(bits: impl IntoIterator<Item = u16>) -> Vec<u8> {
    let mut m = Vec::new();
    for b in bits {
        set_bit(&mut m, b);
    }
    m
}

/// The buttons the tablet and the mouse have.
pub const BUTTONS: [u16; 5] = [BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA];

impl InputConfig {
    /// The config of a device of `kind` (names and ids as QEMU's
    /// `virtio-keyboard`/`virtio-tablet`/`virtio-mouse`: vendor 0x0627).
    pub fn new(kind: InputKind) -> InputConfig {
        let (name, product, ev_bits, abs) = match kind {
            InputKind::Keyboard => (
                "QEMU Virtio Keyboard",
                1,
                vec![
                    (EV_KEY, bitmap(keymap::all_keys())),
                    (EV_REP, bitmap([REP_DELAY, REP_PERIOD])),
                    (EV_LED, bitmap([LED_NUML, LED_CAPSL, LED_SCROLLL])),
                ],
                Vec::new(),
            ),
            InputKind::Mouse => (
                "QEMU Virtio Mouse",
                2,
                vec![
                    (EV_KEY, bitmap(BUTTONS)),
                    (EV_REL, bitmap([REL_X, REL_Y, REL_WHEEL])),
                ],
                Vec::new(),
            ),
            InputKind::Tablet => {
                let axis = AbsInfo {
                    max: ABS_MAX,
                    ..AbsInfo::default()
                };
                (
                    "QEMU Virtio Tablet",
                    3,
                    vec![
                        (EV_KEY, bitmap(BUTTONS)),
                        (EV_REL, bitmap([REL_WHEEL])),
                        (EV_ABS, bitmap([ABS_X, ABS_Y])),
                    ],
                    vec![(ABS_X, axis), (ABS_Y, axis)],
                )
            }
        };
        let ev_bits = ev_bits
            .into_iter()
            .filter_map(|(t, m)| u8::try_from(t).ok().map(|t| (t, m)))
            .collect();
        let abs = abs
            .into_iter()
            .filter_map(|(a, i)| u8::try_from(a).ok().map(|a| (a, i)))
            .collect();
        InputConfig {
            kind,
            name: name.to_owned(),
            serial: String::new(),
            ids: DevIds {
                bustype: BUS_VIRTUAL,
                vendor: 0x0627,
                product,
                version: 1,
            },
            props: Vec::new(),
            ev_bits,
            abs,
            select: CFG_UNSET,
            subsel: 0,
        }
    }

    /// The device kind.
    pub const fn kind(&self) -> InputKind {
        self.kind
    }

    /// Replaces the name (truncated to 128 bytes).
    pub fn set_name(&mut self, name: &str) {
        self.name = name.to_owned();
    }

    /// Sets the serial string (truncated to 128 bytes).
    pub fn set_serial(&mut self, serial: &str) {
        self.serial = serial.to_owned();
    }

    /// Whether the device advertises `code` of event type `ty`.
    pub fn has_event(&self, ty: u16, code: u16) -> bool {
        let Ok(ty) = u8::try_from(ty) else {
            return false;
        };
        self.ev_bits
            .iter()
            .find(|(t, _)| *t == ty)
            .and_then(|(_, m)| m.get(usize::from(code / 8)))
            .is_some_and(|b| b & (1 << (code % 8)) != 0)
    }

    /// The union's content for the current `select`/`subsel` (at most
    /// [`UNION_SIZE`] bytes; its length is `size`).
    pub fn payload(&self) -> Vec<u8> {
        let mut out = match self.select {
            CFG_ID_NAME if self.subsel == 0 => self.name.as_bytes().to_vec(),
            CFG_ID_SERIAL if self.subsel == 0 => self.serial.as_bytes().to_vec(),
            CFG_ID_DEVIDS if self.subsel == 0 => [
                self.ids.bustype,
                self.ids.vendor,
                self.ids.product,
                self.ids.version,
            ]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
            CFG_PROP_BITS if self.subsel == 0 => self.props.clone(),
            CFG_EV_BITS => self
                .ev_bits
                .iter()
                .find(|(t, _)| *t == self.subsel)
                .map(|(_, m)| m.clone())
                .unwrap_or_default(),
            CFG_ABS_INFO => self
                .abs
                .iter()
                .find(|(a, _)| *a == self.subsel)
                .map(|(_, i)| {
                    [i.min, i.max, i.fuzz, i.flat, i.res]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        out.truncate(UNION_SIZE);
        out
    }

    /// The config-space byte at `offset` (0 beyond the end).
    fn byte(&self, offset: u64, payload: &[u8]) -> u8 {
        match offset {
            0 => self.select,
            1 => self.subsel,
            2 => u8::try_from(payload.len()).unwrap_or(u8::MAX),
            o => o
                .checked_sub(UNION_OFFSET)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| payload.get(i))
                .copied()
                .unwrap_or(0),
        }
    }

    /// A driver read of `data.len()` bytes at `offset` in the config space.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let payload = self.payload();
        let mut off = offset;
        for d in data.iter_mut() {
            *d = self.byte(off, &payload);
            off = off.saturating_add(1);
        }
    }

    /// A driver write at `offset`: only `select` and `subsel` are writable.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut off = offset;
        for &d in data {
            match off {
                0 => self.select = d,
                1 => self.subsel = d,
                _ => log::debug!("virtio-input: write to read-only config byte {off:#x}"),
            }
            off = off.saturating_add(1);
        }
    }

    /// Resets `select`/`subsel` (device reset).
    pub const fn reset(&mut self) {
        self.select = CFG_UNSET;
        self.subsel = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(c: &mut InputConfig, select: u8, subsel: u8) -> Vec<u8> {
        c.write(0, &[select, subsel]);
        let mut size = [0u8];
        c.read(2, &mut size);
        let mut u = vec![0u8; usize::from(size[0])];
        c.read(UNION_OFFSET, &mut u);
        u
    }

    #[test]
    fn keyboard_config() {
        let mut c = InputConfig::new(InputKind::Keyboard);
        assert_eq!(query(&mut c, CFG_ID_NAME, 0), b"QEMU Virtio Keyboard");
        assert_eq!(query(&mut c, CFG_ID_DEVIDS, 0), [6, 0, 0x27, 6, 1, 0, 1, 0]);
        let keys = query(&mut c, CFG_EV_BITS, 1);
        assert!(keys.get(3).is_some_and(|b| b & (1 << 6) != 0)); // KEY_A = 30
        assert!(c.has_event(EV_KEY, keymap::KEY_PAUSE));
        assert!(!query(&mut c, CFG_EV_BITS, 0x14).is_empty()); // EV_REP
        assert_eq!(query(&mut c, CFG_EV_BITS, 0x11), [0x07]); // EV_LED
        assert!(query(&mut c, CFG_EV_BITS, 3).is_empty());
        assert!(query(&mut c, CFG_ABS_INFO, 0).is_empty());
        assert!(query(&mut c, 0x55, 0).is_empty());
        assert!(query(&mut c, CFG_ID_NAME, 1).is_empty());
    }

    #[test]
    fn tablet_abs_info() {
        let mut c = InputConfig::new(InputKind::Tablet);
        assert_eq!(query(&mut c, CFG_EV_BITS, 3), [0x03]);
        let info = query(&mut c, CFG_ABS_INFO, 1);
        assert_eq!(info.len(), 20);
        assert_eq!(&info[4..8], &ABS_MAX.to_le_bytes());
        let btn = query(&mut c, CFG_EV_BITS, 1);
        assert_eq!(btn.len(), 0x114 / 8 + 1);
        assert!(c.has_event(EV_REL, REL_WHEEL));
        assert!(!c.has_event(EV_REL, REL_X));
    }

    #[test]
    fn odd_offsets_and_widths() {
        let mut c = InputConfig::new(InputKind::Mouse);
        c.write(2, &[9, 9, 9]); // read-only bytes
        c.write(u64::MAX, &[1, 2]);
        let mut all = [0xffu8; 200];
        c.read(0, &mut all);
        assert_eq!(all[0], 0);
        c.read(u64::MAX - 1, &mut all);
        assert!(all.iter().all(|&b| b == 0));
    }
}
