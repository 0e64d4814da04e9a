//! Issue #11, goal 3: a maximum-size message costs each provider process a bounded peak
//! RSS, a small multiple of the message, not one copy per stage (the bound here is what
//! was reached; the goal of 3× in all is printed beside it). Two `pecd serve`
//! processes (A sends, B receives and returns the completa delivery receipt, which carries
//! the original again); the peak (`VmHWM`) of each is read once the receipt is in A's
//! mailbox, so nothing in between is missed.

mod common;

use std::time::{Duration, Instant};

use common::jmap::pair;

const A: &str = "pec.alfa.test";
const B: &str = "pec.beta.test";
/// The size from the interop report of issue #13, just under the 50 MiB limit.
const SIZE: usize = 52_426_861;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_size_message_keeps_both_providers_peak_rss_bounded() {
    let (sender, rcpt) = (format!("a@{A}"), format!("b@{B}"));
    let (a, b) = pair((A, &[(&sender, "pw")]), (B, &[(&rcpt, "pw")]));
    let idle = (a.peak_rss_bytes().unwrap(), b.peak_rss_bytes().unwrap());
    let msg = common::sized_message(&sender, &rcpt, "grande", SIZE);
    let started = Instant::now();
    let (code, text) =
        common::smtp::submit(a.addr("smtps"), &a.ca(), &sender, "pw", &[&rcpt], &msg).await;
    assert_eq!(code, 250, "{text}");
    drop(msg);
    let count = |s: &common::server::Server, who: &str| s.mailbox_json(who)["messages"].clone();
    loop {
        // The acceptance and the delivery receipt at A, the envelope at B.
        if count(&a, &sender) == 2 && count(&b, &rcpt) == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the delivery receipt never came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = (a.peak_rss_bytes().unwrap(), b.peak_rss_bytes().unwrap());
    let x = |p: u64| p as f64 / SIZE as f64;
    eprintln!(
        "{SIZE}-byte message, delivery receipt after {:.1?}: peak RSS sender {} MiB ({:.2}× the message; idle {} MiB), receiver {} MiB ({:.2}×; idle {} MiB)",
        started.elapsed(),
        peak.0 >> 20,
        x(peak.0),
        idle.0 >> 20,
        peak.1 >> 20,
        x(peak.1),
        idle.1 >> 20,
    );
    // Issue #11's goal is the whole peak under 3× the message. The idle server is not the
    // message's doing and differs by build (35 MiB for a release build, about 65 MiB for
    // this test's debug build), so what is bounded here is the peak above idle, per role:
    // - the sender holds at most two copies at once, the original (rewritten in place
    //   into postacert.eml) and the envelope being signed around it;
    // - the receiver the envelope as received and its completa delivery receipt.
    // Before the copies went they were 4.1× and 5.5×; before the last ones (OpenSSL's
    // copy of the verified content, the classifier's parse and copy of the original,
    // the sender's separate postacert), 3.0–3.7× and 2.6×.
    for (who, p, i, bound) in [
        ("sender", peak.0, idle.0, 2.3),
        ("receiver", peak.1, idle.1, 2.3),
    ] {
        let above = p.saturating_sub(i);
        assert!(
            x(above) <= bound,
            "{who}: peak RSS {} MiB, {} MiB above idle: {:.2}× the message (bound {bound}×)",
            p >> 20,
            above >> 20,
            x(above)
        );
    }
}
