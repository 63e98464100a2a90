//! Fuzz target: client message streams (headers and bodies) on every channel.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_client_msg(data);
});
