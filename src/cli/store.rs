//! `pecd store migrate --to CONFIG`: moves the store of `--config` to the backends of
//! another configuration file ([`pecd::store::migrate`]). The server must be stopped (the
//! store's lock says so otherwise). What differs moves: the metadata and trace log
//! between sled and PostgreSQL (or another sled directory), each tree compared by hash on
//! the target and the trace chain verified there; the message bodies between a directory
//! and an S3 bucket, each checked by its hash. Then the operator switches the
//! configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use pecd::config::DEFAULT_CONFIG_PATH;
use pecd::store::kv::pg::redacted;
use pecd::store::migrate::{copy_blobs, copy_metadata};
use pecd::store::{BlobStore, StoreBackend};

use super::mailbox::load_config;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the store to the backends of another configuration file and check the copy:
    /// the metadata and trace log (`[store]`: sled ↔ PostgreSQL) and the message bodies
    /// (`[blobs]`: dir ↔ s3), whichever differ.
    Migrate {
        /// The configuration to migrate to.
        #[arg(long)]
        to: PathBuf,
        /// The configuration in use now.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// One JSON object as the report.
        #[arg(long)]
        json: bool,
        /// The target holds an older copy of this same store (e.g. the sled store left
        /// behind when moving to PostgreSQL): overwrite it.
        #[arg(long)]
        replace: bool,
    },
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Migrate {
            to,
            config,
            json,
            replace,
        } => migrate(&config, &to, json, replace),
    }
}

/// Whether two configurations keep the metadata in the same place.
fn same_metadata(a: &pecd::config::Config, b: &pecd::config::Config) -> bool {
    a.store.backend == b.store.backend
        && (matches!(a.store.backend, StoreBackend::Postgres(_)) || a.store.dir == b.store.dir)
}

/// Whether two configurations keep the message bodies in the same place.
fn same_blobs(a: &pecd::config::Config, b: &pecd::config::Config) -> bool {
    a.blobs == b.blobs && (a.blobs != pecd::store::BlobBackend::Dir || a.store.dir == b.store.dir)
}

fn backend_name(c: &pecd::config::Config) -> String {
    match &c.store.backend {
        StoreBackend::Sled => format!("sled in {}", c.store.dir.join("db").display()),
        StoreBackend::Fjall => format!("fjall in {}", c.store.dir.join("fjall").display()),
        StoreBackend::Postgres(pg) => format!("PostgreSQL at {}", redacted(&pg.url)),
    }
}

fn migrate(
    from: &std::path::Path,
    to: &std::path::Path,
    json: bool,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    let source = load_config(from)?;
    let target = load_config(to)?;
    let (metadata, blobs) = (
        !same_metadata(&source, &target),
        !same_blobs(&source, &target),
    );
    if !metadata && !blobs {
        bail!(
            "{} and {} name the same [store] and [blobs]: nothing to migrate",
            from.display(),
            to.display()
        );
    }
    let clock: pecd::clock::SharedClock = std::sync::Arc::new(pecd::clock::SystemClock);
    let options = pecd::store::StoreOptions {
        lock_wait: Duration::from_secs(3),
        // Nothing sealed while it is copied (an older store's backlog would be): the
        // copy reads the log as it stands.
        trace_segment_records: u64::MAX,
        ..source.store_options(clock.clone(), None)
    };
    let store = pecd::store::Store::open(&source.store.dir, options)
        .context("opening the store (stop `pecd serve` first)")?;
    let mut out = serde_json::Map::new();
    if metadata {
        eprintln!(
            "copying the metadata and the trace log from {} to {}",
            backend_name(&source),
            backend_name(&target)
        );
        let target_options = pecd::store::StoreOptions {
            lock_wait: Duration::from_secs(3),
            ..target.store_options(clock.clone(), None)
        };
        let mut last = std::time::Instant::now();
        let r = copy_metadata(
            &store,
            &target.store.dir,
            &target_options,
            replace,
            |tree, r| {
                if last.elapsed() >= Duration::from_secs(5) {
                    last = std::time::Instant::now();
                    eprintln!("  {} entries so far (now: {tree})", r.entries);
                }
            },
        )
        .with_context(|| format!("copying the metadata to {}", backend_name(&target)))?;
        out.insert("metadata".into(), serde_json::to_value(&r)?);
        if !json {
            println!(
                "{} trees, {} entries ({} bytes) copied{}; each tree read back from the target \
                 and compared by SHA-256; trace log head at record {} on both",
                r.trees,
                r.entries,
                r.bytes,
                if r.cleared_earlier_copy {
                    " (an earlier, interrupted copy was cleared first)"
                } else {
                    ""
                },
                r.trace_head
            );
        }
    }
    // The bodies fjall keeps in its keyspace leave with the metadata, whatever `[blobs]`
    // says: the target's engine does not read the source's keyspace.
    let kept = metadata && store.blobs().keeps_bodies_in_keyspace();
    if blobs || kept {
        let dest = BlobStore::open(
            target.store.dir.join("blobs"),
            &target.blobs,
            Some(store.id()),
        )
        .with_context(|| format!("opening the blobs of {}", to.display()))?;
        eprintln!(
            "copying the message bodies from {}{} to {}",
            store.blobs().backend_name(),
            if kept { " and fjall's keyspace" } else { "" },
            dest.backend_name()
        );
        let mut last = std::time::Instant::now();
        let report = copy_blobs(&store, &dest, |r| {
            if last.elapsed() >= Duration::from_secs(5) {
                last = std::time::Instant::now();
                eprintln!(
                    "  {} of the blobs so far: {} copied, {} already there",
                    r.copied + r.present,
                    r.copied,
                    r.present
                );
            }
        })
        .context("migrating the message bodies")?;
        if !json {
            println!(
                "{} referenced blobs ({} bytes): {} copied, {} already there, every one read \
                 back and checked by its SHA-256",
                report.referenced, report.bytes, report.copied, report.present,
            );
        }
        for (k, v) in serde_json::to_value(&report)?
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            out.insert(k, v);
        }
    }
    if metadata {
        // The trace chain, verified on the target as `pecd log verify` would.
        drop(store);
        let target_options = pecd::store::StoreOptions {
            lock_wait: Duration::from_secs(10),
            ..target.store_options(clock, None)
        };
        let copy = pecd::store::Store::open(&target.store.dir, target_options)
            .with_context(|| format!("opening the copy in {}", backend_name(&target)))?;
        let trusted = super::log::trusted_signers(to, &[], false)?;
        let r = copy
            .trace()
            .verify(trusted)
            .context("verifying the copied trace log")?;
        if !r.intact() {
            bail!(
                "the trace log copied to {} does not verify: {:?}",
                backend_name(&target),
                r.problem
            );
        }
        out.insert("trace_records_verified".into(), r.records.into());
        out.insert("trace_checkpoints_verified".into(), r.checkpoints.into());
        if !json {
            println!(
                "trace log on the target verified: {} records, {} signed checkpoints",
                r.records, r.checkpoints
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!(
            "now point the server at {} (the source is left as it was)",
            to.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
