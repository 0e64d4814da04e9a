//! "250 only when everything is durable", seen from the system calls of a real
//! `pecd serve`: `strace` attached to every thread while messages are submitted over
//! SMTPS, delivered to a local mailbox and answered by a delivery receipt. Every message
//! body (blob) pecd writes must be synced after it was renamed into place and before the
//! client hears 250 for it, and the database file holding the commit that refers to them
//! synced too; the blob files are not fsynced one by one (the committer's one sync per
//! group does it, issue #11). Prints the sync calls per accepted message.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::server::Server;

const DOMAIN: &str = "pec.alfa.test";
const MESSAGES: usize = 8;

/// One system call as strace printed it (`-ttt -T -f -yy`): its start, its end (the start
/// plus the time spent in it) and whether it succeeded.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    args: String,
    start: f64,
    end: f64,
    ok: bool,
}

/// The time spent in a call and its success, from the end of its last line:
/// `... = 0 <0.000123>`.
fn outcome(line: &str) -> Option<(f64, bool)> {
    let (head, spent) = line.trim_end().strip_suffix('>')?.rsplit_once(" <")?;
    let ret = head.rsplit_once(" = ")?.1;
    Some((
        spent.parse().ok()?,
        ret.split_whitespace().next() == Some("0"),
    ))
}

