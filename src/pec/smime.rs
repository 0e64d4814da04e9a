//! S/MIME for PEC: every generated message is a `multipart/signed` entity (RFC 1847, RFC 5751
//! §3.4.3) whose second part is a detached CMS SignedData made with the provider key
//! (rules digest §2 item 1, §7.1).
//!
//! Owns: the provider signing key (it never leaves [`Signer`]), splitting a raw
//! `multipart/signed` message into the signed bytes and the signature, and the two separate
//! verdicts a verifier needs: "the signature is cryptographically valid over untouched
//! content" and "the signer chains to a CA we trust".
//!
//! Untrusted input: every byte of a message handed to [`split_signed`] / [`verify_message`].
//! Line ends are canonicalised to CRLF before checking (real providers' messages are stored
//! with LF or CRLF). We sign with SHA-256 and accept SHA-1 and SHA-256 signatures, with
//! either `application/pkcs7-signature` or `application/x-pkcs7-signature` (digest §7.1).
//!
//! Must not touch: files, sockets, or the clock except for a signature's signing time (read
//! by [`super::signed_data`], as OpenSSL's `CMS_sign` reads it). Signing is CPU-bound:
//! async callers run it on a blocking thread (`tokio::task::spawn_blocking`).

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::Pkcs7Flags;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509PurposeId, X509Ref, X509StoreContext};

use super::mime;
use super::signature_certs::{self, Parsed};
use super::signed_data::Template;

/// The `micalg` we declare: we always sign with SHA-256.
pub const MICALG: &str = "sha-256";
/// The signature part's content type we emit (RFC 5751); `application/x-pkcs7-signature`
/// is accepted on input.
pub const SIGNATURE_CONTENT_TYPE: &str = "application/pkcs7-signature";

