//! Notifications to ordinary addresses (*notifica di ricezione su casella ordinaria*,
//! issue #10): the owner names up to [`MAX_TARGETS`] ordinary e-mail addresses; each must
//! be confirmed with a code sent to it before it receives anything; then each arriving
//! certified message (and, if the owner wants, each receipt or anomaly envelope) is noted
//! in the mailbox record inside the delivery's own commit ([`Notify::note`]), and at most
//! one plain message per address per [`COALESCE`] lists what arrived: sender, subject, time
//! and identificativo — never the body or attachments ([`digest`]).
//!
//! This module is the pure part: the settings kept on the mailbox, the checks, and the
//! messages. Sending (through the relay, as ordinary mail) is
//! [`crate::pipeline::notify`]'s; the API is [`crate::http`]'s.
//!
//! Input it distrusts: the addresses the owner types (syntax, length, not one of our own PEC
//! domains), the codes they type back (compared as SHA-256, attempts limited), and the
//! headers of arriving messages (control characters removed, lengths bounded) that go into
//! the notice.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::filters::{Kind, MessageFacts};
use crate::pec::compose::{Headers, header_safe};
use crate::pec::ids;
use crate::pec::time::PecTime;

/// Ordinary addresses one mailbox may notify.
pub const MAX_TARGETS: usize = 5;
/// Arrivals listed in one notice; more are counted ("and N more").
pub const MAX_PENDING: usize = 20;
/// How long a confirmation code is valid.
pub const CODE_TTL: SignedDuration = SignedDuration::from_hours(24);
/// Wrong codes before the code is void (a new one must be asked for).
pub const MAX_CODE_ATTEMPTS: u8 = 5;
/// At most one notice per address in this time.
pub const COALESCE: SignedDuration = SignedDuration::from_secs(60);
/// Longest sender or subject kept for a notice.
const MAX_FIELD: usize = 200;

/// One ordinary address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Lower-cased.
    pub address: String,
    pub confirmed: bool,
    /// SHA-256 (hex) of the pending confirmation code; `None` once confirmed or void.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_expires: Option<Timestamp>,
    #[serde(default)]
    pub attempts: u8,
    pub added: Timestamp,
}

/// One arrival waiting to be notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub at: Timestamp,
    /// What it is, in the words of the notice (`posta certificata`, `ricevuta di
    /// consegna`…).
    pub kind: String,
    pub from: String,
    pub subject: String,
    /// The identificativo (the envelope's or receipt's Message-ID), when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ident: String,
}

/// The notification settings and queue of one mailbox (kept on its record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notify {
    pub targets: Vec<Target>,
    /// Also notify receipts and notices.
    pub receipts: bool,
    /// Also notify anomaly envelopes (ordinary mail, malformed PEC).
    pub anomalies: bool,
    /// Arrivals not yet notified, oldest first, at most [`MAX_PENDING`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Arrival>,
    /// Arrivals beyond [`MAX_PENDING`] since the last notice.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why an address or a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("{0:?} is not an e-mail address")]
    BadAddress(String),
    #[error("{0} is a PEC mailbox of this provider: notifications go to ordinary addresses")]
    OwnDomain(String),
    #[error("at most {MAX_TARGETS} addresses")]
    TooMany,
    #[error("{0} is not among the addresses")]
    Unknown(String),
    #[error("{0} is already confirmed")]
    AlreadyConfirmed(String),
    #[error("the code is wrong")]
    WrongCode,
    #[error("a code was sent to {0} less than a minute ago")]
    TooSoon(String),
    #[error("the code has expired or was mistyped too often: add the address again for a new one")]
    CodeVoid,
}

