//! `pecd init --dir DIR --domain DOMAIN [--provider-name NAME] [--force]`: writes a
//! ready-to-run development instance — `DIR/pecd.toml`, a dev PKI in `DIR/certs/` and an
//! empty `DIR/data/` — through [`pecd::pki::init_dir`]. Never overwrites without `--force`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pecd::pec::address::Domain;
use pecd::pki;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory of the new instance (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// The PEC domain the instance manages, e.g. pec.example.test.
    #[arg(long)]
    pub domain: String,
    /// Provider name (providerName, gestore-emittente); default "pecd Dev Provider (DOMAIN)".
    #[arg(long)]
    pub provider_name: Option<String>,
    /// Regenerate and overwrite an existing pecd.toml and PKI.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let domain = Domain::parse(&args.domain).with_context(|| {
        format!(
            "invalid --domain {:?}: expected a DNS name such as pec.example.test",
            args.domain
        )
    })?;
    let report = pki::init_dir(
        &args.dir,
        &domain,
        args.provider_name.as_deref(),
        args.force,
    )
    .with_context(|| format!("cannot initialise {}", args.dir.display()))?;

    println!(
        "Initialised a development PEC provider for {} in {}",
        report.domain,
        report.dir.display()
    );
    println!("  provider name     {}", report.provider_name);
    println!("  service address   {}", report.service_address);
    println!("  configuration     {}", report.config.display());
    let f = &report.pki;
    println!(
        "  development CA    {} (key {})",
        f.ca_cert.display(),
        f.ca_key.display()
    );
    println!(
        "  TLS certificate   {} (key {})",
        f.tls_cert.display(),
        f.tls_key.display()
    );
    println!(
        "  PEC signing cert  {} (key {})",
        f.signing_cert.display(),
        f.signing_key.display()
    );
    println!("  data directory    {}", report.data_dir.display());
    println!("These keys are for development only; never use them in production.");
    println!("Next steps:");
    println!(
        "  pecd mailbox add user@{} --password PASSWORD --config {}",
        report.domain,
        report.config.display()
    );
    println!("  pecd serve --config {}", report.config.display());
    Ok(ExitCode::SUCCESS)
}
