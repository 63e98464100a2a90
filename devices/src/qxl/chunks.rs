//! (decoders: being written)