impl NotifyError {
    /// The reason in Italian, for the webmail (`motivo`).
    pub fn italian(&self) -> String {
        match self {
            NotifyError::BadAddress(a) => format!("{a:?} non è un indirizzo e-mail"),
            NotifyError::OwnDomain(a) => format!(
                "{a} è una casella PEC di questo gestore: le notifiche vanno a indirizzi ordinari"
            ),
            NotifyError::TooMany => format!("al massimo {MAX_TARGETS} indirizzi"),
            NotifyError::Unknown(a) => format!("{a} non è tra gli indirizzi"),
            NotifyError::AlreadyConfirmed(a) => format!("{a} è già confermato"),
            NotifyError::WrongCode => "il codice è errato".into(),
            NotifyError::TooSoon(a) => {
                format!("un codice è stato inviato a {a} meno di un minuto fa")
            }
            NotifyError::CodeVoid => "il codice è scaduto o è stato sbagliato troppe volte: \
                                      aggiungi di nuovo l'indirizzo per riceverne uno nuovo"
                .into(),
        }
    }
}

/// Checks an address the owner typed: `local@domain`, printable ASCII, at most 254
/// characters, a domain with a dot, not one of `own_domains`. Returns it lower-cased.
pub fn check_address(raw: &str, own_domains: &[String]) -> Result<String, NotifyError> {
    let a = raw.trim().to_ascii_lowercase();
    let bad = || NotifyError::BadAddress(raw.chars().take(80).collect());
    let (local, domain) = a.rsplit_once('@').ok_or_else(bad)?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let ok_domain = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok_local || !ok_domain || a.len() > 254 {
        return Err(bad());
    }
    if own_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(NotifyError::OwnDomain(a));
    }
    Ok(a)
}

impl Notify {
    /// Whether an arrival of `kind` is to be notified (a confirmed address exists and the
    /// owner wants this kind: certified messages always, receipts and anomalies on request).
    pub fn wants(&self, kind: Option<Kind>) -> bool {
        if !self.targets.iter().any(|t| t.confirmed) {
            return false;
        }
        match kind {
            Some(Kind::PostaCertificata) => true,
            Some(Kind::Anomalia | Kind::Ordinaria) | None => self.anomalies,
            Some(_) => self.receipts,
        }
    }

    /// Notes an arrival (inside the delivery's commit): listed while fewer than
    /// [`MAX_PENDING`] wait, counted after. `by_rule`: a rule of the owner asks for it,
    /// whatever its kind.
    pub fn note(&mut self, facts: &MessageFacts, at: Timestamp, by_rule: bool) {
        let wanted = if by_rule {
            self.confirmed().next().is_some()
        } else {
            self.wants(facts.kind)
        };
        if !wanted {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.more = self.more.saturating_add(1);
            return;
        }
        let clip = |s: &str| header_safe(s).chars().take(MAX_FIELD).collect::<String>();
        self.pending.push(Arrival {
            at,
            kind: kind_words(facts.kind).to_string(),
            from: clip(&facts.from),
            subject: clip(&facts.subject_text),
            ident: clip(&facts.message_id),
        });
    }

    /// When the next notice may go: now, or [`COALESCE`] after the last one.
    pub fn due(&self) -> Option<Timestamp> {
        if self.pending.is_empty() && self.more == 0 {
            return None;
        }
        Some(match self.last_sent {
            Some(t) => t.checked_add(COALESCE).unwrap_or(t),
            None => Timestamp::UNIX_EPOCH,
        })
    }

    /// What the owner and the administrator see: the addresses and their state (never
    /// the code's hash), the options, how many arrivals wait.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "addresses": self.targets.iter().map(|t| serde_json::json!({
                "address": t.address,
                "confirmed": t.confirmed,
                "codeExpires": t.code_expires.filter(|_| !t.confirmed && t.code_sha256.is_some()),
            })).collect::<Vec<_>>(),
            "receipts": self.receipts,
            "anomalies": self.anomalies,
            "waiting": self.pending.len() + self.more as usize,
        })
    }

    /// The confirmed addresses.
    pub fn confirmed(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(|t| t.confirmed)
            .map(|t| t.address.as_str())
    }
}

