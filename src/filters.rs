//! Filters on incoming messages (*regole sui messaggi in arrivo*): the owner's rules, each
//! a set of conditions (sender, recipient, subject, message kind, size) and actions (file
//! into a folder, mark read, flag). The first rule whose conditions all hold applies.
//!
//! What a rule can never do: discard, reject, redirect or forward a message — PEC
//! forbids blocking certified mail, so those actions do not exist, a rule that asks for
//! them is refused when saved, and certified messages and receipts cannot be filed into
//! the Trash or Junk folders either. Rules are applied by the store inside the delivery's
//! own commit ([`crate::store::messages`]); a rule whose folder has gone delivers to the
//! INBOX instead, so a broken rule never loses a message.
//!
//! Untrusted input: the rules (JSON from the owner: any keys, any strings, bounded here)
//! and every message's headers ([`MessageFacts::of`] reads them with mail-parser).

use serde::{Deserialize, Serialize};

/// Rules one mailbox may have.
pub const MAX_RULES: usize = 50;
/// Longest name or condition text.
pub const MAX_TEXT: usize = 200;

/// What kind of message arrived (from `X-Trasporto` / `X-Ricevuta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A certified message (its transport envelope).
    PostaCertificata,
    /// Any receipt or notice below.
    Ricevuta,
    Accettazione,
    NonAccettazione,
    PresaInCarico,
    AvvenutaConsegna,
    ErroreConsegna,
    PreavvisoErroreConsegna,
    RilevazioneVirus,
    /// An anomaly envelope (*busta di anomalia*): mail that is not valid PEC.
    Anomalia,
    /// Anything else (not PEC at all).
    Ordinaria,
}

impl Kind {
    fn is_receipt(self) -> bool {
        !matches!(
            self,
            Self::PostaCertificata | Self::Anomalia | Self::Ordinaria
        )
    }

    /// Whether a rule for `self` matches a message of kind `m`.
    fn covers(self, m: Kind) -> bool {
        self == m || (self == Self::Ricevuta && m.is_receipt())
    }

    /// Certified content: a certified message or a receipt.
    fn certified(self) -> bool {
        self == Self::PostaCertificata || self.is_receipt()
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Part of the sender's address (`From`), any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Part of any `To`/`Cc` address, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Part of the subject, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// File into this folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default)]
    pub mark_read: bool,
    #[serde(default)]
    pub flag: bool,
    /// Tell the owner's confirmed ordinary addresses ([`crate::notify`]), whatever kinds
    /// the owner otherwise has notified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
}

/// Why rules were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("not a list of rules: {0}")]
    Malformed(String),
    #[error(
        "rule {0:?}: a rule cannot discard, reject, redirect or forward messages (PEC forbids \
         blocking certified mail)"
    )]
    Forbidden(String),
    #[error("at most {MAX_RULES} rules")]
    TooMany,
    #[error("rule {0:?}: a name of 1 to {MAX_TEXT} characters is needed")]
    BadName(String),
    #[error("rule {0:?}: a condition text may have at most {MAX_TEXT} characters")]
    TooLong(String),
    #[error("rule {0:?}: no action (folder, markRead, flag or notify)")]
    NoAction(String),
    #[error("rule {rule:?}: there is no folder {folder:?}")]
    NoSuchFolder { rule: String, folder: String },
    #[error(
        "rule {0:?}: certified messages and receipts may not be filed into the Trash or Junk \
         folder (give kind \"ordinaria\" or \"anomalia\")"
    )]
    CertifiedToTrash(String),
}

impl FilterError {
    /// The reason in Italian, for the webmail and the API's `motivo`.
    pub fn italian(&self) -> String {
        match self {
            Self::Malformed(_) => "Le regole non sono nel formato atteso".into(),
            Self::Forbidden(r) => format!(
                "Regola «{r}»: una regola non può eliminare, rifiutare o inoltrare messaggi \
                 (la PEC non ammette il blocco della posta certificata)"
            ),
            Self::TooMany => format!("Al massimo {MAX_RULES} regole"),
            Self::BadName(_) => {
                format!("Ogni regola ha bisogno di un nome (1–{MAX_TEXT} caratteri)")
            }
            Self::TooLong(r) => format!("Regola «{r}»: testo della condizione troppo lungo"),
            Self::NoAction(r) => format!("Regola «{r}»: scegli almeno un'azione"),
            Self::NoSuchFolder { rule, folder } => {
                format!("Regola «{rule}»: la cartella «{folder}» non esiste")
            }
            Self::CertifiedToTrash(r) => format!(
                "Regola «{r}»: messaggi certificati e ricevute non possono finire nel Cestino o \
                 nella posta indesiderata"
            ),
        }
    }
}

/// Keys that would ask for what PEC forbids.
const FORBIDDEN_KEYS: &[&str] = &["discard", "reject", "redirect", "forward", "delete", "drop"];

