//! Fuzzes the JMAP request path (see `pecd::fuzz::jmap_request`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::jmap_request(data));