fn kind_words(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::PostaCertificata) => "posta certificata",
        Some(Kind::Accettazione) => "ricevuta di accettazione",
        Some(Kind::NonAccettazione) => "avviso di non accettazione",
        Some(Kind::PresaInCarico) => "ricevuta di presa in carico",
        Some(Kind::AvvenutaConsegna) => "ricevuta di avvenuta consegna",
        Some(Kind::ErroreConsegna) => "avviso di mancata consegna",
        Some(Kind::PreavvisoErroreConsegna) => "preavviso di mancata consegna",
        Some(Kind::RilevazioneVirus) => "avviso di rilevazione virus",
        Some(Kind::Ricevuta) => "ricevuta",
        Some(Kind::Anomalia) => "anomalia (posta non certificata)",
        Some(Kind::Ordinaria) | None => "posta ordinaria",
    }
}

/// Who the generated messages are from.
pub struct Sender<'a> {
    pub provider_name: &'a str,
    pub service_address: &'a str,
    pub host: &'a str,
}

fn headers(from: &Sender<'_>, to: &str, subject: &str, at: &PecTime) -> Headers {
    let mut h = Headers::default();
    h.raw("Date", &at.rfc5322());
    h.address("From", Some(from.provider_name), from.service_address);
    h.address("To", None, to);
    h.text("Subject", subject);
    h.raw(
        "Message-ID",
        &ids::bracketed(&ids::new_message_id(at, from.host)),
    );
    // RFC 3834: automatic, no auto-replies please.
    h.raw("Auto-Submitted", "auto-generated");
    h.raw("MIME-Version", "1.0");
    h.raw("Content-Type", "text/plain; charset=utf-8");
    h.raw("Content-Transfer-Encoding", "8bit");
    h
}