/// Errors of this module, by cause.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    #[error("the message is not multipart/signed")]
    NotSigned,
    #[error("multipart/signed without a boundary parameter")]
    NoBoundary,
    #[error("multipart/signed is truncated: {0}")]
    Truncated(&'static str),
    /// RFC 1847 §2.1: a `multipart/signed` body has exactly two parts. A third part is
    /// outside the signature and must not be mistaken for signed content.
    #[error("multipart/signed has {0} body parts; exactly 2 are allowed (content and signature)")]
    ExtraParts(usize),
    #[error("the signature part is not a PKCS#7 signature (content type {0:?})")]
    NotPkcs7(String),
    #[error("the signature part is not valid base64")]
    BadBase64,
    #[error("the signature is not a DER CMS SignedData: {0}")]
    BadDer(String),
    #[error("invalid PEM for {what}: {detail}")]
    BadPem { what: &'static str, detail: String },
    #[error("the signing certificate does not match the private key")]
    KeyMismatch,
    #[error("OpenSSL failed while {doing}: {detail}")]
    OpenSsl { doing: &'static str, detail: String },
}

fn ossl(doing: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> SmimeError {
    move |e| SmimeError::OpenSsl {
        doing,
        detail: e.to_string(),
    }
}

/// The provider's signing identity. Its `Debug` never prints the key.
pub struct Signer {
    cert: X509,
    key: PKey<Private>,
    chain: Vec<X509>,
    /// The SignedData's fixed parts, encoded once ([`super::signed_data`]); `None` for a
    /// key type it does not cover, signed through OpenSSL's CMS instead.
    template: Option<Template>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &subject_line(&self.cert))
            .field("key", &"<redacted>")
            .field("chain", &self.chain.len())
            .finish()
    }
}

impl Signer {
    /// Builds a signer from PEM text: the certificate, its private key, and the
    /// intermediate certificates to embed in every signature (may be empty).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], chain_pem: &[u8]) -> Result<Self, SmimeError> {
        let cert = X509::from_pem(cert_pem).map_err(|e| SmimeError::BadPem {
            what: "signing certificate",
            detail: e.to_string(),
        })?;
        let key = PKey::private_key_from_pem(key_pem).map_err(|e| SmimeError::BadPem {
            what: "signing key",
            detail: e.to_string(),
        })?;
        let chain = if chain_pem.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            X509::stack_from_pem(chain_pem).map_err(|e| SmimeError::BadPem {
                what: "certificate chain",
                detail: e.to_string(),
            })?
        };
        let public = cert
            .public_key()
            .map_err(ossl("reading the certificate key"))?;
        if !public.public_eq(&key) {
            return Err(SmimeError::KeyMismatch);
        }
        let template = match Template::new(&cert, &chain, &key) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("signatures made through OpenSSL's CMS: {e}");
                None
            }
        };
        Ok(Self {
            cert,
            key,
            chain,
            template,
        })
    }

    /// The signing certificate.
    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// The intermediate certificates embedded in every signature after the signer's.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    /// The e-mail address in the certificate's subjectAltName: by rule §2 item 2 it is the
    /// `From:` of every message we generate.
    pub fn address(&self) -> Option<String> {
        cert_email(&self.cert)
    }

    /// Detached CMS SignedData (DER) over `content`, SHA-256, signer certificate and chain
    /// included; signed attributes contentType, signingTime and messageDigest. CPU-bound:
    /// call from a blocking thread in async code.
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>, SmimeError> {
        if let Some(t) = &self.template {
            return t.sign(&self.key, content).map_err(ossl("signing"));
        }
        let mut chain = Stack::new().map_err(ossl("allocating a stack"))?;
        for c in &self.chain {
            chain.push(c.clone()).map_err(ossl("building the chain"))?;
        }
        let cms = CmsContentInfo::sign(
            Some(&self.cert),
            Some(&self.key),
            Some(&chain),
            Some(content),
            // No SMIMECapabilities attribute: a provider's signature is never a key to
            // encrypt to, and a real one (Namirial's, rules §7.1) signs contentType,
            // signingTime and messageDigest only. It also saves OpenSSL building the list
            // (2.4 % of one hop's CPU, measured).
            CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP,
        )
        .map_err(ossl("signing"))?;
        cms.to_der().map_err(ossl("encoding the signature"))
    }

    /// A bare signature over `content` (SHA-256; PKCS#1 v1.5 for RSA, DER ECDSA for EC),
    /// with no CMS wrapper: for statements whose every byte must be covered (the trace
    /// export trailer, [`crate::trace::checkpoint::ExportTrailer`]). CPU-bound.
    pub fn sign_raw(&self, content: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)
            .map_err(ossl("signing"))?;
        s.update(content).map_err(ossl("signing"))?;
        s.sign_to_vec().map_err(ossl("signing"))
    }

    /// Assembles a complete signed message: `outer_headers` (each line CRLF-terminated,
    /// without `MIME-Version`/`Content-Type`) then a `multipart/signed` body whose first
    /// part is `inner` (a complete MIME entity, headers included) and whose second part is
    /// the signature over it.
    pub fn sign_message(&self, outer_headers: &[u8], inner: &[u8]) -> Result<Vec<u8>, SmimeError> {
        self.sign_message_with(outer_headers, |out| {
            out.reserve(inner.len() + 16 * 1024);
            out.extend_from_slice(inner)
        })
    }

    /// [`Self::sign_message`] with the inner entity written by `write_inner` straight into
    /// the message (which it should make room for): a big entity is held once, not once
    /// as the entity and once more as the message.
    pub fn sign_message_with(
        &self,
        outer_headers: &[u8],
        write_inner: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, SmimeError> {
        let boundary = mime::boundary("sig");
        let mut out = Vec::with_capacity(outer_headers.len() + 512);
        out.extend_from_slice(outer_headers);
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; protocol=\"{SIGNATURE_CONTENT_TYPE}\";\r\n\tmicalg=\"{MICALG}\"; boundary=\"{boundary}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(b"This is an S/MIME signed message\r\n\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        let start = out.len();
        write_inner(&mut out);
        // What is signed is canonical CRLF (our entities already are: no copy then).
        if let Cow::Owned(fixed) = mime::to_crlf(&out[start..]) {
            out.truncate(start);
            out.extend_from_slice(&fixed);
        }
        let signature = self.sign_detached(&out[start..])?;
        out.reserve(signature.len() * 2 + 512);
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(
            format!(
                "\r\nContent-Type: {SIGNATURE_CONTENT_TYPE}; name=\"smime.p7s\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
                 Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
            )
            .as_bytes(),
        );
        mime::write_base64_lines(&signature, &mut out);
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        Ok(out)
    }
}

