//! The certificates a CMS (PKCS#7) signature carries, each parsed once per process.
//!
//! Every signature a provider makes carries the same certificates (its signing
//! certificate, often its CA's), and OpenSSL 3 takes about 170 µs to decode one (mostly
//! its public key, through the provider decoders): a PKCS#7 SignedData with two of them
//! cost 340 µs to parse, more than verifying its RSA signature, and pecd verifies three
//! signatures per message it sends to another provider (the envelope at the receiver, the
//! two receipts back at the sender). So [`parse`] cuts the `certificates` field out of the
//! DER before OpenSSL reads it, and takes the certificates from a bounded map keyed by
//! their exact bytes; the verifier hands them to OpenSSL beside the signature, which then
//! finds the signer among them as it would among the embedded ones.
//!
//! Owns: that DER surgery and the map ([`CAPACITY`] certificates of at most
//! [`MAX_CACHED_LEN`] bytes; a new one replaces the oldest when full). Distrusts: every
//! byte of the signature. Only a definite-length `ContentInfo` of type signedData with
//! one-byte tags, one certificates field and only plain `Certificate`s in it is split,
//! each length checked against the bytes it claims; anything else (BER indefinite
//! lengths, attribute certificates, trailing bytes, a second certificates field) is handed
//! to OpenSSL whole, as before this module existed. A map entry is found only by the whole DER of the
//! certificate, never by a hash or a name, so it is the same certificate OpenSSL would
//! have parsed from those bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};

use asn1_rs::{Class, FromDer, Header, Length, Tag, ToDer};
use openssl::error::ErrorStack;
use openssl::pkcs7::Pkcs7;
use openssl::x509::X509;

/// How many parsed certificates are kept: far more than the providers of the index have
/// signing certificates, and a bound on what a stream of forged ones can make us hold.
pub const CAPACITY: usize = 256;

/// The largest certificate kept (DER bytes): a real one is 1–2 KB, and a signature may
/// carry anything up to the message's size. With [`CAPACITY`], the map holds at most
/// about 12 MB (each certificate's bytes three times: the key, its place in the eviction
/// order, and OpenSSL's copy).
pub const MAX_CACHED_LEN: usize = 16 * 1024;

/// The DER of the signedData content type, 1.2.840.113549.1.7.2 (RFC 5652 §5.1).
const SIGNED_DATA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// A signature parsed: the SignedData (without its certificates when they could be cut
/// out) and the certificates it carried, in their order.
pub struct Parsed {
    pub pkcs7: Pkcs7,
    pub certs: Vec<X509>,
}

/// Parses a DER PKCS#7 signature, its certificates from the map when it can be split.
pub fn parse(der: &[u8]) -> Result<Parsed, ErrorStack> {
    let Some(split) = split(der) else {
        return parse_whole(der);
    };
    let pkcs7 = Pkcs7::from_der(&split.bare)?;
    if pkcs7.signed().and_then(|s| s.certificates()).is_some() {
        // Not what the split meant to make: OpenSSL judges the whole bytes.
        return parse_whole(der);
    }
    let certs = split
        .certs
        .iter()
        .map(|c| certificate(c))
        .collect::<Result<_, _>>()?;
    Ok(Parsed { pkcs7, certs })
}

/// `der` as OpenSSL reads it, certificates and all.
fn parse_whole(der: &[u8]) -> Result<Parsed, ErrorStack> {
    let pkcs7 = Pkcs7::from_der(der)?;
    let certs = pkcs7
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| s.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    Ok(Parsed { pkcs7, certs })
}

/// The certificate whose DER is `der`, parsed once (when it is not larger than
/// [`MAX_CACHED_LEN`]; a larger one is parsed each time).
pub fn certificate(der: &[u8]) -> Result<X509, ErrorStack> {
    if der.len() > MAX_CACHED_LEN {
        return X509::from_der(der);
    }
    if let Some(c) = map().certs.get(der) {
        return Ok(c.clone());
    }
    // Parsed outside the lock: two threads may parse the same bytes, one entry is kept.
    let cert = X509::from_der(der)?;
    let mut m = map();
    if !m.certs.contains_key(der) {
        // The oldest entry makes room: a stream of new certificates pushes each out in
        // turn, whatever its hash.
        while m.certs.len() >= CAPACITY {
            match m.order.pop_front() {
                Some(old) => drop(m.certs.remove(&old)),
                None => break,
            }
        }
        let key: Box<[u8]> = der.into();
        m.order.push_back(key.clone());
        m.certs.insert(key, cert.clone());
    }
    Ok(cert)
}

/// The parsed certificates, and their keys oldest first.
#[derive(Default)]
struct Map {
    certs: HashMap<Box<[u8]>, X509>,
    order: VecDeque<Box<[u8]>>,
}

