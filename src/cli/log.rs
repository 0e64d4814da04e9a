//! `pecd log [filters]`, `pecd log export FILE`, `pecd log verify [FILE]`: query, export
//! and verify the trace log ([`pecd::trace`]).
//!
//! Exit status of `verify`: 0 intact, 1 tampering found (the first place is printed),
//! 2 the log or the file cannot be read.
//!
//! An export ends with a trailer signed with the provider key (the running server's, or
//! `signing.cert`/`signing.key` from the configuration on a closed store); verifying a
//! file requires it, so an empty or truncated export is reported as such. The report
//! prints the trailer's signed time: a file cut at the end with an older export's trailer
//! pasted on still verifies, but shows that older time.
//!
//! Checkpoint and trailer signatures are accepted from `signing.cert`, the earlier
//! certificates in `signing.previous_certs` and every `--cert FILE` (certificate
//! rollover, rules §8.1).
//!
//! `pecd log verify FILE.zip` checks an evidence bundle instead (as `pecd evidence
//! verify`, [`super::evidence`]).
//!
//! While `pecd serve` holds the store's lock, the live log is queried, exported and verified
//! through the server's control socket ([`pecd::control`]), with the same output.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use jiff::Timestamp;
use pecd::config::DEFAULT_CONFIG_PATH;
use pecd::pec::time::{PecTime, italian_zone};
use pecd::trace::checkpoint::{TrustedSigners, cert_sha256};
use pecd::trace::verify::verify_export;
use pecd::trace::{TraceQuery, TraceRecord, VerifyReport};

use pecd::control::{Item, Request};

use super::mailbox::{Admin, load_config, open_admin};

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    #[command(subcommand)]
    pub command: Option<LogCommand>,
    /// The configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// JSON Lines output.
    #[arg(long)]
    pub json: bool,
    /// Client Message-ID.
    #[arg(long)]
    pub msgid: Option<String>,
    /// PEC identificativo.
    #[arg(long)]
    pub id: Option<String>,
    /// Sender or recipient address.
    #[arg(long)]
    pub mailbox: Option<String>,
    /// From this instant (RFC 3339, or YYYY-MM-DD = that day's start, Italian time).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this instant (RFC 3339, or YYYY-MM-DD = that whole day, Italian time).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Write the log as JSON Lines (records and signed checkpoints).
    Export { file: PathBuf },
    /// Check the chain and the checkpoint signatures of the live log or of an export.
    Verify {
        file: Option<PathBuf>,
        /// Also accept checkpoint signatures by this certificate (PEM), e.g. the one in use
        /// before a renewal; repeatable. Added to signing.cert and signing.previous_certs.
        #[arg(long)]
        cert: Vec<PathBuf>,
        /// Without a configuration or --cert, accept any checkpoint signer (only the
        /// chain's integrity is then checked, not who signed).
        #[arg(long)]
        unchecked: bool,
    },
}

/// Parses RFC 3339, or a date (start of day, or end of day with `end`) in Italian time.
fn parse_time(s: &str, end: bool) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d: jiff::civil::Date = s
        .parse()
        .with_context(|| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))?;
    let start = d.to_zoned(italian_zone())?.timestamp();
    if end {
        let next = d.tomorrow()?.to_zoned(italian_zone())?.timestamp();
        Ok(next - jiff::SignedDuration::from_nanos(1))
    } else {
        Ok(start)
    }
}

fn human(r: &TraceRecord) -> String {
    let t = PecTime::italian(r.time);
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    format!(
        "{:>8} {} {} {:<24} msgid={} id={} from={} to={}{}",
        r.seq,
        t.giorno(),
        format!("{} {}", t.ora(), t.zona()),
        r.kind.as_str(),
        dash(&r.msgid),
        dash(&r.ident),
        dash(&r.sender),
        if r.recipients.is_empty() {
            "-".into()
        } else {
            r.recipients.join(",")
        },
        r.detail
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    )
}

