//! The access point's formal checks (*controlli formali*, digest §6.1 item 2, RFC 6109
//! §3.1.1). A submission that fails any of them is not admitted and the sender gets the
//! non-acceptance notice naming the reason.
//!
//! Pure: the SMTP envelope and the message bytes in, a [`Checked`] submission or a
//! [`Refusal`] out. The certification data come from the SMTP envelope (rule §2 item 4):
//! the sender is the reverse-path, the recipients are the forward-paths; `To:`/`Cc:` only
//! tell primary from copy recipients.
//!
//! Every refusal is permanent (5xx), matching the non-acceptance notice the sender gets:
//! retrying the same message cannot succeed. A missing `Date:` is not a refusal: as a
//! submission server (RFC 6409 §8.6) the access point adds it ([`Checked::date_missing`]),
//! so the message it certifies is RFC 5322 conformant; an unparsable `Date:` is refused.

use mail_parser::{Address, MessageParser};

use crate::pec::address::PecAddress;
use crate::pec::daticert::TipoRicevuta;
use crate::pec::envelope::decoded_subject;
use crate::pec::mime;

/// The limits the checks apply (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (bytes).
    pub max_message_bytes: u64,
    /// Largest size × number of recipients (rule §6.1: the limit applies to the product;
    /// DM 2/11/2005 art. 12 requires at least 30 MB).
    pub max_total_bytes: u64,
    /// Most recipients per message (art. 12: at least 50).
    pub max_recipients: usize,
}

/// A submission that passed the formal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub sender: PecAddress,
    /// Forward-paths in SMTP order.
    pub recipients: Vec<PecAddress>,
    /// Recipients that appear only in `Cc:` (they get the sintetica delivery receipt).
    pub cc_only: Vec<PecAddress>,
    /// Decoded subject.
    pub subject: String,
    /// The client's Message-ID with brackets, if it gave one.
    pub client_msgid: Option<String>,
    /// `Reply-To:` address, else the sender (`risposte`).
    pub risposte: String,
    /// Requested delivery-receipt form (`X-TipoRicevuta`, default completa).
    pub ricevuta: TipoRicevuta,
    /// The message has no `Date:` (RFC 5322 §3.6 requires one): the access point adds
    /// the acceptance time (RFC 6409 §8.6) before certifying it.
    pub date_missing: bool,
}

/// Why a submission is not admitted. `reason` is what the non-acceptance notice and the
/// SMTP reply say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub reason: String,
    /// The same reason in Italian, for the user (the webmail shows it; rules digest §4.2:
    /// the notice is addressed to the sender in Italian).
    pub motivo: String,
    /// The SMTP reply code and enhanced status for the refusal.
    pub code: u16,
    pub enhanced: &'static str,
}

fn refuse(
    code: u16,
    enhanced: &'static str,
    reason: impl Into<String>,
    motivo: impl Into<String>,
) -> Refusal {
    Refusal {
        reason: reason.into(),
        motivo: motivo.into(),
        code,
        enhanced,
    }
}

/// All addresses of a header, each checked; an unparsable one is an error.
fn addresses(a: Option<&Address<'_>>, header: &str) -> Result<Vec<PecAddress>, Refusal> {
    let Some(a) = a else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for addr in a.iter() {
        let raw = addr.address().unwrap_or_default();
        let parsed = PecAddress::parse(raw).map_err(|e| {
            refuse(
                550,
                "5.6.0",
                format!("invalid address in {header}: {e}"),
                format!("indirizzo non valido nel campo {header}: «{raw}»"),
            )
        })?;
        out.push(parsed);
    }
    Ok(out)
}

/// Whether `data` holds a CR that is not followed by an LF.
fn has_bare_cr(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && data.get(i + 1) != Some(&b'\n'))
}

