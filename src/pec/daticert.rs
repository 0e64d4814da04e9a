//! `daticert.xml`, the certification data of every PEC message (*dati di certificazione*,
//! digest §5, structure in `../shared/spec/daticert.dtd`).
//!
//! Owns the typed model ([`Daticert`]), the writer (exactly the DTD's element order, UTF-8,
//! no DOCTYPE) and the parser.
//!
//! Untrusted input: the parser reads XML written by any provider, or by an attacker. It
//! accepts what real providers emit (XML declaration with any encoding, DOCTYPE lines with
//! an external id, stylesheet processing instructions, comments, pretty-printed or compact
//! layout, stray text between elements) and it can never expand an entity or fetch
//! anything: a DOCTYPE with an internal subset (where entities are declared) is refused, and
//! any entity reference other than the five predefined ones and character references is
//! refused. Size, depth and repetition are bounded ([`MAX_DATICERT_BYTES`] and friends).

use std::fmt;

use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};

use super::time::{PecTime, PecTimeError};

/// Largest daticert accepted (a 500-recipient envelope is ~40 KB).
pub const MAX_DATICERT_BYTES: usize = 1024 * 1024;
/// Deepest element nesting accepted (the DTD needs 4).
pub const MAX_DEPTH: usize = 16;
/// Most repeated elements (`destinatari`, `ricezione`) accepted.
pub const MAX_REPEATED: usize = 10_000;
/// Longest text of one element.
pub const MAX_TEXT: usize = 16 * 1024;

