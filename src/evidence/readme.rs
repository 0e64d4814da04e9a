//! The `README.txt` inside a bundle: what it holds and how to check it offline.

use jiff::Timestamp;

pub(super) struct Facts<'a> {
    pub ident: &'a str,
    pub mailbox: Option<&'a str>,
    pub created: Timestamp,
    pub records: usize,
    pub messages: usize,
    pub missing: usize,
    pub checkpoint: u64,
}

pub(super) fn text(f: &Facts<'_>) -> String {
    let scope = match f.mailbox {
        Some(m) => format!(
            "the mailbox {m} only: the trace records naming it as sender or recipient, and the messages those records name"
        ),
        None => "the whole provider: every trace record about this message".to_string(),
    };
    format!(
        r#"EVIDENCE BUNDLE (PEC, posta elettronica certificata) - pecd
================================================================

Identificativo: {ident}
Scope:          {scope}
Made at:        {created}
Contents:       {records} trace record(s), {messages} message file(s){missing}, covered by the
                signed trace checkpoint seq {checkpoint}

FILES
  README.txt              this text
  statement.json          the evidence statement signed by the provider: the identificativo,
                          the scope, each trace record included (seq, hash, kind, message
                          SHA-256), the SHA-256 and size of every other file here, and the
                          covering checkpoint (seq, head hash)
  statement.json.p7s      its detached CMS signature (DER), by the provider's signing key
  signer.pem              the provider's signing certificate (and chain) as embedded in the
                          signatures: for reading; trust it only if it matches the provider's
                          certificate in the national index of PEC providers
  trace/records.jsonl     the trace log lines (pecd log export format) about this message
  trace/checkpoint.jsonl  the signed checkpoint line of the log covering those lines
  trace/checkpoint.txt    the text that checkpoint signs (seq, head hash, time, previous)
  trace/checkpoint.p7s    the checkpoint's detached CMS signature (DER)
  messages/SEQ-KIND.eml   the exact stored bytes of each message, receipt and notice, named
                          after the first trace record that names it: its SHA-256 is the one
                          in that record (sha256sum shows it)

HOW TO CHECK IT OFFLINE
  All at once (exit status 0 intact, 1 altered - the file is named -, 2 unreadable):
      pecd evidence verify THIS.zip --cert PROVIDER_SIGNING_CERT.pem
  (pecd log verify THIS.zip does the same.) Any byte changed anywhere in the zip fails.
  Without --cert (or the provider's --config) it refuses to judge who signed; add
  --unchecked for an integrity-only check.

  By hand, after unzipping, with the provider's CA certificate CA.pem:
  1. The statement is the provider's:
      openssl cms -verify -binary -inform DER -in statement.json.p7s \
          -content statement.json -CAfile CA.pem -out /dev/null
  2. Every file is the one the statement lists (compare with "files" in statement.json):
      sha256sum README.txt signer.pem trace/* messages/*
  3. Each message is a signed PEC message (a receipt, a notice, a transport envelope):
      pecd verify messages/FILE.eml --ca CA.pem
     (exit 0: intact and signed by a certificate of CA.pem, valid when it signed; without
     --ca it exits 3: intact, but the signer was not checked)
      openssl cms -verify -in messages/FILE.eml -CAfile CA.pem -out /dev/null
  4. The checkpoint is the provider's, and covers the lines:
      openssl cms -verify -binary -inform DER -in trace/checkpoint.p7s \
          -content trace/checkpoint.txt -CAfile CA.pem -out /dev/null
     Each line's "hash" is the SHA-256 of the line with "type":"record", removed and
     "hash" set to "" (the log's canonical form); a line whose seq is one more than
     another's has that line's hash as its "prev_hash".
  5. Against the whole log: whoever holds a full export of this provider's log
     (pecd log export FILE, checked with pecd log verify FILE) finds each line of
     trace/records.jsonl verbatim in it (grep -F), and the checkpoint line too.

WHY NOT THE WHOLE CHAIN
  A hash chain proves that a line belongs to the log only together with every line
  between it and the checkpoint, and those lines are about other people's mail. The
  record hash covers each line's full content, so they cannot be reduced to hashes. This
  bundle therefore carries only the lines about this message{scope_note}, and the provider
  signs a statement binding them, the messages and the covering checkpoint; step 5 ties
  them to the complete chain for whoever may see all of it (the provider, an auditor, a
  court).
"#,
        ident = f.ident,
        created = f.created,
        records = f.records,
        messages = f.messages,
        missing = if f.missing > 0 {
            format!(
                " ({} more named by the records but not kept by the provider)",
                f.missing
            )
        } else {
            String::new()
        },
        checkpoint = f.checkpoint,
        scope_note = if f.mailbox.is_some() {
            " and this mailbox"
        } else {
            ""
        },
    )
}
