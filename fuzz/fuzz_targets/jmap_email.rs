//! Fuzzes the JMAP email path (see `pecd::fuzz::jmap_email`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::jmap_email(data));
