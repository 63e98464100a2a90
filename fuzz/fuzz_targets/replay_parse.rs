//! Fuzz target: the QXL replay file parser; whatever parses must serialise back to the same records.
#![no_main]

use devices::qxl::replay;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(records) = replay::parse(data) {
        let again = replay::write(&records);
        assert_eq!(
            replay::parse(&again).ok().as_deref(),
            Some(records.as_slice())
        );
    }
});
