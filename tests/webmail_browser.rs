//! The built-in webmail in a real browser: two real `pecd serve` providers that exchange
//! PEC (tests/common/jmap.rs `pair`), and `tests/browser/webmail.mjs` driving Debian's
//! chromium through playwright-core against them, with axe-core checking each screen.
//!
//! What the script asserts, step by step (it prints `ok - …` per step): the login screen
//! (Italian by default, English selectable and remembered, a wrong password refused, log in
//! by keyboard alone); compose (Bcc explained and refused; a PEC with an attachment and the
//! short receipt form accepted at once; an access-point refusal shown with its reason); the
//! sender's timeline reaching "consegnato"; receipts badged in the list and found by
//! identificativo; the recipient's certified message with the green banner, the unwrapped
//! original, its attachment (downloaded as an attachment), the daticert and the .eml;
//! the same message in the security archive (a read-only account of its own), with its
//! verdict and evidence bundle;
//! new mail appearing without a reload (EventSource); a `<script>` in an HTML body never
//! running and remote images blocked; a tampered envelope showing the red banner; no
//! serious or critical axe violation on any screen; no script error; logout.
//! Screenshots of each screen go to `target/webmail-screenshots/`.

mod common;

use common::jmap::{Web, have_curl, pair};

#[test]
fn webmail_in_a_real_browser() {
    if !common::web::have_browser_tools() || !have_curl() {
        return;
    }
    let (a, b) = pair(
        ("pec.uno.test", &[("alice@pec.uno.test", "secret-alice")]),
        ("pec.due.test", &[("bob@pec.due.test", "secret-bob")]),
    );
    let (wa, wb) = (Web::of(&a), Web::of(&b));
    let (ok, out) = common::web::run_script(
        "webmail.mjs",
        &[
            ("PECD_A_URL", wa.base.clone()),
            ("PECD_A_USER", "alice@pec.uno.test".into()),
            ("PECD_A_PASS", "secret-alice".into()),
            ("PECD_B_URL", wb.base.clone()),
            ("PECD_B_USER", "bob@pec.due.test".into()),
            ("PECD_B_PASS", "secret-bob".into()),
        ],
    );
    println!("{out}");
    assert!(ok, "the webmail's browser test failed:\n{out}");
    assert!(
        out.lines().any(|l| l.trim().ends_with("passed, 0 failed")),
        "no summary line:\n{out}"
    );
}
