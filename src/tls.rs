//! TLS for every listener (rustls with the ring provider): loads the server certificate
//! chain and key named by `[tls]`, and builds client configs for relaying that trust the
//! system roots plus `[relay] trusted_ca`.
//!
//! Owns: PEM loading and rustls configuration. Protocol versions are rustls' defaults
//! (TLS 1.2 and 1.3, no legacy suites): the PEC rules name no minimum (digest §15 item 9).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {detail}")]
    Pem { path: String, detail: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let p = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: p.clone(),
            detail: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: p.clone(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: p });
    }
    Ok(certs)
}

/// The server configuration for the listeners, and the certificate in it, which
/// [`ServerCert::reload`] replaces while they run (SIGHUP, or a change of the files).
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerCert>), TlsError> {
    let current = ServerCert::load(cert, key, jiff::Timestamp::now())?;
    let resolver = Arc::new(ServerCert {
        current: std::sync::RwLock::new(Arc::new(current)),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // Stateless session tickets (encrypted under keys rustls draws in memory, a new one
    // every 6 hours, the previous one still accepted: 12 hours at most): any number of
    // clients can resume, where the default in-memory cache of 256 sessions lets only
    // about a hundred (each full handshake leaves two tickets). A resumed handshake skips
    // the certificate and its RSA signature; in TLS 1.3 it still runs a fresh key exchange
    // (rustls resumes with psk_dhe_ke only), in TLS 1.2 it reuses the sealed master
    // secret. No early data is accepted. Not where a smart card is asked for: see
    // `server_config_with_cards`.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok((Arc::new(cfg), resolver))
}

/// The same server certificate, but the handshake also asks the client for a smart-card
/// (CNS) certificate issued by one of `ca_subjects` (DER names), without requiring one:
/// password users simply send none. The TLS layer only checks that the client holds the
/// key of what it sent ([`CardRequest`]); whether that card may log in, and to which
/// mailbox, is decided at login ([`crate::cns`], [`crate::store::cards`]) so that every
/// refusal has a reason in the log and the trace and counts in the login lockout.
/// Sessions are resumed only from rustls' in-memory cache here (no tickets): a resumed
/// session would carry a card certificate proven hours earlier.
pub fn server_config_with_cards(
    resolver: Arc<ServerCert>,
    ca_subjects: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let p = provider();
    let verifier = Arc::new(CardRequest {
        hints: ca_subjects
            .into_iter()
            .map(rustls::DistinguishedName::from)
            .collect(),
        algs: p.signature_verification_algorithms,
    });
    let cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    Ok(Arc::new(cfg))
}

/// Asks for a client certificate and verifies only the handshake signature made with
/// its key (proof of possession); the certificate itself is judged at login.
#[derive(Debug)]
struct CardRequest {
    hints: Vec<rustls::DistinguishedName>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for CardRequest {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The certificates a client presented in a TLS handshake (leaf first), as openssl
/// certificates; empty when it sent none (or they do not parse).
pub fn peer_chain(conn: &rustls::ServerConnection) -> Vec<openssl::x509::X509> {
    conn.peer_certificates()
        .unwrap_or_default()
        .iter()
        .map_while(|c| openssl::x509::X509::from_der(c).ok())
        .collect()
}

/// The listeners' certificate and key, replaceable while they run.
#[derive(Debug)]
pub struct ServerCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl ServerCert {
    /// Reads a chain and its key and checks them: the key is the certificate's and the
    /// certificate is valid at `now` (a renewal must never put an expired or not yet valid
    /// certificate in force).
    fn load(
        cert: &Path,
        key: &Path,
        now: jiff::Timestamp,
    ) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let certs = load_certs(cert)?;
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            path: key.display().to_string(),
            detail: e.to_string(),
        })?;
        let ck = rustls::sign::CertifiedKey::from_der(certs, der, &provider())?;
        let leaf = ck.end_entity_cert()?;
        let x509 = openssl::x509::X509::from_der(leaf).map_err(|e| TlsError::Pem {
            path: cert.display().to_string(),
            detail: e.to_string(),
        })?;
        if !crate::pec::smime::cert_valid_at(&x509, now) {
            return Err(TlsError::Pem {
                path: cert.display().to_string(),
                detail: format!(
                    "the certificate is not valid now (valid from {} to {})",
                    x509.not_before(),
                    x509.not_after()
                ),
            });
        }
        Ok(ck)
    }

    /// Reads the files again; the new certificate goes into force for the next handshakes
    /// only if it loads and checks ([`Self::load`]); otherwise the old one stays and the
    /// error says why. Returns the new certificate's subject and expiry.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<String, TlsError> {
        let ck = Self::load(cert, key, jiff::Timestamp::now())?;
        let describe = ck
            .end_entity_cert()
            .ok()
            .and_then(|d| openssl::x509::X509::from_der(d).ok())
            .map(|x| {
                format!(
                    "{}, valid until {}",
                    crate::pec::smime::subject_line(&x),
                    x.not_after()
                )
            })
            .unwrap_or_default();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        Ok(describe)
    }
}

/// A client configuration trusting the CAs in `extra_ca` files and, when `system` is
/// true, the operating system's trust store (what production MX relaying verifies against).
pub fn client_config(
    extra_ca: &[impl AsRef<Path>],
    system: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if system {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system trust store");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system trust store loaded");
    }
    for f in extra_ca {
        for c in load_certs(f.as_ref())? {
            roots.add(c).map_err(TlsError::Config)?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