/// Runs every formal check on a submission.
pub fn check(
    mail_from: &str,
    rcpt_to: &[String],
    data: &[u8],
    limits: &Limits,
) -> Result<Checked, Refusal> {
    let sender = PecAddress::parse(mail_from).map_err(|e| {
        refuse(
            550,
            "5.1.7",
            format!("invalid sender address: {e}"),
            format!("indirizzo del mittente non valido: «{mail_from}»"),
        )
    })?;
    if rcpt_to.is_empty() {
        return Err(refuse(554, "5.5.1", "no recipients", "nessun destinatario"));
    }
    if rcpt_to.len() > limits.max_recipients {
        // Permanent, like the non-acceptance notice that goes with it (the session's own
        // 452 per extra RCPT, RFC 5321 §4.5.3.1.10, normally keeps this from happening).
        return Err(refuse(
            550,
            "5.5.3",
            format!("too many recipients (at most {})", limits.max_recipients),
            format!("troppi destinatari (al massimo {})", limits.max_recipients),
        ));
    }
    let size = data.len() as u64;
    if size > limits.max_message_bytes {
        return Err(refuse(
            552,
            "5.3.4",
            format!("message larger than {} bytes", limits.max_message_bytes),
            format!("messaggio più grande di {} byte", limits.max_message_bytes),
        ));
    }
    if size.saturating_mul(rcpt_to.len() as u64) > limits.max_total_bytes {
        return Err(refuse(
            552,
            "5.3.4",
            format!(
                "message size × recipients ({} × {}) exceeds the limit of {} bytes",
                size,
                rcpt_to.len(),
                limits.max_total_bytes
            ),
            format!(
                "dimensione × destinatari ({} × {}) oltre il limite di {} byte",
                size,
                rcpt_to.len(),
                limits.max_total_bytes
            ),
        ));
    }
    let recipients = rcpt_to
        .iter()
        .map(|r| {
            PecAddress::parse(r).map_err(|e| {
                refuse(
                    550,
                    "5.1.3",
                    format!("invalid recipient: {e}"),
                    format!("destinatario non valido: «{r}»"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    // RFC 5322 §2.3: CR and LF only together. A bare LF is taken as a line end (and
    // written CRLF); a bare CR, which some receivers take for a line end and others not,
    // would let a message carry a second one past a lenient next hop (SMTP smuggling).
    if has_bare_cr(data) {
        return Err(refuse(
            554,
            "5.6.0",
            "the message contains a bare CR: line ends must be CRLF (RFC 5322 §2.3)",
            "il messaggio contiene un CR isolato: le righe devono terminare con CRLF (RFC 5322 §2.3)",
        ));
    }

    // RFC 5321 §4.5.3.1.6, as the SMTP session applies it on submission: a message made
    // another way (JMAP) must not carry a longer line into the signed envelope either.
    let limit = crate::smtp::session::SUBMISSION_DATA_LINE;
    if data
        .split_inclusive(|&b| b == b'\n')
        // CRLF included: a bare LF will be written CRLF (+1), a last line without any line
        // end gets one (+2).
        .any(|l| {
            let end = if l.ends_with(b"\r\n") {
                0
            } else if l.ends_with(b"\n") {
                1
            } else {
                2
            };
            l.len() + end > limit
        })
    {
        return Err(refuse(
            554,
            "5.6.0",
            format!("a line is longer than {limit} octets, CRLF included (RFC 5321 §4.5.3.1.6)"),
            format!("una riga supera {limit} byte, CRLF compreso (RFC 5321 §4.5.3.1.6)"),
        ));
    }

    // RFC 5322 conformity: a header section with exactly one From.
    let crlf = mime::to_crlf(data);
    let (headers, _) = mime::split_header_body(&crlf);
    let fields = mime::headers(headers);
    if fields.is_empty() {
        return Err(refuse(
            550,
            "5.6.0",
            "the message has no header section (RFC 5322)",
            "il messaggio non ha intestazioni (RFC 5322)",
        ));
    }
    let count = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .count()
    };
    for single in [
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Message-ID",
        "Reply-To",
        "Date",
    ] {
        if count(single) > 1 {
            return Err(refuse(
                550,
                "5.6.0",
                format!("the {single} field appears more than once (RFC 5322 §3.6)"),
                format!("il campo {single} compare più di una volta (RFC 5322 §3.6)"),
            ));
        }
    }
    let msg = MessageParser::new().parse_headers(headers).ok_or_else(|| {
        refuse(
            550,
            "5.6.0",
            "the header section cannot be parsed (RFC 5322)",
            "le intestazioni del messaggio non sono leggibili (RFC 5322)",
        )
    })?;

    let from = addresses(msg.from(), "From")?;
    if from.len() != 1 {
        return Err(refuse(
            550,
            "5.6.0",
            "the From field must hold exactly one valid address",
            "il campo Da (From) deve contenere un solo indirizzo valido",
        ));
    }
    if !from[0].same_mailbox(&sender) {
        return Err(refuse(
            550,
            "5.7.1",
            format!(
                "the From address {} differs from the sender {}",
                from[0], sender
            ),
            format!(
                "l'indirizzo nel campo Da {} è diverso dal mittente {}",
                from[0], sender
            ),
        ));
    }
    let to = addresses(msg.to(), "To")?;
    if to.is_empty() {
        return Err(refuse(
            550,
            "5.6.0",
            "the To field must hold at least one valid address",
            "il campo A (To) deve contenere almeno un indirizzo valido",
        ));
    }
    let cc = addresses(msg.cc(), "Cc")?;
    // Rules §6.1: Bcc carries no value. Judged on the raw field, so that a value the
    // address parser cannot read (`Bcc: foo`, a group, a comment) is refused too.
    if mime::header_value(headers, "bcc").is_some_and(|v| !v.trim().is_empty()) {
        return Err(refuse(
            550,
            "5.7.1",
            "the Bcc field must be empty: hidden recipients are not allowed in PEC",
            "il campo Ccn (Bcc) deve essere vuoto: la PEC non ammette destinatari nascosti",
        ));
    }
    let date_missing = count("Date") == 0;
    if !date_missing && msg.date().is_none() {
        return Err(refuse(
            550,
            "5.6.0",
            "the Date field is not a valid date (RFC 5322 §3.3)",
            "il campo Data non contiene una data valida (RFC 5322 §3.3)",
        ));
    }
    for r in &recipients {
        let listed = to.iter().chain(cc.iter()).any(|a| a.same_mailbox(r));
        if !listed {
            return Err(refuse(
                550,
                "5.7.1",
                format!("recipient {r} is in neither To nor Cc"),
                format!("il destinatario {r} non è né nel campo A né in Cc"),
            ));
        }
    }
    let cc_only = recipients
        .iter()
        .filter(|r| cc.iter().any(|a| a.same_mailbox(r)) && !to.iter().any(|a| a.same_mailbox(r)))
        .cloned()
        .collect();
    let reply_to = addresses(msg.reply_to(), "Reply-To")?;
    let ricevuta = mime::header_value(headers, "x-tiporicevuta")
        .and_then(|v| TipoRicevuta::parse(&v.to_ascii_lowercase()))
        .unwrap_or(TipoRicevuta::Completa);
    Ok(Checked {
        risposte: reply_to
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| sender.to_string()),
        sender,
        recipients,
        cc_only,
        subject: decoded_subject(headers),
        client_msgid: mime::header_value(headers, "message-id")
            .map(|m| crate::pec::ids::bracketed(&m)),
        ricevuta,
        date_missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 10_000,
        max_total_bytes: 25_000,
        max_recipients: 5,
    };

    fn msg(headers: &str) -> Vec<u8> {
        format!(
            "{headers}Subject: prova\r\nMessage-ID: <c1@mua>\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nciao\r\n"
        )
        .into_bytes()
    }

    fn rc(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_good_submission_passes_with_its_facts() {
        let m = msg(
            "From: A <a@pec.x.it>\r\nTo: b@pec.y.it\r\nCc: c@gmail.example\r\nX-TipoRicevuta: breve\r\n",
        );
        let c = check(
            "a@pec.x.it",
            &rc(&["b@pec.y.it", "c@gmail.example"]),
            &m,
            &LIMITS,
        )
        .unwrap();
        assert_eq!(c.sender.to_string(), "a@pec.x.it");
        assert_eq!(c.cc_only.len(), 1);
        assert_eq!(c.ricevuta, TipoRicevuta::Breve);
        assert_eq!(c.client_msgid.as_deref(), Some("<c1@mua>"));
        assert_eq!(c.risposte, "a@pec.x.it");
        assert_eq!(c.subject, "prova");
    }

    #[test]
    fn each_formal_rule_refuses_with_its_reason() {
        let cases: Vec<(&str, Vec<String>, Vec<u8>, &str)> = vec![
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                msg("From: a@pec.x.it\r\nFrom: z@pec.x.it\r\nTo: b@pec.y.it\r\n"),
                "more than once",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                msg("To: b@pec.y.it\r\n"),
                "exactly one valid address",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                msg("From: boss@pec.x.it\r\nTo: b@pec.y.it\r\n"),
                "differs from the sender",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                msg("From: a@pec.x.it\r\n"),
                "To field",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it", "h@pec.y.it"]),
                msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\n"),
                "neither To nor Cc",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\nBcc: h@pec.y.it\r\n"),
                "Bcc",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it"]),
                b"no header section at all".to_vec(),
                "header",
            ),
            (
                "a@pec.x.it",
                rc(&["b@pec.y.it", "c@pec.y.it", "d@pec.y.it"]),
                {
                    let mut m =
                        msg("From: a@pec.x.it\r\nTo: b@pec.y.it, c@pec.y.it, d@pec.y.it\r\n");
                    m.extend(std::iter::repeat_n(b'x', 9_000));
                    m
                },
                "size × recipients",
            ),
        ];
        for (from, rcpts, data, expect) in cases {
            let err = check(from, &rcpts, &data, &LIMITS).expect_err(expect);
            assert!(err.reason.contains(expect), "{expect}: got {}", err.reason);
            assert!(
                !err.motivo.is_empty() && err.motivo != err.reason,
                "{expect}: the Italian reason is missing: {}",
                err.motivo
            );
        }
        let empty_bcc = msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\nBcc: \r\n");
        assert!(
            check("a@pec.x.it", &rc(&["b@pec.y.it"]), &empty_bcc, &LIMITS).is_ok(),
            "an empty Bcc is fine"
        );
    }

    #[test]
    fn any_bcc_value_is_refused_even_unparsable() {
        for bcc in ["foo", "undisclosed-recipients:;", "(nobody)", "h@pec.y.it"] {
            let m = msg(&format!(
                "From: a@pec.x.it\r\nTo: b@pec.y.it\r\nBcc: {bcc}\r\n"
            ));
            let err = check("a@pec.x.it", &rc(&["b@pec.y.it"]), &m, &LIMITS).expect_err(bcc);
            assert!(err.reason.contains("Bcc"), "{bcc}: {}", err.reason);
            assert!(
                err.motivo.contains("destinatari nascosti"),
                "{bcc}: {}",
                err.motivo
            );
            assert_eq!(err.code / 100, 5, "{bcc}");
        }
        // Folded whitespace only is still empty.
        let m = msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\nBcc:\r\n \r\n");
        assert!(check("a@pec.x.it", &rc(&["b@pec.y.it"]), &m, &LIMITS).is_ok());
    }

    #[test]
    fn every_refusal_is_permanent_like_its_notice() {
        let many: Vec<String> = (0..6).map(|i| format!("r{i}@pec.y.it")).collect();
        let to = many.join(", ");
        let m = msg(&format!("From: a@pec.x.it\r\nTo: {to}\r\n"));
        let err = check("a@pec.x.it", &many, &m, &LIMITS).expect_err("6 > 5");
        assert_eq!((err.code, err.enhanced), (550, "5.5.3"));
        assert!(err.reason.contains("too many recipients"));
    }

    /// A bare CR anywhere (header or body, at the very end too) is refused; bare LF and
    /// a CR that ends the data's last CRLF are not.
    #[test]
    fn a_bare_cr_is_refused_a_bare_lf_is_not() {
        let base = msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\n");
        let r = rc(&["b@pec.y.it"]);
        for (tail, refused) in [
            (&b"x\r.\rMAIL FROM:<z@pec.x.it>\r\n"[..], true),
            (b"\r\n.\r\r\n", true),
            (b"end\r", true),
            (b"x\n.\nmore\n", false),
            (b"x\r\n.\r\nmore\r\n", false),
        ] {
            let m = [&base[..], tail].concat();
            match check("a@pec.x.it", &r, &m, &LIMITS) {
                Err(e) if refused => {
                    assert_eq!((e.code, e.enhanced), (554, "5.6.0"), "{tail:?}");
                    assert!(e.motivo.contains("CR isolato"), "{}", e.motivo);
                }
                Ok(_) if !refused => {}
                other => panic!("{tail:?}: {other:?}"),
            }
        }
        let hdr = b"From: a@pec.x.it\r\nTo: b@pec.y.it\rBcc: c@pec.y.it\r\n\r\nx\r\n";
        assert!(check("a@pec.x.it", &r, hdr, &LIMITS).is_err());
    }

    /// 998 octets and CRLF pass; one more, or 999 with a bare LF (written CRLF), do not.
    #[test]
    fn a_line_over_1000_octets_is_refused() {
        let r = rc(&["b@pec.y.it"]);
        let base = msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\n");
        for (n, end, ok) in [
            (998, "\r\n", true),
            (999, "\r\n", false),
            (998, "\n", true),
            (999, "\n", false),
            (998, "", true),
            (999, "", false),
        ] {
            let m = [&base[..], "x".repeat(n).as_bytes(), end.as_bytes()].concat();
            let got = check("a@pec.x.it", &r, &m, &LIMITS);
            assert_eq!(got.is_ok(), ok, "{n} {end:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.motivo.contains("1000 byte"), "{}", e.motivo);
            }
        }
    }

    #[test]
    fn a_missing_date_is_flagged_a_bad_one_refused() {
        let with = msg("From: a@pec.x.it\r\nTo: b@pec.y.it\r\n");
        let c = check("a@pec.x.it", &rc(&["b@pec.y.it"]), &with, &LIMITS).unwrap();
        assert!(!c.date_missing);
        let without = b"From: a@pec.x.it\r\nTo: b@pec.y.it\r\nSubject: s\r\n\r\nciao\r\n";
        let c = check("a@pec.x.it", &rc(&["b@pec.y.it"]), without, &LIMITS).unwrap();
        assert!(c.date_missing);
        let bad = b"From: a@pec.x.it\r\nTo: b@pec.y.it\r\nDate: yesterday\r\n\r\nciao\r\n";
        let err = check("a@pec.x.it", &rc(&["b@pec.y.it"]), bad, &LIMITS).unwrap_err();
        assert!(err.reason.contains("Date"), "{}", err.reason);
    }
}
