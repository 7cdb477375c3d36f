#![no_main]

mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::HARNESS.layer_case(data);
});