fn print_report(r: &VerifyReport, export: bool) -> ExitCode {
    if let Some(p) = &r.problem {
        println!("TAMPERED: {p}");
        println!("({} records verified before the problem)", r.records);
        return ExitCode::from(1);
    }
    println!(
        "intact: {} records verified (seq {}..{})",
        r.records,
        r.first_seq.unwrap_or(0),
        r.last_seq.unwrap_or(0)
    );
    if let Some(a) = r.anchor {
        println!(
            "chain starts at the anchor checkpoint seq {a} (earlier records purged at the end of their retention, as the Purged record naming it attests)"
        );
    }
    match &r.last_checkpoint {
        Some(c) => println!(
            "{} checkpoint(s) verified; last signed checkpoint: seq {} at {} head {}",
            r.checkpoints, c.seq, c.time, c.head_hash
        ),
        None => println!("no signed checkpoint in the log"),
    }
    if export {
        println!(
            "signed export trailer verified: the export ends at seq {}",
            r.last_seq.or(r.anchor).unwrap_or(0)
        );
        // The trailer proves where *an* export ended, not that it is this file's own: a
        // file cut at the end with an older export's trailer pasted on verifies too, but
        // carries that older export's (signed) time.
        if let Some(t) = r.export_time {
            let it = PecTime::italian(t);
            println!(
                "export made at {t} ({} {} {}, signed in the trailer): if this export should be more recent, its end may have been cut and an older trailer reused",
                it.giorno(),
                it.ora(),
                it.zona()
            );
        }
    }
    if r.unsigned_tail > 0 {
        println!(
            "{} record(s) after the last checkpoint are only hash-chained (not yet signed: a truncation there cannot be proved)",
            r.unsigned_tail
        );
    }
    if !r.signer_pinned {
        println!(
            "WARNING: signatures checked for validity only; the signer was not pinned to the provider certificate"
        );
    }
    ExitCode::SUCCESS
}

/// Whether `path` starts like a zip (an evidence bundle rather than an export).
fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"PK\x03\x04")
}

fn cert_file_sha256(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cert = openssl::x509::X509::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(cert_sha256(&cert))
}

/// The certificates accepted for checkpoint signatures: `signing.cert`,
/// `signing.previous_certs` (when the configuration loads) and every `--cert`. With none
/// of them any signer would do, which proves nothing about who signed: that is refused
/// unless the user asked for it (`--unchecked`, a warning says what it means).
pub(super) fn trusted_signers(
    args_config: &Path,
    certs: &[PathBuf],
    unchecked: bool,
) -> anyhow::Result<TrustedSigners> {
    let mut paths = Vec::new();
    match load_config(args_config) {
        Ok(c) => {
            paths.push(c.signing.cert);
            paths.extend(c.signing.previous_certs);
        }
        Err(e) if certs.is_empty() && unchecked => {
            eprintln!(
                "pecd: warning: {e:#}; --unchecked: any checkpoint signer is accepted, so a \
                 pass proves the chain is whole, not who signed it"
            );
        }
        Err(e) if certs.is_empty() => anyhow::bail!(
            "no checkpoint signer to check against: {e:#}. Give the provider's configuration \
             (--config) or its signing certificate (--cert FILE.pem), or --unchecked to \
             check only that the chain is whole"
        ),
        Err(e) => {
            eprintln!("pecd: warning: {e:#}; only the --cert certificates are trusted");
        }
    }
    paths.extend(certs.iter().cloned());
    let mut trusted = TrustedSigners::any();
    for p in &paths {
        trusted.add(cert_file_sha256(p)?);
    }
    Ok(trusted)
}

