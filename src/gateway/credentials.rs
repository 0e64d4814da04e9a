//! Which sessions are still valid: a per-mailbox generation number, bumped whenever the
//! mailbox's credentials change (the owner's or the administrator's password change,
//! the mailbox deleted). Every logged-in session (IMAP, POP3, web cookie, bearer token)
//! notes the generation at login and ends as soon as it no longer matches, so a changed
//! password takes effect on every protocol at once.
//!
//! In memory only: a restart ends every session anyway. Bounded by the number of
//! mailboxes whose credentials changed since start. Keys are addresses in lower case:
//! a login as `MARIO@…` and a change for `mario@…` concern the same mailbox.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct CredentialEpochs(Mutex<HashMap<String, u64>>);

impl CredentialEpochs {
    /// The generation of `user` now (0 until its credentials first change).
    pub fn current(&self, user: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Ends every session of `user` opened so far; returns the new generation.
    pub fn bump(&self, user: &str) -> u64 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(user.to_lowercase()).or_insert(0);
        *e += 1;
        *e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_outdates_earlier_generations_of_that_user_only() {
        let c = CredentialEpochs::default();
        let a = c.current("a@pec.test");
        let b = c.current("b@pec.test");
        assert_eq!(c.bump("a@pec.test"), a + 1);
        assert_ne!(c.current("a@pec.test"), a);
        assert_eq!(c.current("b@pec.test"), b);
        // Whatever case a login used.
        assert_eq!(c.current("A@PEC.test"), a + 1);
    }
}
