//! (mock encoder: being written)