pub fn run(a: LogArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(LogCommand::Export { file }) => {
            let cfg = load_config(&a.config)?;
            let admin = open_admin(&cfg)?;
            // On a closed store the CLI signs the trailer with the configured key; a running
            // server signs with its own.
            let signer = match &admin {
                Admin::Local(_) => Some(Arc::new(cfg.load_signer().context(
                    "loading the signing key for the export trailer (signing.cert, signing.key)",
                )?)),
                Admin::Remote(_) => None,
            };
            let f = File::create(&file).with_context(|| format!("creating {}", file.display()))?;
            let n = match admin {
                Admin::Local(store) => store
                    .trace()
                    .with_signer(signer)
                    .export(BufWriter::new(f))
                    .context("exporting the log")?,
                Admin::Remote(mut c) => {
                    let mut w = BufWriter::new(f);
                    let mut got = 0u64;
                    let done = c.call(&Request::LogExport, |i| match i {
                        Item::Line(l) => {
                            w.write_all(l.as_bytes())?;
                            w.write_all(b"\n")?;
                            got += 1;
                            Ok(())
                        }
                        other => anyhow::bail!("unexpected item from the server: {other:?}"),
                    });
                    let done = done?;
                    w.flush().context("exporting the log")?;
                    if done.lines != Some(got) {
                        anyhow::bail!(
                            "exporting the log: the server sent {got} lines but reported {:?} ({} is incomplete)",
                            done.lines,
                            file.display()
                        );
                    }
                    got
                }
            };
            println!("exported {n} lines to {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(LogCommand::Verify {
            file: Some(file),
            cert,
            unchecked,
        }) if is_zip(&file) => super::evidence::verify(&a.config, &file, &cert, unchecked, false),
        Some(LogCommand::Verify {
            file: Some(file),
            cert,
            unchecked,
        }) => {
            let trusted = trusted_signers(&a.config, &cert, unchecked)?;
            let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let r = verify_export(BufReader::new(f), trusted)
                .with_context(|| format!("reading {}", file.display()))?;
            Ok(print_report(&r, true))
        }
        Some(LogCommand::Verify {
            file: None,
            cert,
            unchecked,
        }) => {
            let trusted = trusted_signers(&a.config, &cert, unchecked)?;
            let r = match open_admin(&load_config(&a.config)?)? {
                Admin::Local(store) => store.trace().verify(trusted).context("reading the log")?,
                Admin::Remote(mut c) => {
                    let mut hashes = trusted.hashes().iter().cloned();
                    let req = Request::LogVerify {
                        signer: hashes.next(),
                        also_trusted: hashes.collect(),
                    };
                    c.call(&req, |i| {
                        anyhow::bail!("unexpected item from the server: {i:?}")
                    })?
                    .report
                    .context("the server did not return the verification report")?
                    .into()
                }
            };
            Ok(print_report(&r, false))
        }
        None => {
            let since = a
                .since
                .as_deref()
                .map(|s| parse_time(s, false))
                .transpose()?;
            let until = a
                .until
                .as_deref()
                .map(|s| parse_time(s, true))
                .transpose()?;
            let records = match open_admin(&load_config(&a.config)?)? {
                Admin::Local(store) => {
                    let q = TraceQuery {
                        msgid: a.msgid,
                        ident: a.id,
                        mailbox: a.mailbox,
                        since,
                        until,
                        limit: a.limit,
                    };
                    store.trace().query(&q).context("querying the log")?
                }
                Admin::Remote(mut c) => {
                    let req = Request::LogQuery {
                        msgid: a.msgid,
                        ident: a.id,
                        mailbox: a.mailbox,
                        since,
                        until,
                        limit: a.limit,
                    };
                    let mut records = Vec::new();
                    c.call(&req, |i| match i {
                        Item::Record(r) => {
                            records.push(*r);
                            Ok(())
                        }
                        other => anyhow::bail!("unexpected item from the server: {other:?}"),
                    })?;
                    records
                }
            };
            let mut out = std::io::stdout().lock();
            for r in &records {
                if a.json {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                } else {
                    writeln!(out, "{}", human(r))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
