//! `pecd index export|import|list`: this provider's entry in the index of PEC providers, and
//! the other providers' entries it trusts ([`pecd::pec::index`], rules digest §8).
//!
//! The imported index is one file, `store.dir/index.ldif`
//! ([`ProviderIndex::default_path`]). `import` parses the whole new file first (every error
//! reported with its line) and only then replaces the old one atomically, so a bad file
//! leaves the previous import in force.
//!
//! When a server is running on the same store (its control socket answers), `import` then
//! asks it to reload the index ([`pecd::control`]), so the import takes effect at once; a
//! failure there is an error (the file is saved, the server keeps the previous index).
//!
//! `refresh` does once what the server does every `index.refresh_secs`
//! ([`pecd::pec::index::ldap`]): fetch the index from `index.ldap_url`, replace the file only
//! if the whole fetch succeeded, and have a running server reload it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pecd::pec::index::{MAX_LDIF_BYTES, ProviderIndex, ProviderRecord, read_bounded};

use super::mailbox::{ConfigArg, load_config};

#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Write this gateway's own index entry as LDIF (stdout by default).
    Export {
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Load other providers' entries from an LDIF file, replacing the previous import.
    Import {
        file: PathBuf,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Fetch the index from index.ldap_url now, replacing the previous import.
    Refresh {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Print the imported providers: name, mailReceipt, domains, certificate SHA-1s.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub fn run(cmd: IndexCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IndexCommand::Export { out, cfg } => export(cfg, out),
        IndexCommand::Import { file, cfg } => import(cfg, file),
        IndexCommand::List { json, cfg } => list(cfg, json),
        IndexCommand::Refresh { cfg } => refresh(cfg),
    }
}

fn refresh(cfg: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load_config(&cfg.config)?;
    let Some(url) = config.index.ldap_url.clone() else {
        anyhow::bail!(
            "{}: index.ldap_url is not set; there is no directory to refresh from",
            config.path.display()
        );
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    pecd::pec::index::ldap::warn_if_insecure(&config.index);
    let report = rt
        .block_on(pecd::pec::index::ldap::refresh(&config))
        .with_context(|| format!("refresh from {url} failed; the previous index is unchanged"))?;
    println!(
        "refreshed {} provider entr{} ({} domain{}) from {url} into {}",
        report.providers,
        if report.providers == 1 { "y" } else { "ies" },
        report.domains,
        if report.domains == 1 { "" } else { "s" },
        report.path.display()
    );
    reload_running_server(&config)?;
    Ok(ExitCode::SUCCESS)
}

fn export(cfg: ConfigArg, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(&cfg.config)?;
    let signer = config
        .load_signer()
        .context("loading the signing certificate")?;
    let record = ProviderRecord::for_this_provider(&config, signer.certificate())?;
    let ldif = ProviderIndex::new(vec![record])?.to_ldif()?;
    match out {
        Some(path) => {
            std::fs::write(&path, &ldif).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote the index entry of {:?} to {}",
                config.provider.name,
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(ldif.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn import(cfg: ConfigArg, file: PathBuf) -> anyhow::Result<ExitCode> {
    let config = load_config(&cfg.config)?;
    let bytes = read_bounded(&file, MAX_LDIF_BYTES)
        .with_context(|| format!("reading {}", file.display()))?;
    let index = ProviderIndex::parse(&bytes).with_context(|| {
        format!(
            "{}: nothing imported, the previous index is unchanged",
            file.display()
        )
    })?;
    if index.is_empty() {
        anyhow::bail!(
            "{}: no provider entry (objectclass: provider) found; nothing imported, the previous index is unchanged",
            file.display()
        );
    }
    let path = ProviderIndex::default_path(&config);
    index
        .save_atomic(&path)
        .with_context(|| format!("saving {}", path.display()))?;
    let domains: usize = index
        .records()
        .iter()
        .map(|r| r.managed_domains.len())
        .sum();
    println!(
        "imported {} provider entr{} ({} domain{}) into {}",
        index.len(),
        if index.len() == 1 { "y" } else { "ies" },
        domains,
        if domains == 1 { "" } else { "s" },
        path.display()
    );
    reload_running_server(&config)?;
    Ok(ExitCode::SUCCESS)
}

/// Asks a server running on this store to reload the index; no server, nothing to do.
fn reload_running_server(config: &pecd::config::Config) -> anyhow::Result<()> {
    use std::io::ErrorKind;
    let sock = pecd::control::socket_path(&config.store.dir);
    let mut client = match pecd::control::Client::connect(&config.store.dir) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(());
        }
        Err(e) => anyhow::bail!(
            "the index is saved, but the running server's control socket {} cannot be reached ({e}): it keeps the previous index until restarted",
            sock.display()
        ),
    };
    client
        .call(&pecd::control::Request::IndexReload, |i| {
            anyhow::bail!("unexpected item from the server: {i:?}")
        })
        .context("the index is saved, but the running server did not reload it (it keeps the previous index until restarted)")?;
    eprintln!("the running server reloaded the provider index");
    Ok(())
}

#[derive(serde::Serialize)]
struct RecordView<'a> {
    dn: &'a str,
    name: &'a str,
    unit: Option<&'a str>,
    mail_receipt: String,
    managed_domains: Vec<&'a str>,
    certificate_sha1: &'a [String],
    ldif_url: Option<&'a str>,
    description: Option<&'a str>,
}

fn list(cfg: ConfigArg, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(&cfg.config)?;
    let path = ProviderIndex::default_path(&config);
    let index = ProviderIndex::load_or_empty(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    if index.is_empty() && !json {
        writeln!(
            stdout,
            "no provider index imported ({} does not exist or is empty)",
            path.display()
        )?;
    }
    for r in index.records() {
        let view = RecordView {
            dn: &r.dn,
            name: &r.name,
            unit: r.unit.as_deref(),
            mail_receipt: r.mail_receipt.to_string(),
            managed_domains: r.managed_domains.iter().map(|d| d.as_str()).collect(),
            certificate_sha1: &r.certificate_hashes,
            ldif_url: r.ldif_url.as_deref(),
            description: r.description.as_deref(),
        };
        if json {
            writeln!(stdout, "{}", serde_json::to_string(&view)?)?;
            continue;
        }
        match view.unit {
            Some(u) => writeln!(stdout, "{} / {}", view.name, u)?,
            None => writeln!(stdout, "{}", view.name)?,
        }
        writeln!(stdout, "  mailReceipt:     {}", view.mail_receipt)?;
        writeln!(
            stdout,
            "  managedDomains:  {}",
            view.managed_domains.join(" ")
        )?;
        for h in view.certificate_sha1 {
            writeln!(stdout, "  certificate SHA-1: {h}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
