//! Free loopback ports for servers whose port must be known before they start (a peer's
//! route, a config written in advance).
//!
//! A port taken with `bind(":0")` comes from the kernel's ephemeral range, and the
//! kernel may hand it out again (to another server's `:0` listener, to an outgoing
//! connection) between the moment it is picked and the moment the server binds it: the
//! server then fails to start. Ports are therefore picked *below* the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never assigns one on its
//! own, checked free by binding them, and never handed out twice by this process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port free now, outside the ephemeral range, not given before by this
/// process. Falls back to a kernel-chosen port when the range leaves no room below it.
pub fn free_port() -> u16 {
    let top = ephemeral_start();
    let bottom = 10_000u16;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if top > bottom + 1000 {
        let span = u32::from(top - bottom);
        // Different processes start at different places (test binaries run one after the
        // other, but a developer may run several).
        let mut x = std::process::id()
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        for _ in 0..span {
            // xorshift: a cheap walk over the span.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let port = bottom + (x % span) as u16;
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    given.insert(port);
    port
}