/// A `multipart/signed` message split into what was signed and the signature.
#[derive(Debug, Clone)]
pub struct SignedParts<'a> {
    /// The first body part, headers included, canonical CRLF: the bytes the signature covers.
    pub signed: Cow<'a, [u8]>,
    /// The DER signature decoded from the second part.
    pub signature: Vec<u8>,
    /// The signature part's content type as declared (lower-case).
    pub signature_type: String,
    /// The `micalg` parameter, if any (lower-case).
    pub micalg: Option<String>,
}

/// The first body part of a `multipart/signed` message, read structurally (the signature
/// is neither required nor checked): the only part a PEC reader may take `daticert.xml`
/// and `postacert.eml` from.
#[derive(Debug, Clone)]
pub struct SignedContent<'a> {
    /// The first body part, headers included, canonical CRLF: borrowed from the message
    /// when it already had CRLF line ends (a big message is not copied for it).
    pub content: Cow<'a, [u8]>,
    /// How many body parts the `multipart/signed` has (2 when well formed).
    pub parts: usize,
    /// Whether the close delimiter was seen.
    pub closed: bool,
}

/// Finds the signed content of a raw `multipart/signed` message without verifying it
/// (RFC 1847 §2.1: the first body part). Never panics on malformed input.
pub fn signed_content(raw: &[u8]) -> Result<SignedContent<'_>, SmimeError> {
    fn of(crlf: &[u8]) -> Result<SignedContent<'_>, SmimeError> {
        let (_, parts) = signed_parts(crlf)?;
        let first = parts
            .parts
            .first()
            .ok_or(SmimeError::Truncated("no body part found"))?;
        Ok(SignedContent {
            content: Cow::Borrowed(*first),
            parts: parts.parts.len(),
            closed: parts.closed,
        })
    }
    match mime::to_crlf(raw) {
        Cow::Borrowed(crlf) => of(crlf),
        Cow::Owned(crlf) => of(&crlf).map(|c| SignedContent {
            content: Cow::Owned(c.content.into_owned()),
            ..c
        }),
    }
}

/// Checks that `crlf` (canonical CRLF) is `multipart/signed` with a boundary; returns its
/// content type and body parts (slices of `crlf`).
fn signed_parts(crlf: &[u8]) -> Result<(mime::ContentType, mime::Multipart<'_>), SmimeError> {
    let (headers, body) = mime::split_header_body(crlf);
    let ct = mime::header_value(headers, "content-type").ok_or(SmimeError::NotSigned)?;
    let ct = mime::ContentType::parse(&ct);
    if ct.mime_type != "multipart/signed" {
        return Err(SmimeError::NotSigned);
    }
    // RFC 2046 §5.1.1: 1 to 70 characters; an empty one would make every `--` line a
    // delimiter.
    let boundary = ct
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or(SmimeError::NoBoundary)?;
    let parts = mime::split_multipart(body, boundary.as_bytes());
    Ok((ct, parts))
}

/// Splits a raw message (or any `multipart/signed` entity) into its signed part and the
/// decoded signature. Accepts LF or CRLF as stored; never panics on malformed input.
/// Exactly two body parts are accepted (RFC 1847 §2.1): with a third one a reader could
/// be shown unsigned parts as if they were covered by the signature.
/// The signed part is borrowed from `raw` when it already had CRLF line ends (a big
/// message is not copied to be verified).
pub fn split_signed(raw: &[u8]) -> Result<SignedParts<'_>, SmimeError> {
    match mime::to_crlf(raw) {
        Cow::Borrowed(crlf) => signed_parts(crlf).and_then(|(ct, p)| split_parts(&ct, &p)),
        Cow::Owned(crlf) => signed_parts(&crlf)
            .and_then(|(ct, p)| split_parts(&ct, &p))
            .map(|p| SignedParts {
                signed: Cow::Owned(p.signed.into_owned()),
                ..p
            }),
    }
}

