//! `pecd log [filters]`, `pecd log export FILE`, `pecd log verify [FILE]`: query, export
//! and verify the trace log ([`pecd::trace`]).
//!
//! Exit status of `verify`: 0 intact, 1 tampering found (the first place is printed),
//! 2 the log or the file cannot be read.
//!
//! While `pecd serve` holds the store's lock, the live log is queried, exported and verified
//! through the server's control socket ([`pecd::control`]), with the same output.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use pecd::config::DEFAULT_CONFIG_PATH;
use pecd::pec::time::{PecTime, italian_zone};
use pecd::trace::checkpoint::cert_sha256;
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
        /// Pin checkpoint signatures to this certificate (PEM) instead of signing.cert.
        #[arg(long)]
        cert: Option<PathBuf>,
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

fn print_report(r: &VerifyReport) -> ExitCode {
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
            "chain starts at the anchor checkpoint seq {a} (earlier records purged at the end of their retention)"
        );
    }
    match &r.last_checkpoint {
        Some(c) => println!(
            "{} checkpoint(s) verified; last signed checkpoint: seq {} at {} head {}",
            r.checkpoints, c.seq, c.time, c.head_hash
        ),
        None => println!("no signed checkpoint: nothing is covered by a signature"),
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

fn pinned_signer(args_config: &PathBuf, cert: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let path = match cert {
        Some(p) => p,
        None => match load_config(args_config) {
            Ok(c) => c.signing.cert,
            Err(e) => {
                eprintln!("pecd: warning: {e:#}; checkpoint signers will not be pinned");
                return Ok(None);
            }
        },
    };
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let cert = openssl::x509::X509::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(Some(cert_sha256(&cert)))
}

pub fn run(a: LogArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(LogCommand::Export { file }) => {
            let admin = open_admin(&load_config(&a.config)?)?;
            let f = File::create(&file).with_context(|| format!("creating {}", file.display()))?;
            let n = match admin {
                Admin::Local(store) => store
                    .trace()
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
        }) => {
            let signer = pinned_signer(&a.config, cert)?;
            let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let r = verify_export(BufReader::new(f), signer)
                .with_context(|| format!("reading {}", file.display()))?;
            Ok(print_report(&r))
        }
        Some(LogCommand::Verify { file: None, cert }) => {
            let signer = pinned_signer(&a.config, cert)?;
            let r = match open_admin(&load_config(&a.config)?)? {
                Admin::Local(store) => store.trace().verify(signer).context("reading the log")?,
                Admin::Remote(mut c) => c
                    .call(&Request::LogVerify { signer }, |i| {
                        anyhow::bail!("unexpected item from the server: {i:?}")
                    })?
                    .report
                    .context("the server did not return the verification report")?
                    .into(),
            };
            Ok(print_report(&r))
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
