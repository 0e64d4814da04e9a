//! `pecd mailbox add|del|list|passwd|quota`: thin glue from arguments to the store's
//! mailbox administration functions ([`pecd::store::Store::add_mailbox`] etc.).
//! Also opens the store for `pecd log` ([`open_store`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pecd::config::{Config, DEFAULT_CONFIG_PATH};
use pecd::pec::address::PecAddress;
use pecd::store::mailbox::Password;
use pecd::store::{NewMailbox, Store, StoreOptions};

/// `--config FILE`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum MailboxCommand {
    /// Create a mailbox (its domain must be one of provider.domains).
    Add {
        address: String,
        #[arg(long)]
        password: String,
        /// Quota in bytes (default: limits.default_quota_bytes).
        #[arg(long)]
        quota: Option<u64>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Delete a mailbox and its messages.
    Del {
        address: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// List mailboxes with usage and quota.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Change a mailbox's password.
    Passwd {
        address: String,
        #[arg(long)]
        password: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Set a mailbox's quota in bytes.
    Quota {
        address: String,
        bytes: u64,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading the configuration {}", path.display()))
}

/// Opens the store described by `config` (without a signer: the running server signs
/// the next checkpoint). A store held by a running server is reported clearly by the
/// store's `Locked` error, which names the directory.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let o = StoreOptions {
        group_commit: config.store.group_commit,
        clock: Arc::new(pecd::clock::SystemClock),
        signer: None,
        checkpoint_every: config.trace.checkpoint_every,
        checkpoint_interval: Duration::from_secs(config.trace.checkpoint_interval_secs),
        retention_months: config.trace.retention_months,
        domains: config.provider.domains.clone(),
        default_quota_bytes: config.limits.default_quota_bytes,
        ..StoreOptions::default()
    };
    Store::open(&config.store.dir, o).context("opening the store")
}

fn address(s: &str) -> anyhow::Result<PecAddress> {
    PecAddress::parse(s).with_context(|| format!("{s:?} is not a mailbox address"))
}

pub fn run(cmd: MailboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailboxCommand::Add {
            address: a,
            password,
            quota,
            cfg,
        } => {
            let store = open_store(&load_config(&cfg.config)?)?;
            let req = NewMailbox {
                address: address(&a)?,
                password: Password::new(password),
                quota_bytes: quota,
                options: Default::default(),
            };
            let info = store
                .add_mailbox(req)
                .with_context(|| format!("adding {a}"))?;
            println!("added {} (quota {} bytes)", info.address, info.quota_bytes);
        }
        MailboxCommand::Del { address: a, cfg } => {
            let store = open_store(&load_config(&cfg.config)?)?;
            store
                .delete_mailbox(&address(&a)?)
                .with_context(|| format!("deleting {a}"))?;
            println!("deleted {a}");
        }
        MailboxCommand::List { json, cfg } => {
            let store = open_store(&load_config(&cfg.config)?)?;
            let list = store.list_mailboxes().context("listing mailboxes")?;
            if json {
                for m in &list {
                    println!("{}", serde_json::to_string(m)?);
                }
            } else {
                println!(
                    "{:<40} {:>14} {:>14} {:>8}",
                    "ADDRESS", "USAGE", "QUOTA", "MESSAGES"
                );
                for m in &list {
                    println!(
                        "{:<40} {:>14} {:>14} {:>8}",
                        m.address.to_string(),
                        m.usage_bytes,
                        m.quota_bytes,
                        m.messages
                    );
                }
            }
        }
        MailboxCommand::Passwd {
            address: a,
            password,
            cfg,
        } => {
            let store = open_store(&load_config(&cfg.config)?)?;
            store
                .set_password(&address(&a)?, &Password::new(password))
                .with_context(|| format!("changing the password of {a}"))?;
            println!("password of {a} changed");
        }
        MailboxCommand::Quota {
            address: a,
            bytes,
            cfg,
        } => {
            let store = open_store(&load_config(&cfg.config)?)?;
            store
                .set_quota(&address(&a)?, bytes)
                .with_context(|| format!("setting the quota of {a}"))?;
            println!("quota of {a} set to {bytes} bytes");
        }
    }
    Ok(ExitCode::SUCCESS)
}
