//! Fuzz target: the JPEG image decoder with arbitrary streams.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_codec_jpeg(data);
});
