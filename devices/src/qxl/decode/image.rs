//! `QXLImage` decoding (being filled in).
