use super::*;
use crate::clock::{Clock, ManualClock};

fn start() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn t(secs: i64) -> Timestamp {
    start()
        .checked_add(SignedDuration::from_secs(secs))
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from_bits(n))
}

#[test]
fn failures_lock_out_the_failing_address_for_the_window() {
    let l = LoginLimiter::new(3, 60);
    let (bad, other) = (ip("192.0.2.7"), ip("192.0.2.8"));
    assert!(l.record_failure(bad, "a@pec.test", t(0)).is_empty());
    assert!(l.record_failure(bad, "b@pec.test", t(10)).is_empty());
    assert!(l.lockout(bad, "c@pec.test", t(11)).is_none());
    // The third failure from one address starts its lockout, reported once.
    let started = l.record_failure(bad, "c@pec.test", t(20));
    assert_eq!(
        started,
        vec![Lockout {
            key: LoginKey::Client(Net::of(bad)),
            until: t(60)
        }]
    );
    let now = l.lockout(bad, "anyone@pec.test", t(30)).expect("locked");
    assert_eq!(now.key, LoginKey::Client(Net::of(bad)));
    assert!(
        now.to_string()
            .contains("too many failed logins for address 192.0.2.7"),
        "{now}"
    );
    assert!(l.lockout(other, "anyone@pec.test", t(30)).is_none());
    // Sliding: once the first failure is 60 s old, one more attempt is allowed.
    assert!(l.lockout(bad, "x", t(59)).is_some());
    assert!(l.lockout(bad, "x", t(60)).is_none());
    assert!(
        !l.record_failure(bad, "x", t(61)).is_empty(),
        "full again at once"
    );
}

/// The reviewer's attack: one address failing on `boss` every minute, for days, must not
/// keep the owner (from elsewhere) out; the attacker gets at most `max` guesses a window.
#[test]
fn one_attacker_never_locks_the_owner_out() {
    let clock = ManualClock::new(start());
    let l = LoginLimiter::new(10, 900);
    let (attacker, owner, roaming) = (ip("203.0.113.66"), ip("198.51.100.1"), ip("2001:db8::1"));
    let (mut guesses, mut refused) = (0, 0);
    for _ in 0..(3 * 24 * 60) {
        // The owner, from its usual address and from a new one, is never refused.
        assert_eq!(l.lockout(owner, "Boss@pec.test", clock.now()), None);
        assert_eq!(l.lockout(roaming, "boss@pec.test", clock.now()), None);
        match l.lockout(attacker, "boss@pec.test", clock.now()) {
            None => {
                guesses += 1;
                l.record_failure(attacker, "boss@pec.test", clock.now());
            }
            Some(lo) => {
                // Only the attacker's own address is locked out (and its account pair).
                let net = Net::of(attacker);
                assert!(
                    matches!(&lo.key, LoginKey::Client(n) | LoginKey::AccountFrom(_, n) if *n == net),
                    "{lo}"
                );
                refused += 1;
            }
        }
        clock.advance(SignedDuration::from_secs(60));
    }
    // 72 hours = 288 windows of 900 s: at most 10 guesses in each.
    assert!(guesses <= 10 * 289, "{guesses}");
    assert!(
        refused > 1000,
        "the attacker is the one locked out: {refused}"
    );
}

