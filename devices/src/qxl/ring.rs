//! (device core: being written)