macro_rules! token_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $token:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $token)] $variant),+ }

        impl $name {
            /// Every value, in DTD order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire token.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $token),+ }
            }

            /// Parses the wire token (exact, as the DTD enumerates them).
            pub fn parse(s: &str) -> Option<Self> {
                match s.trim() { $($token => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

token_enum!(
    /// `postacert@tipo`: which message this is (DM 2/11/2005 art. 6; digest §4.1).
    Tipo {
        /// Ricevuta di accettazione.
        Accettazione = "accettazione",
        /// Avviso di non accettazione (formal or virus).
        NonAccettazione = "non-accettazione",
        /// Ricevuta di presa in carico.
        PresaInCarico = "presa-in-carico",
        /// Ricevuta di avvenuta consegna.
        AvvenutaConsegna = "avvenuta-consegna",
        /// Busta di trasporto.
        PostaCertificata = "posta-certificata",
        /// Avviso di mancata consegna (also for virus).
        ErroreConsegna = "errore-consegna",
        /// Avviso di mancata consegna per superamento tempi massimi (12 h / 24 h).
        PreavvisoErroreConsegna = "preavviso-errore-consegna",
        /// Avviso di rilevazione virus.
        RilevazioneVirus = "rilevazione-virus",
    }
);

token_enum!(
    /// `postacert@errore`: the error class.
    Errore {
        Nessuno = "nessuno",
        /// Recipient mailbox unknown or unusable.
        NoDest = "no-dest",
        /// Recipient domain unknown.
        NoDominio = "no-dominio",
        Virus = "virus",
        Altro = "altro",
    }
);

token_enum!(
    /// `destinatari@tipo`: whether a recipient is in a PEC domain.
    TipoDestinatario {
        /// A PEC mailbox (domain in the provider index).
        Certificato = "certificato",
        /// An ordinary mailbox.
        Esterno = "esterno",
    }
);

token_enum!(
    /// `ricevuta@tipo` / `X-TipoRicevuta`: the delivery-receipt form (digest §4.10).
    TipoRicevuta {
        /// Full original included.
        Completa = "completa",
        /// Original with attachments replaced by their hashes.
        Breve = "breve",
        /// Certification data only.
        Sintetica = "sintetica",
    }
);

/// One `destinatari` element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destinatario {
    pub address: String,
    pub tipo: TipoDestinatario,
}

/// The certification data of one PEC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daticert {
    pub tipo: Tipo,
    pub errore: Errore,
    /// SMTP reverse-path of the original (*mittente*).
    pub mittente: String,
    /// Every To and Cc recipient, classified (*destinatari*).
    pub destinatari: Vec<Destinatario>,
    /// The original `Reply-To:` or, when absent, the sender (*risposte*).
    pub risposte: String,
    /// The decoded original subject (*oggetto*).
    pub oggetto: Option<String>,
    /// The issuing provider's name (*gestore-emittente*).
    pub gestore_emittente: String,
    /// The event instant (*data*).
    pub data: PecTime,
    /// The PEC identifier of the transport envelope, without brackets.
    pub identificativo: String,
    /// The client's Message-ID, with brackets.
    pub msgid: Option<String>,
    /// The requested delivery-receipt form.
    pub ricevuta: Option<TipoRicevuta>,
    /// The one recipient this receipt or notice is about.
    pub consegna: Option<String>,
    /// Recipients covered by a take-charge receipt.
    pub ricezione: Vec<String>,
    /// A short error description.
    pub errore_esteso: Option<String>,
}

/// Why a daticert could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaticertError {
    #[error("daticert is larger than {MAX_DATICERT_BYTES} bytes")]
    TooLarge,
    #[error("daticert nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("daticert repeats <{0}> more than {MAX_REPEATED} times")]
    TooMany(&'static str),
    #[error("daticert element <{0}> is longer than {MAX_TEXT} bytes")]
    TextTooLong(String),
    #[error("daticert declares entities in its DOCTYPE: refused (no entity is ever expanded)")]
    EntityDeclaration,
    #[error(
        "daticert references the entity &{0};: refused (only the predefined XML entities are allowed)"
    )]
    EntityReference(String),
    #[error("daticert is not well-formed XML: {0}")]
    Xml(String),
    #[error("the root element is <{0}>, not <postacert>")]
    WrongRoot(String),
    #[error("daticert has no root element")]
    Empty,
    #[error("daticert lacks the required <{0}>")]
    Missing(&'static str),
    #[error("daticert has an unknown {what} value {value:?}")]
    UnknownValue { what: &'static str, value: String },
    #[error(transparent)]
    Time(#[from] PecTimeError),
}

impl Daticert {
    /// Serialises exactly the DTD structure: `postacert(intestazione, dati)` with the
    /// optional elements in DTD order, UTF-8, pretty-printed like the real samples.
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(1024 + self.destinatari.len() * 80);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str(&format!(
            "<postacert tipo=\"{}\" errore=\"{}\">\n",
            self.tipo, self.errore
        ));
        x.push_str("    <intestazione>\n");
        elem(&mut x, 2, "mittente", &self.mittente);
        for d in &self.destinatari {
            x.push_str(&format!(
                "        <destinatari tipo=\"{}\">{}</destinatari>\n",
                d.tipo,
                escape(d.address.as_str())
            ));
        }
        elem(&mut x, 2, "risposte", &self.risposte);
        if let Some(o) = &self.oggetto {
            elem(&mut x, 2, "oggetto", o);
        }
        x.push_str("    </intestazione>\n    <dati>\n");
        elem(&mut x, 2, "gestore-emittente", &self.gestore_emittente);
        x.push_str(&format!("        <data zona=\"{}\">\n", self.data.zona()));
        elem(&mut x, 3, "giorno", &self.data.giorno());
        elem(&mut x, 3, "ora", &self.data.ora());
        x.push_str("        </data>\n");
        elem(&mut x, 2, "identificativo", &self.identificativo);
        if let Some(m) = &self.msgid {
            elem(&mut x, 2, "msgid", m);
        }
        if let Some(r) = self.ricevuta {
            x.push_str(&format!("        <ricevuta tipo=\"{r}\" />\n"));
        }
        if let Some(c) = &self.consegna {
            elem(&mut x, 2, "consegna", c);
        }
        for r in &self.ricezione {
            elem(&mut x, 2, "ricezione", r);
        }
        if let Some(e) = &self.errore_esteso {
            elem(&mut x, 2, "errore-esteso", e);
        }
        x.push_str("    </dati>\n</postacert>\n");
        x
    }

    /// Parses a daticert as written by any provider. Never expands entities, never
    /// fetches anything, never panics.
    pub fn parse(xml: &[u8]) -> Result<Self, DaticertError> {
        if xml.len() > MAX_DATICERT_BYTES {
            return Err(DaticertError::TooLarge);
        }
        let mut reader = Reader::from_reader(xml);
        reader.config_mut().check_end_names = true;
        let mut b = Builder::default();
        let mut stack: Vec<String> = Vec::new();
        let mut text = String::new();
        let mut seen_root = false;
        loop {
            let ev = reader
                .read_event()
                .map_err(|e| DaticertError::Xml(e.to_string()))?;
            match ev {
                Event::DocType(d) => {
                    // An internal subset (`[...]`) is where entities are declared; no
                    // legitimate daticert has one. An external id is fine: never fetched.
                    let raw: &[u8] = &d;
                    if raw.contains(&b'[') || contains_ci(raw, b"<!ENTITY") {
                        return Err(DaticertError::EntityDeclaration);
                    }
                }
                Event::Start(e) => {
                    let name = local_name(&e);
                    if stack.is_empty() {
                        if seen_root {
                            return Err(DaticertError::Xml("more than one root element".into()));
                        }
                        if name != "postacert" {
                            return Err(DaticertError::WrongRoot(name));
                        }
                        seen_root = true;
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(DaticertError::TooDeep);
                    }
                    b.attributes(&name, &e, &reader)?;
                    stack.push(name);
                    text.clear();
                }
                Event::Empty(e) => {
                    let name = local_name(&e);
                    if stack.is_empty() {
                        return Err(DaticertError::WrongRoot(name));
                    }
                    b.attributes(&name, &e, &reader)?;
                    b.leaf(&stack, &name, "")?;
                }
                Event::Text(t) => {
                    let s = t.decode().map_err(|e| DaticertError::Xml(e.to_string()))?;
                    push_text(&mut text, &s, &stack)?;
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| DaticertError::Xml(e.to_string()))?;
                    push_text(&mut text, &s, &stack)?;
                }
                Event::GeneralRef(r) => {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|e| DaticertError::Xml(e.to_string()))?
                    {
                        let mut buf = [0u8; 4];
                        push_text(&mut text, c.encode_utf8(&mut buf), &stack)?;
                    } else {
                        let name = r.decode().map_err(|e| DaticertError::Xml(e.to_string()))?;
                        match resolve_predefined_entity(&name) {
                            Some(v) => push_text(&mut text, v, &stack)?,
                            None => {
                                return Err(DaticertError::EntityReference(
                                    name.chars().take(40).collect(),
                                ));
                            }
                        }
                    }
                }
                Event::End(_) => {
                    let Some(name) = stack.pop() else {
                        return Err(DaticertError::Xml("unbalanced end tag".into()));
                    };
                    b.leaf(&stack, &name, &text)?;
                    text.clear();
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
        if !seen_root {
            return Err(DaticertError::Empty);
        }
        if !stack.is_empty() {
            return Err(DaticertError::Xml("unexpected end of document".into()));
        }
        b.finish()
    }
}

fn elem(x: &mut String, depth: usize, name: &str, value: &str) {
    for _ in 0..depth {
        x.push_str("    ");
    }
    x.push_str(&format!("<{name}>{}</{name}>\n", escape(value)));
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn local_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn push_text(text: &mut String, s: &str, stack: &[String]) -> Result<(), DaticertError> {
    if text.len() + s.len() > MAX_TEXT {
        return Err(DaticertError::TextTooLong(
            stack.last().cloned().unwrap_or_default(),
        ));
    }
    text.push_str(s);
    Ok(())
}

/// Collects fields while parsing; [`Builder::finish`] checks the required ones.
#[derive(Default)]
struct Builder {
    tipo: Option<Tipo>,
    errore: Option<Errore>,
    mittente: Option<String>,
    destinatari: Vec<Destinatario>,
    pending_dest_tipo: Option<TipoDestinatario>,
    risposte: Option<String>,
    oggetto: Option<String>,
    gestore: Option<String>,
    zona: Option<String>,
    giorno: Option<String>,
    ora: Option<String>,
    identificativo: Option<String>,
    msgid: Option<String>,
    ricevuta: Option<TipoRicevuta>,
    consegna: Option<String>,
    ricezione: Vec<String>,
    errore_esteso: Option<String>,
}

fn unknown(what: &'static str, value: &str) -> DaticertError {
    DaticertError::UnknownValue {
        what,
        value: value.chars().take(64).collect(),
    }
}

impl Builder {
    fn attributes(
        &mut self,
        name: &str,
        e: &BytesStart<'_>,
        reader: &Reader<&[u8]>,
    ) -> Result<(), DaticertError> {
        for attr in e.attributes() {
            let attr = attr.map_err(|e| DaticertError::Xml(e.to_string()))?;
            let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
            let value = attr
                .decode_and_unescape_value(reader.decoder())
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, n),
                    ) => DaticertError::EntityReference(n),
                    other => DaticertError::Xml(other.to_string()),
                })?;
            let v = value.trim();
            match (name, key.as_str()) {
                ("postacert", "tipo") => {
                    self.tipo = Some(Tipo::parse(v).ok_or_else(|| unknown("tipo", v))?)
                }
                ("postacert", "errore") => {
                    self.errore = Some(Errore::parse(v).ok_or_else(|| unknown("errore", v))?)
                }
                ("destinatari", "tipo") => {
                    self.pending_dest_tipo = Some(
                        TipoDestinatario::parse(v).ok_or_else(|| unknown("destinatari tipo", v))?,
                    )
                }
                ("data", "zona") => self.zona = Some(v.to_string()),
                ("ricevuta", "tipo") => {
                    self.ricevuta =
                        Some(TipoRicevuta::parse(v).ok_or_else(|| unknown("ricevuta tipo", v))?)
                }
                _ => {}
            }
        }
        if name == "ricevuta" && self.ricevuta.is_none() {
            // DTD default for the attribute.
            self.ricevuta = Some(TipoRicevuta::Completa);
        }
        Ok(())
    }

    /// Called when element `name` (child of `parents`) closes with `text`.
    fn leaf(&mut self, parents: &[String], name: &str, text: &str) -> Result<(), DaticertError> {
        let parent = parents.last().map(String::as_str).unwrap_or("");
        let v = text.trim().to_string();
        match (parent, name) {
            ("intestazione", "mittente") => self.mittente = Some(v),
            ("intestazione", "destinatari") => {
                if self.destinatari.len() >= MAX_REPEATED {
                    return Err(DaticertError::TooMany("destinatari"));
                }
                let tipo = self
                    .pending_dest_tipo
                    .take()
                    .unwrap_or(TipoDestinatario::Certificato);
                self.destinatari.push(Destinatario { address: v, tipo });
            }
            ("intestazione", "risposte") => self.risposte = Some(v),
            ("intestazione", "oggetto") => self.oggetto = Some(text.to_string()),
            ("dati", "gestore-emittente") => self.gestore = Some(v),
            ("data", "giorno") => self.giorno = Some(v),
            ("data", "ora") => self.ora = Some(v),
            ("dati", "identificativo") => self.identificativo = Some(v),
            ("dati", "msgid") => self.msgid = Some(v),
            ("dati", "consegna") => self.consegna = Some(v),
            ("dati", "ricezione") => {
                if self.ricezione.len() >= MAX_REPEATED {
                    return Err(DaticertError::TooMany("ricezione"));
                }
                self.ricezione.push(v)
            }
            ("dati", "errore-esteso") => self.errore_esteso = Some(v),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Daticert, DaticertError> {
        let data = PecTime::parse(
            self.giorno
                .as_deref()
                .ok_or(DaticertError::Missing("giorno"))?,
            self.ora.as_deref().ok_or(DaticertError::Missing("ora"))?,
            self.zona
                .as_deref()
                .ok_or(DaticertError::Missing("data zona"))?,
        )?;
        if self.destinatari.is_empty() {
            return Err(DaticertError::Missing("destinatari"));
        }
        Ok(Daticert {
            tipo: self.tipo.ok_or(DaticertError::Missing("postacert tipo"))?,
            errore: self.errore.unwrap_or(Errore::Nessuno),
            mittente: self.mittente.ok_or(DaticertError::Missing("mittente"))?,
            destinatari: self.destinatari,
            risposte: self.risposte.ok_or(DaticertError::Missing("risposte"))?,
            oggetto: self.oggetto,
            gestore_emittente: self
                .gestore
                .ok_or(DaticertError::Missing("gestore-emittente"))?,
            data,
            identificativo: self
                .identificativo
                .ok_or(DaticertError::Missing("identificativo"))?,
            msgid: self.msgid,
            ricevuta: self.ricevuta,
            consegna: self.consegna,
            ricezione: self.ricezione,
            errore_esteso: self.errore_esteso,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Daticert {
        Daticert {
            tipo: Tipo::AvvenutaConsegna,
            errore: Errore::Nessuno,
            mittente: "mario.rossi@pec.example.it".into(),
            destinatari: vec![
                Destinatario {
                    address: "a@pec.other.it".into(),
                    tipo: TipoDestinatario::Certificato,
                },
                Destinatario {
                    address: "b@gmail.example".into(),
                    tipo: TipoDestinatario::Esterno,
                },
            ],
            risposte: "mario.rossi@pec.example.it".into(),
            oggetto: Some("Fattura <n. 1> & \"altro\" è ok".into()),
            gestore_emittente: "Example PEC S.p.A.".into(),
            data: PecTime::parse("07/01/2013", "17:41:49", "+0100").unwrap(),
            identificativo: "opec-1.abc@pec.example.it".into(),
            msgid: Some("<client-1@example.it>".into()),
            ricevuta: Some(TipoRicevuta::Breve),
            consegna: Some("a@pec.other.it".into()),
            ricezione: vec![],
            errore_esteso: None,
        }
    }

    #[test]
    fn writes_dtd_order_and_round_trips() {
        let d = sample();
        let xml = d.to_xml();
        assert!(xml.contains("<msgid>&lt;client-1@example.it&gt;</msgid>"));
        assert!(xml.contains("<ricevuta tipo=\"breve\" />"));
        let order = [
            "<mittente>",
            "<destinatari",
            "<risposte>",
            "<oggetto>",
            "<gestore-emittente>",
            "<data zona=\"+0100\">",
            "<giorno>07/01/2013",
            "<ora>17:41:49",
            "<identificativo>",
            "<msgid>",
            "<ricevuta",
            "<consegna>",
        ];
        let mut last = 0;
        for tag in order {
            let at = xml.find(tag).unwrap_or_else(|| panic!("{tag} missing"));
            assert!(at > last, "{tag} out of DTD order");
            last = at;
        }
        assert_eq!(Daticert::parse(xml.as_bytes()).unwrap(), d);
    }

    #[test]
    fn every_token_round_trips() {
        for t in Tipo::ALL {
            assert_eq!(Tipo::parse(t.as_str()), Some(*t));
        }
        for e in Errore::ALL {
            let mut d = sample();
            d.errore = *e;
            assert_eq!(Daticert::parse(d.to_xml().as_bytes()).unwrap().errore, *e);
        }
    }

    #[test]
    fn accepts_real_provider_variations() {
        // I.T. Telecom 2013 style: stylesheet PI and a DOCTYPE with an external id that
        // must never be fetched, compact layout, `ricevuta` without a space before `/>`.
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<?xml-stylesheet type="text/xsl" href="https://www.telecompost.it/dtd/postacert.xsl"?>
<!DOCTYPE postacert PUBLIC "posta certificata" "https://www.telecompost.it/dtd/postacert.dtd">
<postacert tipo="avvenuta-consegna" errore="nessuno"><intestazione><mittente>s@pec.x.it</mittente><destinatari>d@pec.y.it</destinatari><risposte>s@pec.x.it</risposte><oggetto>Autorizzazione  -  BRINDISI</oggetto></intestazione><dati><gestore-emittente>I.T. Telecom S.R.L.</gestore-emittente><data zona="+0100"><giorno>07/01/2013</giorno><ora>17:41:49</ora></data><identificativo>201301071741240100.0787.pech@pec.rupar.puglia.it</identificativo><msgid>&lt;29358849.JavaMail@x&gt;</msgid><ricevuta tipo="completa"/><consegna>d@pec.y.it</consegna></dati></postacert>"#;
        let d = Daticert::parse(xml).unwrap();
        assert_eq!(d.destinatari[0].tipo, TipoDestinatario::Certificato);
        assert_eq!(d.oggetto.as_deref(), Some("Autorizzazione  -  BRINDISI"));
        assert_eq!(d.msgid.as_deref(), Some("<29358849.JavaMail@x>"));
        // ISO-8859-1 declared and used.
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><postacert tipo=\"accettazione\"><intestazione><mittente>a@b.it</mittente><destinatari tipo=\"esterno\">c@d.it</destinatari><risposte>a@b.it</risposte><oggetto>Perch\xe8</oggetto></intestazione><dati><gestore-emittente>G</gestore-emittente><data zona=\"+0200\"><giorno>01/06/2025</giorno><ora>10:00:00</ora></data><identificativo>x@b.it</identificativo></dati></postacert>";
        let d = Daticert::parse(latin).unwrap();
        assert_eq!(d.oggetto.as_deref(), Some("Perchè"));
        assert_eq!(d.errore, Errore::Nessuno);
    }

    #[test]
    fn refuses_entities_and_bad_input_without_panicking() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE postacert [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;">]><postacert tipo="accettazione"><intestazione><mittente>&b;</mittente></intestazione></postacert>"#;
        assert_eq!(Daticert::parse(bomb), Err(DaticertError::EntityDeclaration));
        let xxe = br#"<!DOCTYPE postacert SYSTEM "http://evil.example/x.dtd"><postacert tipo="accettazione"><intestazione><mittente>&xxe;</mittente></intestazione></postacert>"#;
        assert!(
            matches!(Daticert::parse(xxe), Err(DaticertError::EntityReference(n)) if n == "xxe")
        );
        let cases: &[&[u8]] = &[
            b"",
            b"<postacert",
            b"<other/>",
            b"<postacert tipo=\"boh\"></postacert>",
            b"<postacert tipo=\"accettazione\"><intestazione></intestazione></postacert>",
            b"<postacert tipo=\"accettazione\"><a></b></postacert>",
            &[0xff, 0xfe, 0x00],
        ];
        for c in cases {
            assert!(
                Daticert::parse(c).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(c)
            );
        }
        let deep = format!("<postacert tipo=\"accettazione\">{}", "<x>".repeat(100));
        assert_eq!(
            Daticert::parse(deep.as_bytes()),
            Err(DaticertError::TooDeep)
        );
        assert_eq!(
            Daticert::parse(&vec![b' '; MAX_DATICERT_BYTES + 1]),
            Err(DaticertError::TooLarge)
        );
    }
}
