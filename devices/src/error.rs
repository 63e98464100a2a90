//! The crate's error type: one variant per rule a guest can break.
//!
//! Every error here is caused by guest-controlled data (or by a caller bug in
//! the VMM glue). None of them is fatal to the host: the device logs it, counts
//! it in [`crate::qxl::Metrics`], and either drops the offending command or
//! latches the QXL "guest bug" state as QEMU does.

use vm_memory::GuestAddress;

/// Every way a guest can make an operation of the device fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `QXLPHYSICAL` names a memslot id outside the table.
    #[error("memslot id {slot} out of range (table has {count} slots)")]
    SlotIdOutOfRange {
        /// The slot id from the address' high bits.
        slot: u8,
        /// Number of slots in the table.
        count: usize,
    },
    /// A `QXLPHYSICAL` names a memslot that is not active.
    #[error("memslot {0} is not active")]
    SlotInactive(u8),
    /// A `QXLPHYSICAL` carries a generation that does not match its slot.
    #[error("memslot {slot} generation mismatch: address has {got}, slot has {expected}")]
    SlotGeneration {
        /// The slot id.
        slot: u8,
        /// Generation in the address.
        got: u8,
        /// Generation of the slot.
        expected: u8,
    },
    /// `offset + len` of a `QXLPHYSICAL` does not fit inside its memslot.
    #[error("range {offset:#x}+{len:#x} outside memslot {slot} of size {size:#x}")]
    OutsideSlot {
        /// The slot id.
        slot: u8,
        /// Offset inside the slot.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Size of the slot.
        size: u64,
    },
    /// A guest memory access failed (the address is not backed by memory).
    #[error("guest memory access of {len:#x} bytes at {addr:#x} failed")]
    GuestMemory {
        /// Guest address.
        addr: u64,
        /// Length of the access.
        len: usize,
    },
    /// A memslot range given to `MEMSLOT_ADD` is not inside a RAM or VRAM BAR.
    #[error("memslot range {start:#x}..{end:#x} is not inside a memory BAR")]
    SlotRangeNotInBar {
        /// Guest-physical start.
        start: u64,
        /// Guest-physical end.
        end: u64,
    },
    /// `MEMSLOT_ADD` on a slot that is already active, or an id outside the guest's range.
    #[error("memslot {0} cannot be added (active or out of range)")]
    SlotAdd(u8),
    /// A chunk chain was longer than the chunk-count cap (or circular).
    #[error("chunk chain longer than {0} chunks (circular?)")]
    TooManyChunks(u32),
    /// The chunks of a chain add up to more data than the structure allows.
    #[error("chunk chain holds {got} bytes, expected {expected}")]
    ChunkSizeMismatch {
        /// Bytes found (or the point at which the cap was passed).
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// A size computed from guest fields is larger than the device accepts.
    #[error("{what} of {size} bytes exceeds the cap of {cap}")]
    TooLarge {
        /// What was being sized.
        what: &'static str,
        /// The size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// A size computed from guest fields overflowed.
    #[error("size arithmetic overflow in {0}")]
    Overflow(&'static str),
    /// A field holds a value the protocol does not define.
    #[error("invalid {field}: {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value, widened.
        value: u64,
    },
    /// A `QXLPHYSICAL` that the structure requires is 0 (decoder).
    #[error("required pointer {0} is null")]
    NullPointer(&'static str),
    /// A guest structure's fields contradict each other (decoder): e.g. a glyph
    /// count that does not match the glyphs found, a source area outside its bitmap.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A NUL-terminated guest string has no NUL within its bound (decoder).
    #[error("string not terminated within {0} bytes")]
    Unterminated(u64),
    /// The `QXLPHYSICAL` offset arithmetic left the 48-bit offset field (decoder).
    #[error("QXLPHYSICAL {phys:#x} + {add:#x} overflows the offset field")]
    PhysOverflow {
        /// The base address.
        phys: u64,
        /// The offset added.
        add: u64,
    },
    /// A surface id is outside `0..n_surfaces`.
    #[error("surface id {id} out of range (n_surfaces = {max})")]
    SurfaceIdOutOfRange {
        /// The id.
        id: u32,
        /// `n_surfaces`.
        max: u32,
    },
    /// Surface parameters are inconsistent (stride, size, format).
    #[error("invalid surface: {0}")]
    InvalidSurface(&'static str),
    /// A ring header holds indices that cannot be valid.
    #[error("ring {ring}: {what}")]
    BadRing {
        /// Which ring.
        ring: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A port was written that the device's revision or mode does not accept.
    #[error("unexpected write of {value:#x} to I/O port {port}")]
    UnexpectedPort {
        /// Port offset in the I/O BAR.
        port: u64,
        /// Value written.
        value: u8,
    },
    /// The device configuration is invalid (sizes, revision); a VMM bug, not a guest one.
    #[error("invalid QXL configuration: {0}")]
    InvalidConfig(&'static str),
    /// The guest asked for something that needs device state it has not set up
    /// (e.g. a compat mode set before BAR0 is mapped, a primary already present).
    #[error("invalid device state: {0}")]
    InvalidState(&'static str),
    /// An async port was written while another async operation was outstanding.
    #[error("async port {port} written while async operation {pending} is outstanding")]
    AsyncBusy {
        /// The new port.
        port: u64,
        /// The outstanding one.
        pending: u64,
    },
    /// A `SPICE_REPLAY` recording (spice-server's QXL command recorder, see
    /// [`crate::qxl::spice_record`]) is malformed, truncated, or exceeds a limit.
    #[error("SPICE_REPLAY recording malformed at byte {offset}: {fault:?}")]
    Record {
        /// Offset in the (decompressed) stream where the offending item starts.
        offset: u64,
        /// What is wrong.
        fault: RecordFault,
    },
    /// A replay file is malformed.
    #[error("replay file malformed at offset {offset}: {fault:?}")]
    Replay {
        /// File offset of the offending record.
        offset: usize,
        /// What is wrong.
        fault: ReplayFault,
    },
}

/// What is wrong with a replay file (see [`crate::qxl::replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFault {
    /// The file does not start with the replay magic.
    BadMagic,
    /// The file has a version this build does not read.
    BadVersion(u16),
    /// A record runs past the end of the file.
    Truncated,
    /// A record has an unknown tag or sub-type.
    BadTag(u8),
    /// A record carries a length outside its limits.
    BadLength(u32),
    /// The config record is missing, repeated or not first.
    Misplaced,
}

/// What is wrong with a `SPICE_REPLAY` recording (see [`crate::qxl::spice_record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// The stream does not start with the line `SPICE_REPLAY 1`.
    BadMagic,
    /// The stream ends inside an event (or inside the header line).
    Truncated,
    /// A text line (or blob header) is longer than the reader accepts.
    LineTooLong,
    /// A line is not the one the format requires here (named by its key).
    Expected(&'static str),
    /// A field is not a decimal integer.
    BadNumber(&'static str),
    /// A field's value is outside the range of its C type or of the protocol.
    OutOfRange(&'static str),
    /// A type code (event, command, draw, image, brush, clip, ...) the format does not define.
    UnknownType(&'static str),
    /// A blob is larger than the reader's cap.
    BlobTooLarge,
    /// The blobs of one event add up to more than the reader's cap.
    EventTooLarge,
    /// A zlib-compressed blob (`binary 1 ...`): not produced by release builds, not supported.
    CompressedBlob,
    /// A `data_chunks` list has more chunks than the reader's cap.
    TooManyChunks,
    /// Sizes that must agree do not (chunk total vs. declared total, bitmap
    /// `y * stride` vs. its data, clip rects vs. `num_rects`, glyph string, ...).
    SizeMismatch(&'static str),
    /// An image pointer the operation requires is null (`image 0`).
    NullImage,
    /// Reading the underlying stream failed.
    Io(std::io::ErrorKind),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error for a failed guest memory access at `addr`.
    pub fn guest_memory(addr: GuestAddress, len: usize) -> Self {
        Self::GuestMemory { addr: addr.0, len }
    }
}
