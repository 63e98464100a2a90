//! Fuzz target: the RSA-OAEP ticket verifier with garbage ciphertexts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qxl_fuzz::fuzz_ticket(data);
});
