//! The crate's error type.

/// Every way an operation of the glue can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device could not be built or driven.
    #[error("device: {0}")]
    Device(#[from] devices::Error),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// A scene could not be built (e.g. no PNG in a slideshow directory).
    #[error("scene: {0}")]
    Scene(String),
    /// The command line is wrong.
    #[error("usage: {0}")]
    Usage(String),
    /// The SPICE server failed.
    #[error("spice server: {0}")]
    Spice(#[from] spice_server::Error),
    /// Booting a guest failed (`qxl-vmm boot`).
    #[error("boot: {0}")]
    Boot(#[from] crate::boot::BootError),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
