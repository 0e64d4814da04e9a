//! Logins verified recently: a cache of password checks (as Dovecot's `auth_cache`), so
//! that a client that logs in again (a mail client opening one SMTP session per message
//! sent, IMAP and POP3 clients reconnecting, a JMAP client sending HTTP Basic with every
//! request) does not cost an argon2id run (~20 ms of a core and 19 MiB) each time.
//!
//! What it holds, per mailbox: an HMAC-SHA256, under a key drawn at start and never
//! stored, of the address, **the stored password hash** the password was checked
//! against, and the password; and when that check was made. A later login is granted
//! from here only if the mailbox's stored hash *now* and the password given give the same
//! MAC within `limits.login_cache_secs` of the check. So:
//! - a password change (by the owner, by `pecd mailbox passwd` in another process, on
//!   another node of a PostgreSQL deployment) ends the cached verification at once: the
//!   stored hash changed; a mailbox deleted has no hash;
//! - only right passwords are remembered: a wrong one (and an unknown mailbox) always
//!   costs its argon2 run, so guessing is as slow as without the cache, and the answer's
//!   timing tells nothing the answer does not;
//! - provisional passwords are never remembered (the login leads to the change form);
//! - the TTL runs from the argon2 check, not from the last use;
//! - logins with the same password that arrive together take turns ([`VerifiedLogins::turn`]):
//!   one argon2 run, the others given its answer (right or wrong: the same three inputs
//!   give the same answer), which is dropped with the turn's last holder.
//!
//! What it costs in security: a copy of the process's memory gives the key and the MACs
//! of the mailboxes that logged in within the TTL, which can be guessed at offline at
//! SHA-256's speed instead of argon2's. The same copy gives every password in clear as it
//! arrives, which the process must hold to check it at all; `login_cache_secs = 0` turns
//! the cache off. Expired entries are dropped as they are met and in a sweep once per TTL,
//! so an entry outlives its TTL by at most another TTL (plus any step back of the wall
//! clock). Bounded: at most [`MAX_ENTRIES`] mailboxes; when full, nothing new is
//! remembered until some expire.
//!
//! Input it must distrust: the user name and password (any bytes, any length: both are
//! only hashed) and the clock (a time before an entry's check counts as expired).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use jiff::{SignedDuration, Timestamp};

use crate::store::mailbox::PasswordCheck;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// At most this many mailboxes are remembered (~150 bytes each).
pub const MAX_ENTRIES: usize = 100_000;

struct Entry {
    mac: [u8; 32],
    checked_at: Timestamp,
}

/// The remembered logins, when expired ones were last dropped, and the checks under way.
#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    swept_at: Option<Timestamp>,
    /// One turn per (user, stored hash, password) being checked, by MAC: logins that
    /// arrive together with the same password (a restart, many clients of one shared
    /// mailbox) wait for one argon2 run instead of each making their own. An entry lives
    /// while someone holds its [`Turn`].
    in_flight: HashMap<[u8; 32], Weak<Answer>>,
}

/// The answer of a turn's argon2 run, once there is one (`None` while it runs, or if it
/// could not be given: the store failed, the client went away).
type Answer = tokio::sync::Mutex<Option<PasswordCheck>>;

/// A place in the queue of the logins with the same (user, stored hash, password); see
/// [`VerifiedLogins::turn`]. Its entry leaves the map with its last holder.
pub struct Turn<'a> {
    cache: &'a VerifiedLogins,
    mac: [u8; 32],
    answer: Arc<Answer>,
}

impl Turn<'_> {
    /// Waits for this login's turn; the guard holds the answer of an earlier holder, if
    /// one was given (then no argon2 run is needed), and takes this one's.
    pub async fn wait(&self) -> tokio::sync::MutexGuard<'_, Option<PasswordCheck>> {
        self.answer.lock().await
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Under the lock `turn` upgrades under: no one can join between the count and
        // the removal.
        let mut state = self.cache.lock();
        if Arc::strong_count(&self.answer) == 1
            && state
                .in_flight
                .get(&self.mac)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.answer)))
        {
            state.in_flight.remove(&self.mac);
        }
    }
}

