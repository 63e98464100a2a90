//! Fuzz target: the `SPICE_REPLAY 1` recording reader (`devices::qxl::spice_record`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qxl_fuzz::fuzz_spice_record_parse(data));
