//! PC scan code set 1 → Linux evdev `KEY_*`.
//!
//! # Primer
//!
//! SPICE clients send XT scan code set 1: a one-byte make code (bit 7 set
//! for the break/release), `0xE0`-prefixed codes for the extended keys of the
//! 101/104-key keyboard (arrows, the right-hand Ctrl/Alt, the keypad's Enter
//! and `/`, Windows keys, multimedia keys), and the one `0xE1` sequence, Pause
//! (`E1 1D 45` make, `E1 9D C5` break). The bytes arrive packed
//! little-endian in a u32: Right Ctrl down is `0x1DE0`, Pause down `0x45_1DE1`.
//!
//! For the basic block Linux' key numbers *are* the set-1 make codes
//! (`KEY_ESC` = 1 … `KEY_KPDOT` = 0x53), which is why the table is mostly the
//! identity; the extended block is the table `atkbd`/QEMU's keymaps use.
//! `E0 2A`/`E0 36` (the "fake shifts" around Print Screen and the arrow
//! keys) map to nothing.

/// Linux `KEY_PAUSE`.
pub const KEY_PAUSE: u16 = 119;
/// Linux `KEY_CAPSLOCK`.
pub const KEY_CAPSLOCK: u16 = 58;
/// Linux `KEY_NUMLOCK`.
pub const KEY_NUMLOCK: u16 = 69;
/// Linux `KEY_SCROLLLOCK`.
pub const KEY_SCROLLLOCK: u16 = 70;
/// Linux `KEY_A` (set-1 make code 0x1e).
pub const KEY_A: u16 = 30;
/// Linux `KEY_RIGHTCTRL` (set-1 `E0 1D`).
pub const KEY_RIGHTCTRL: u16 = 97;

/// The non-prefixed make codes beyond the identity block 0x01..=0x53.
const BASE_EXTRA: &[(u8, u16)] = &[
    (0x54, 99),  // Alt+SysRq → KEY_SYSRQ
    (0x56, 86),  // KEY_102ND (the ISO key next to left shift)
    (0x57, 87),  // KEY_F11
    (0x58, 88),  // KEY_F12
    (0x59, 117), // KEY_KPEQUAL
    (0x5d, 183), // KEY_F13
    (0x5e, 184), // KEY_F14
    (0x5f, 185), // KEY_F15
    (0x70, 93),  // KEY_KATAKANAHIRAGANA
    (0x73, 89),  // KEY_RO
    (0x79, 92),  // KEY_HENKAN
    (0x7b, 94),  // KEY_MUHENKAN
    (0x7d, 124), // KEY_YEN
    (0x7e, 121), // KEY_KPCOMMA
];

/// The `0xE0`-prefixed make codes.
const EXTENDED: &[(u8, u16)] = &[
    (0x10, 165), // KEY_PREVIOUSSONG
    (0x19, 163), // KEY_NEXTSONG
    (0x1c, 96),  // KEY_KPENTER
    (0x1d, 97),  // KEY_RIGHTCTRL
    (0x20, 113), // KEY_MUTE
    (0x21, 140), // KEY_CALC
    (0x22, 164), // KEY_PLAYPAUSE
    (0x24, 166), // KEY_STOPCD
    (0x2e, 114), // KEY_VOLUMEDOWN
    (0x30, 115), // KEY_VOLUMEUP
    (0x32, 172), // KEY_HOMEPAGE
    (0x35, 98),  // KEY_KPSLASH
    (0x37, 99),  // KEY_SYSRQ (Print Screen)
    (0x38, 100), // KEY_RIGHTALT (AltGr)
    (0x46, 119), // Ctrl+Break → KEY_PAUSE
    (0x47, 102), // KEY_HOME
    (0x48, 103), // KEY_UP
    (0x49, 104), // KEY_PAGEUP
    (0x4b, 105), // KEY_LEFT
    (0x4d, 106), // KEY_RIGHT
    (0x4f, 107), // KEY_END
    (0x50, 108), // KEY_DOWN
    (0x51, 109), // KEY_PAGEDOWN
    (0x52, 110), // KEY_INSERT
    (0x53, 111), // KEY_DELETE
    (0x5b, 125), // KEY_LEFTMETA
    (0x5c, 126), // KEY_RIGHTMETA
    (0x5d, 127), // KEY_COMPOSE (Menu)
    (0x5e, 116), // KEY_POWER
    (0x5f, 142), // KEY_SLEEP
    (0x63, 143), // KEY_WAKEUP
    (0x65, 217), // KEY_SEARCH
    (0x66, 156), // KEY_BOOKMARKS
    (0x67, 173), // KEY_REFRESH
    (0x68, 128), // KEY_STOP
    (0x69, 159), // KEY_FORWARD
    (0x6a, 158), // KEY_BACK
    (0x6b, 157), // KEY_COMPUTER
    (0x6c, 155), // KEY_MAIL
    (0x6d, 226), // KEY_MEDIA
];

