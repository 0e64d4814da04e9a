//! Every receipt and notice a provider emits (*ricevute e avvisi*, digest §4.1 rows 1–3,
//! 5 and 7–11), with the exact `X-Ricevuta` values, extra headers, subject prefixes,
//! daticert `tipo`/`errore` and optional fields of the rules' tables, and the human text.
//!
//! One function, [`build`], takes the certification facts of the original and a
//! [`Notice`] saying which message to emit; [`delivery_form`] applies the receipt-form table
//! of §4.10. Pure and synchronous: signing is CPU-bound and the caller picks the thread.

use std::borrow::Cow;

use super::breve;
use super::compose::{self, BuiltMessage, Certification, ProviderIdentity};
use super::daticert::{Errore, Tipo, TipoRicevuta};
use super::smime::{Signer, SmimeError};
use super::time::PecTime;

/// Which receipt or notice to emit.
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    /// #1 Ricevuta di accettazione, to the sender.
    Accettazione,
    /// #2 Avviso di non accettazione per eccezioni formali, to the sender.
    NonAccettazione { reason: &'a str },
    /// #3 Avviso di non accettazione per virus, to the sender.
    NonAccettazioneVirus { virus: &'a str },
    /// #5 Ricevuta di presa in carico, to the sending provider's `mailReceipt`.
    PresaInCarico {
        ricezione: &'a [String],
        to: &'a str,
    },
    /// #7 Avviso di rilevazione virus, to the sending provider's `mailReceipt`.
    RilevazioneVirus {
        consegna: &'a str,
        virus: &'a str,
        to: &'a str,
    },
    /// #8 Avviso di mancata consegna per virus, to the sender.
    ErroreConsegnaVirus { consegna: &'a str, virus: &'a str },
    /// #9 Ricevuta di avvenuta consegna, to the sender. `postacert` is the original as
    /// carried by the envelope, needed for the completa and breve forms.
    AvvenutaConsegna {
        consegna: &'a str,
        form: TipoRicevuta,
        postacert: Option<&'a [u8]>,
    },
    /// #10 Avviso di mancata consegna, to the sender.
    ErroreConsegna {
        consegna: &'a str,
        errore: Errore,
        errore_esteso: &'a str,
    },
    /// #11 Avviso di mancata consegna per superamento tempi massimi, 12 h variant.
    Preavviso12h { consegna: &'a str },
    /// #11, 24 h variant: the transaction is closed with a negative outcome.
    Scadenza24h { consegna: &'a str },
}

impl Notice<'_> {
    /// The `X-Ricevuta` value.
    pub fn x_ricevuta(&self) -> &'static str {
        self.tipo().as_str()
    }

    /// The daticert `tipo`.
    pub fn tipo(&self) -> Tipo {
        match self {
            Notice::Accettazione => Tipo::Accettazione,
            Notice::NonAccettazione { .. } | Notice::NonAccettazioneVirus { .. } => {
                Tipo::NonAccettazione
            }
            Notice::PresaInCarico { .. } => Tipo::PresaInCarico,
            Notice::RilevazioneVirus { .. } => Tipo::RilevazioneVirus,
            Notice::ErroreConsegnaVirus { .. } | Notice::ErroreConsegna { .. } => {
                Tipo::ErroreConsegna
            }
            Notice::AvvenutaConsegna { .. } => Tipo::AvvenutaConsegna,
            Notice::Preavviso12h { .. } | Notice::Scadenza24h { .. } => {
                Tipo::PreavvisoErroreConsegna
            }
        }
    }

    /// The subject prefix, with its `": "` (§4.1).
    pub fn subject_prefix(&self) -> &'static str {
        match self {
            Notice::Accettazione => "ACCETTAZIONE: ",
            Notice::NonAccettazione { .. } => "AVVISO DI NON ACCETTAZIONE: ",
            Notice::NonAccettazioneVirus { .. } => "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
            Notice::PresaInCarico { .. } => "PRESA IN CARICO: ",
            Notice::RilevazioneVirus { .. } => "PROBLEMA DI SICUREZZA: ",
            Notice::ErroreConsegnaVirus { .. } => "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
            Notice::AvvenutaConsegna { .. } => "CONSEGNA: ",
            Notice::ErroreConsegna { .. } => "AVVISO DI MANCATA CONSEGNA: ",
            Notice::Preavviso12h { .. } | Notice::Scadenza24h { .. } => {
                "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: "
            }
        }
    }
}

