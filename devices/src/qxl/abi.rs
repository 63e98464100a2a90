//! Numbers of the QXL guest ABI: PCI identity, ports, interrupt bits, and the
//! byte offsets of the packed `QXLRom` / `QXLRam` / ring layouts.
//!
//! # Primer
//!
//! Every structure the guest shares with the device is declared *packed* in
//! `spice-protocol:spice/qxl_dev.h`, little-endian, with no alignment padding.
//! The device never overlays Rust structs on guest memory: it copies a
//! structure into a host buffer once and reads fields at the offsets below
//! (see [`super::guest::le`]). The offsets come from the reference tables in
//! `shared/spec/qxl-device.md` §4–§6 and are checked by the layout tests.

/// PCI vendor id (`REDHAT_PCI_VENDOR_ID`).
pub const PCI_VENDOR_ID: u16 = 0x1b36;
/// PCI device id (`QXL_DEVICE_ID_STABLE`).
pub const PCI_DEVICE_ID: u16 = 0x0100;
/// PCI subsystem vendor id (QEMU's default for every PCI device).
pub const PCI_SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;
/// PCI subsystem id (QEMU's default for every PCI device).
pub const PCI_SUBSYSTEM_ID: u16 = 0x1100;
/// Class code of `qxl-vga` (`PCI_CLASS_DISPLAY_VGA`).
pub const PCI_CLASS_DISPLAY_VGA: u32 = 0x03_00_00;
/// Class code of the secondary `qxl` (`PCI_CLASS_DISPLAY_OTHER`).
pub const PCI_CLASS_DISPLAY_OTHER: u32 = 0x03_80_00;

/// BAR index of the RAM BAR (`QXL_RAM_RANGE_INDEX`).
pub const RAM_RANGE_INDEX: usize = 0;
/// BAR index of the 32-bit VRAM BAR (`QXL_VRAM_RANGE_INDEX`).
pub const VRAM_RANGE_INDEX: usize = 1;
/// BAR index of the ROM BAR (`QXL_ROM_RANGE_INDEX`).
pub const ROM_RANGE_INDEX: usize = 2;
/// BAR index of the I/O BAR (`QXL_IO_RANGE_INDEX`).
pub const IO_RANGE_INDEX: usize = 3;
/// BAR index of the 64-bit VRAM BAR (QEMU's `QXL_VRAM64_RANGE_INDEX`).
pub const VRAM64_RANGE_INDEX: usize = 4;

/// `QXL_ROM_MAGIC` ("QXRO").
pub const ROM_MAGIC: u32 = 0x4f52_5851;
/// `QXL_RAM_MAGIC` ("QXRA").
pub const RAM_MAGIC: u32 = 0x4152_5851;
/// `QXL_PAGE_SIZE`.
pub const PAGE_SIZE: u64 = 4096;
/// `QXL_FREE_BUNCH_SIZE`: releases are published in batches of this many.
pub const FREE_BUNCH_SIZE: u32 = 32;

/// Highest revision the device implements (QEMU's default, 5).
pub const MAX_REVISION: u8 = 5;
/// Revision that added ports 8–15 (`QXL_REVISION_STABLE_V06`).
pub const REVISION_V06: u8 = 2;
/// Revision that added the async ports 16–23 (`QXL_REVISION_STABLE_V10`).
pub const REVISION_V10: u8 = 3;
/// Revision that added `MONITORS_CONFIG_ASYNC` and client fields (`QXL_REVISION_STABLE_V12`).
pub const REVISION_V12: u8 = 4;

