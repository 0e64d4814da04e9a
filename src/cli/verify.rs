//! `pecd verify FILE.eml [--ca FILE.pem] [--index FILE.ldif] [--crl FILE] [--config FILE]
//! [--json]`: offline report on any PEC message.
//!
//! Exit status: 0 well-formed, validly signed PEC whose signer was checked and trusted (it
//! chains to `--ca`, or is in `--index`, or passes what `--config` trusts: its `[trust] ca`,
//! its provider index and its CRLs); 1 not (the report says why); 2 the file (or a trust
//! file) cannot be read, or it is not a mail; 3 the signature is intact but nothing said
//! whose key may sign, so the signer was not checked (`"trusted": false`,
//! `"signer_checked": false` in the JSON).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use openssl::x509::X509;
use pecd::config::Config;
use pecd::pec::crl::CrlSet;
use pecd::pec::index::ProviderIndex;
use pecd::pec::smime::TrustAnchors;

/// The exit status of an intact signature by a signer nobody checked.
const SIGNER_NOT_CHECKED: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The message to examine (RFC 5322, LF or CRLF).
    pub file: PathBuf,
    /// PEM bundle of CAs the signer must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Provider index (LDIF) in which the signer must be listed.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// CRL (PEM or DER) that must not list the signer certificate; its signature is
    /// checked when its issuer is in --ca.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Judge the signer as this provider's configuration does: its `[trust] ca`, its
    /// provider index (imported entries and its own) and the CRLs of `[trust] crl_dir`.
    /// --ca, --index and --crl, when given too, take the place of the matching part.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// What the signer is judged against.
#[derive(Default)]
struct Trust {
    cas: Vec<X509>,
    index: Option<ProviderIndex>,
    crls: Option<CrlSet>,
}

fn read_certs(p: &Path, what: &str) -> anyhow::Result<Vec<X509>> {
    let pem =
        std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))?;
    let certs =
        X509::stack_from_pem(&pem).with_context(|| format!("{what} {}: not PEM", p.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{what} {}: no certificate in it",
        p.display()
    );
    Ok(certs)
}

/// What `--config` trusts.
fn from_config(path: &Path) -> anyhow::Result<Trust> {
    let cfg = Config::load(path).with_context(|| format!("configuration {}", path.display()))?;
    let mut cas = Vec::new();
    for p in &cfg.trust.ca {
        cas.extend(read_certs(p, "[trust] ca file")?);
    }
    let own = read_certs(&cfg.signing.cert, "signing.cert")?;
    let own = own
        .into_iter()
        .next()
        .context("signing.cert holds no certificate")?;
    let index = pecd::gateway::load_index(&cfg, &own).with_context(|| {
        format!(
            "the provider index of {} ({})",
            path.display(),
            ProviderIndex::default_path(&cfg).display()
        )
    })?;
    let crls = match &cfg.trust.crl_dir {
        None => None,
        Some(dir) => {
            let (set, errors) = CrlSet::load_dir(dir, &cas)
                .with_context(|| format!("the CRLs of {}", dir.display()))?;
            for e in errors {
                eprintln!("pecd: warning: {e}");
            }
            Some(set)
        }
    };
    Ok(Trust {
        cas,
        index: Some(index),
        crls,
    })
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let raw = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut trust = match &args.config {
        Some(p) => from_config(p)?,
        None => Trust::default(),
    };
    if let Some(p) = &args.ca {
        trust.cas = read_certs(p, "CA file")?;
    }
    if let Some(p) = &args.index {
        trust.index =
            Some(ProviderIndex::load(p).with_context(|| format!("index file {}", p.display()))?);
    }
    if let Some(p) = &args.crl {
        let bytes =
            std::fs::read(p).with_context(|| format!("cannot read the CRL {}", p.display()))?;
        trust.crls = Some(CrlSet::from_bytes(p, &bytes, &trust.cas)?);
    }
    let anchors = if trust.cas.is_empty() {
        None
    } else {
        Some(TrustAnchors::from_certs(trust.cas.clone()).context("building the CA store")?)
    };
    let report = pecd::report::verify_with_crls(
        &raw,
        anchors.as_ref(),
        trust.index.as_ref(),
        trust.crls.as_ref(),
    )
    .with_context(|| format!("{} is not a mail message", args.file.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print!("{}", pecd::report::render_text(&report));
    }
    Ok(if report.trusted {
        ExitCode::SUCCESS
    } else if report.ok {
        ExitCode::from(SIGNER_NOT_CHECKED)
    } else {
        ExitCode::from(1)
    })
}
