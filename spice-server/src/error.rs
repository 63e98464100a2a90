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

    // ---- protocol / network side (link, channels, server) ----
    /// An I/O error on a client socket or the listener.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A message from the client ended before a field it must contain.
    #[error("truncated message: needed {needed} bytes at offset {offset}, have {len}")]
    Truncated {
        /// Offset of the read that failed.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
        /// Length of the message.
        len: usize,
    },
    /// A field of a client message holds a value the protocol does not allow.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The link header did not start with "REDQ".
    #[error("bad link magic {0:#010x}")]
    BadMagic(u32),
    /// The client speaks another major protocol version.
    #[error("protocol version mismatch: client {major}.{minor}, server 2.2")]
    VersionMismatch {
        /// Client major version.
        major: u32,
        /// Client minor version.
        minor: u32,
    },
    /// A client message (link or channel) is larger than the per-stage cap.
    #[error("message too large: {size} bytes (max {max})")]
    MessageTooLarge {
        /// Announced size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The client announced more capability words than allowed before auth.
    #[error("too many capability words: {0}")]
    TooManyCaps(u64),
    /// The client did not finish the link handshake in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The ticket was wrong, expired, undecryptable, or no password is set.
    #[error("authentication failed: {0}")]
    AuthFailed(&'static str),
    /// The client chose an authentication mechanism the server does not offer (e.g. SASL).
    #[error("unsupported auth mechanism {0}")]
    UnsupportedAuth(u32),
    /// A non-main channel named a session that does not exist (any more).
    #[error("unknown session id {0:#x}")]
    BadConnectionId(u32),
    /// The client asked for a channel type/id this server does not provide.
    #[error("channel {channel_type}:{channel_id} not available")]
    ChannelNotAvailable {
        /// Channel type.
        channel_type: u8,
        /// Channel id.
        channel_id: u8,
    },
    /// The configured password is longer than SPICE allows (60 bytes).
    #[error("password longer than 60 bytes")]
    PasswordTooLong,
    /// RSA key generation or another crypto operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The display worker thread is gone (it panicked or was shut down).
    #[error("display worker is not running")]
    WorkerGone,
    /// The session or server was closed while the operation was pending.
    #[error("connection closed")]
    Closed,
}