/// The delivery-receipt form for one recipient (§4.10 table): a `Cc:` recipient always
/// gets sintetica; a `To:` recipient gets what the sender asked for. A recipient in both,
/// or in neither, counts as primary (RFC 6109 §3.3.2.1).
pub fn delivery_form(requested: TipoRicevuta, only_in_cc: bool) -> TipoRicevuta {
    if only_in_cc {
        TipoRicevuta::Sintetica
    } else {
        requested
    }
}

/// Builds and signs one receipt or notice about the message described by `cert`.
pub fn build(
    provider: &ProviderIdentity,
    signer: &Signer,
    cert: &Certification,
    notice: Notice<'_>,
    at: PecTime,
) -> Result<BuiltMessage, SmimeError> {
    let to = match notice {
        Notice::PresaInCarico { to, .. } | Notice::RilevazioneVirus { to, .. } => to,
        _ => cert.mittente.as_str(),
    };
    let (mut h, message_id) = compose::receipt_headers(
        provider,
        &at,
        to,
        &format!("{}{}", notice.subject_prefix(), cert.oggetto),
        cert.msgid.as_deref(),
    );
    h.raw("X-Ricevuta", notice.x_ricevuta());
    match notice {
        Notice::NonAccettazioneVirus { .. } | Notice::ErroreConsegnaVirus { .. } => {
            h.raw("X-VerificaSicurezza", "errore");
        }
        Notice::RilevazioneVirus { .. } => h.address("X-Mittente", None, &cert.mittente),
        _ => {}
    }

    let mut d = cert.daticert(notice.tipo(), Errore::Nessuno, &provider.name, at);
    let mut attached: Option<Cow<'_, [u8]>> = None;
    match notice {
        Notice::Accettazione => {}
        Notice::NonAccettazione { reason } => {
            d.errore = Errore::Altro;
            d.errore_esteso = Some(compose::header_safe(reason));
        }
        Notice::NonAccettazioneVirus { virus } => {
            d.errore = Errore::Virus;
            d.errore_esteso = Some(compose::header_safe(virus));
        }
        Notice::PresaInCarico { ricezione, .. } => d.ricezione = ricezione.to_vec(),
        Notice::RilevazioneVirus {
            consegna, virus, ..
        } => {
            d.errore = Errore::Virus;
            d.consegna = Some(consegna.to_string());
            d.errore_esteso = Some(compose::header_safe(virus));
        }
        Notice::ErroreConsegnaVirus { consegna, virus } => {
            d.errore = Errore::Virus;
            d.ricevuta = Some(cert.ricevuta);
            d.consegna = Some(consegna.to_string());
            d.errore_esteso = Some(compose::header_safe(virus));
        }
        Notice::AvvenutaConsegna {
            consegna,
            form,
            postacert,
        } => {
            d.ricevuta = Some(form);
            d.consegna = Some(consegna.to_string());
            attached = match (form, postacert) {
                (TipoRicevuta::Completa, Some(p)) => Some(Cow::Borrowed(p)),
                (TipoRicevuta::Breve, Some(p)) => Some(Cow::Owned(breve::breve_original(p))),
                _ => None,
            };
        }
        Notice::ErroreConsegna {
            consegna,
            errore,
            errore_esteso,
        } => {
            d.errore = errore;
            d.consegna = Some(consegna.to_string());
            d.errore_esteso = Some(compose::header_safe(errore_esteso));
        }
        Notice::Preavviso12h { consegna } | Notice::Scadenza24h { consegna } => {
            d.consegna = Some(consegna.to_string());
        }
    }

    let lines = text(cert, &notice, &at);
    let bytes = compose::sign(signer, h, &lines, Some(&d), attached.as_deref())?;
    Ok(BuiltMessage {
        bytes,
        message_id,
        daticert: Some(d),
    })
}

