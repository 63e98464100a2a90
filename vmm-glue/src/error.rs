//! The crate's error type.

/// Every way an operation of the glue can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A replay file does not start with the replay magic.
    #[error("not a QXL replay file (bad magic)")]
    BadMagic,
    /// A replay file has a version this build does not read.
    #[error("unsupported replay version {0}")]
    BadVersion(u16),
    /// A replay record runs past the end of the file.
    #[error("replay record at offset {offset} is truncated")]
    Truncated {
        /// File offset of the record.
        offset: usize,
    },
    /// A replay record has an unknown tag or sub-type.
    #[error("unknown replay record tag {tag:#x} at offset {offset}")]
    BadTag {
        /// File offset of the record.
        offset: usize,
        /// The tag.
        tag: u8,
    },
    /// A replay record carries a length outside its limits.
    #[error("replay record at offset {offset} has bad length {len}")]
    BadLength {
        /// File offset of the record.
        offset: usize,
        /// The length.
        len: u32,
    },
    /// The config record is missing, repeated or not first.
    #[error("replay record at offset {offset} is out of place (config must come first, once)")]
    Misplaced {
        /// File offset of the record.
        offset: usize,
    },
    /// A device could not be built or driven.
    #[error("device: {0}")]
    Device(#[from] devices::Error),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// A scene could not be built (e.g. no PNG in a slideshow directory).
    #[error("scene: {0}")]
    Scene(String),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
