//! The entry points of the cargo-fuzz targets in `fuzz/fuzz_targets/`. They live in the
//! library so that a stable-toolchain test (`tests/fuzz_entry.rs`) runs exactly the same
//! code over the real samples and mutations of them; the fuzz targets are one-line calls.
//!
//! Each entry point must never panic on any input; where a property holds (a parsed
//! daticert written back parses to the same value) it is asserted, so the fuzzer finds
//! violations too.

use crate::pec::daticert::Daticert;

/// Parses arbitrary bytes as a daticert; a parsed value must survive write → parse.
pub fn daticert(data: &[u8]) {
    if let Ok(d) = Daticert::parse(data) {
        let xml = d.to_xml();
        match Daticert::parse(xml.as_bytes()) {
            Ok(again) => assert_eq!(d, again, "daticert did not round-trip"),
            Err(e) => panic!("a daticert we wrote does not parse: {e}\n{xml}"),
        }
    }
}

/// Classifies and verifies arbitrary bytes as a mail message (the whole `pecd verify`
/// path: MIME, S/MIME split, CMS parsing, daticert, consistency checks).
pub fn classify(data: &[u8]) {
    let _ = crate::report::verify(data, None);
}