/// The parsed certificates, locked.
fn map() -> MutexGuard<'static, Map> {
    static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
    // A poisoned lock only means another thread panicked while holding it; the map is
    // still a set of whole entries.
    MAP.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
fn cached(der: &[u8]) -> bool {
    map().certs.contains_key(der)
}

#[cfg(test)]
fn cached_len() -> usize {
    let m = map();
    assert_eq!(m.certs.len(), m.order.len());
    m.certs.len()
}

/// A signature with its `certificates` field cut out, and that field's certificates.
#[derive(Debug, PartialEq)]
struct Split<'a> {
    bare: Vec<u8>,
    certs: Vec<&'a [u8]>,
}

/// One DER element: its header, its content, and what follows it.
struct Element<'a> {
    header: Header<'a>,
    content: &'a [u8],
    rest: &'a [u8],
}

fn element(bytes: &[u8]) -> Option<Element<'_>> {
    let (after, header) = Header::from_der(bytes).ok()?;
    // Only one-byte identifiers: asn1-rs folds a long tag number into a u32 (it may wrap
    // to a small one where OpenSSL refuses the bytes), and none of the elements split
    // here has a tag number above 30.
    if header.raw_tag().is_none_or(|t| t.len() != 1) {
        return None;
    }
    let Length::Definite(n) = header.length() else {
        return None;
    };
    (n <= after.len()).then(|| Element {
        header,
        content: &after[..n],
        rest: &after[n..],
    })
}

fn is(e: &Element, class: Class, constructed: bool, tag: Tag) -> bool {
    e.header.class() == class && e.header.is_constructed() == constructed && e.header.tag() == tag
}

/// A DER header for `content_len` bytes of content.
fn header(class: Class, tag: Tag, content_len: usize) -> Option<Vec<u8>> {
    Header::new(class, true, tag, Length::Definite(content_len))
        .to_der_vec()
        .ok()
}

/// `ContentInfo { signedData, [0] SignedData { version, digestAlgorithms,
/// encapContentInfo, [0] certificates?, [1] crls?, signerInfos } }` (RFC 5652 §3, §5.1)
/// with the `[0] certificates` element removed and every enclosing length rewritten;
/// `None` when the bytes are not that shape or have no certificates field (an empty one
/// is cut out like any other).
fn split(der: &[u8]) -> Option<Split<'_>> {
    let info = element(der)?;
    if !info.rest.is_empty() || !is(&info, Class::Universal, true, Tag::Sequence) {
        return None;
    }
    let oid = element(info.content)?;
    if !is(&oid, Class::Universal, false, Tag::Oid) || oid.content != SIGNED_DATA_OID {
        return None;
    }
    let explicit = element(oid.rest)?;
    if !explicit.rest.is_empty() || !is(&explicit, Class::ContextSpecific, true, Tag(0)) {
        return None;
    }
    let signed = element(explicit.content)?;
    if !signed.rest.is_empty() || !is(&signed, Class::Universal, true, Tag::Sequence) {
        return None;
    }
    // version, digestAlgorithms, encapContentInfo: kept as they are.
    let mut at = signed.content;
    for _ in 0..3 {
        at = element(at)?.rest;
    }
    let before = &signed.content[..signed.content.len() - at.len()];
    let field = element(at)?;
    if !is(&field, Class::ContextSpecific, true, Tag(0)) {
        return None;
    }
    let after = field.rest;
    // A second `[0]` after the first is not a SignedData OpenSSL would read: cut out the
    // first, it would become the certificates field.
    if element(after).is_none_or(|next| is(&next, Class::ContextSpecific, true, Tag(0))) {
        return None;
    }
    let mut certs = Vec::new();
    let mut list = field.content;
    while !list.is_empty() {
        let cert = element(list)?;
        // Only plain certificates; the other CertificateChoices are left to OpenSSL.
        if !is(&cert, Class::Universal, true, Tag::Sequence) {
            return None;
        }
        certs.push(&list[..list.len() - cert.rest.len()]);
        list = cert.rest;
    }
    let signed_len = before.len() + after.len();
    let signed_header = header(Class::Universal, Tag::Sequence, signed_len)?;
    let explicit_len = signed_header.len() + signed_len;
    let explicit_header = header(Class::ContextSpecific, Tag(0), explicit_len)?;
    let oid_tlv = &info.content[..info.content.len() - oid.rest.len()];
    let info_len = oid_tlv.len() + explicit_header.len() + explicit_len;
    let mut bare = header(Class::Universal, Tag::Sequence, info_len)?;
    bare.reserve(info_len);
    bare.extend_from_slice(oid_tlv);
    bare.extend_from_slice(&explicit_header);
    bare.extend_from_slice(&signed_header);
    bare.extend_from_slice(before);
    bare.extend_from_slice(after);
    Some(Split { bare, certs })
}

#[cfg(test)]
#[path = "signature_certs/tests.rs"]
mod tests;
