//! `pecd verify FILE.eml [--ca FILE.pem] [--index FILE.ldif] [--crl FILE] [--json]`: offline report on any PEC message.
//! Exit status: 0 well-formed and validly signed PEC, 1 not (the report says why),
//! 2 the file cannot be read or is not a mail.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pecd::pec::smime::TrustAnchors;

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
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let raw = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let trust = match &args.ca {
        None => None,
        Some(p) => {
            let pem = std::fs::read(p)
                .with_context(|| format!("cannot read the CA file {}", p.display()))?;
            Some(TrustAnchors::from_pem(&pem).with_context(|| format!("CA file {}", p.display()))?)
        }
    };
    let index = match &args.index {
        None => None,
        Some(p) => Some(
            pecd::pec::index::ProviderIndex::load(p)
                .with_context(|| format!("index file {}", p.display()))?,
        ),
    };
    let crls = match &args.crl {
        None => None,
        Some(p) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("cannot read the CRL {}", p.display()))?;
            let cas = match &args.ca {
                Some(ca) => openssl::x509::X509::stack_from_pem(&std::fs::read(ca)?)?,
                None => Vec::new(),
            };
            Some(pecd::pec::crl::CrlSet::from_bytes(p, &bytes, &cas)?)
        }
    };
    let report =
        pecd::report::verify_with_crls(&raw, trust.as_ref(), index.as_ref(), crls.as_ref())
            .with_context(|| format!("{} is not a mail message", args.file.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print!("{}", pecd::report::render_text(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
