//! Fuzzes a whole SMTP transaction on port 25 into classify / verify / the outer-header
//! check (see `pecd::fuzz::incoming`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::incoming(data));
