//! The owner's service as the administrator reaches it: `pecd mailbox filters ADDRESS
//! [--set FILE.json | --clear]` (rules on incoming messages) and
//! `pecd mailbox cert add ADDRESS FILE.pem | del ADDRESS SHA256 | list ADDRESS [--json]`:
//! the smart cards (CNS) that may log in to a mailbox, on the store directly or through
//! the running server's control socket. A certificate file is checked before anything is
//! stored (it names itself and the problem): a PEM certificate with a codice fiscale,
//! from a CA of `[cns] ca`, valid now and not revoked.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pecd::cns::CardCert;
use pecd::control::Request;

use super::mailbox::{Admin, ConfigArg, address, load_config, open_admin, remote};

#[derive(Debug, clap::Subcommand)]
pub enum CardCommand {
    /// Associate a card's authentication certificate (PEM) with the mailbox.
    Add {
        address: String,
        file: PathBuf,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// End a card's association (by the certificate's SHA-256, as `list` shows it).
    Del {
        address: String,
        sha256: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// The cards of the mailbox.
    List {
        address: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub fn run(cmd: CardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CardCommand::Add {
            address: a,
            file,
            cfg,
        } => {
            let pem =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let config = load_config(&cfg.config)?;
            let card = match open_admin(&config)? {
                Admin::Local(store) => {
                    let trust = config.load_cns().context("loading [cns]")?;
                    let card =
                        pecd::cns::for_association(trust.as_ref(), &pem, jiff::Timestamp::now())
                            .with_context(|| format!("{}", file.display()))?;
                    store
                        .add_card(&address(&a)?, &card)
                        .with_context(|| format!("associating a card with {a}"))?;
                    card
                }
                Admin::Remote(mut c) => {
                    address(&a)?;
                    // Read here, so a file that is no certificate names itself.
                    CardCert::from_pem(&pem).with_context(|| format!("{}", file.display()))?;
                    let req = Request::CardAdd {
                        address: a.clone(),
                        pem: String::from_utf8_lossy(&pem).into_owned(),
                    };
                    remote(&mut c, &req)?
                        .cards
                        .and_then(|v| v.into_iter().next())
                        .context("the server did not return the card")?
                }
            };
            println!(
                "card {} ({}, codice fiscale {}) may now log in to {a}",
                card.sha256, card.subject, card.codice_fiscale
            );
        }
        CardCommand::Del {
            address: a,
            sha256,
            cfg,
        } => {
            match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .remove_card(&address(&a)?, &sha256)
                    .with_context(|| format!("removing a card of {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    remote(
                        &mut c,
                        &Request::CardDel {
                            address: a.clone(),
                            sha256: sha256.clone(),
                        },
                    )?;
                }
            }
            println!("card {sha256} removed from {a}");
        }
        CardCommand::List {
            address: a,
            json,
            cfg,
        } => {
            let cards = match open_admin(&load_config(&cfg.config)?)? {
                Admin::Local(store) => store
                    .cards(&address(&a)?)
                    .with_context(|| format!("listing the cards of {a}"))?,
                Admin::Remote(mut c) => {
                    address(&a)?;
                    remote(&mut c, &Request::CardList { address: a.clone() })?
                        .cards
                        .unwrap_or_default()
                }
            };
            for c in &cards {
                if json {
                    println!("{}", serde_json::to_string(c)?);
                } else {
                    println!(
                        "{}  {}  valid {} to {}  {}",
                        c.sha256, c.codice_fiscale, c.not_before, c.not_after, c.subject
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pecd mailbox filters`: prints the rules (after replacing them, with `--set`/`--clear`).
pub fn filters(
    a: String,
    set: Option<PathBuf>,
    clear: bool,
    cfg: ConfigArg,
) -> anyhow::Result<ExitCode> {
    let rules: Option<serde_json::Value> = match (&set, clear) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not JSON", file.display()))?,
            )
        }
        (None, true) => Some(serde_json::json!([])),
        (None, false) => None,
    };
    let what = set
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the rules".into());
    let out = match open_admin(&load_config(&cfg.config)?)? {
        Admin::Local(store) => {
            let addr = address(&a)?;
            match rules {
                Some(r) => store
                    .set_filters(&addr, &r)
                    .with_context(|| format!("{what}: setting the rules of {a}"))?,
                None => store
                    .filters(&addr)
                    .with_context(|| format!("reading the rules of {a}"))?,
            }
        }
        Admin::Remote(mut c) => {
            address(&a)?;
            let req = match rules {
                Some(r) => Request::FiltersSet {
                    address: a.clone(),
                    rules: r,
                },
                None => Request::FiltersGet { address: a.clone() },
            };
            remote(&mut c, &req)
                .with_context(|| what.clone())?
                .filters
                .unwrap_or_default()
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `pecd mailbox notify ADDRESS [--remove EMAIL] [--json]`.
pub fn notify(
    a: String,
    remove: Option<String>,
    json: bool,
    cfg: ConfigArg,
) -> anyhow::Result<ExitCode> {
    let n = match open_admin(&load_config(&cfg.config)?)? {
        Admin::Local(store) => {
            let addr = address(&a)?;
            match &remove {
                Some(r) => store
                    .remove_notify_target(&addr, r)
                    .with_context(|| format!("removing {r} from the notifications of {a}"))?,
                None => store
                    .notify_settings(&addr)
                    .with_context(|| format!("reading the notifications of {a}"))?,
            }
        }
        Admin::Remote(mut c) => {
            address(&a)?;
            let req = Request::Notify {
                address: a.clone(),
                remove: remove.clone(),
            };
            remote(&mut c, &req)?
                .notify
                .context("the server did not return the notifications")?
        }
    };
    if json {
        println!("{}", n.view());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = &remove {
        println!("removed {r}");
    }
    for t in &n.targets {
        let state = match (t.confirmed, t.code_expires) {
            (true, _) => "confirmed".to_string(),
            (false, Some(e)) if t.code_sha256.is_some() => {
                format!("waiting for the code (until {e})")
            }
            _ => "code void: the owner must add it again".to_string(),
        };
        println!("{:<40} {state}", t.address);
    }
    if n.targets.is_empty() {
        println!("no notification addresses");
    }
    println!(
        "also receipts: {}, also anomalies: {}, arrivals waiting: {}",
        n.receipts,
        n.anomalies,
        n.pending.len() + n.more as usize
    );
    Ok(ExitCode::SUCCESS)
}