/// I/O port offsets in BAR3 (`QXL_IO_*`); the value written is the byte.
pub mod io {
    /// Wake the command-ring consumer.
    pub const NOTIFY_CMD: u64 = 0;
    /// Wake the cursor-ring consumer.
    pub const NOTIFY_CURSOR: u64 = 1;
    /// Render `ram.update_area` of `ram.update_surface` into guest memory (sync).
    pub const UPDATE_AREA: u64 = 2;
    /// Re-evaluate the interrupt line.
    pub const UPDATE_IRQ: u64 = 3;
    /// The guest is short of memory: flush releases.
    pub const NOTIFY_OOM: u64 = 4;
    /// Hard reset.
    pub const RESET: u64 = 5;
    /// Compat (qxl-1) mode set.
    pub const SET_MODE: u64 = 6;
    /// Print `ram.log_buf`.
    pub const LOG: u64 = 7;
    /// Register memslot `value` from `ram.mem_slot`.
    pub const MEMSLOT_ADD: u64 = 8;
    /// Unregister memslot `value`.
    pub const MEMSLOT_DEL: u64 = 9;
    /// Not implemented by QEMU (guest bug).
    pub const DETACH_PRIMARY: u64 = 10;
    /// Not implemented by QEMU (guest bug).
    pub const ATTACH_PRIMARY: u64 = 11;
    /// Create the primary surface from `ram.create_surface`.
    pub const CREATE_PRIMARY: u64 = 12;
    /// Destroy the primary surface.
    pub const DESTROY_PRIMARY: u64 = 13;
    /// Wait until surface `value` is unused.
    pub const DESTROY_SURFACE_WAIT: u64 = 14;
    /// Destroy every surface.
    pub const DESTROY_ALL_SURFACES: u64 = 15;
    /// Async [`UPDATE_AREA`].
    pub const UPDATE_AREA_ASYNC: u64 = 16;
    /// Async [`MEMSLOT_ADD`].
    pub const MEMSLOT_ADD_ASYNC: u64 = 17;
    /// Async [`CREATE_PRIMARY`].
    pub const CREATE_PRIMARY_ASYNC: u64 = 18;
    /// Async [`DESTROY_PRIMARY`].
    pub const DESTROY_PRIMARY_ASYNC: u64 = 19;
    /// Async [`DESTROY_SURFACE_WAIT`].
    pub const DESTROY_SURFACE_ASYNC: u64 = 20;
    /// Async [`DESTROY_ALL_SURFACES`].
    pub const DESTROY_ALL_SURFACES_ASYNC: u64 = 21;
    /// Render every surface up to date (async).
    pub const FLUSH_SURFACES_ASYNC: u64 = 22;
    /// Publish the partially built release batch (sync).
    pub const FLUSH_RELEASE: u64 = 23;
    /// Read the guest monitors configuration (async, revision 4+).
    pub const MONITORS_CONFIG_ASYNC: u64 = 24;
    /// Number of defined ports (`QXL_IO_RANGE_SIZE`).
    pub const RANGE_SIZE: u64 = 25;

    /// The revision that introduced `port`, `None` for undefined ports.
    pub const fn min_revision(port: u64) -> Option<u8> {
        match port {
            0..=7 => Some(1),
            8..=15 => Some(super::REVISION_V06),
            16..=23 => Some(super::REVISION_V10),
            24 => Some(super::REVISION_V12),
            _ => None,
        }
    }

    /// True for the ports that complete with `QXL_INTERRUPT_IO_CMD`.
    pub const fn is_async(port: u64) -> bool {
        matches!(
            port,
            UPDATE_AREA_ASYNC..=FLUSH_SURFACES_ASYNC | MONITORS_CONFIG_ASYNC
        )
    }

    /// The synchronous port an async port behaves like (identity for other ports).
    pub const fn sync_equivalent(port: u64) -> u64 {
        match port {
            UPDATE_AREA_ASYNC => UPDATE_AREA,
            MEMSLOT_ADD_ASYNC => MEMSLOT_ADD,
            CREATE_PRIMARY_ASYNC => CREATE_PRIMARY,
            DESTROY_PRIMARY_ASYNC => DESTROY_PRIMARY,
            DESTROY_SURFACE_ASYNC => DESTROY_SURFACE_WAIT,
            DESTROY_ALL_SURFACES_ASYNC => DESTROY_ALL_SURFACES,
            p => p,
        }
    }

    /// The ports QEMU accepts while the device is in VGA mode.
    pub const fn allowed_in_vga_mode(port: u64) -> bool {
        matches!(
            port,
            RESET
                | SET_MODE
                | MEMSLOT_ADD
                | MEMSLOT_DEL
                | CREATE_PRIMARY
                | UPDATE_IRQ
                | LOG
                | MEMSLOT_ADD_ASYNC
                | CREATE_PRIMARY_ASYNC
        )
    }
}

/// `int_pending` / `int_mask` bits (`QXL_INTERRUPT_*`).
pub mod interrupt {
    /// Command-ring pop reached `notify_on_cons`, or release-ring push reached `notify_on_prod`.
    pub const DISPLAY: u32 = 1 << 0;
    /// Cursor-ring pop reached `notify_on_cons`.
    pub const CURSOR: u32 = 1 << 1;
    /// An async port completed.
    pub const IO_CMD: u32 = 1 << 2;
    /// A guest bug was latched.
    pub const ERROR: u32 = 1 << 3;
    /// Client capabilities were written to the ROM (revision 4+).
    pub const CLIENT: u32 = 1 << 4;
    /// The ROM client monitors configuration changed (revision 4+).
    pub const CLIENT_MONITORS_CONFIG: u32 = 1 << 5;
    /// The mask Linux drm/qxl writes into `int_mask`.
    pub const LINUX_MASK: u32 = DISPLAY | CURSOR | IO_CMD | CLIENT_MONITORS_CONFIG;
}

