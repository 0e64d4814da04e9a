//! The unsigned outer headers of a transport envelope (busta di trasporto) against its
//! signed content (issue #13 item 5; digest §4.5, §13).
//!
//! The S/MIME signature covers only the envelope's inner `multipart/mixed`: `Subject`,
//! `From`, `To`, `Cc`, `Date` and `Reply-To` at the top are outside it, yet they are what a
//! mail client shows. Whoever hands us a copy of a signed envelope could change them. The
//! rules fix each of them from signed data: `Subject` is `POSTA CERTIFICATA: ` + the
//! original's subject (daticert `oggetto`); `From` is the provider's address with display
//! name `Per conto di: <mittente>`; `To`, `Cc` and `Reply-To` are copied from the original
//! (`postacert.eml`; `Reply-To` is the sender when the original had none, daticert
//! `risposte`); `Date` is the acceptance time (daticert `data`). [`check`] compares them and
//! names the first difference; the incoming point treats one like any other malformed
//! provider message (anomaly envelope).
//!
//! Untrusted input: the outer header block (anything) and the signed parts (verified by the
//! caller, but still only bytes: parsed by mail-parser, which never panics). Pure: no I/O.

use std::collections::BTreeSet;

use mail_parser::{Address, MessageParser};

use super::daticert::Daticert;
use super::mime;

/// The subject prefix of a transport envelope (digest §4.5).
const SUBJECT_PREFIX: &str = "POSTA CERTIFICATA: ";

/// How far the outer `Date` may be from the daticert's acceptance time. Both are the
/// acceptance time at second precision; a provider that takes its clock twice may differ by
/// a moment, never by minutes.
const DATE_SLACK_SECS: i64 = 120;

/// Compares the outer headers of an envelope (`outer`: its header block) with its signed
/// daticert and `postacert.eml`. `Err` names the first field that differs (Italian: it goes
/// into the anomaly envelope's text and the trace).
pub fn check(outer: &[u8], daticert: &Daticert, postacert: &[u8]) -> Result<(), String> {
    let fields = mime::headers(outer);
    for name in ["Subject", "From", "To", "Cc", "Date", "Reply-To"] {
        let n = fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count();
        if n > 1 {
            return Err(format!(
                "intestazione {name}: ripetuta {n} volte fuori dalla firma"
            ));
        }
    }
    let parser = MessageParser::new();
    let Some(env) = parser.parse_headers(outer) else {
        return Err("intestazioni esterne illeggibili".into());
    };
    let (orig_headers, _) = mime::split_header_body(postacert);
    let orig = parser.parse_headers(orig_headers);

    // Subject: the prefix plus the original's subject, as daticert or postacert.eml say.
    let subject = squash(env.subject().unwrap_or_default());
    let signed_subjects = [
        daticert.oggetto.clone().unwrap_or_default(),
        orig.as_ref()
            .and_then(|o| o.subject())
            .unwrap_or_default()
            .to_string(),
    ];
    if !signed_subjects
        .iter()
        .any(|s| subject == squash(&format!("{SUBJECT_PREFIX}{s}")))
    {
        return Err(format!(
            "Subject: «{}» non corrisponde all'oggetto firmato «{}»",
            printable(&subject),
            printable(&signed_subjects[0])
        ));
    }

    // From: exactly one mailbox (its address is the signer's, checked by the caller against
    // the certificate), named exactly "Per conto di: <mittente>" (digest §4.5): nothing
    // else may stand where the recipient reads who sent it.
    let from: Vec<_> = env.from().map(|a| a.iter().collect()).unwrap_or_default();
    let want = squash(&format!("Per conto di: {}", daticert.mittente));
    match from.as_slice() {
        [one] => {
            let name = squash(one.name().unwrap_or_default());
            if !name.eq_ignore_ascii_case(&want) {
                return Err(format!(
                    "From: il nome «{}» non è «{want}»",
                    printable(&name)
                ));
            }
        }
        _ => {
            return Err(format!(
                "From: {} indirizzi invece di uno («{want}»)",
                from.len()
            ));
        }
    }

    // To and Cc: copied unchanged from the original.
    let orig_to = orig.as_ref().map(|o| set(o.to())).unwrap_or_default();
    let orig_cc = orig.as_ref().map(|o| set(o.cc())).unwrap_or_default();
    for (name, field) in [
        ("To", env.to()),
        ("Cc", env.cc()),
        ("Reply-To", env.reply_to()),
    ] {
        if let Some(shown) = misleading_name(field) {
            return Err(format!(
                "{name}: il nome «{}» mostra un indirizzo diverso dal proprio",
                printable(&shown)
            ));
        }
    }
    for (name, outer_set, signed) in [
        ("To", set(env.to()), &orig_to),
        ("Cc", set(env.cc()), &orig_cc),
    ] {
        if &outer_set != signed {
            return Err(format!(
                "{name}: {} diverso dall'originale firmato ({})",
                list(&outer_set),
                list(signed)
            ));
        }
    }

    // Reply-To: the original's, else the sender (risposte).
    let reply_to = set(env.reply_to());
    if !reply_to.is_empty() {
        let orig_reply = orig.as_ref().map(|o| set(o.reply_to())).unwrap_or_default();
        let risposte: BTreeSet<String> = [daticert.risposte.to_lowercase()].into();
        if reply_to != orig_reply && reply_to != risposte {
            return Err(format!(
                "Reply-To: {} diverso da quello firmato ({})",
                list(&reply_to),
                daticert.risposte
            ));
        }
    }

    // Date: the acceptance time.
    let accepted = daticert.data.timestamp().map(|t| t.as_second());
    match (env.date().map(|d| d.to_timestamp()), accepted) {
        (Some(outer), Some(signed)) if (outer - signed).abs() <= DATE_SLACK_SECS => {}
        (None, _) if !has_header(&fields, "Date") => {}
        _ => {
            return Err(format!(
                "Date: «{}» diversa dall'ora di accettazione firmata ({} {} {})",
                header_text(&fields, "Date").unwrap_or_default(),
                daticert.data.giorno(),
                daticert.data.ora(),
                daticert.data.zona()
            ));
        }
    }
    Ok(())
}

