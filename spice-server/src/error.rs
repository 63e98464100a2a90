//! The crate's error type.

/// Every way an operation of the SPICE server can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rectangle is not well formed (`left > right` or `top > bottom`).
    #[error("malformed rectangle {0:?}")]
    BadRect(crate::command::Rect),
    /// An image could not be encoded, or a compressed image is malformed.
    #[error("image codec: {0}")]
    Codec(#[from] crate::codecs::CodecError),
}