#[test]
fn a_distributed_attack_refuses_only_unknown_addresses() {
    let clock = ManualClock::new(start());
    let l = LoginLimiter::new(2, 600);
    let (home, nat) = (ip("198.51.100.1"), ip("198.51.100.2"));
    l.record_success(home, "boss@pec.test", clock.now());
    l.record_success(nat, "boss@pec.test", clock.now());
    clock.advance(SignedDuration::from_hours(24));

    // Two attacker addresses: each is locked out after 2, the account is not yet (6).
    for a in [v4(0x0a00_0001), v4(0x0a00_0002)] {
        for _ in 0..2 {
            l.record_failure(a, "boss@pec.test", clock.now());
        }
    }
    assert!(
        l.lockout(ip("192.0.2.99"), "boss@pec.test", clock.now())
            .is_none()
    );
    // A third address brings the account to 6 failures: a distributed attack.
    let a3 = v4(0x0a00_0003);
    l.record_failure(a3, "boss@pec.test", clock.now());
    let started = l.record_failure(a3, "boss@pec.test", clock.now());
    let account = Lockout {
        key: LoginKey::Account("boss@pec.test".into()),
        until: clock
            .now()
            .checked_add(SignedDuration::from_secs(600))
            .unwrap(),
    };
    assert!(started.contains(&account), "{started:?}");
    assert_eq!(
        l.lockout(ip("192.0.2.99"), " BOSS@pec.test", clock.now()),
        Some(account.clone()),
        "a new address is refused for this account"
    );
    assert!(
        account
            .to_string()
            .contains("\"boss@pec.test\" from many addresses")
    );
    assert!(
        l.lockout(ip("192.0.2.99"), "other@pec.test", clock.now())
            .is_none()
    );
    // The owner's known addresses are still open.
    assert_eq!(l.lockout(home, "boss@pec.test", clock.now()), None);

    // A guesser sharing the owner's NAT address locks the address for others and, for
    // the owner's account, only after its own max failures as that account.
    l.record_failure(nat, "x@pec.test", clock.now());
    l.record_failure(nat, "y@pec.test", clock.now());
    assert!(l.lockout(nat, "z@pec.test", clock.now()).is_some());
    assert_eq!(l.lockout(nat, "boss@pec.test", clock.now()), None);
    l.record_failure(nat, "boss@pec.test", clock.now());
    assert_eq!(l.lockout(nat, "boss@pec.test", clock.now()), None, "1 of 2");
    l.record_failure(nat, "boss@pec.test", clock.now());
    let pair = l
        .lockout(nat, "boss@pec.test", clock.now())
        .expect("pair lockout");
    assert_eq!(
        pair.key,
        LoginKey::AccountFrom("boss@pec.test".into(), Net::of(nat))
    );
    assert_eq!(l.lockout(home, "boss@pec.test", clock.now()), None);

    // Everything ends with the window.
    clock.advance(SignedDuration::from_secs(600));
    assert_eq!(
        l.lockout(ip("192.0.2.99"), "boss@pec.test", clock.now()),
        None
    );
    assert_eq!(l.lockout(nat, "boss@pec.test", clock.now()), None);
    // Known addresses are forgotten after KNOWN_FOR.
    clock.advance(KNOWN_FOR);
    for a in [v4(1), v4(2), v4(3)] {
        l.record_failure(a, "boss@pec.test", clock.now());
        l.record_failure(a, "boss@pec.test", clock.now());
    }
    assert!(l.lockout(home, "boss@pec.test", clock.now()).is_some());
}

#[test]
fn a_success_forgets_the_owners_own_failures() {
    let l = LoginLimiter::new(3, 60);
    let a = ip("192.0.2.1");
    l.record_success(a, "u@pec.test", t(0));
    l.record_failure(a, "u@pec.test", t(1));
    l.record_failure(a, "u@pec.test", t(2));
    l.record_success(a, "u@pec.test", t(3));
    l.record_failure(a, "u@pec.test", t(4));
    l.record_failure(a, "u@pec.test", t(5));
    assert_eq!(l.lockout(a, "u@pec.test", t(6)), None);
    l.record_failure(a, "u@pec.test", t(7));
    assert!(l.lockout(a, "u@pec.test", t(8)).is_some());
}

#[test]
fn ipv6_counts_per_64_and_per_48_and_mapped_v4_as_v4() {
    let l = LoginLimiter::new(2, 60);
    l.record_failure(ip("2001:db8:1:2::1"), "a", t(0));
    l.record_failure(ip("2001:db8:1:2:ffff::9"), "b", t(1));
    let lo = l
        .lockout(ip("2001:db8:1:2::77"), "c", t(2))
        .expect("same /64");
    assert_eq!(lo.key.to_string(), "address 2001:db8:1:2::/64");
    assert!(l.lockout(ip("2001:db8:1:3::1"), "c", t(2)).is_none());
    l.record_failure(ip("::ffff:192.0.2.1"), "d", t(0));
    l.record_failure(ip("192.0.2.1"), "e", t(1));
    assert!(l.lockout(ip("192.0.2.1"), "f", t(2)).is_some());

    // A /48 spread over fresh /64s: locked after SITE_FACTOR × max failures.
    let l = LoginLimiter::new(2, 60);
    for i in 0..(2 * SITE_FACTOR as u128) {
        let a = Ipv6Addr::from_bits(0x2001_0db8_00aa_0000_u128 << 64 | (i + 1) << 64 | 5);
        assert!(l.lockout(IpAddr::V6(a), "x", t(0)).is_none(), "{a} not yet");
        l.record_failure(IpAddr::V6(a), &format!("u{i}"), t(0));
    }
    let lo = l
        .lockout(ip("2001:db8:aa:ffff::1"), "x", t(1))
        .expect("the /48 is locked");
    assert_eq!(lo.key.to_string(), "network 2001:db8:aa::/48");
    assert!(l.lockout(ip("2001:db8:ab::1"), "x", t(1)).is_none());
}

