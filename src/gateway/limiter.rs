//! Failure counters shared by every listener, so that reconnecting or switching protocol
//! gives an abuser nothing fresh: failed logins ([`LoginLimiter`], SMTP, IMAP and POP3) and
//! traced SMTP dialogue refusals ([`RefusalLimiter`]).
//!
//! Untrusted input: the peer address and the user name a client gives. Both only ever
//! become keys of bounded tables ([`Counters`]): each holds at most [`MAX_KEYS`] keys; keys
//! whose events have left the window are dropped in O(log n) each from a time-ordered index,
//! and when a table is still full the stalest key that is *not* locked out makes room. A
//! lockout is never evicted; if every key of a table is locked out, a new key is not
//! tracked (and a warning is logged) rather than freeing a guesser that is locked out.
//!
//! Clients are counted per IPv4 address, per IPv6 /64 (one host usually holds a whole /64)
//! and, with a higher limit, per IPv6 /48 (one site), so that an attacker holding a /48
//! cannot spread over 65 536 fresh /64s ([`Net`]).
//!
//! Config keys: `limits.auth_max_failures`, `limits.auth_lockout_secs` (read by
//! [`super::Gateway::open`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// Keys tracked at most by each table of a limiter.
pub const MAX_KEYS: usize = 100_000;

/// An IPv6 /48 may fail this many times `auth_max_failures` (it holds many hosts).
pub const SITE_FACTOR: usize = 4;

/// An account is under a distributed attack once it has this many times
/// `auth_max_failures` failures in the window. One client address is locked out after
/// `auth_max_failures`, so one address alone can never get there.
pub const ACCOUNT_FACTOR: usize = 3;

/// How long a successful login makes its client address "known" for that account.
pub const KNOWN_FOR: SignedDuration = SignedDuration::from_hours(30 * 24);

/// SMTP dialogue refusals traced per client address (IPv4, IPv6 /64) per
/// [`REFUSAL_WINDOW`]; an IPv6 /48 gets [`SITE_FACTOR`] times as many.
pub const MAX_TRACED_REFUSALS: usize = 20;

/// The sliding window of [`MAX_TRACED_REFUSALS`].
pub const REFUSAL_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// A client network that failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Net {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(Ipv4Addr),
    /// An IPv6 /64, by its first address.
    V6Host(Ipv6Addr),
    /// An IPv6 /48, by its first address.
    V6Site(Ipv6Addr),
}

impl Net {
    /// The client address of a peer: its IPv4 address or its IPv6 /64.
    pub fn of(ip: IpAddr) -> Net {
        match ip {
            IpAddr::V4(v4) => Net::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Net::V4(v4),
                None => Net::V6Host(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> 64))),
            },
        }
    }

    /// The IPv6 /48 of a peer (none for IPv4).
    pub fn site_of(ip: IpAddr) -> Option<Net> {
        match Net::of(ip) {
            Net::V4(_) => None,
            _ => {
                let IpAddr::V6(v6) = ip else { return None };
                Some(Net::V6Site(Ipv6Addr::from_bits(
                    v6.to_bits() & !(u128::MAX >> 48),
                )))
            }
        }
    }

    /// The networks a peer is counted against: its address, then its /48 if any.
    fn all_of(ip: IpAddr) -> impl Iterator<Item = Net> {
        std::iter::once(Net::of(ip)).chain(Net::site_of(ip))
    }

    /// The limit of this network, given the limit of one address.
    fn limit(self, per_address: usize) -> usize {
        match self {
            Net::V6Site(_) => per_address.saturating_mul(SITE_FACTOR),
            _ => per_address,
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Net::V4(a) => write!(f, "address {a}"),
            Net::V6Host(a) => write!(f, "address {a}/64"),
            Net::V6Site(a) => write!(f, "network {a}/48"),
        }
    }
}

/// What a count of events says about one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    /// Counted; `filled` is the end of the lockout this very event starts, if any.
    Counted { filled: Option<Timestamp> },
    /// Not counted: the key is locked out until `until`; `first` the first time this is
    /// reported for this lockout.
    Locked { until: Timestamp, first: bool },
    /// Not counted: the table is full of lockouts.
    Untracked,
}

/// Where an entry sits in the time-ordered index.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// In `full` (locked out, ordered by the lockout's end) rather than in `open`
    /// (ordered by when its newest event leaves the window).
    full: bool,
    at: Timestamp,
    seq: u64,
}

#[derive(Debug)]
struct Counter {
    /// The last `limit` event instants, oldest first, never decreasing.
    times: VecDeque<Timestamp>,
    slot: Slot,
    /// The end of the lockout already reported by [`Hit::Locked`] `first`.
    noted: Option<Timestamp>,
}