/// Parses the owner's rules (a JSON array) and checks them; `folder_role` tells whether a
/// folder exists (`Some`) and its special use (`Some(Some("trash"))`).
pub fn parse(
    json: &serde_json::Value,
    folder_role: impl Fn(&str) -> Option<Option<String>>,
) -> Result<Vec<Rule>, FilterError> {
    let list = json
        .as_array()
        .ok_or_else(|| FilterError::Malformed("expected an array".into()))?;
    if list.len() > MAX_RULES {
        return Err(FilterError::TooMany);
    }
    let mut rules = Vec::with_capacity(list.len());
    for v in list {
        let name = v
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .chars()
            .take(MAX_TEXT)
            .collect::<String>();
        if let Some(o) = v.as_object()
            && o.keys()
                .any(|k| FORBIDDEN_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(FilterError::Forbidden(name));
        }
        let r: Rule = serde_json::from_value(v.clone())
            .map_err(|e| FilterError::Malformed(format!("rule {name:?}: {e}")))?;
        check(&r, &folder_role)?;
        rules.push(r);
    }
    Ok(rules)
}

fn check(
    r: &Rule,
    folder_role: &impl Fn(&str) -> Option<Option<String>>,
) -> Result<(), FilterError> {
    let n = r.name.chars().count();
    if n == 0 || n > MAX_TEXT || r.name.chars().any(char::is_control) {
        return Err(FilterError::BadName(r.name.clone()));
    }
    for t in [&r.from, &r.to, &r.subject].into_iter().flatten() {
        if t.chars().count() > MAX_TEXT {
            return Err(FilterError::TooLong(r.name.clone()));
        }
    }
    if r.folder.is_none() && !r.mark_read && !r.flag && !r.notify {
        return Err(FilterError::NoAction(r.name.clone()));
    }
    if let Some(f) = &r.folder {
        let role = folder_role(f).ok_or_else(|| FilterError::NoSuchFolder {
            rule: r.name.clone(),
            folder: f.clone(),
        })?;
        let bin = matches!(role.as_deref(), Some("trash" | "junk"));
        let may_be_certified = r.kind.is_none_or(Kind::certified);
        if bin && may_be_certified {
            return Err(FilterError::CertifiedToTrash(r.name.clone()));
        }
    }
    Ok(())
}

/// What the rules look at in a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageFacts {
    pub from: String,
    pub to: Vec<String>,
    /// Lower-cased, for matching.
    pub subject: String,
    pub kind: Option<Kind>,
    pub size: u64,
    /// The subject as written (decoded), for the notices of [`crate::notify`].
    pub subject_text: String,
    /// The `Message-ID` without brackets (a PEC message's identificativo).
    pub message_id: String,
}

impl MessageFacts {
    /// Reads the headers of a message about to be delivered.
    pub fn of(raw: &[u8]) -> Self {
        let Some(m) = mail_parser::MessageParser::new().parse_headers(raw) else {
            return Self {
                size: raw.len() as u64,
                ..Self::default()
            };
        };
        let addrs = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address())
                    .map(|s| s.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
        };
        let header = |name: &str| {
            m.header_raw(name)
                .map(|v| v.trim().to_ascii_lowercase())
                .unwrap_or_default()
        };
        let kind = match (
            header("X-Trasporto").as_str(),
            header("X-Ricevuta").as_str(),
        ) {
            ("posta-certificata", _) => Some(Kind::PostaCertificata),
            ("errore", _) => Some(Kind::Anomalia),
            (_, "accettazione") => Some(Kind::Accettazione),
            (_, "non-accettazione") => Some(Kind::NonAccettazione),
            (_, "presa-in-carico") => Some(Kind::PresaInCarico),
            (_, "avvenuta-consegna") => Some(Kind::AvvenutaConsegna),
            (_, "errore-consegna") => Some(Kind::ErroreConsegna),
            (_, "preavviso-errore-consegna") => Some(Kind::PreavvisoErroreConsegna),
            (_, "rilevazione-virus") => Some(Kind::RilevazioneVirus),
            _ => Some(Kind::Ordinaria),
        };
        let mut to = addrs(m.to());
        to.extend(addrs(m.cc()));
        // A PEC envelope or receipt is from the provider "Per conto di: <sender>" (rules
        // §3.1): the sender is the one the display name names.
        let on_behalf = m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .and_then(|n| n.trim().strip_prefix("Per conto di:"))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| s.contains('@'));
        Self {
            from: on_behalf
                .or_else(|| addrs(m.from()).into_iter().next())
                .unwrap_or_default(),
            to,
            subject: m.subject().unwrap_or_default().to_lowercase(),
            kind,
            size: raw.len() as u64,
            subject_text: m.subject().unwrap_or_default().to_string(),
            message_id: m.message_id().unwrap_or_default().to_string(),
        }
    }
}

/// What the first matching rule says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub rule: &'a str,
    pub folder: Option<&'a str>,
    pub mark_read: bool,
    pub flag: bool,
    pub notify: bool,
}

