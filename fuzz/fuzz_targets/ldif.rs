//! Fuzzes the provider index (LDIF) parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::ldif(data));
