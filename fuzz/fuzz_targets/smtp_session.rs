//! Fuzzes the SMTP session state machine from any state reachable by client bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::smtp_session(data));