/// The human-readable text (§4.2–4.12). Clients must not parse it; daticert is
/// authoritative.
fn text(cert: &Certification, notice: &Notice<'_>, at: &PecTime) -> Vec<String> {
    let when = at.human();
    let subj = &cert.oggetto;
    let from = &cert.mittente;
    let id_line = format!("Identificativo messaggio: {}", cert.identificativo);
    let mut l: Vec<String> = Vec::new();
    let mut head = |title: &str| {
        l.push(title.to_string());
        l.push(String::new());
    };
    match notice {
        Notice::Accettazione => {
            head("Ricevuta di accettazione");
            l.push(format!(
                "Il giorno {when} il messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push("ed indirizzato a:".into());
            l.extend(cert.recipients_text());
            l.push("è stato accettato dal sistema ed inoltrato.".into());
        }
        Notice::NonAccettazione { reason } => {
            head("Avviso di non accettazione");
            l.push(format!(
                "Il giorno {when} nel messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!(
                "è stato rilevato un problema che ne impedisce l'accettazione: {reason}"
            ));
            l.push("Il messaggio non è stato accettato.".into());
        }
        Notice::NonAccettazioneVirus { virus } => {
            head("Avviso di non accettazione per virus");
            l.push(format!(
                "Il giorno {when} nel messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!("è stato rilevato un contenuto pericoloso: {virus}"));
            l.push("Il messaggio non è stato accettato.".into());
        }
        Notice::PresaInCarico { ricezione, .. } => {
            head("Ricevuta di presa in carico");
            l.push(format!(
                "Il giorno {when} il messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push("ed indirizzato a:".into());
            l.extend(ricezione.iter().cloned());
            l.push("è stato accettato dal sistema.".into());
        }
        Notice::RilevazioneVirus {
            consegna, virus, ..
        } => {
            head("Avviso di rilevazione virus");
            l.push(format!(
                "Il giorno {when} nel messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!(
                "ed indirizzato a \"{consegna}\" è stato rilevato un contenuto pericoloso: {virus}"
            ));
            l.push("Il messaggio non è stato consegnato.".into());
        }
        Notice::ErroreConsegnaVirus { consegna, virus } => {
            head("Avviso di mancata consegna per virus");
            l.push(format!(
                "Il giorno {when} nel messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!(
                "ed indirizzato a \"{consegna}\" è stato rilevato un contenuto pericoloso: {virus}"
            ));
            l.push("Il messaggio non è stato consegnato.".into());
        }
        Notice::AvvenutaConsegna { consegna, form, .. } => {
            head("Ricevuta di avvenuta consegna");
            l.push(format!(
                "Il giorno {when} il messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!("ed indirizzato a \"{consegna}\""));
            l.push("è stato correttamente consegnato al destinatario.".into());
            match form {
                TipoRicevuta::Completa => l.push("Il messaggio originale è incluso in allegato.".into()),
                TipoRicevuta::Breve => l.push(
                    "Il messaggio originale è incluso in allegato, con gli allegati sostituiti dai loro hash.".into(),
                ),
                TipoRicevuta::Sintetica => {}
            }
        }
        Notice::ErroreConsegna {
            consegna,
            errore_esteso,
            ..
        } => {
            head("Avviso di mancata consegna");
            l.push(format!(
                "Il giorno {when} nel messaggio \"{subj}\" proveniente da \"{from}\""
            ));
            l.push(format!(
                "ed indirizzato a \"{consegna}\" si è verificato un errore: {errore_esteso}"
            ));
            l.push("Il messaggio non è stato consegnato.".into());
        }
        Notice::Preavviso12h { consegna } => {
            head("Avviso di mancata consegna per superamento tempi massimi");
            l.push(format!(
                "Il giorno {when} non è ancora pervenuta la ricevuta di consegna del messaggio"
            ));
            l.push(format!(
                "\"{subj}\" proveniente da \"{from}\" e indirizzato a \"{consegna}\""
            ));
            l.push(
                "entro le prime 12 ore dall'invio. Il messaggio potrebbe essere ancora consegnato:"
                    .into(),
            );
            l.push("se entro le prossime 12 ore non perverrà la ricevuta, seguirà un ulteriore avviso.".into());
        }
        Notice::Scadenza24h { consegna } => {
            head("Avviso di mancata consegna per superamento tempi massimi");
            l.push(format!(
                "Il giorno {when} non è pervenuta la ricevuta di consegna del messaggio"
            ));
            l.push(format!(
                "\"{subj}\" proveniente da \"{from}\" e indirizzato a \"{consegna}\""
            ));
            l.push(
                "entro 24 ore dall'invio. La transazione si considera chiusa con esito negativo."
                    .into(),
            );
        }
    }
    l.push(id_line);
    l.push("L'allegato daticert.xml contiene informazioni di servizio sulla trasmissione.".into());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_form_table() {
        use TipoRicevuta::*;
        for (requested, cc, expected) in [
            (Completa, false, Completa),
            (Completa, true, Sintetica),
            (Breve, false, Breve),
            (Breve, true, Sintetica),
            (Sintetica, false, Sintetica),
            (Sintetica, true, Sintetica),
        ] {
            assert_eq!(
                delivery_form(requested, cc),
                expected,
                "{requested:?} cc={cc}"
            );
        }
    }

    #[test]
    fn tipo_and_prefix_per_notice() {
        let r = [String::from("x@y.it")];
        let cases: Vec<(Notice<'_>, &str, &str)> = vec![
            (Notice::Accettazione, "accettazione", "ACCETTAZIONE: "),
            (
                Notice::NonAccettazione { reason: "r" },
                "non-accettazione",
                "AVVISO DI NON ACCETTAZIONE: ",
            ),
            (
                Notice::NonAccettazioneVirus { virus: "v" },
                "non-accettazione",
                "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
            ),
            (
                Notice::PresaInCarico {
                    ricezione: &r,
                    to: "x",
                },
                "presa-in-carico",
                "PRESA IN CARICO: ",
            ),
            (
                Notice::RilevazioneVirus {
                    consegna: "c",
                    virus: "v",
                    to: "x",
                },
                "rilevazione-virus",
                "PROBLEMA DI SICUREZZA: ",
            ),
            (
                Notice::ErroreConsegnaVirus {
                    consegna: "c",
                    virus: "v",
                },
                "errore-consegna",
                "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
            ),
            (
                Notice::AvvenutaConsegna {
                    consegna: "c",
                    form: TipoRicevuta::Sintetica,
                    postacert: None,
                },
                "avvenuta-consegna",
                "CONSEGNA: ",
            ),
            (
                Notice::ErroreConsegna {
                    consegna: "c",
                    errore: Errore::NoDest,
                    errore_esteso: "e",
                },
                "errore-consegna",
                "AVVISO DI MANCATA CONSEGNA: ",
            ),
            (
                Notice::Preavviso12h { consegna: "c" },
                "preavviso-errore-consegna",
                "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
            ),
            (
                Notice::Scadenza24h { consegna: "c" },
                "preavviso-errore-consegna",
                "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
            ),
        ];
        for (n, x, p) in cases {
            assert_eq!(n.x_ricevuta(), x);
            assert_eq!(n.subject_prefix(), p);
        }
    }
}