/// Whitespace runs (folding, tabs) as one space, trimmed.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The addresses of an address header, lower-cased (groups flattened).
fn set(a: Option<&Address<'_>>) -> BTreeSet<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .map(str::to_lowercase)
            .collect()
    })
    .unwrap_or_default()
}

/// The display name of a mailbox in `a` that shows an address other than its own (what a
/// client would display in its place), if any. An `@` look-alike (U+FF20, U+FE6B) counts.
fn misleading_name(a: Option<&Address<'_>>) -> Option<String> {
    for m in a?.iter() {
        let (Some(name), Some(addr)) = (m.name(), m.address()) else {
            continue;
        };
        let shows_other = name
            .split(|c: char| c.is_whitespace() || "<>\",;()[]".contains(c))
            .map(|w| {
                w.trim_end_matches([':', '.'])
                    .replace(['\u{FF20}', '\u{FE6B}'], "@")
            })
            .any(|w| w.contains('@') && !w.eq_ignore_ascii_case(addr));
        if shows_other {
            return Some(name.to_string());
        }
    }
    None
}

fn has_header(fields: &[(String, String)], name: &str) -> bool {
    fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn header_text(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| printable(v.trim()))
}

fn list(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "nessuno".into()
    } else {
        s.iter()
            .map(|a| printable(a))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Untrusted text for a reason: at most 120 characters, control characters as spaces.
fn printable(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pec::daticert::{Errore, Tipo};
    use crate::pec::time::PecTime;

    fn daticert() -> Daticert {
        Daticert {
            tipo: Tipo::PostaCertificata,
            errore: Errore::Nessuno,
            mittente: "mario@pec.a.it".into(),
            destinatari: Vec::new(),
            risposte: "mario@pec.a.it".into(),
            oggetto: Some("Perché così".into()),
            gestore_emittente: "A".into(),
            data: PecTime::parse("23/11/2026", "10:00:00", "+0100").unwrap(),
            identificativo: "opec-1@pec.a.it".into(),
            msgid: None,
            ricevuta: None,
            consegna: None,
            ricezione: Vec::new(),
            errore_esteso: None,
        }
    }

    const ORIG: &[u8] = b"From: mario@pec.a.it\r\nTo: Anna <anna@pec.b.it>\r\n\
Subject: =?utf-8?q?Perch=C3=A9_cos=C3=AC?=\r\n\r\nciao\r\n";

    /// As the rules build it: encoded and folded differently from the original, a Date a
    /// few seconds off, no Reply-To at all; then each field changed on its own.
    #[test]
    fn equal_in_meaning_passes_each_change_is_named() {
        let good = "To: anna@PEC.b.it\r\nSubject: =?iso-8859-1?q?POSTA_CERTIFICATA=3A_Perch=E9?=\r\n \
=?iso-8859-1?q?_cos=EC?=\r\nFrom: \"Per conto di: mario@pec.a.it\" <posta-certificata@pec.a.it>\r\n\
Date: Mon, 23 Nov 2026 10:00:05 +0100\r\n";
        assert_eq!(check(good.as_bytes(), &daticert(), ORIG), Ok(()));
        for (from, to, field) in [
            ("Perch=E9?=", "Perch=E8?=", "Subject:"),
            ("Per conto di: mario", "Per conto di: luigi", "From:"),
            (
                "\"Per conto di: mario@pec.a.it\" ",
                "\"Ufficio legale\" ",
                "From:",
            ),
            ("To: anna@PEC.b.it", "To: anna@pec.b.it, x@pec.b.it", "To:"),
            ("10:00:05", "11:00:00", "Date:"),
            ("Date: ", "Reply-To: x@evil.it\r\nDate: ", "Reply-To:"),
            ("Date: ", "Cc: y@pec.b.it\r\nDate: ", "Cc:"),
            (
                "Date: Mon, 23 Nov 2026 10:00:05 +0100",
                "Date: domani",
                "Date:",
            ),
            ("To: ", "To: anna@pec.b.it\r\nTo: ", "ripetuta"),
            ("mario@pec.a.it\" <", "mario\u{FF20}pec.a.it\" <", "From:"),
            ("\"Per conto di: mario@pec.a.it\" ", "", "From:"),
            (
                "<posta-certificata@pec.a.it>",
                "<posta-certificata@pec.a.it>, t@evil.it",
                "From:",
            ),
            (
                "To: anna@PEC.b.it",
                "To: \"tribunale@pec.giustizia.it\" <anna@pec.b.it>",
                "To:",
            ),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            let err = check(bad.as_bytes(), &daticert(), ORIG).expect_err(to);
            assert!(err.contains(field), "{to}: {err}");
        }
    }
}
