//! Fuzzes the classifier and the whole `pecd verify` path on arbitrary messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::classify(data));
