//! Fuzz target: `decode_monitors_config` over hostile guest memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_decode_monitors_config(data);
});
