//! Checks shared by the load tests of one provider whose mailbox `a` sends PEC mail to its
//! mailbox `b` (a crash, an outage, a takeover in the middle): everything accepted ends up
//! delivered and receipted, each exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::server::Server;

/// Waits (up to 90 s) until `b` holds at least `n` messages and `a` at least `2 n` (an
/// acceptance and a delivery receipt each), as `s` lists them.
pub fn wait_for_all(s: &Server, a: &str, b: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let count = |who: &str| s.mailbox_json(who)["messages"].as_u64().unwrap();
    while count(b) < n || count(a) < 2 * n {
        assert!(
            Instant::now() < deadline,
            "a: {}, b: {}, accepted {n}",
            count(a),
            count(b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing more in flight that could arrive twice.
    std::thread::sleep(Duration::from_secs(1));
}

/// Every subject in `accepted` has its envelope at b (`at_b`) and its acceptance and
/// delivery receipts at a (`at_a`) exactly once, and nothing at all is there twice.
/// `at_a` / `at_b`: subject → how many messages in that INBOX carry it.
pub fn assert_each_once(
    accepted: &[String],
    at_a: &BTreeMap<String, u32>,
    at_b: &BTreeMap<String, u32>,
) {
    for subject in accepted {
        for (who, got, prefix) in [
            ("b", at_b, "POSTA CERTIFICATA: "),
            ("a", at_a, "ACCETTAZIONE: "),
            ("a", at_a, "CONSEGNA: "),
        ] {
            assert_eq!(
                got.get(&format!("{prefix}{subject}")),
                Some(&1),
                "{prefix}{subject} at {who}: {got:?}"
            );
        }
    }
    assert!(
        at_a.values().chain(at_b.values()).all(|&n| n == 1),
        "nothing doubled: {at_a:?} {at_b:?}"
    );
}
