//! Decoder tests (being written).
