//! The PEC rules as pure code: no sockets, no files, no clock reads (time is passed in).
//!
//! * [`address`]: checked newtypes for the addresses and ids that cross the boundary.
//! * [`time`]: the PEC timestamp (`giorno`/`ora`/`zona`, Italian legal time).
//! * [`daticert`]: the certification data (`daticert.xml`) model, writer and safe parser.
//! * [`mime`]: the small MIME helpers the builders and the classifier share.
//! * [`smime`]: detached CMS signatures (`multipart/signed`), signing and verification.
//! * [`signature_certs`]: the certificates a signature carries, parsed once per process.
//! * [`compose`]: what every generated message shares (identity, headers, signed body).
//! * [`envelope`]: transport and anomaly envelopes (buste).
//! * [`outer`]: an envelope's unsigned outer headers against its signed content.
//! * [`receipt`]: every receipt and notice (ricevute e avvisi).
//! * [`breve`]: the original as a *breve* delivery receipt carries it (attachments → hashes).
//! * [`classify`]: what an inbound message is, without trusting it.
//! * [`ids`]: the PEC message identifier (identificativo).
//! * [`index`]: the index of PEC providers (LDIF, lookups by certificate and domain).

pub mod address;
pub mod breve;
pub mod classify;
pub mod compose;
pub mod crl;
pub mod daticert;
pub mod envelope;
pub mod ids;
pub mod index;
pub mod mime;
pub mod outer;
pub mod receipt;
pub mod signature_certs;
pub mod signed_data;
pub mod smime;
pub mod time;
