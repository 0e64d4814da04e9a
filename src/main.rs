//! The `pecd` command line: parse arguments, set up logging, call into the library.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pecd — a PEC (Posta Elettronica Certificata) provider.
#[derive(Debug, Parser)]
#[command(name = "pecd", version, about, long_about = None)]
struct Cli {
    /// Log lines as text (default) or as JSON objects, one per line, with the span fields
    /// (a message's `identificativo` on every line about it). Also `PECD_LOG_FORMAT`.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PECD_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (with no --config: ./pecd-data/, created on first run).
    Serve(cli::serve::ServeArgs),
    /// Write a configuration and a development PKI for a domain.
    Init(cli::init::InitArgs),
    /// Offline report on a PEC message (any provider's).
    Verify(cli::verify::VerifyArgs),
    /// Manage mailboxes.
    #[command(subcommand)]
    Mailbox(cli::mailbox::MailboxCommand),
    /// Query, export and verify the trace log (registro).
    Log(cli::log::LogArgs),
    /// Export this provider's index entry, import and list other providers' (LDIF).
    #[command(subcommand)]
    Index(cli::index::IndexCommand),
    /// Write the evidence bundle (.zip) of a message, or check one offline.
    Evidence(cli::evidence::EvidenceArgs),
    /// Move the store to other backends (message bodies: directory ↔ S3).
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ureq logs whole request URLs at debug level, and the object store's are signed:
    // whatever PECD_LOG asks, it says no more than warnings. (The two directives are
    // constants of this file, valid filter syntax: their `expect`s cannot fire.)
    let filter = tracing_subscriber::EnvFilter::try_from_env("PECD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("ureq=warn".parse().expect("a directive"))
        .add_directive("ureq_proto=warn".parse().expect("a directive"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let result = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Init(a) => cli::init::run(a),
        Command::Verify(a) => cli::verify::run(a),
        Command::Mailbox(a) => cli::mailbox::run(a),
        Command::Log(a) => cli::log::run(a),
        Command::Index(a) => cli::index::run(a),
        Command::Evidence(a) => cli::evidence::run(a),
        Command::Store(a) => cli::store::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pecd: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `: `-separated, each said once: many errors already repeat
/// their cause in their own text (`database error: IO error: ...`), and printing the
/// cause again after it would say the same thing twice or three times.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("Not a directory");
        let repeated = anyhow::Error::new(io)
            .context("database error: Not a directory")
            .context("opening the store");
        assert_eq!(
            error_chain(&repeated),
            "opening the store: database error: Not a directory"
        );
        let distinct = anyhow::anyhow!("no such file").context("configuration pecd.toml");
        assert_eq!(
            error_chain(&distinct),
            "configuration pecd.toml: no such file"
        );
    }
}