fn split_parts<'a>(
    ct: &mime::ContentType,
    parts: &mime::Multipart<'a>,
) -> Result<SignedParts<'a>, SmimeError> {
    let (signed, sig_part) = match parts.parts.as_slice() {
        [] => return Err(SmimeError::Truncated("no body part found")),
        [_] => return Err(SmimeError::Truncated("the signature part is missing")),
        [signed, sig] => (*signed, *sig),
        more => return Err(SmimeError::ExtraParts(more.len())),
    };
    let (sig_headers, sig_body) = mime::split_header_body(sig_part);
    let sig_ct = mime::header_value(sig_headers, "content-type")
        .map(|v| mime::ContentType::parse(&v).mime_type)
        .unwrap_or_default();
    if sig_ct != "application/pkcs7-signature" && sig_ct != "application/x-pkcs7-signature" {
        return Err(SmimeError::NotPkcs7(sig_ct));
    }
    let cleaned: Vec<u8> = sig_body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .map_err(|_| SmimeError::BadBase64)?;
    Ok(SignedParts {
        signed: Cow::Borrowed(signed),
        signature,
        signature_type: sig_ct,
        micalg: ct.param("micalg").map(|m| m.to_ascii_lowercase()),
    })
}

/// Who signed, as read from the certificate embedded in the signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignerInfo {
    pub subject: String,
    pub issuer: String,
    /// Hex SHA-1 of the DER certificate: the key of `providerCertificateHash` (digest §8).
    pub sha1: String,
    pub sha256: String,
    /// The subjectAltName rfc822Name, if any.
    pub email: Option<String>,
    pub not_before: String,
    pub not_after: String,
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl SignerInfo {
    fn from_cert(cert: &X509) -> Self {
        let digest = |md| cert.digest(md).map(hex::encode_upper).unwrap_or_default();
        Self {
            subject: subject_line(cert),
            issuer: name_line(cert.issuer_name()),
            sha1: digest(MessageDigest::sha1()),
            sha256: digest(MessageDigest::sha256()),
            email: cert_email(cert),
            not_before: cert.not_before().to_string(),
            not_after: cert.not_after().to_string(),
            der: cert.to_der().unwrap_or_default(),
        }
    }
}

/// The verdict on one signature. `valid` and `chain_ok` are separate questions: a real
/// provider's signature can be valid while its certificate is not in our trust store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureCheck {
    /// The signature is cryptographically valid over the untouched signed content.
    pub valid: bool,
    /// Why it is not valid (absent when valid).
    pub reason: Option<String>,
    pub signer: Option<SignerInfo>,
    /// Whether the signer chains to a trusted CA; `None` when no trust anchors were given.
    pub chain_ok: Option<bool>,
    /// Why the chain check failed, if it did.
    pub chain_error: Option<String>,
    /// The signer's certificate as parsed from the signature (what `signer` describes),
    /// for the checks that follow (index, CRL, validity) without decoding it again.
    #[serde(skip)]
    pub signer_cert: Option<X509>,
}

impl SignatureCheck {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self {
            valid: false,
            reason: Some(reason.into()),
            signer: None,
            chain_ok: None,
            chain_error: None,
            signer_cert: None,
        }
    }
}

/// CA certificates trusted for provider signatures.
pub struct TrustAnchors {
    store: X509Store,
    count: usize,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustAnchors({} certificates)", self.count)
    }
}

impl TrustAnchors {
    /// Loads every certificate of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SmimeError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| SmimeError::BadPem {
            what: "CA bundle",
            detail: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(SmimeError::BadPem {
                what: "CA bundle",
                detail: "no certificate found".into(),
            });
        }
        Self::from_certs(certs)
    }

    pub fn from_certs(certs: Vec<X509>) -> Result<Self, SmimeError> {
        let mut b = X509StoreBuilder::new().map_err(ossl("creating a trust store"))?;
        let count = certs.len();
        for c in certs {
            b.add_cert(c).map_err(ossl("adding a CA"))?;
        }
        b.set_purpose(X509PurposeId::SMIME_SIGN)
            .map_err(ossl("setting the purpose"))?;
        Ok(Self {
            store: b.build(),
            count,
        })
    }
}

/// Verifies a whole raw message: split, then [`verify_detached`].
pub fn verify_message(raw: &[u8], trust: Option<&TrustAnchors>) -> SignatureCheck {
    match split_signed(raw) {
        Ok(parts) => verify_detached(&parts.signed, &parts.signature, trust),
        Err(e) => SignatureCheck::invalid(e.to_string()),
    }
}

