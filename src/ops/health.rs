//! Liveness and readiness (`/healthz`, `/readyz` on the admin listener).
//!
//! Alive: the process answers. Ready: the store takes a durable write (a probe file in its
//! directory, written and fsynced, and a sled write through the derived cache), the
//! signing key signs, every configured listener's accept loop is running, and the store's
//! filesystem keeps `limits.min_free_bytes`, with `[blobs] backend = "s3"` the bucket
//! answers, and with `[store] backend = "postgres"` the database answers. Each check says what failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

use crate::gateway::Gateway;

/// Listener name → whether its accept loop runs.
static LISTENERS: LazyLock<Mutex<BTreeMap<String, bool>>> = LazyLock::new(Default::default);

/// Called by each accept loop when it starts (`true`) and when it ends (`false`).
pub fn listener_running(name: &str, up: bool) {
    if let Ok(mut l) = LISTENERS.lock() {
        l.insert(name.to_string(), up);
    }
}

/// One readiness check and its outcome.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Runs every readiness check (blocking I/O: call off the executor).
pub fn readiness(gw: &Arc<Gateway>) -> Vec<Check> {
    let mut out = Vec::new();
    let mut add = |name: &str, r: Result<String, String>| {
        let ok = r.is_ok();
        out.push(Check {
            name: name.into(),
            ok,
            detail: r.unwrap_or_else(|e| e),
        });
    };
    add("store writable", store_writable(gw));
    if let Some(r) = gw.store.probe_database() {
        add(
            "database",
            r.map(|()| format!("PostgreSQL answers ({})", gw.store.location()))
                .map_err(|e| e.to_string()),
        );
    }
    if let Some(r) = gw.store.blobs().probe() {
        add(
            "object store",
            r.map(|()| "the bucket answers".to_string())
                .map_err(|e| e.to_string()),
        );
    }
    add(
        "signing key",
        gw.signer
            .sign_raw(b"pecd readiness probe")
            .map(|_| "signs".to_string())
            .map_err(|e| format!("cannot sign: {e}")),
    );
    add(
        "free space",
        match gw.store.free_bytes() {
            Ok(free) if free >= gw.config.limits.min_free_bytes => Ok(format!("{free} bytes free")),
            Ok(free) => Err(format!(
                "{free} bytes free, below limits.min_free_bytes ({}): new mail is refused",
                gw.config.limits.min_free_bytes
            )),
            Err(e) => Err(format!("cannot read: {e}")),
        },
    );
    let listeners = LISTENERS.lock().map(|l| l.clone()).unwrap_or_default();
    let down: Vec<&String> = listeners
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(n, _)| n)
        .collect();
    add(
        "listeners",
        if listeners.is_empty() {
            Err("no listener is running".into())
        } else if down.is_empty() {
            Ok(listeners.keys().cloned().collect::<Vec<_>>().join(", "))
        } else {
            Err(format!("not accepting: {down:?}"))
        },
    );
    out
}

fn store_writable(gw: &Gateway) -> Result<String, String> {
    let probe = gw.store.dir().join(".readyz-probe");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"ok")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    };
    write().map_err(|e| format!("{}: {e}", probe.display()))?;
    gw.store
        .cache_put("health", "probe", gw.clock.now().to_string().as_bytes())
        .map_err(|e| format!("store write: {e}"))?;
    Ok("a file and a store write went through".into())
}
