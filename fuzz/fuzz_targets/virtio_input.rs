//! Fuzz target: virtio-input behind virtio-mmio, with registers, host
//! injections and guest memory all chosen by the fuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_virtio_input(data);
});