/// Events per key in a sliding window: a key with `limit` events in the last `window` is
/// locked out (further events are not counted) until its oldest counted event is `window`
/// old. Invariant: every entry is in exactly one of `open` / `full`, under its `slot`.
#[derive(Debug)]
struct Counters<K> {
    window: SignedDuration,
    cap: usize,
    /// Each key is stored once, shared by the map and the index (user names are long).
    entries: HashMap<Arc<K>, Counter>,
    open: BTreeMap<(Timestamp, u64), Arc<K>>,
    full: BTreeMap<(Timestamp, u64), Arc<K>>,
    seq: u64,
    /// A "table full of lockouts" warning was logged and no key was added since.
    warned: bool,
}

impl<K: Clone + Eq + Hash> Counters<K> {
    fn new(window: SignedDuration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            entries: HashMap::new(),
            open: BTreeMap::new(),
            full: BTreeMap::new(),
            seq: 0,
            warned: false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Drops the events that left the window: lockouts that ended go back to `open`,
    /// entries with no event left go away. Each step pops the front of an index, so the
    /// cost is O(log n) per entry that changes.
    fn expire(&mut self, now: Timestamp) {
        let cutoff = now.checked_sub(self.window).unwrap_or(Timestamp::MIN);
        while let Some(first) = self.full.first_entry() {
            if first.key().0 > now {
                break;
            }
            let key = first.remove();
            let Some(c) = self.entries.get_mut(&key) else {
                continue;
            };
            while c.times.front().is_some_and(|t| *t <= cutoff) {
                c.times.pop_front();
            }
            match c.times.back().and_then(|b| b.checked_add(self.window).ok()) {
                // Not empty: its newest event is after the cutoff, so `at` > now and the
                // loop below leaves it alone.
                Some(at) => {
                    self.seq = self.seq.wrapping_add(1);
                    c.slot = Slot {
                        full: false,
                        at,
                        seq: self.seq,
                    };
                    self.open.insert((at, self.seq), key);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
        while let Some(first) = self.open.first_entry() {
            if first.key().0 > now {
                break;
            }
            let key = first.remove();
            self.entries.remove(&key);
        }
    }

    /// The end of the lockout of `key`, if it is locked out.
    fn locked(&mut self, key: &K, now: Timestamp) -> Option<Timestamp> {
        self.expire(now);
        self.entries
            .get(key)
            .filter(|c| c.slot.full)
            .map(|c| c.slot.at)
    }

    /// Counts one event for `key` unless it is locked out (`limit` is the key's limit;
    /// pass the same one for a key every time).
    fn hit(&mut self, key: &K, limit: usize, now: Timestamp) -> Hit {
        self.expire(now);
        let limit = limit.max(1);
        if let Some(c) = self.entries.get_mut(key) {
            if c.slot.full {
                let first = c.noted != Some(c.slot.at);
                c.noted = Some(c.slot.at);
                return Hit::Locked {
                    until: c.slot.at,
                    first,
                };
            }
            self.open.remove(&(c.slot.at, c.slot.seq));
        } else {
            if self.entries.len() >= self.cap {
                // Expired entries are gone already: make room with the stalest one that
                // is not locked out, never with a lockout.
                match self.open.pop_first() {
                    Some((_, stalest)) => {
                        self.entries.remove(&stalest);
                    }
                    None => {
                        if !self.warned {
                            self.warned = true;
                            tracing::warn!(
                                keys = self.entries.len(),
                                "failure table full of lockouts: new keys are not counted"
                            );
                        }
                        return Hit::Untracked;
                    }
                }
            }
            self.warned = false;
            let placeholder = Slot {
                full: false,
                at: now,
                seq: 0,
            };
            self.entries.insert(
                Arc::new(key.clone()),
                Counter {
                    times: VecDeque::new(),
                    slot: placeholder,
                    noted: None,
                },
            );
        }
        let seq = self.next_seq();
        let window = self.window;
        let Some(shared) = self.entries.get_key_value(key).map(|(k, _)| Arc::clone(k)) else {
            return Hit::Untracked;
        };
        let Some(c) = self.entries.get_mut(key) else {
            return Hit::Untracked;
        };
        // A clock stepping back must not unsort the events.
        let at = c.times.back().map_or(now, |b| now.max(*b));
        c.times.push_back(at);
        while c.times.len() > limit {
            c.times.pop_front();
        }
        let oldest = c.times.front().copied().unwrap_or(at);
        let full = c.times.len() >= limit;
        let end = (if full { oldest } else { at })
            .checked_add(window)
            .unwrap_or(Timestamp::MAX);
        c.slot = Slot { full, at: end, seq };
        let index = if full { &mut self.full } else { &mut self.open };
        index.insert((end, seq), shared);
        Hit::Counted {
            filled: full.then_some(end),
        }
    }

    /// Forgets `key`.
    fn remove(&mut self, key: &K) {
        if let Some(c) = self.entries.remove(key) {
            let index = if c.slot.full {
                &mut self.full
            } else {
                &mut self.open
            };
            index.remove(&(c.slot.at, c.slot.seq));
        }
    }
}

/// Keys seen within `ttl`, at most `cap` of them (the least recently seen go first).
#[derive(Debug)]
struct Recent<K> {
    ttl: SignedDuration,
    cap: usize,
    seen: HashMap<K, (Timestamp, u64)>,
    order: BTreeMap<(Timestamp, u64), K>,
    seq: u64,
}

impl<K: Clone + Eq + Hash> Recent<K> {
    fn new(ttl: SignedDuration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            seen: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    fn expire(&mut self, now: Timestamp) {
        let cutoff = now.checked_sub(self.ttl).unwrap_or(Timestamp::MIN);
        while let Some(first) = self.order.first_entry() {
            if first.key().0 > cutoff {
                break;
            }
            let key = first.remove();
            self.seen.remove(&key);
        }
    }

    fn touch(&mut self, key: &K, now: Timestamp) {
        self.expire(now);
        if let Some(old) = self.seen.remove(key) {
            self.order.remove(&old);
        } else if self.seen.len() >= self.cap
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.seen.remove(&oldest);
        }
        self.seq = self.seq.wrapping_add(1);
        self.seen.insert(key.clone(), (now, self.seq));
        self.order.insert((now, self.seq), key.clone());
    }

    fn contains(&mut self, key: &K, now: Timestamp) -> bool {
        self.expire(now);
        self.seen.contains_key(key)
    }
}

/// What failed logins are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoginKey {
    /// Every failure from one client network ([`Net`]): a lockout refuses every login from
    /// it, except for accounts that logged in from it recently.
    Client(Net),
    /// Failures for one account (the user name as given: trimmed, lower-cased, at most
    /// 254 bytes, whether or not such a mailbox exists) from one client address: a
    /// lockout refuses that account from that address only.
    AccountFrom(String, Net),
    /// Failures for one account from everywhere: a lockout (a distributed attack) refuses
    /// that account only from client addresses it has not logged in from recently.
    Account(String),
}

impl std::fmt::Display for LoginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginKey::Client(n) => write!(f, "{n}"),
            LoginKey::AccountFrom(a, n) => write!(f, "account {a:?} from {n}"),
            LoginKey::Account(a) => write!(
                f,
                "account {a:?} from many addresses (logins from addresses it has not \
                 used recently are refused)"
            ),
        }
    }
}