fn finish(h: Headers, body: &str) -> Vec<u8> {
    let mut out = h.0;
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The message carrying a confirmation `code` to `to`, for `mailbox`.
pub fn confirmation(
    from: &Sender<'_>,
    to: &str,
    mailbox: &str,
    code: &str,
    at: PecTime,
) -> Vec<u8> {
    let mut h = headers(
        from,
        to,
        &format!("Codice di conferma per le notifiche di {mailbox}"),
        &at,
    );
    h.raw("X-Pecd-Avviso", "notifica-conferma");
    let body = format!(
        "Il titolare della casella di posta certificata {mailbox} ha chiesto di ricevere\r\n\
         a questo indirizzo un avviso per ogni messaggio certificato in arrivo.\r\n\r\n\
         Codice di conferma: {code}\r\n\r\n\
         Inserire il codice nelle impostazioni della webmail entro 24 ore. Se la richiesta\r\n\
         non è vostra, ignorate questo messaggio: senza il codice non riceverete nulla.\r\n\r\n\
         --\r\n\
         The owner of the certified mailbox {mailbox} asked to be notified at this address\r\n\
         of every certified message arriving. Confirmation code: {code} (valid 24 hours).\r\n\
         If you did not ask for this, ignore this message.\r\n"
    );
    finish(h, &body)
}

/// The notice to `to` listing `arrivals` (and `more` not listed) of `mailbox`.
pub fn digest(
    from: &Sender<'_>,
    to: &str,
    mailbox: &str,
    arrivals: &[Arrival],
    more: u32,
    webmail: Option<&str>,
    at: PecTime,
) -> Vec<u8> {
    let total = arrivals.len() + more as usize;
    let subject = if total == 1 {
        format!("Nuovo messaggio nella casella {mailbox}")
    } else {
        format!("{total} nuovi messaggi nella casella {mailbox}")
    };
    let mut h = headers(from, to, &subject, &at);
    h.raw("X-Pecd-Avviso", "notifica-arrivo");
    let mut body = format!("Nella casella di posta certificata {mailbox} sono arrivati:\r\n\r\n");
    for a in arrivals {
        body.push_str(&format!(
            "- {}, {}\r\n  da: {}\r\n  oggetto: {}\r\n",
            PecTime::italian(a.at).human(),
            a.kind,
            a.from,
            a.subject
        ));
        if !a.ident.is_empty() {
            body.push_str(&format!("  identificativo: {}\r\n", a.ident));
        }
    }
    if more > 0 {
        body.push_str(&format!("\r\n… e altri {more} messaggi.\r\n"));
    }
    body.push_str("\r\nIl contenuto dei messaggi si legge solo nella casella certificata");
    match webmail {
        Some(u) => body.push_str(&format!(": {u}\r\n")),
        None => body.push_str(".\r\n"),
    }
    body.push_str(
        "\r\n--\r\nNew messages arrived in the certified mailbox; their content is only in the \
         mailbox.\r\nThis address receives these notices because the mailbox's owner confirmed \
         it.\r\n",
    );
    finish(h, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: Kind, subject: &str) -> MessageFacts {
        MessageFacts {
            from: "mario.rossi@pec.altro.it".into(),
            subject_text: subject.into(),
            kind: Some(kind),
            message_id: "opec-1@pec.altro.it".into(),
            ..MessageFacts::default()
        }
    }

    fn confirmed() -> Notify {
        Notify {
            targets: vec![Target {
                address: "io@example.com".into(),
                confirmed: true,
                code_sha256: None,
                code_expires: None,
                attempts: 0,
                added: Timestamp::UNIX_EPOCH,
            }],
            ..Notify::default()
        }
    }

    #[test]
    fn addresses_are_checked() {
        let own = vec!["pec.alfa.test".to_string()];
        assert_eq!(
            check_address(" Io@Example.COM ", &own),
            Ok("io@example.com".into())
        );
        for bad in [
            "",
            "io",
            "io@",
            "@x.it",
            "io@localhost",
            "a b@x.it",
            "io@x..it",
            "io@-x.it",
        ] {
            assert!(
                matches!(check_address(bad, &own), Err(NotifyError::BadAddress(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check_address("b@PEC.alfa.test", &own),
            Err(NotifyError::OwnDomain(_))
        ));
    }

    #[test]
    fn only_confirmed_addresses_and_chosen_kinds_are_noted() {
        let mut n = Notify::default();
        n.note(
            &facts(Kind::PostaCertificata, "x"),
            Timestamp::UNIX_EPOCH,
            false,
        );
        assert!(n.pending.is_empty(), "no confirmed address");
        let mut n = confirmed();
        n.note(
            &facts(Kind::AvvenutaConsegna, "r"),
            Timestamp::UNIX_EPOCH,
            false,
        );
        n.note(&facts(Kind::Anomalia, "a"), Timestamp::UNIX_EPOCH, false);
        assert!(
            n.pending.is_empty(),
            "receipts and anomalies only on request"
        );
        n.note(
            &facts(Kind::PostaCertificata, "Fattura\r\nBcc: x"),
            Timestamp::UNIX_EPOCH,
            false,
        );
        assert_eq!(n.pending.len(), 1);
        assert_eq!(
            n.pending[0].subject, "Fattura  Bcc: x",
            "no line break survives"
        );
        n.receipts = true;
        n.note(
            &facts(Kind::AvvenutaConsegna, "r"),
            Timestamp::UNIX_EPOCH,
            false,
        );
        assert_eq!(n.pending.len(), 2);
        for i in 0..30 {
            n.note(
                &facts(Kind::PostaCertificata, &i.to_string()),
                Timestamp::UNIX_EPOCH,
                false,
            );
        }
        assert_eq!((n.pending.len(), n.more), (MAX_PENDING, 12));
    }

    #[test]
    fn a_digest_lists_without_content() {
        let mut n = confirmed();
        n.note(
            &facts(Kind::PostaCertificata, "Fattura 12"),
            Timestamp::UNIX_EPOCH,
            false,
        );
        let from = Sender {
            provider_name: "Gestore",
            service_address: "posta-certificata@pec.alfa.test",
            host: "mail.pec.alfa.test",
        };
        let at = PecTime::italian(Timestamp::UNIX_EPOCH);
        let m = String::from_utf8(digest(
            &from,
            "io@example.com",
            "b@pec.alfa.test",
            &n.pending,
            3,
            None,
            at,
        ))
        .unwrap();
        assert!(
            m.contains("Subject: 4 nuovi messaggi nella casella b@pec.alfa.test"),
            "{m}"
        );
        assert!(
            m.contains("oggetto: Fattura 12") && m.contains("identificativo: opec-1@pec.altro.it")
        );
        assert!(m.contains("e altri 3 messaggi"));
        assert!(m.contains("Auto-Submitted: auto-generated"));
    }
}
