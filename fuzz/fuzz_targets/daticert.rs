//! Fuzzes the daticert.xml parser (untrusted XML from any provider).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::daticert(data));
