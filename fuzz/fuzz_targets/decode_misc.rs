//! Fuzz target: `decode_command` for `QXL_CMD_UPDATE`, `QXL_CMD_MESSAGE`, NOP and unknown types.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let cmd_type = match selector % 4 {
        0 => 2,
        1 => 4,
        2 => 0,
        _ => u32::from(selector),
    };
    qxl_fuzz::fuzz_decode_command(rest, cmd_type);
});