/// The reviewer's overflow attack: a flood of one-off keys must neither evict a lockout nor
/// grow the tables past their cap (each failure past the cap costs O(log n): the stalest
/// unlocked key is the first of an ordered index, no scan).
#[test]
fn overflowing_the_tables_never_evicts_a_lockout() {
    let clock = ManualClock::new(start());
    let l = LoginLimiter::new(5, 900);
    let guesser = ip("192.0.2.200");
    for _ in 0..4 {
        l.record_failure(guesser, "boss@pec.test", clock.now());
        clock.advance(SignedDuration::from_secs(100));
    }
    let started = l.record_failure(guesser, "boss@pec.test", clock.now());
    assert!(!started.is_empty());
    let until = l
        .lockout(guesser, "boss@pec.test", clock.now())
        .unwrap()
        .until;

    // Fresh addresses and user names, 1 failure each: far more keys than fit.
    for i in 0..(MAX_KEYS as u32 + MAX_KEYS as u32 / 2) {
        l.record_failure(v4(0x0a00_0000 + i), &format!("u{i}"), clock.now());
    }
    {
        let s = l.lock();
        for n in [s.nets.len(), s.pairs.len(), s.accounts.len()] {
            assert!(n <= MAX_KEYS, "{n}");
        }
    }
    assert_eq!(
        l.lockout(guesser, "boss@pec.test", clock.now())
            .map(|l| l.until),
        Some(until),
        "the slow guesser is still locked out"
    );
    // Old one-off keys expire with the window, and the table shrinks.
    clock.advance(SignedDuration::from_secs(901));
    assert!(l.lockout(guesser, "boss@pec.test", clock.now()).is_none());
    assert_eq!(l.lock().nets.len(), 0);
}

#[test]
fn a_table_full_of_lockouts_tracks_no_new_key() {
    let mut c: Counters<u32> = Counters::new(SignedDuration::from_secs(60), 3);
    for k in 0..3 {
        assert_eq!(
            c.hit(&k, 1, t(0)),
            Hit::Counted {
                filled: Some(t(60))
            }
        );
    }
    assert_eq!(c.hit(&9, 1, t(1)), Hit::Untracked);
    assert_eq!(c.locked(&0, t(1)), Some(t(60)));
    assert_eq!(
        c.hit(&0, 1, t(2)),
        Hit::Locked {
            until: t(60),
            first: true
        }
    );
    assert_eq!(
        c.hit(&0, 1, t(3)),
        Hit::Locked {
            until: t(60),
            first: false
        }
    );
    // A table with room evicts the stalest unlocked key, not a lockout.
    let mut c: Counters<u32> = Counters::new(SignedDuration::from_secs(60), 3);
    c.hit(&1, 1, t(0));
    c.hit(&2, 5, t(1));
    c.hit(&3, 5, t(2));
    c.hit(&4, 5, t(3));
    assert_eq!(c.len(), 3);
    assert_eq!(c.locked(&1, t(4)), Some(t(60)));
    assert!(!c.entries.contains_key(&2), "the stalest unlocked key went");
    // A clock stepping back does not corrupt the window.
    c.hit(&3, 5, t(-100));
    assert!(c.entries[&3].times.iter().is_sorted());
    c.expire(t(200));
    assert_eq!((c.len(), c.open.len(), c.full.len()), (0, 0, 0));
}

#[test]
fn refusals_are_traced_up_to_a_limit_per_network_then_summarized() {
    let clock = ManualClock::new(start());
    let r = RefusalLimiter::new(3, SignedDuration::from_hours(1), 1000);
    let peer = ip("198.51.100.9");
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(r.admit(peer, clock.now()));
        clock.advance(SignedDuration::from_secs(60));
    }
    let summary = RefusalTrace::Summarize {
        net: Net::of(peer),
        until: start().checked_add(SignedDuration::from_hours(1)).unwrap(),
    };
    let mut expected = vec![RefusalTrace::Trace; 3];
    expected.push(summary);
    expected.extend(vec![RefusalTrace::Suppress; 6]);
    assert_eq!(seen, expected);
    // Another peer is unaffected; the peer is traced again once the hour has passed.
    assert_eq!(
        r.admit(ip("198.51.100.10"), clock.now()),
        RefusalTrace::Trace
    );
    clock.set(start().checked_add(SignedDuration::from_hours(1)).unwrap());
    assert_eq!(r.admit(peer, clock.now()), RefusalTrace::Trace);

    // An IPv6 /48 hopping over /64s gets SITE_FACTOR × the limit, then one summary.
    let r = RefusalLimiter::new(3, SignedDuration::from_hours(1), 1000);
    let traced = (0..100u128)
        .map(|i| {
            let a = Ipv6Addr::from_bits(0x2001_0db8_0042_0000_u128 << 64 | i << 64 | 1);
            r.admit(IpAddr::V6(a), t(0))
        })
        .collect::<Vec<_>>();
    assert_eq!(
        traced.iter().filter(|x| **x == RefusalTrace::Trace).count(),
        3 * SITE_FACTOR
    );
    let summaries: Vec<_> = traced
        .iter()
        .filter(|x| matches!(x, RefusalTrace::Summarize { .. }))
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(matches!(
        summaries[0],
        RefusalTrace::Summarize {
            net: Net::V6Site(_),
            ..
        }
    ));
}

#[test]
fn account_keys_are_normalized_and_short() {
    assert_eq!(LoginLimiter::account("  Boss@PEC.test "), "boss@pec.test");
    let long = "é".repeat(1000);
    let key = LoginLimiter::account(&long);
    assert_eq!(key.len(), 254, "whole characters, at most 254 bytes");
    assert!(long.starts_with(&key));
}
