//! Fuzzes the POP3 session state machine, with a real store behind it, from any state
//! reachable by client bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pecd::fuzz::pop3_session(data));