/// Joins strace's `<unfinished ...>` / `<... resumed>` halves into whole calls.
fn parse(log: &str) -> Vec<Call> {
    let mut open: HashMap<u32, Call> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        // `TID  SECONDS.MICROS CALL`, the TID padded with spaces.
        let Some((tid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(tid), Ok(time)) = (tid.parse::<u32>(), time.parse::<f64>()) else {
            continue;
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let (Some(mut c), Some((spent, ok))) = (open.remove(&tid), outcome(rest)) {
                c.end = c.start + spent;
                c.ok = ok;
                c.args.push_str(resumed);
                calls.push(c);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let mut c = Call {
            name: name.to_string(),
            args: args.to_string(),
            start: time,
            end: time,
            ok: false,
        };
        if rest.ends_with("<unfinished ...>") {
            open.insert(tid, c);
        } else if let Some((spent, ok)) = outcome(rest) {
            c.end = time + spent;
            c.ok = ok;
            calls.push(c);
        }
    }
    calls.sort_by(|a, b| a.end.total_cmp(&b.end));
    calls
}

/// The name a blob file gets in the blob directory (`blobs/ab/<64 hex>`, or
/// `blobs/ab/cd/<64 hex>` in a store made before the one-level layout), by a rename or by
/// a link of an unnamed file.
fn blob_rename(c: &Call) -> Option<String> {
    if !c.ok || (!c.name.starts_with("rename") && c.name != "linkat") {
        return None;
    }
    let dest = c
        .args
        .split('"')
        .nth(3)
        .or_else(|| c.args.split('"').nth(1))?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = dest.rsplit('/');
    let (id, d1, up) = (parts.next()?, parts.next()?, parts.next()?);
    let blobs = if hex(up, 2) { parts.next()? } else { up };
    (blobs == "blobs" && hex(d1, 2) && hex(id, 64)).then(|| id.to_string())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn attach(pid: u32, out: &std::path::Path) -> Child {
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-ttt", "-T", "-yy", "-s", "0", "-o"])
        .arg(out)
        .args([
            "-e",
            "trace=syncfs,fsync,fdatasync,sync_file_range,?rename,?renameat,renameat2,linkat",
            "-p",
            &pid.to_string(),
        ])
        .spawn()
        .expect("run strace");
    // Attached once a call is logged: sled's flusher thread syncs twice a second, even idle.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(out).map_or(0, |m| m.len()) == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("strace could not attach to pecd serve ({status}): ptrace must be allowed");
        }
        assert!(Instant::now() < deadline, "strace logged nothing for 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blob_is_synced_before_the_250_that_needs_it() {
    if !common::have(
        "strace",
        "attaches to pecd serve to see the order of its syncs",
    ) {
        return;
    }
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    s.start();
    let pid = s.child.as_ref().unwrap().id();
    let log = s.dir.path().join("strace.log");
    let mut strace = attach(pid, &log);

    // Message i's window: from the end of message i-1's deliveries to its 250, so that
    // what is renamed in it is message i's submission alone (envelope, acceptance).
    let mut windows = Vec::new();
    for i in 0..MESSAGES {
        let msg = common::sized_message(&a, &b, &format!("ordine {i}"), 10_000);
        let opened = now();
        let (code, text) =
            common::smtp::submit(s.addr("smtps"), &s.ca(), &a, "pw", &[&b], &msg).await;
        assert_eq!(code, 250, "{text}");
        windows.push((opened, now()));
        // The acceptance and the delivery receipt at a, the envelope at b.
        let started = Instant::now();
        while s.mailbox_json(&a)["messages"] != 2 * (i + 1)
            || s.mailbox_json(&b)["messages"] != i + 1
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "message {i} was never delivered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the last commit's syscalls reach the log, then detach (SIGINT: pecd runs on).
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .unwrap();
    strace.wait().unwrap();

    let calls = parse(&std::fs::read_to_string(&log).unwrap());
    // What makes a blob durable: a sync of its file system, or an fsync of its file or
    // of its directory after the rename.
    let syncs: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.ok && (c.name == "syncfs"
                || (["fsync", "fdatasync"].contains(&c.name.as_str())
                    && c.args.contains("/blobs/")))
        })
        .collect();
    let renames: Vec<(&Call, String)> = calls
        .iter()
        .filter_map(|c| blob_rename(c).map(|id| (c, id)))
        .collect();
    let count = |n: &str| calls.iter().filter(|c| c.name == n).count();
    eprintln!(
        "{MESSAGES} messages submitted, delivered and receipted: {} blob files, {} syncfs, {} fsync, {} fdatasync, {} sync_file_range ({:.1} sync calls per message)",
        renames.len(),
        count("syncfs"),
        count("fsync"),
        count("fdatasync"),
        count("sync_file_range"),
        (count("syncfs") + count("fsync") + count("fdatasync") + count("sync_file_range")) as f64
            / MESSAGES as f64
    );
    // The envelope and the acceptance receipt of each message at least, and the receipt.
    assert!(
        renames.len() >= 3 * MESSAGES,
        "{} blobs renamed into place for {MESSAGES} messages:\n{:#?}",
        renames.len(),
        calls.iter().take(40).collect::<Vec<_>>()
    );
    // A submission's blobs are written before its 250; each of them must be synced after
    // its rename and before that 250 (answered to the client after the commit: the
    // client's clock, the same as strace's, bounds it from above).
    for (i, (opened, answered)) in windows.iter().enumerate() {
        let mine: Vec<_> = renames
            .iter()
            .filter(|(r, _)| r.start > *opened && r.end < *answered)
            .collect();
        assert!(
            mine.len() >= 2,
            "message {i}: {} blobs renamed between its connection and its 250",
            mine.len()
        );
        // The commit that refers to them is itself on disk before the 250, and after the
        // blobs are: the committer's fdatasync of sled's file (sled's own flush is
        // `sync_file_range`, which is not durable; its periodic fsync does not count)
        // after a sync that covers every one of them.
        let last = mine.iter().map(|(r, _)| r.end).fold(0.0, f64::max);
        let covering = syncs
            .iter()
            .filter(|s| s.start >= last && s.end <= *answered)
            .map(|s| s.end)
            .fold(f64::INFINITY, f64::min);
        assert!(
            calls.iter().any(|c| c.name == "fdatasync"
                && c.ok
                && c.args.contains("/db/db")
                && c.start >= covering
                && c.end <= *answered),
            "message {i}: the database file was not synced after its blobs and before its 250"
        );
        for (r, id) in mine {
            assert!(
                syncs.iter().any(|s| s.start >= r.end && s.end <= *answered),
                "message {i}: blob {id} renamed at {:.6}, no sync between it and the 250 at {answered:.6}",
                r.end
            );
        }
    }
    // Blob files are not fsynced one by one: the group's sync covers them.
    let blob_fsyncs = calls
        .iter()
        .filter(|c| c.name.starts_with("fsync") || c.name.starts_with("fdatasync"))
        .filter(|c| c.args.contains("/blobs/"))
        .count();
    assert_eq!(
        blob_fsyncs, 0,
        "blob files or directories fsynced one by one"
    );
}
