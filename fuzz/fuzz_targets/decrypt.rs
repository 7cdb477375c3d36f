#![no_main]

mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::HARNESS.decrypt_case(data));
