//! Envelope + receipt build-and-sign throughput per core (issue #2).
//!
//! For a 10 KB and a 10 MB original, one iteration builds what the access and delivery
//! points emit for one message: the signed transport envelope, the acceptance receipt and a
//! delivery receipt completa (which carries the original again). Single-threaded, so the
//! figures are per core. Run: `cargo bench --bench pec` (env `PECD_BENCH_SECS` sets the
//! time per case, default 5).

use std::time::{Duration, Instant};

use pecd::pec::address::{Domain, PecAddress};
use pecd::pec::compose::{Certification, ProviderIdentity};
use pecd::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use pecd::pec::envelope;
use pecd::pec::receipt::{self, Notice};
use pecd::pec::smime::Signer;
use pecd::pec::time::PecTime;

#[path = "common/scratch.rs"]
mod scratch;

fn original(size: usize) -> Vec<u8> {
    let mut m = b"From: a@pec.bench.test\r\nTo: b@pec.bench.test\r\nSubject: bench\r\nMessage-ID: <c@x>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

fn main() {
    let secs: u64 = std::env::var("PECD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = scratch::tempdir();
    let domain = Domain::parse("pec.bench.test").expect("domain");
    pecd::pki::generate_dev_pki(dir.path(), &domain, "Bench PEC", false).expect("pki");
    let read = |n: &str| std::fs::read(dir.path().join(n)).expect("pki file");
    let signer = Signer::from_pem(&read("signing.pem"), &read("signing.key"), b"").expect("signer");
    let id = ProviderIdentity {
        name: "Bench PEC".into(),
        service_address: PecAddress::parse("posta-certificata@pec.bench.test").expect("address"),
        host: "mail.pec.bench.test".into(),
    };
    let cert = Certification {
        mittente: "a@pec.bench.test".into(),
        destinatari: vec![Destinatario {
            address: "b@pec.bench.test".into(),
            tipo: TipoDestinatario::Certificato,
        }],
        risposte: "a@pec.bench.test".into(),
        oggetto: "bench".into(),
        identificativo: "opec-bench@mail.pec.bench.test".into(),
        msgid: Some("<c@x>".into()),
        ricevuta: TipoRicevuta::Completa,
    };
    println!("envelope + acceptance + delivery receipt (completa), build and sign, one core");
    for (label, size) in [("10 KB", 10 * 1024), ("10 MB", 10 * 1024 * 1024)] {
        let orig = original(size);
        // What the receiver finds in the envelope's postacert.eml (its classifier's view).
        let postacert =
            envelope::rewrite_original(orig.clone(), &cert.identificativo, cert.msgid.as_deref());
        let budget = Duration::from_secs(secs);
        let start = Instant::now();
        let mut n = 0u64;
        let mut bytes = 0usize;
        while start.elapsed() < budget || n < 3 {
            let at = PecTime::italian(jiff::Timestamp::now());
            let env = envelope::transport(&id, &signer, &cert, orig.clone(), at).expect("envelope");
            let acc =
                receipt::build(&id, &signer, &cert, Notice::Accettazione, at).expect("acceptance");
            let del = receipt::build(
                &id,
                &signer,
                &cert,
                Notice::AvvenutaConsegna {
                    consegna: "b@pec.bench.test",
                    form: TipoRicevuta::Completa,
                    postacert: Some(&postacert),
                },
                at,
            )
            .expect("delivery");
            bytes += env.message.bytes.len() + acc.bytes.len() + del.bytes.len();
            n += 1;
        }
        let el = start.elapsed().as_secs_f64();
        println!(
            "{label:>6}: {n} messages in {el:.2} s = {:.1} messages/s ({:.1} signatures/s, {:.1} MB/s of output)",
            n as f64 / el,
            3.0 * n as f64 / el,
            bytes as f64 / el / 1e6
        );
    }

    // What the incoming point does with each envelope and each receipt that arrives:
    // verify the signature over the signed part, then the signer's chain to a trusted CA.
    println!("verify a signed envelope of a 10 KB original, one core");
    let trust = pecd::pec::smime::TrustAnchors::from_pem(&read("ca.pem")).expect("trust");
    let env = envelope::transport(
        &id,
        &signer,
        &cert,
        original(10 * 1024),
        PecTime::italian(jiff::Timestamp::now()),
    )
    .expect("envelope");
    // The same signature re-encoded with an indefinite outer length (BER, as some signing
    // tools write it): pecd then hands it to OpenSSL whole, certificates included, as it
    // did every signature before it parsed each certificate once (`pec::signature_certs`).
    let parts = pecd::pec::smime::split_signed(&env.message.bytes).expect("signed parts");
    let der = parts.signature.clone();
    let header = if der[1] & 0x80 == 0 {
        2
    } else {
        2 + usize::from(der[1] & 0x7f)
    };
    let mut ber = vec![0x30, 0x80];
    ber.extend_from_slice(&der[header..]);
    ber.extend_from_slice(&[0, 0]);
    for (label, anchors, sig) in [
        ("signature only", None, &der),
        ("signature and chain", Some(&trust), &der),
        ("the same, BER", Some(&trust), &ber),
    ] {
        let budget = Duration::from_secs(secs);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget || n < 3 {
            let check = pecd::pec::smime::verify_detached(&parts.signed, sig, anchors);
            assert!(check.valid && check.chain_ok != Some(false), "{check:?}");
            n += 1;
        }
        let el = start.elapsed().as_secs_f64();
        println!(
            "{label:>20}: {:.0} verifications/s ({:.0} µs each)",
            n as f64 / el,
            el * 1e6 / n as f64
        );
    }
}
