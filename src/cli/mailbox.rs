//! `pecd mailbox add|del|list|passwd|plan|quota|options`: thin glue from arguments to the store's
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
use pecd::pec::smime::Signer;
use pecd::store::mailbox::{MailboxInfo, MailboxOptions, Password};
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
    /// Create a mailbox (its domain must be one of provider.domains). The password is
    /// provisional: the owner must change it (webmail) before using the mailbox.
    Add {
        address: String,
        #[arg(long)]
        password: String,
        /// The owner need not change this password at first login (scripted or
        /// migrated mailboxes, test mailboxes).
        #[arg(long)]
        keep_password: bool,
        /// Quota in bytes (default: limits.default_quota_bytes).
        #[arg(long, conflicts_with = "plan")]
        quota: Option<u64>,
        /// A service plan of [plans.NAME]: the quota is the plan's size and follows it.
        #[arg(long)]
        plan: Option<String>,
        /// Deliver ordinary (non-certified) mail to this mailbox wrapped in an anomaly
        /// envelope (busta di anomalia) instead of refusing it.
        #[arg(long)]
        accept_anomalies: bool,
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
    /// Reset a mailbox's password. It is provisional: the owner must change it before
    /// using the mailbox again. Every open session of the mailbox ends.
    Passwd {
        address: String,
        #[arg(long)]
        password: String,
        /// The owner need not change this password at the next login.
        #[arg(long)]
        keep_password: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Put a mailbox on a service plan of [plans.NAME] (its quota becomes the plan's
    /// size and follows it).
    Plan {
        address: String,
        plan: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Set a mailbox's quota in bytes (off any plan; the security archive keeps its size).
    Quota {
        address: String,
        bytes: u64,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Show or replace a mailbox's rules on incoming messages (JSON; see README).
    Filters {
        address: String,
        /// Replace the rules with those of this JSON file (an array).
        #[arg(long, conflicts_with = "clear")]
        set: Option<PathBuf>,
        /// Remove every rule.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Show a mailbox's notifications to ordinary addresses (the owner adds and confirms
    /// them in the webmail), or remove one.
    Notify {
        address: String,
        /// Remove this ordinary address.
        #[arg(long)]
        remove: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Smart cards (CNS) that may log in to a mailbox.
    Cert {
        #[command(subcommand)]
        cmd: super::owner::CardCommand,
    },
    /// Show or change a mailbox's options.
    Options {
        address: String,
        /// Deliver ordinary (non-certified) mail wrapped in an anomaly envelope
        /// (`true`) or refuse it at the incoming point (`false`).
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        accept_anomalies: Option<bool>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading the configuration {}", path.display()))
}

/// Opens the store described by `config` (normally without a signer: the running server
/// signs the next checkpoint; `pecd evidence` passes one, its statement must be signed). A store held by a running server is reported by the store's
/// `Locked` error, which names the directory; [`open_admin`] then uses the control socket.
fn open_store_raw(
    config: &Config,
    lock_wait: Duration,
    signer: Option<Arc<Signer>>,
) -> Result<Store, StoreError> {
    let o = StoreOptions {
        lock_wait,
        ..config.store_options(Arc::new(pecd::clock::SystemClock), signer)
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
    open_admin_signing(config, None)
}

/// [`open_admin`], the store (when opened here) signing trace checkpoints with `signer`.
pub fn open_admin_signing(config: &Config, signer: Option<Arc<Signer>>) -> anyhow::Result<Admin> {
    // A held lock is normally a running server: ask it at once rather than wait.
    match open_store_raw(config, Duration::ZERO, signer.clone()) {
        Ok(s) => Ok(Admin::Local(s)),
        Err(StoreError::Locked { .. }) => match Client::connect(&config.store.dir) {
            Ok(c) => Ok(Admin::Remote(c)),
            // No server answers: the lock may be a server that is just stopping.
            Err(e) => match open_store_raw(config, StoreOptions::default().lock_wait, signer) {
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
pub(super) fn remote(c: &mut Client, req: &Request) -> anyhow::Result<pecd::control::Done> {
    c.call(req, |i| {
        anyhow::bail!("unexpected item from the server: {i:?}")
    })
}

/// The list; `archive_default` is the archive size of mailboxes without their own.
fn print_list(list: &[MailboxInfo], json: bool, archive_default: u64) -> anyhow::Result<()> {
    if json {
        for m in list {
            println!("{}", serde_json::to_string(m)?);
        }
    } else {
        println!(
            "{:<40} {:>14} {:>14} {:>8}  {:<10} {:>14} {:>14} OPTIONS",
            "ADDRESS", "USAGE", "QUOTA", "MESSAGES", "PLAN", "ARCHIVE_USAGE", "ARCHIVE_QUOTA"
        );
        for m in list {
            println!(
                "{:<40} {:>14} {:>14} {:>8}  {:<10} {:>14} {:>14} {}",
                m.address.to_string(),
                m.usage_bytes,
                m.quota_bytes,
                m.messages,
                m.plan.as_deref().unwrap_or("-"),
                m.archive_usage_bytes,
                m.archive_quota_bytes.unwrap_or(archive_default),
                describe_options(&m.options)
            );
        }
    }
    Ok(())
}

fn describe_options(o: &MailboxOptions) -> String {
    format!("accept-anomalies={}", o.accept_anomalies)
}

/// Plan `name` of the configuration, or an error naming the configured plans.
fn plan<'c>(config: &'c Config, name: &str) -> anyhow::Result<&'c pecd::config::Plan> {
    config
        .plan(name)
        .with_context(|| format!("in {}", config.path.display()))
}

pub(super) fn address(s: &str) -> anyhow::Result<PecAddress> {
    pecd::control::parse_address(s)
}

pub fn run(cmd: MailboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailboxCommand::Cert { cmd } => return super::owner::run(cmd),
        MailboxCommand::Notify {
            address: a,
            remove,
            json,
            cfg,
        } => return super::owner::notify(a, remove, json, cfg),
        MailboxCommand::Filters {
            address: a,
            set,
            clear,
            cfg,
        } => return super::owner::filters(a, set, clear, cfg),
        MailboxCommand::Add {
            address: a,
            password,
            keep_password,
            quota,
            plan,
            accept_anomalies,
            cfg,
        } => {
            let options = MailboxOptions { accept_anomalies };
            let config = load_config(&cfg.config)?;
            let info = match open_admin(&config)? {
                Admin::Local(store) => {
                    let chosen = plan
                        .as_deref()
                        .map(|p| self::plan(&config, p))
                        .transpose()?;
                    let quota = chosen.map(|p| p.mailbox_bytes).or(quota);
                    let archive = chosen.and_then(|p| p.archive_bytes);
                    let req = NewMailbox {
                        address: address(&a)?,
                        password: Password::new(password),
                        quota_bytes: quota,
                        options,
                        provisional: !keep_password,
                    };
                    store
                        .add_mailbox_on_plan(req, plan, archive)
                        .with_context(|| format!("adding {a}"))?
                }
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxAdd {
                        address: a.clone(),
                        password,
                        quota,
                        options,
                        provisional: !keep_password,
                        plan,
                    };
                    remote(&mut c, &req)?
                        .mailbox
                        .context("the server did not return the new mailbox")?
                }
            };
            println!(
                "added {} (quota {} bytes{}, {})",
                info.address,
                info.quota_bytes,
                info.plan
                    .as_ref()
                    .map(|p| format!(", plan {p}"))
                    .unwrap_or_default(),
                describe_options(&info.options)
            );
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
            let config = load_config(&cfg.config)?;
            let list = match open_admin(&config)? {
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
            print_list(&list, json, config.archive.default_bytes)?;
        }
        MailboxCommand::Passwd {
            address: a,
            password,
            keep_password,
            cfg,
        } => {
            match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .set_password(&address(&a)?, &Password::new(password), !keep_password)
                    .with_context(|| format!("changing the password of {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxPasswd {
                        address: a.clone(),
                        password,
                        provisional: !keep_password,
                    };
                    remote(&mut c, &req)?;
                }
            }
            println!("password of {a} changed");
        }
        MailboxCommand::Plan {
            address: a,
            plan,
            cfg,
        } => {
            let config = load_config(&cfg.config)?;
            let bytes = match open_admin(&config)? {
                Admin::Local(store) => {
                    let p = self::plan(&config, &plan)?;
                    let bytes = p.mailbox_bytes;
                    store
                        .set_plan(&address(&a)?, &plan, bytes, p.archive_bytes)
                        .with_context(|| format!("setting the plan of {a}"))?;
                    bytes
                }
                Admin::Remote(mut c) => {
                    address(&a)?;
                    let req = Request::MailboxPlan {
                        address: a.clone(),
                        plan: plan.clone(),
                    };
                    // The server resolved the size from its own configuration.
                    remote(&mut c, &req)?
                        .mailbox
                        .context("the server did not return the mailbox")?
                        .quota_bytes
                }
            };
            println!("{a} is on plan {plan} (quota {bytes} bytes)");
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
        MailboxCommand::Options {
            address: a,
            accept_anomalies,
            cfg,
        } => {
            let addr = address(&a)?;
            let mut admin = open_admin(&load_config(&cfg.config)?)?;
            let current = match &mut admin {
                Admin::Local(store) => store
                    .mailbox(&addr)
                    .with_context(|| format!("reading {a}"))?,
                Admin::Remote(c) => {
                    let mut found = None;
                    c.call(&Request::MailboxList, |i| match i {
                        Item::Mailbox(m) => {
                            if m.address == addr {
                                found = Some(m);
                            }
                            Ok(())
                        }
                        other => anyhow::bail!("unexpected item from the server: {other:?}"),
                    })?;
                    found
                }
            };
            let mut options = current
                .with_context(|| format!("{a}: no such mailbox"))?
                .options;
            if let Some(v) = accept_anomalies {
                options.accept_anomalies = v;
                match &mut admin {
                    Admin::Local(store) => store
                        .set_mailbox_options(&addr, options.clone())
                        .with_context(|| format!("setting the options of {a}"))?,
                    Admin::Remote(c) => {
                        let req = Request::MailboxOptions {
                            address: a.clone(),
                            options: options.clone(),
                        };
                        remote(c, &req)?;
                    }
                }
            }
            println!("{a}: {}", describe_options(&options));
        }
    }
    Ok(ExitCode::SUCCESS)
}
