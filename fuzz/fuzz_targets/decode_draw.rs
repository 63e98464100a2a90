//! Fuzz target: `decode_command` for `QXL_CMD_DRAW` over hostile guest memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_decode_command(data, 1);
});
