//! (mock driver: being written)