/// `QXLCommand.type` values (`QXL_CMD_*`).
pub mod cmd {
    /// No operation.
    pub const NOP: u32 = 0;
    /// `QXLDrawable`.
    pub const DRAW: u32 = 1;
    /// `QXLUpdateCmd` (deprecated).
    pub const UPDATE: u32 = 2;
    /// `QXLCursorCmd` (cursor ring only).
    pub const CURSOR: u32 = 3;
    /// `QXLMessage`.
    pub const MESSAGE: u32 = 4;
    /// `QXLSurfaceCmd`.
    pub const SURFACE: u32 = 5;
    /// `QXL_COMMAND_FLAG_COMPAT`: the command uses the qxl-1 layouts.
    pub const FLAG_COMPAT: u32 = 1;
    /// `QXL_COMMAND_FLAG_COMPAT_16BPP`: compat mode with a 16-bit mode.
    pub const FLAG_COMPAT_16BPP: u32 = 2;
    /// Size of a `QXLCommand` ring element.
    pub const SIZE: u64 = 16;
    /// Offset of `QXLCommand.data`.
    pub const DATA: usize = 0;
    /// Offset of `QXLCommand.type`.
    pub const TYPE: usize = 8;
}

/// `QXLRom` field offsets (BAR2).
pub mod rom {
    /// `magic`.
    pub const MAGIC: usize = 0;
    /// `id`.
    pub const ID: usize = 4;
    /// `update_id`.
    pub const UPDATE_ID: usize = 8;
    /// `compression_level`.
    pub const COMPRESSION_LEVEL: usize = 12;
    /// `log_level`.
    pub const LOG_LEVEL: usize = 16;
    /// `mode` (compat mode index).
    pub const MODE: usize = 20;
    /// `modes_offset`.
    pub const MODES_OFFSET: usize = 24;
    /// `num_pages`.
    pub const NUM_PAGES: usize = 28;
    /// `pages_offset`.
    pub const PAGES_OFFSET: usize = 32;
    /// `draw_area_offset`.
    pub const DRAW_AREA_OFFSET: usize = 36;
    /// `surface0_area_size`.
    pub const SURFACE0_AREA_SIZE: usize = 40;
    /// `ram_header_offset`.
    pub const RAM_HEADER_OFFSET: usize = 44;
    /// `mm_clock`.
    pub const MM_CLOCK: usize = 48;
    /// `n_surfaces`.
    pub const N_SURFACES: usize = 52;
    /// `flags` (u64).
    pub const FLAGS: usize = 56;
    /// `slots_start`.
    pub const SLOTS_START: usize = 64;
    /// `slots_end`.
    pub const SLOTS_END: usize = 65;
    /// `slot_gen_bits`.
    pub const SLOT_GEN_BITS: usize = 66;
    /// `slot_id_bits`.
    pub const SLOT_ID_BITS: usize = 67;
    /// `slot_generation`.
    pub const SLOT_GENERATION: usize = 68;
    /// `client_present` (revision 4+).
    pub const CLIENT_PRESENT: usize = 69;
    /// `client_capabilities[58]` (revision 4+).
    pub const CLIENT_CAPABILITIES: usize = 70;
    /// Length of `client_capabilities`.
    pub const CLIENT_CAPABILITIES_LEN: usize = 58;
    /// `client_monitors_config_crc`.
    pub const CLIENT_MONITORS_CONFIG_CRC: usize = 128;
    /// `client_monitors_config` (`count` u16, `padding` u16, `heads[64]`).
    pub const CLIENT_MONITORS_CONFIG: usize = 132;
    /// `client_monitors_config.heads[0]`.
    pub const CLIENT_MONITORS_CONFIG_HEADS: usize = 136;
    /// Number of heads in the ROM client monitors configuration.
    pub const CLIENT_MONITORS_CONFIG_MAX_HEADS: usize = 64;
    /// Size of `client_monitors_config` (the CRC covers exactly these bytes).
    pub const CLIENT_MONITORS_CONFIG_SIZE: usize = 1028;
    /// `sizeof(QXLRom)`; the mode list starts here.
    pub const SIZE: usize = 1160;
    /// Size of one `QXLMode`.
    pub const MODE_SIZE: usize = 32;
}