/// Logins are refused for `key` until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub key: LoginKey,
    pub until: Timestamp,
}

impl std::fmt::Display for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many failed logins for {}, refused until {}",
            self.key,
            self.until.round(jiff::Unit::Second).unwrap_or(self.until)
        )
    }
}

#[derive(Debug)]
struct LoginState {
    nets: Counters<Net>,
    pairs: Counters<(String, Net)>,
    accounts: Counters<String>,
    /// (account, client address) pairs with a successful login within [`KNOWN_FOR`].
    known: Recent<(String, Net)>,
}

/// Failed logins in a sliding window of `window`, with `max` failures allowed per client
/// address (IPv4, IPv6 /64) and per account from one address, `SITE_FACTOR × max` per
/// IPv6 /48 and `ACCOUNT_FACTOR × max` per account from everywhere.
///
/// A lockout refuses logins without checking the password: a locked-out address is refused
/// for every account it has not logged in to recently; an account is locked out only
/// towards the address that failed (so an attacker locks out itself, not the owner), and,
/// under a distributed attack, towards the addresses it has not logged in from within
/// [`KNOWN_FOR`]. Refused attempts are not counted, so one lockout lasts at most `window`
/// (it ends when its oldest failure is `window` old); a client that keeps failing is
/// locked again at once, i.e. gets at most `max` guesses per `window`.
///
/// Time comes from the caller (the gateway clock), so tests control it.
#[derive(Debug)]
pub struct LoginLimiter {
    max: usize,
    state: Mutex<LoginState>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window_secs: u64) -> Self {
        Self::with_capacity(max_failures, window_secs, MAX_KEYS)
    }

    /// As [`LoginLimiter::new`], with at most `cap` keys per table.
    pub fn with_capacity(max_failures: u32, window_secs: u64, cap: usize) -> Self {
        let window = SignedDuration::from_secs(i64::try_from(window_secs).unwrap_or(i64::MAX));
        Self {
            max: usize::try_from(max_failures).unwrap_or(usize::MAX).max(1),
            state: Mutex::new(LoginState {
                nets: Counters::new(window, cap),
                pairs: Counters::new(window, cap),
                accounts: Counters::new(window, cap),
                known: Recent::new(KNOWN_FOR, cap),
            }),
        }
    }

    /// The account key of a user name: trimmed, lower-cased, at most 254 bytes (the
    /// longest address, RFC 5321 §4.5.3.1.3), so that garbage names stay small.
    fn account(user: &str) -> String {
        let mut len = 0;
        user.trim()
            .to_lowercase()
            .chars()
            .take_while(|c| {
                len += c.len_utf8();
                len <= 254
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lockout in force for a login from `ip` as `user`, if any.
    pub fn lockout(&self, ip: IpAddr, user: &str, now: Timestamp) -> Option<Lockout> {
        let account = Self::account(user);
        let pair = (account, Net::of(ip));
        let mut s = self.lock();
        if let Some(until) = s.pairs.locked(&pair, now) {
            let (account, net) = pair;
            return Some(Lockout {
                key: LoginKey::AccountFrom(account, net),
                until,
            });
        }
        // The owner's own address stays open whatever others do.
        if s.known.contains(&pair, now) {
            return None;
        }
        for net in Net::all_of(ip) {
            if let Some(until) = s.nets.locked(&net, now) {
                return Some(Lockout {
                    key: LoginKey::Client(net),
                    until,
                });
            }
        }
        let (account, _) = pair;
        let until = s.accounts.locked(&account, now)?;
        Some(Lockout {
            key: LoginKey::Account(account),
            until,
        })
    }

    /// Counts a failed login; returns the lockouts this very failure starts (so that each
    /// is logged once).
    pub fn record_failure(&self, ip: IpAddr, user: &str, now: Timestamp) -> Vec<Lockout> {
        let account = Self::account(user);
        let net = Net::of(ip);
        let mut s = self.lock();
        let mut started = Vec::new();
        let mut note = |hit: Hit, key: &dyn Fn() -> LoginKey| {
            if let Hit::Counted {
                filled: Some(until),
            } = hit
            {
                started.push(Lockout { key: key(), until });
            }
        };
        for n in Net::all_of(ip) {
            note(s.nets.hit(&n, n.limit(self.max), now), &|| {
                LoginKey::Client(n)
            });
        }
        let pair = (account.clone(), net);
        note(s.pairs.hit(&pair, self.max, now), &|| {
            LoginKey::AccountFrom(account.clone(), net)
        });
        let account_limit = self.max.saturating_mul(ACCOUNT_FACTOR);
        note(s.accounts.hit(&account, account_limit, now), &|| {
            LoginKey::Account(account.clone())
        });
        started
    }

    /// Notes a successful login: `ip` becomes a known address of `user` for [`KNOWN_FOR`]
    /// and the failures of `user` from it are forgotten.
    pub fn record_success(&self, ip: IpAddr, user: &str, now: Timestamp) {
        let pair = (Self::account(user), Net::of(ip));
        let mut s = self.lock();
        s.pairs.remove(&pair);
        s.known.touch(&pair, now);
    }
}

/// Whether to write the trace record of an SMTP dialogue refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalTrace {
    /// Write it.
    Trace,
    /// Write one record saying that refusals from `net` are no longer traced until `until`
    /// (the first refusal past the limit).
    Summarize { net: Net, until: Timestamp },
    /// Do not trace it (log it only).
    Suppress,
}

/// How many SMTP dialogue refusals are written to the trace log (durable for 30 months):
/// at most `per_window` per client address (IPv4, IPv6 /64) and `SITE_FACTOR ×` that per
/// IPv6 /48 in any `window`; the first refusal past the limit becomes one summary record,
/// the rest are only logged. Reconnecting does not reset it.
#[derive(Debug)]
pub struct RefusalLimiter {
    per_window: usize,
    nets: Mutex<Counters<Net>>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self::new(MAX_TRACED_REFUSALS, REFUSAL_WINDOW, MAX_KEYS)
    }
}

impl RefusalLimiter {
    pub fn new(per_window: usize, window: SignedDuration, cap: usize) -> Self {
        Self {
            per_window: per_window.max(1),
            nets: Mutex::new(Counters::new(window, cap)),
        }
    }

    /// Counts one refusal from `ip` and says whether to trace it.
    pub fn admit(&self, ip: IpAddr, now: Timestamp) -> RefusalTrace {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        let locked = Net::all_of(ip).find(|n| nets.locked(n, now).is_some());
        if let Some(net) = locked {
            return match nets.hit(&net, net.limit(self.per_window), now) {
                Hit::Locked { until, first: true } => RefusalTrace::Summarize { net, until },
                _ => RefusalTrace::Suppress,
            };
        }
        let mut trace = RefusalTrace::Trace;
        for net in Net::all_of(ip) {
            if nets.hit(&net, net.limit(self.per_window), now) == Hit::Untracked {
                trace = RefusalTrace::Suppress;
            }
        }
        trace
    }
}

#[cfg(test)]
mod tests;
