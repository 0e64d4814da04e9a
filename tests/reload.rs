//! Certificates reloaded without a restart (issue #13): on SIGHUP the server reads the
//! `[tls]` certificate and key again. A file that does not parse, a key that is not the
//! certificate's and an expired certificate are refused with the reason in the log, and the
//! old certificate stays in force; a good renewal is served from the next handshake on, on
//! every TLS listener, while the server keeps running. And TLS sessions resumed from
//! stateless tickets, however many clients came in between.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::Server;
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

/// A certificate for 127.0.0.1 / localhost issued by the instance's dev CA, valid between
/// the two instants (unix seconds); PEM certificate and PEM key.
fn issue(dir: &Path, from: i64, until: i64) -> (Vec<u8>, Vec<u8>) {
    let ca = X509::from_pem(&std::fs::read(dir.join("certs/ca.pem")).unwrap()).unwrap();
    let ca_key: PKey<Private> =
        PKey::private_key_from_pem(&std::fs::read(dir.join("certs/ca.key")).unwrap()).unwrap();
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(until).unwrap())
        .unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_serial()).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn rand_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1
}

/// SHA-256 of the certificate a TLS listener presents (the dev CA is trusted).
async fn served(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let tls = pecd::tls::client_config(&[ca], false).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let der = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    X509::from_der(&der)
        .unwrap()
        .digest(MessageDigest::sha256())
        .unwrap()
        .to_vec()
}

fn fingerprint(pem: &[u8]) -> Vec<u8> {
    X509::from_pem(pem)
        .unwrap()
        .digest(MessageDigest::sha256())
        .unwrap()
        .to_vec()
}

/// Sends SIGHUP and waits for the log line about the certificate.
fn hup(s: &Server, logs: &std::sync::mpsc::Receiver<String>) -> String {
    let pid = s.child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = logs.recv_timeout(Duration::from_millis(200))
            && line.contains("TLS certificate")
        {
            return line;
        }
    }
    panic!("no log line about the certificate after SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_certificate_and_keeps_the_old_one_otherwise() {
    let mut s = Server::new("pec.rinnovo.test", &[]);
    let logs = s.start_json_logs();
    let (smtps, https, ca) = (s.addr("smtps"), s.addr("https"), s.ca());
    let dir = s.dir.path().to_path_buf();
    let (cert_path, key_path) = (dir.join("certs/tls.pem"), dir.join("certs/tls.key"));
    let old = fingerprint(&std::fs::read(&cert_path).unwrap());
    assert_eq!(served(smtps, &ca).await, old);

    let now = jiff::Timestamp::now().as_second();
    let (good_cert, good_key) = issue(&dir, now - 60, now + 86_400 * 90);
    let (expired_cert, expired_key) = issue(&dir, now - 86_400 * 90, now - 86_400);
    let bad: [(&str, Vec<u8>, Vec<u8>, &str); 3] = [
        (
            "not PEM",
            b"garbage\n".to_vec(),
            good_key.clone(),
            "tls.pem",
        ),
        (
            "another key",
            good_cert.clone(),
            expired_key.clone(),
            "tls.pem",
        ),
        ("expired", expired_cert, expired_key, "not valid now"),
    ];
    for (what, cert, key, reason) in bad {
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let line = hup(&s, &logs);
        assert!(line.contains("not reloaded"), "{what}: {line}");
        assert!(
            line.contains(reason) || what == "another key",
            "{what}: {line}"
        );
        assert_eq!(served(smtps, &ca).await, old, "{what}: the old one stays");
    }

    std::fs::write(&cert_path, &good_cert).unwrap();
    std::fs::write(&key_path, &good_key).unwrap();
    let line = hup(&s, &logs);
    assert!(line.contains("TLS certificate reloaded"), "{line}");
    let new = fingerprint(&good_cert);
    assert_ne!(new, old);
    assert_eq!(served(smtps, &ca).await, new);
    assert_eq!(served(https, &ca).await, new, "every TLS listener");
    s.stop();
}

/// A mail client that reconnects resumes its TLS session (no certificate, no RSA
/// signature by the server) even after hundreds of other clients' full handshakes: the
/// listeners issue stateless tickets. rustls' default in-memory cache (256 sessions, two
/// per full handshake) would have dropped the first client's by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_session_resumes_after_many_other_clients() {
    let mut s = Server::new("pec.ripresa.test", &[]);
    s.start();
    let (smtps, ca) = (s.addr("smtps"), s.ca());
    // A handshake of a client with its own session cache, reading the greeting (the
    // tickets come after the handshake); whether it was resumed.
    async fn greeted(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut s = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let mut greeting = [0u8; 4];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 ");
        let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        // QUIT, and the server's close: its connection slot is free for the next one.
        s.write_all(b"QUIT\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        resumed
    }
    let first = pecd::tls::client_config(&[ca.as_path()], false).unwrap();
    assert!(
        !greeted(smtps, &first).await,
        "a first connection is a full handshake"
    );
    for _ in 0..200 {
        let other = pecd::tls::client_config(&[ca.as_path()], false).unwrap();
        assert!(!greeted(smtps, &other).await);
    }
    assert!(
        greeted(smtps, &first).await,
        "the first client's session was not resumed"
    );
}
