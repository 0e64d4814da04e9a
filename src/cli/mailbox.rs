//! `pecd mailbox add|del|list|passwd|quota`: thin glue from arguments to the store's
//! mailbox administration functions ([`pecd::store::Store::add_mailbox`] etc.).
//! Also opens the store for `pecd log` ([`open_admin`]).
//!
//! While `pecd serve` holds the store's lock, the same operations go through the server's
//! control socket ([`pecd::control`]); the output is the same either way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pecd::config::{Config, DEFAULT_CONFIG_PATH};
use pecd::control::{Client, Item, Request};
use pecd::pec::address::PecAddress;
use pecd::store::mailbox::{MailboxInfo, Password};
use pecd::store::{NewMailbox, Store, StoreError, StoreOptions};

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
/// the next checkpoint). A store held by a running server is reported by the store's
/// `Locked` error, which names the directory; [`open_admin`] then uses the control socket.
fn open_store_raw(config: &Config, lock_wait: Duration) -> Result<Store, StoreError> {
    let o = StoreOptions {
        group_commit: config.store.group_commit,
        clock: Arc::new(pecd::clock::SystemClock),
        signer: None,
        checkpoint_every: config.trace.checkpoint_every,
        checkpoint_interval: Duration::from_secs(config.trace.checkpoint_interval_secs),
        retention_months: config.trace.retention_months,
        domains: config.provider.domains.clone(),
        default_quota_bytes: config.limits.default_quota_bytes,
        lock_wait,
        ..StoreOptions::default()
    };
    Store::open(&config.store.dir, o)
}

/// Where an admin operation runs: on the store directly, or in the running server.
pub enum Admin {
    Local(Store),
    Remote(Client),
}

/// Opens the store directly; when a running server holds its lock, connects to that
/// server's control socket instead. When neither works, the error names both problems.
pub fn open_admin(config: &Config) -> anyhow::Result<Admin> {
    // A held lock is normally a running server: ask it at once rather than wait.
    match open_store_raw(config, Duration::ZERO) {
        Ok(s) => Ok(Admin::Local(s)),
        Err(StoreError::Locked { .. }) => match Client::connect(&config.store.dir) {
            Ok(c) => Ok(Admin::Remote(c)),
            // No server answers: the lock may be a server that is just stopping.
            Err(e) => match open_store_raw(config, StoreOptions::default().lock_wait) {
                Ok(s) => Ok(Admin::Local(s)),
                Err(locked @ StoreError::Locked { .. }) => Err(anyhow::anyhow!(
                "opening the store: {locked}; and the running server's control socket {} cannot be reached: {e}",
                pecd::control::socket_path(&config.store.dir).display()
                )),
                Err(other) => Err(anyhow::Error::new(other).context("opening the store")),
            },
        },
        Err(e) => Err(anyhow::Error::new(e).context("opening the store")),
    }
}

/// Runs a request that returns no items on a running server.
fn remote(c: &mut Client, req: &Request) -> anyhow::Result<pecd::control::Done> {
    c.call(req, |i| {
        anyhow::bail!("unexpected item from the server: {i:?}")
    })
}

fn print_list(list: &[MailboxInfo], json: bool) -> anyhow::Result<()> {
    if json {
        for m in list {
            println!("{}", serde_json::to_string(m)?);
        }
    } else {
        println!(
            "{:<40} {:>14} {:>14} {:>8}",
            "ADDRESS", "USAGE", "QUOTA", "MESSAGES"
        );
        for m in list {
            println!(
                "{:<40} {:>14} {:>14} {:>8}",
                m.address.to_string(),
                m.usage_bytes,
                m.quota_bytes,
                m.messages
            );
        }
    }
    Ok(())
}

fn address(s: &str) -> anyhow::Result<PecAddress> {
    pecd::control::parse_address(s)
}

pub fn run(cmd: MailboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailboxCommand::Add {
            address: a,
            password,
            quota,
            cfg,
        } => {
            let info = match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => {
                    let req = NewMailbox {
                        address: address(&a)?,
                        password: Password::new(password),
                        quota_bytes: quota,
                        options: Default::default(),
                    };
                    store
                        .add_mailbox(req)
                        .with_context(|| format!("adding {a}"))?
                }
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxAdd {
                        address: a.clone(),
                        password,
                        quota,
                    };
                    remote(&mut c, &req)?
                        .mailbox
                        .context("the server did not return the new mailbox")?
                }
            };
            println!("added {} (quota {} bytes)", info.address, info.quota_bytes);
        }
        MailboxCommand::Del { address: a, cfg } => {
            match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .delete_mailbox(&address(&a)?)
                    .with_context(|| format!("deleting {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    remote(&mut c, &Request::MailboxDel { address: a.clone() })?;
                }
            }
            println!("deleted {a}");
        }
        MailboxCommand::List { json, cfg } => {
            let list = match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store.list_mailboxes().context("listing mailboxes")?,
                Admin::Remote(mut c) => {
                    let mut list = Vec::new();
                    c.call(&Request::MailboxList, |i| match i {
                        Item::Mailbox(m) => {
                            list.push(m);
                            Ok(())
                        }
                        other => anyhow::bail!("unexpected item from the server: {other:?}"),
                    })?;
                    list
                }
            };
            print_list(&list, json)?;
        }
        MailboxCommand::Passwd {
            address: a,
            password,
            cfg,
        } => {
            match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .set_password(&address(&a)?, &Password::new(password))
                    .with_context(|| format!("changing the password of {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxPasswd {
                        address: a.clone(),
                        password,
                    };
                    remote(&mut c, &req)?;
                }
            }
            println!("password of {a} changed");
        }
        MailboxCommand::Quota {
            address: a,
            bytes,
            cfg,
        } => {
            match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .set_quota(&address(&a)?, bytes)
                    .with_context(|| format!("setting the quota of {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxQuota {
                        address: a.clone(),
                        bytes,
                    };
                    remote(&mut c, &req)?;
                }
            }
            println!("quota of {a} set to {bytes} bytes");
        }
    }
    Ok(ExitCode::SUCCESS)
}
