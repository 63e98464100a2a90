//! Fuzz target: replay files (guest memory writes, port writes, PCI writes)
//! driven into a fresh QXL device. Seeds: `target/qxl-replay-corpus/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_ring_replay(data);
});
