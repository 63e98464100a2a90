//! Fuzz target: the pre-authentication SPICE link message parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_link_mess(data);
});