/// The cache; one per gateway. Keys are [`crate::pec::address::PecAddress::key`]s.
pub struct VerifiedLogins {
    /// `None`: turned off (`login_cache_secs = 0`, or no random key could be drawn).
    key: Option<[u8; 32]>,
    ttl: SignedDuration,
    max: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for VerifiedLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedLogins")
            .field("enabled", &self.key.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl VerifiedLogins {
    /// A cache keeping verifications for `ttl_secs` (0: off) of at most `max` mailboxes.
    pub fn new(ttl_secs: u64, max: usize) -> Self {
        let mut key = [0u8; 32];
        let key = match ttl_secs {
            0 => None,
            _ => match openssl::rand::rand_bytes(&mut key) {
                Ok(()) => Some(key),
                Err(e) => {
                    tracing::error!(error = %e, "no random key for the login cache: it is off");
                    None
                }
            },
        };
        Self {
            key,
            ttl: SignedDuration::from_secs(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
            max,
            state: Mutex::new(State::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    fn mac(&self, user: &str, stored_hash: &str, password: &str) -> Option<[u8; 32]> {
        let key = PKey::hmac(self.key.as_ref()?).ok()?;
        let mut s = Signer::new(MessageDigest::sha256(), &key).ok()?;
        // Each field with its length first: no two triples give the same input.
        for field in [user, stored_hash, password] {
            s.update(&(field.len() as u64).to_be_bytes()).ok()?;
            s.update(field.as_bytes()).ok()?;
        }
        s.sign_to_vec().ok()?.try_into().ok()
    }

    fn fresh(&self, e: &Entry, now: Timestamp) -> bool {
        now >= e.checked_at && now.duration_since(e.checked_at) < self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the expired entries once per TTL (and whenever the clock went back), so
    /// that nothing is held much longer than the TTL (see the module doc).
    fn sweep_if_due(&self, state: &mut State, now: Timestamp) {
        let due = state
            .swept_at
            .is_none_or(|at| now < at || now.duration_since(at) >= self.ttl);
        if due {
            state.entries.retain(|_, e| self.fresh(e, now));
            state.swept_at = Some(now);
        }
    }

    /// Whether `password` was verified for `user` against `stored_hash` (the mailbox's
    /// hash as stored now) within the TTL.
    pub fn hit(&self, user: &str, stored_hash: &str, password: &str, now: Timestamp) -> bool {
        let Some(mac) = self.mac(user, stored_hash, password) else {
            return false;
        };
        let mut state = self.lock();
        self.sweep_if_due(&mut state, now);
        match state.entries.get(user) {
            Some(e) if self.fresh(e, now) => openssl::memcmp::eq(&e.mac, &mac),
            Some(_) => {
                state.entries.remove(user);
                false
            }
            None => false,
        }
    }

    /// Remembers that argon2 found `password` right for `user` against `stored_hash`.
    pub fn remember(&self, user: &str, stored_hash: &str, password: &str, now: Timestamp) {
        let Some(mac) = self.mac(user, stored_hash, password) else {
            return;
        };
        let mut state = self.lock();
        self.sweep_if_due(&mut state, now);
        if state.entries.len() >= self.max && !state.entries.contains_key(user) {
            // Full of entries checked within the last TTL: nothing new until some expire.
            return;
        }
        state.entries.insert(
            user.to_string(),
            Entry {
                mac,
                checked_at: now,
            },
        );
    }

    /// The turn to take before checking `password` for `user` against `stored_hash` with
    /// argon2, after a miss: whoever holds it first checks and leaves the answer
    /// (right or wrong) in it; the others with the same three wait and take that answer,
    /// or check in turn if none was left (the store failed, the client went away). The
    /// answer lives as long as the turn's last holder, no longer. `None` when the cache
    /// is off.
    pub fn turn(&self, user: &str, stored_hash: &str, password: &str) -> Option<Turn<'_>> {
        let mac = self.mac(user, stored_hash, password)?;
        let mut state = self.lock();
        let answer = match state.in_flight.get(&mac).and_then(Weak::upgrade) {
            Some(a) => a,
            None => {
                let a = Arc::new(Answer::new(None));
                state.in_flight.insert(mac, Arc::downgrade(&a));
                a
            }
        };
        Some(Turn {
            cache: self,
            mac,
            answer,
        })
    }

    /// Checks under way (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Forgets `user` (its password changed here; the stored hash would tell anyway).
    pub fn forget(&self, user: &str) {
        self.lock().entries.remove(user);
    }

    /// Mailboxes remembered now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn only_the_same_password_against_the_same_hash_within_the_ttl() {
        let c = VerifiedLogins::new(600, 10);
        let u = "mario@pec.example.it";
        assert!(
            !c.hit(u, HASH, "Segreta-123", t(0)),
            "nothing remembered yet"
        );
        c.remember(u, HASH, "Segreta-123", t(0));
        assert!(c.hit(u, HASH, "Segreta-123", t(599)));
        assert!(!c.hit(u, HASH, "segreta-123", t(1)), "another password");
        assert!(
            !c.hit(u, "$argon2id$other", "Segreta-123", t(1)),
            "the hash changed"
        );
        assert!(!c.hit("luigi@pec.example.it", HASH, "Segreta-123", t(1)));
        assert!(!c.hit(u, HASH, "Segreta-123", t(600)), "expired");
        assert!(!c.hit(u, HASH, "Segreta-123", t(-1)), "a clock gone back");
        c.forget(u);
        assert!(!c.hit(u, HASH, "Segreta-123", t(1)));
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        let c = VerifiedLogins::new(600, 10);
        c.remember("a", "bc", "d", t(0));
        assert!(!c.hit("a", "b", "cd", t(1)));
        assert!(c.hit("a", "bc", "d", t(1)));
    }

    #[tokio::test]
    async fn one_turn_per_user_hash_and_password_while_held() {
        let c = VerifiedLogins::new(600, 10);
        let (Some(t1), Some(t2), Some(other)) = (
            c.turn("a", HASH, "p"),
            c.turn("a", HASH, "p"),
            c.turn("a", HASH, "q"),
        ) else {
            panic!("the cache is on: every check gets a turn");
        };
        assert!(
            Arc::ptr_eq(&t1.answer, &t2.answer),
            "the same check waits for the first"
        );
        assert!(
            !Arc::ptr_eq(&t1.answer, &other.answer),
            "another password does not wait"
        );
        // The first holder leaves its answer; the second finds it.
        *t1.wait().await = Some(PasswordCheck::Wrong);
        drop(t1);
        assert_eq!(*t2.wait().await, Some(PasswordCheck::Wrong));
        assert_eq!(c.in_flight(), 2);
        drop(t2);
        assert_eq!(c.in_flight(), 1, "gone with its last holder");
        drop(other);
        assert_eq!(c.in_flight(), 0, "nothing of a finished check is kept");
        let Some(again) = c.turn("a", HASH, "p") else {
            panic!("the cache is on");
        };
        assert_eq!(
            *again.wait().await,
            None,
            "a new turn starts without an answer"
        );
        assert!(VerifiedLogins::new(0, 10).turn("a", HASH, "p").is_none());
    }

    #[test]
    fn off_remembers_nothing() {
        let c = VerifiedLogins::new(0, 10);
        assert!(!c.enabled());
        c.remember("a", HASH, "p", t(0));
        assert!(!c.hit("a", HASH, "p", t(1)));
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_and_expired_entries_dropped() {
        let c = VerifiedLogins::new(60, 2);
        c.remember("a", HASH, "p", t(0));
        c.remember("b", HASH, "p", t(30));
        c.remember("c", HASH, "p", t(40));
        assert_eq!(c.len(), 2, "full of fresh entries: c not remembered");
        assert!(!c.hit("c", HASH, "p", t(41)));
        c.remember("a", HASH, "q", t(45));
        assert!(
            c.hit("a", HASH, "q", t(46)),
            "a known mailbox is updated when full"
        );
        // At 100 the sweep is due (the last one at 0): b (30) expired, a (45) not.
        c.remember("c", HASH, "p", t(100));
        assert!(c.hit("c", HASH, "p", t(101)), "expired entries made room");
        assert_eq!(c.len(), 2);
        // An expired entry met by a login is dropped at once.
        assert!(!c.hit("a", HASH, "q", t(105)));
        assert_eq!(c.len(), 1);
        // Nobody logs in again: the next sweep (any login) drops the rest.
        assert!(!c.hit("z", HASH, "p", t(161)));
        assert!(c.is_empty());
    }
}
