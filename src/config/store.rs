//! `[store]`: where the metadata, queue and trace log are kept: the embedded sled
//! database in `store.dir` (the default) or PostgreSQL ([`crate::store::kv::pg`]). The
//! database password is read here, once, from `password_file` or the environment, and
//! never written anywhere; a problem names the file and the key, never the secret.

use std::path::Path;

use toml::Table;

use super::StoreConfig;
use super::walk::{Problems, Section, optional_file_key, resolve};
use crate::store::{PgOptions, StoreBackend};

/// The environment variables read for the database password when `password_file` is
/// absent (and the URL has none), in order of preference.
pub const PASSWORD_ENV: [&str; 2] = ["PECD_STORE_PASSWORD", "PGPASSWORD"];

pub(super) fn store(
    root: &mut Table,
    base: &Path,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> StoreConfig {
    let mut sec = Section::take(root, "store", errs);
    let store_dir = sec.string("dir", errs).unwrap_or_else(|| "data".into());
    let dir = resolve(base, "store.dir", &store_dir, errs).unwrap_or_default();
    if dir.exists() && !dir.is_dir() {
        errs.push(
            "store.dir",
            format!("{} exists and is not a directory", dir.display()),
        );
    }
    let group_commit = sec.bool("group_commit", true, errs);
    let backend = sec.string("backend", errs).unwrap_or_else(|| "sled".into());
    let backend = match backend.as_str() {
        "sled" => StoreBackend::Sled,
        "fjall" => StoreBackend::Fjall,
        "postgres" => {
            postgres(&mut sec, base, errs).map_or(StoreBackend::Sled, StoreBackend::Postgres)
        }
        other => {
            errs.push(
                "store.backend",
                format!("unknown backend {other:?} (known: \"sled\", \"fjall\", \"postgres\")"),
            );
            StoreBackend::Sled
        }
    };
    let standby = sec.bool("standby", false, errs);
    if standby && !matches!(backend, StoreBackend::Postgres(_)) {
        errs.push(
            "store.standby",
            "a standby needs backend = \"postgres\": sled is one machine's file, which another \
             machine cannot take over",
        );
    }
    let several = sec.bool("several_writers", false, errs);
    let mut backend = backend;
    match &mut backend {
        StoreBackend::Postgres(pg) => pg.several_writers = several,
        StoreBackend::Sled | StoreBackend::Fjall if several => errs.push(
            "store.several_writers",
            "several writers need backend = \"postgres\": sled and fjall are one process's files",
        ),
        StoreBackend::Sled | StoreBackend::Fjall => {}
    }
    let lease_secs = sec
        .uint("lease_secs", DEFAULT_LEASE_SECS, (5, 86_400), "", errs)
        .unwrap_or(DEFAULT_LEASE_SECS);
    if several && standby {
        errs.push(
            "store.several_writers",
            "several_writers and standby exclude each other: with several writers every node \
             serves, and another takes over the duties of one that is gone",
        );
    }
    // The PostgreSQL keys are commented out in the documented file.
    sec.absent.retain(|k| {
        [
            "store.dir",
            "store.group_commit",
            "store.backend",
            "store.standby",
            "store.several_writers",
            "store.lease_secs",
        ]
        .contains(&k.as_str())
    });
    sec.finish(errs, absent);
    StoreConfig {
        dir,
        group_commit,
        backend,
        standby,
        lease_secs,
    }
}

/// `store.lease_secs` by default: longer than any relay transaction takes (its commands
/// time out sooner), short enough that a dead node's work goes on within minutes.
pub const DEFAULT_LEASE_SECS: u64 = 300;

fn postgres(sec: &mut Section, base: &Path, errs: &mut Problems) -> Option<PgOptions> {
    let url = sec.required_string("url", errs)?;
    let parsed: Result<tokio_postgres::Config, _> = url.parse();
    let has_password = match &parsed {
        Ok(c) => c.get_password().is_some(),
        Err(e) => {
            // The parser's message may quote the URL, password included: not repeated.
            let _ = e;
            errs.push(
                "store.url",
                format!(
                    "{} is not a PostgreSQL URL (postgres://user@host:port/database?sslmode=require) \
                     nor key=value settings",
                    crate::store::kv::pg::redacted(&url)
                ),
            );
            return None;
        }
    };
    if has_password {
        errs.push(
            "store.url",
            "the URL holds a password: put it in password_file or PECD_STORE_PASSWORD instead",
        );
    }
    let pool_size = sec.uint("pool_size", 8, (1, 256), "", errs)? as usize;
    let ca_file = optional_file_key(sec, "ca_file", base, errs);
    let password = match optional_file_key(sec, "password_file", base, errs) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim_end_matches(['\r', '\n']).is_empty() => {
                Some(t.trim_end_matches(['\r', '\n']).to_string())
            }
            Ok(_) => {
                errs.push(
                    "store.password_file",
                    format!("{} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                errs.push("store.password_file", format!("{}: {e}", path.display()));
                None
            }
        },
        None => PASSWORD_ENV
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty())),
    };
    Some(PgOptions {
        url,
        password,
        pool_size,
        ca_file,
        several_writers: false,
    })
}
