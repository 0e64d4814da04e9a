//! `pecd evidence --id IDENTIFICATIVO --out FILE.zip [--mailbox ADDRESS]` writes the
//! evidence bundle of a message ([`pecd::evidence`]); `pecd evidence verify FILE.zip
//! [--cert PEM]...` checks one offline.
//!
//! The bundle's statement is signed with the provider key: by the running server (through
//! its control socket, [`pecd::control`]) or, on a closed store, with `signing.cert` /
//! `signing.key` from the configuration.
//!
//! Exit status of `verify`: 0 intact, 1 altered (the entry is named), 2 unreadable.
//! Signatures are accepted from `signing.cert`, `signing.previous_certs` (when the
//! configuration loads) and every `--cert`; with none of them the check is refused (exit
//! 2) unless `--unchecked` asks for any valid signer, with a warning saying what that means.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pecd::config::DEFAULT_CONFIG_PATH;
use pecd::control::{Item, Request, parse_address};
use pecd::evidence::{self, BundleReport, Scope, check::MAX_BUNDLE_FILE_BYTES};

use super::log::trusted_signers;
use super::mailbox::{Admin, load_config, open_admin_signing};

#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    pub command: Option<EvidenceCommand>,
    /// The PEC identificativo of the message.
    #[arg(long)]
    pub id: Option<String>,
    /// The zip file to write.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the records and messages naming this mailbox (what its user may get).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// The configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCommand {
    /// Check a bundle offline: exit 0 intact, 1 altered (naming what), 2 unreadable.
    Verify {
        file: PathBuf,
        /// Also accept signatures by this certificate (PEM); repeatable.
        #[arg(long)]
        cert: Vec<PathBuf>,
        /// Without a configuration or --cert, accept any signer (only the bundle's
        /// integrity is then checked, not who signed it).
        #[arg(long)]
        unchecked: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: EvidenceArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(EvidenceCommand::Verify {
            file,
            cert,
            unchecked,
            json,
        }) => verify(&a.config, &file, &cert, unchecked, json),
        None => {
            let (Some(id), Some(out)) = (a.id, a.out) else {
                anyhow::bail!("pecd evidence needs --id IDENTIFICATIVO and --out FILE.zip");
            };
            make(&a.config, &id, &out, a.mailbox.as_deref())
        }
    }
}

fn make(config: &Path, id: &str, out: &Path, mailbox: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    // Needed only when the store is opened here (no server running).
    let signer = cfg.load_signer().map(Arc::new);
    let zip = match open_admin_signing(&cfg, signer.as_ref().ok().cloned())? {
        Admin::Local(store) => {
            signer.context("loading the signing key for the evidence statement")?;
            let scope = match mailbox {
                None => Scope::Provider,
                Some(m) => Scope::Mailbox(parse_address(m)?),
            };
            evidence::build(&store, id, &scope)
                .with_context(|| format!("building the evidence bundle of {id}"))?
                .zip
        }
        Admin::Remote(mut c) => {
            let req = Request::Evidence {
                ident: id.to_string(),
                mailbox: mailbox.map(str::to_string),
            };
            let mut zip = Vec::new();
            let done = c.call(&req, |i| match i {
                Item::Chunk(b) => {
                    zip.extend_from_slice(&b);
                    Ok(())
                }
                other => anyhow::bail!("unexpected item from the server: {other:?}"),
            })?;
            if done.bytes != Some(zip.len() as u64) {
                anyhow::bail!(
                    "the server sent {} bytes but reported {:?}",
                    zip.len(),
                    done.bytes
                );
            }
            zip
        }
    };
    let mut f =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&zip)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote the evidence bundle of {id} to {} ({} bytes)",
        out.display(),
        zip.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `pecd evidence verify` (also `pecd log verify FILE.zip`).
pub fn verify(
    config: &Path,
    file: &Path,
    certs: &[PathBuf],
    unchecked: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let trusted = trusted_signers(config, certs, unchecked)?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", file.display()))?;
    let r = evidence::check(&bytes, &trusted).with_context(|| format!("{}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(if r.intact() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    Ok(print(&r))
}

fn print(r: &BundleReport) -> ExitCode {
    if let Some(p) = &r.problem {
        println!("TAMPERED: {p}");
        return ExitCode::from(1);
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let scope = match &r.mailbox {
        Some(m) => format!("mailbox {m}"),
        None => dash(&r.scope),
    };
    println!(
        "intact: evidence bundle of {} (scope: {scope})",
        dash(&r.identificativo)
    );
    println!(
        "{} trace record(s), {} message file(s){}",
        r.records,
        r.messages,
        if r.missing > 0 {
            format!(
                ", {} message(s) named by records but not kept by the provider",
                r.missing
            )
        } else {
            String::new()
        }
    );
    if let Some((seq, head)) = &r.checkpoint {
        println!("covered by the signed checkpoint seq {seq} head {head}");
    }
    if let Some(t) = r.created {
        println!(
            "statement signed at {t} by certificate {}",
            dash(&r.signer_sha256)
        );
    }
    if !r.signer_pinned {
        println!(
            "WARNING: signatures checked for validity only; the signer was not pinned to the provider certificate (pass --cert)"
        );
    }
    ExitCode::SUCCESS
}
