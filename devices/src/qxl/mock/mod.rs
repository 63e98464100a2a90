//! A mock QXL guest driver for tests, benches, fuzzers and other crates.
//!
//! Enabled by the `test-utils` feature (like virtio-queue's `MockSplitQueue`):
//! - [`encode`] writes owned [`spice_server::command`] values into guest memory
//!   in the exact packed QXL layouts, the way a guest driver lays them out.
//! - [`driver`] plays the Linux `drm/qxl` driver against a [`super::device::QxlDevice`]:
//!   probe, reset, memslots, primary surface, ring pushes and release-ring draining.

pub mod driver;
pub mod encode;