/// Verifies a detached signature over `content` (already canonical). Never panics.
pub fn verify_detached(
    content: &[u8],
    signature_der: &[u8],
    trust: Option<&TrustAnchors>,
) -> SignatureCheck {
    // The certificates come apart from the signature, parsed once per process (see
    // `signature_certs`), and are handed back to OpenSSL beside it: it looks for the
    // signer among them as among the embedded ones, in the same order.
    let Parsed {
        pkcs7: mut p7,
        certs: embedded,
    } = match signature_certs::parse(signature_der) {
        Ok(p) => p,
        Err(e) => return SignatureCheck::invalid(SmimeError::BadDer(first_error(&e)).to_string()),
    };
    let carried = match certificate_stack(&embedded) {
        Ok(s) => s,
        Err(e) => return SignatureCheck::invalid(first_error(&e)),
    };
    let signer_cert = p7
        .signers(&carried, Pkcs7Flags::empty())
        .ok()
        .and_then(|s| s.iter().next().map(|c| c.to_owned()));
    let Some(signer_cert) = signer_cert else {
        return SignatureCheck::invalid("the signer certificate is not inside the signature");
    };
    let signer = SignerInfo::from_cert(&signer_cert);

    let crypto = (|| -> Result<(), String> {
        let no_store = X509StoreBuilder::new()
            .map_err(|e| first_error(&e))?
            .build();
        // Not `Pkcs7::verify`: it makes OpenSSL copy the whole content into an output
        // buffer (about 2× a 50 MB message at its peak); this digests it in place.
        openssl_detached::verify_detached(
            &mut p7,
            &carried,
            &no_store,
            content,
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| match e {
            openssl_detached::Error::OpenSsl(e) => first_error(&e),
            e => e.to_string(),
        })
    })();

    let (chain_ok, chain_error) = match trust {
        None => (None, None),
        Some(t) => match check_chain(&signer_cert, &embedded, t) {
            Ok(()) => (Some(true), None),
            Err(e) => (Some(false), Some(e)),
        },
    };
    SignatureCheck {
        valid: crypto.is_ok(),
        reason: crypto
            .err()
            .map(|e| format!("signature does not match the content: {e}")),
        signer: Some(signer),
        chain_ok,
        chain_error,
        signer_cert: Some(signer_cert),
    }
}

/// `certs` as an OpenSSL stack (each a new reference to the same certificate).
fn certificate_stack(certs: &[X509]) -> Result<Stack<X509>, openssl::error::ErrorStack> {
    let mut stack = Stack::new()?;
    for c in certs {
        stack.push(c.clone())?;
    }
    Ok(stack)
}

fn check_chain(cert: &X509, untrusted: &[X509], trust: &TrustAnchors) -> Result<(), String> {
    let chain = certificate_stack(untrusted).map_err(|e| first_error(&e))?;
    let mut ctx = X509StoreContext::new().map_err(|e| first_error(&e))?;
    let (ok, err) = ctx
        .init(&trust.store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .map_err(|e| first_error(&e))?;
    if ok {
        Ok(())
    } else {
        Err(err.error_string().to_string())
    }
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| e.to_string())
}

fn name_line(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(e.data().as_slice()).into_owned());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn subject_line(cert: &X509) -> String {
    name_line(cert.subject_name())
}

/// The first rfc822Name of the subjectAltName, else the emailAddress of the subject.
pub fn cert_email(cert: &X509) -> Option<String> {
    if let Some(sans) = cert.subject_alt_names() {
        for n in sans.iter() {
            if let Some(e) = n.email() {
                return Some(e.to_string());
            }
        }
    }
    cert.subject_name()
        .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

/// Whether `cert` is within its validity period at `at` (rule §6.2 "validity period"; the
/// caller passes its clock's instant, so tests and the trace agree on it).
pub fn cert_valid_at(cert: &X509Ref, at: jiff::Timestamp) -> bool {
    let Ok(t) = openssl::asn1::Asn1Time::from_unix(at.as_second() as _) else {
        return false;
    };
    cert.not_before() <= t && cert.not_after() >= t
}