/// The first rule whose conditions all hold for `m`.
pub fn evaluate<'a>(rules: &'a [Rule], m: &MessageFacts) -> Option<Outcome<'a>> {
    let has = |hay: &str, needle: &Option<String>| {
        needle
            .as_deref()
            .is_none_or(|n| hay.contains(&n.to_lowercase()))
    };
    rules
        .iter()
        .find(|r| {
            has(&m.from, &r.from)
                && r.to.as_deref().is_none_or(|n| {
                    let n = n.to_lowercase();
                    m.to.iter().any(|t| t.contains(&n))
                })
                && has(&m.subject, &r.subject)
                && r.kind.is_none_or(|k| m.kind.is_some_and(|mk| k.covers(mk)))
                && r.min_size.is_none_or(|s| m.size >= s)
                && r.max_size.is_none_or(|s| m.size <= s)
        })
        .map(|r| Outcome {
            rule: &r.name,
            folder: r.folder.as_deref(),
            mark_read: r.mark_read,
            flag: r.flag,
            notify: r.notify,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn folders(name: &str) -> Option<Option<String>> {
        match name {
            "INBOX" | "Fatture" => Some(None),
            "Trash" => Some(Some("trash".into())),
            _ => None,
        }
    }

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    /// A PEC envelope is from the provider on behalf of the sender: rules and notices
    /// see the sender.
    #[test]
    fn the_sender_of_an_envelope_is_the_one_it_is_on_behalf_of() {
        let env = MessageFacts::of(
            b"From: \"Per conto di: Mario.Rossi@pec.altro.it\" <posta-certificata@pec.altro.it>\r\n\
              X-Trasporto: posta-certificata\r\nSubject: POSTA CERTIFICATA: Fattura\r\n\
              Message-ID: <opec-1@pec.altro.it>\r\n\r\n",
        );
        assert_eq!(env.from, "mario.rossi@pec.altro.it");
        assert_eq!(env.subject_text, "POSTA CERTIFICATA: Fattura");
        assert_eq!(env.message_id, "opec-1@pec.altro.it");
        let plain = MessageFacts::of(b"From: \"Per conto di: nessuno\" <x@y.it>\r\n\r\n");
        assert_eq!(
            plain.from, "x@y.it",
            "a display name without an address is just a name"
        );
    }

    #[test]
    fn rules_that_would_block_certified_mail_are_refused() -> Result {
        let ok = json!([{"name": "Fatture", "subject": "fattura", "folder": "Fatture", "markRead": true}]);
        assert_eq!(parse(&ok, folders)?.len(), 1);
        for (rules, want) in [
            (
                json!([{"name": "via", "discard": true, "markRead": true}]),
                "cannot discard",
            ),
            (
                json!([{"name": "fw", "Redirect": "x@y", "flag": true}]),
                "cannot discard",
            ),
            (json!([{"name": "bin", "folder": "Trash"}]), "Trash or Junk"),
            (
                json!([{"name": "bin", "kind": "ricevuta", "folder": "Trash"}]),
                "Trash or Junk",
            ),
            (
                json!([{"name": "x", "folder": "Nowhere"}]),
                "no folder \"Nowhere\"",
            ),
            (json!([{"name": "x"}]), "no action"),
            (json!([{"name": "", "flag": true}]), "a name"),
            (
                json!([{"name": "x", "flag": true, "colour": 1}]),
                "unknown field",
            ),
            (json!({"name": "x"}), "expected an array"),
        ] {
            let e = parse(&rules, folders).unwrap_err().to_string();
            assert!(e.contains(want), "{rules}: {e}");
        }
        // Ordinary mail may go to the bin.
        let spam = json!([{"name": "spam", "kind": "ordinaria", "folder": "Trash"}]);
        assert!(parse(&spam, folders).is_ok());
        Ok(())
    }

    #[test]
    fn the_first_matching_rule_applies() -> Result {
        let rules: Vec<Rule> = serde_json::from_value(json!([
            {"name": "ricevute", "kind": "ricevuta", "markRead": true},
            {"name": "fatture", "subject": "FATTURA", "from": "@fornitore.it", "folder": "Fatture"},
            {"name": "grandi", "minSize": 1000, "flag": true},
        ]))?;
        let raw = b"From: Ufficio <uff@fornitore.it>\r\nTo: a@pec.test\r\nSubject: Invio fattura n. 3\r\nX-Trasporto: posta-certificata\r\n\r\nx";
        let f = MessageFacts::of(raw);
        assert_eq!(f.kind, Some(Kind::PostaCertificata));
        let o = evaluate(&rules, &f).ok_or("no rule matched")?;
        assert_eq!((o.rule, o.folder), ("fatture", Some("Fatture")));
        let receipt = MessageFacts::of(b"From: posta-certificata@pec.test\r\nX-Ricevuta: avvenuta-consegna\r\nSubject: CONSEGNA: Invio fattura\r\n\r\n");
        assert_eq!(evaluate(&rules, &receipt).map(|o| o.rule), Some("ricevute"));
        let other = MessageFacts::of(b"From: x@y.it\r\nSubject: ciao\r\n\r\nbody");
        assert_eq!(other.kind, Some(Kind::Ordinaria));
        assert!(evaluate(&rules, &other).is_none());
        assert!(
            evaluate(
                &rules,
                &MessageFacts {
                    size: 5000,
                    ..other
                }
            )
            .is_some()
        );
        Ok(())
    }
}
