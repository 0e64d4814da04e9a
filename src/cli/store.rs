//! `pecd store migrate --to CONFIG`: moves the store of `--config` to the backends of
//! another configuration file ([`pecd::store::migrate`]). The server must be stopped (the
//! store's lock says so otherwise). Today both files must name the same `store.dir` and
//! differ in `[blobs]`: the message bodies move between the directory and an S3 bucket,
//! each checked by its hash on the target; then the operator switches the configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use pecd::config::DEFAULT_CONFIG_PATH;
use pecd::store::BlobStore;
use pecd::store::migrate::copy_blobs;

use super::mailbox::load_config;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the store to the backends of another configuration file and check the copy
    /// (today: the message bodies, between `[blobs] backend = "dir"` and `"s3"`).
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
    },
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Migrate { to, config, json } => migrate(&config, &to, json),
    }
}

fn migrate(from: &std::path::Path, to: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let source = load_config(from)?;
    let target = load_config(to)?;
    if source.store.dir != target.store.dir {
        bail!(
            "{} keeps its store in {}, {} in {}: moving the metadata to another store is not \
             supported yet (it comes with a second metadata backend); keep store.dir and change [blobs]",
            from.display(),
            source.store.dir.display(),
            to.display(),
            target.store.dir.display()
        );
    }
    if source.blobs == target.blobs {
        bail!(
            "{} and {} name the same [blobs]: nothing to migrate",
            from.display(),
            to.display()
        );
    }
    let options = pecd::store::StoreOptions {
        lock_wait: Duration::from_secs(3),
        ..source.store_options(std::sync::Arc::new(pecd::clock::SystemClock), None)
    };
    let store = pecd::store::Store::open(&source.store.dir, options)
        .context("opening the store (stop `pecd serve` first)")?;
    let dest = BlobStore::open(
        target.store.dir.join("blobs"),
        &target.blobs,
        Some(store.id()),
    )
    .with_context(|| format!("opening the blobs of {}", to.display()))?;
    eprintln!(
        "copying the message bodies from {} to {}",
        store.blobs().backend_name(),
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
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} referenced blobs ({} bytes): {} copied, {} already there, every one read back \
             and checked by its SHA-256\nnow point the server at {} (the source's copies are \
             left where they are)",
            report.referenced,
            report.bytes,
            report.copied,
            report.present,
            to.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