/// Looks a make code (bit 7 clear) up in a sorted-by-code table.
fn lookup(table: &[(u8, u16)], make: u8) -> Option<u16> {
    table
        .binary_search_by_key(&make, |&(c, _)| c)
        .ok()
        .and_then(|i| table.get(i))
        .map(|&(_, k)| k)
}

/// A decoded scan code: the Linux key and whether the code was a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The Linux `KEY_*` code.
    pub code: u16,
    /// The scan code had its break bit (0x80) set.
    pub release: bool,
}

/// Translates a set-1 scan code as SPICE packs it (little-endian bytes in a
/// u32) to a Linux key. `None` for unknown codes and the fake shifts.
pub fn translate(scancode: u32) -> Option<Key> {
    let [b0, b1, _, _] = scancode.to_le_bytes();
    match b0 {
        0xe0 => {
            let code = lookup(EXTENDED, b1 & 0x7f)?;
            Some(Key {
                code,
                release: b1 & 0x80 != 0,
            })
        }
        0xe1 => Some(Key {
            code: KEY_PAUSE,
            release: b1 & 0x80 != 0,
        }),
        _ => {
            let make = b0 & 0x7f;
            let code = match make {
                0x01..=0x53 => u16::from(make),
                _ => lookup(BASE_EXTRA, make)?,
            };
            Some(Key {
                code,
                release: b0 & 0x80 != 0,
            })
        }
    }
}

/// Every key code [`translate`] can produce (for the keyboard's `EV_KEY`
/// bitmap), unsorted, possibly with repeats.
pub fn all_keys() -> impl Iterator<Item = u16> {
    (1u16..=0x53)
        .chain(BASE_EXTRA.iter().map(|&(_, k)| k))
        .chain(EXTENDED.iter().map(|&(_, k)| k))
        .chain(std::iter::once(KEY_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(BASE_EXTRA.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(EXTENDED.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn basic_extended_and_pause() {
        let k = |code, release| Some(Key { code, release });
        assert_eq!(translate(0x1e), k(KEY_A, false));
        assert_eq!(translate(0x9e), k(KEY_A, true));
        assert_eq!(translate(0x01), k(1, false)); // KEY_ESC
        assert_eq!(translate(0x3a), k(KEY_CAPSLOCK, false));
        assert_eq!(translate(0x57), k(87, false)); // F11
        assert_eq!(translate(0xd8), k(88, true)); // F12 up
        assert_eq!(translate(0x1de0), k(KEY_RIGHTCTRL, false));
        assert_eq!(translate(0x9de0), k(KEY_RIGHTCTRL, true));
        assert_eq!(translate(0x48e0), k(103, false)); // KEY_UP
        assert_eq!(translate(0x1ce0), k(96, false)); // KP Enter
        assert_eq!(translate(0x5be0), k(125, false)); // left Windows
        assert_eq!(translate(0x451de1), k(KEY_PAUSE, false));
        assert_eq!(translate(0xc59de1), k(KEY_PAUSE, true));
        assert_eq!(translate(0x2ae0), None); // fake shift
        assert_eq!(translate(0x00), None);
        assert_eq!(translate(0x7f), None);
        assert_eq!(translate(0xe0), None); // lone prefix: E0 00
    }

    #[test]
    fn every_byte_pattern_is_total() {
        for b0 in 0..=255u32 {
            for b1 in [0u32, 0x1d, 0x9d, 0xff] {
                if let Some(k) = translate(b0 | (b1 << 8)) {
                    assert!(k.code > 0 && k.code <= crate::virtio_input::evdev::KEY_MAX);
                }
            }
        }
        assert!(all_keys().count() > 100);
    }
}