/// `QXLRam` field offsets (relative to the RAM header, BAR0 + `ram_header_offset`).
pub mod ram {
    /// `magic`.
    pub const MAGIC: u64 = 0;
    /// `int_pending`.
    pub const INT_PENDING: u64 = 4;
    /// `int_mask`.
    pub const INT_MASK: u64 = 8;
    /// `log_buf[4096]`.
    pub const LOG_BUF: u64 = 12;
    /// Length of `log_buf`.
    pub const LOG_BUF_LEN: usize = 4096;
    /// `cmd_ring` header.
    pub const CMD_RING: u64 = 4108;
    /// `cursor_ring` header.
    pub const CURSOR_RING: u64 = 4640;
    /// `release_ring` header.
    pub const RELEASE_RING: u64 = 5172;
    /// `update_area` (`QXLRect`).
    pub const UPDATE_AREA: u64 = 5256;
    /// `update_surface`.
    pub const UPDATE_SURFACE: u64 = 5272;
    /// `mem_slot` (`mem_start` u64, `mem_end` u64).
    pub const MEM_SLOT: u64 = 5276;
    /// `create_surface` (`QXLSurfaceCreate`, 40 bytes).
    pub const CREATE_SURFACE: u64 = 5292;
    /// `flags`.
    pub const FLAGS: u64 = 5332;
    /// `monitors_config` (`QXLPHYSICAL`).
    pub const MONITORS_CONFIG: u64 = 5340;
    /// `sizeof(QXLRam)`.
    pub const SIZE: u64 = 5348;
    /// Space reserved for the header at the end of BAR0 (`ALIGN(sizeof(QXLRam), 4096)`).
    pub const HEADER_SIZE: u64 = 8192;
}

/// `SPICE_RING_DECLARE` layout shared by the three rings.
pub mod ring {
    /// `num_items`.
    pub const NUM_ITEMS: u64 = 0;
    /// `prod`.
    pub const PROD: u64 = 4;
    /// `notify_on_prod`.
    pub const NOTIFY_ON_PROD: u64 = 8;
    /// `cons`.
    pub const CONS: u64 = 12;
    /// `notify_on_cons`.
    pub const NOTIFY_ON_CONS: u64 = 16;
    /// `items[]`.
    pub const ITEMS: u64 = 20;
    /// Size of the header.
    pub const HEADER_SIZE: usize = 20;
    /// Slots of the command ring.
    pub const CMD_RING_SIZE: u32 = 32;
    /// Slots of the cursor ring.
    pub const CURSOR_RING_SIZE: u32 = 32;
    /// Slots of the release ring.
    pub const RELEASE_RING_SIZE: u32 = 8;
    /// Size of a release ring element (u64 id).
    pub const RELEASE_ITEM_SIZE: u64 = 8;
}

/// `QXLSurfaceCreate` (40 bytes, `ram.create_surface`).
pub mod surface_create {
    /// `width`.
    pub const WIDTH: usize = 0;
    /// `height`.
    pub const HEIGHT: usize = 4;
    /// `stride` (i32; negative = bottom-up).
    pub const STRIDE: usize = 8;
    /// `format` (`SpiceSurfaceFmt`).
    pub const FORMAT: usize = 12;
    /// `position`.
    pub const POSITION: usize = 16;
    /// `mouse_mode`.
    pub const MOUSE_MODE: usize = 20;
    /// `flags`.
    pub const FLAGS: usize = 24;
    /// `type` (`QXL_SURF_TYPE_PRIMARY` = 0).
    pub const TYPE: usize = 28;
    /// `mem` (`QXLPHYSICAL`).
    pub const MEM: usize = 32;
    /// Size.
    pub const SIZE: usize = 40;
    /// `QXL_SURF_TYPE_PRIMARY`.
    pub const TYPE_PRIMARY: u32 = 0;
    /// `QXL_SURF_FLAG_KEEP_DATA`.
    pub const FLAG_KEEP_DATA: u32 = 1;
    /// `SPICE_SURFACE_FMT_32_xRGB`.
    pub const FMT_32_XRGB: u32 = 32;
}

/// `QXLRect` (16 bytes): top, left, bottom, right (i32).
pub mod rect {
    /// `top`.
    pub const TOP: usize = 0;
    /// `left`.
    pub const LEFT: usize = 4;
    /// `bottom`.
    pub const BOTTOM: usize = 8;
    /// `right`.
    pub const RIGHT: usize = 12;
    /// Size.
    pub const SIZE: usize = 16;
}

/// `QXLReleaseInfo`: the first 8 bytes of every command structure.
pub mod release_info {
    /// Size of the `id` / `next` union.
    pub const SIZE: u64 = 8;
}
