//! The provider index (`pecd::pec::index`, rules digest §8) through its public API:
//! table-driven LDIF edge cases (accepted and rejected forms, each error naming its line),
//! garbage that must never panic, the limits, the lookups of rules §6.2 / §8.3, the writer's
//! round trip, our own entry built from a configuration, and the atomic save.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use pecd::config::Config;
use pecd::pec::address::{Domain, PecAddress};
use pecd::pec::index::*;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509Builder, X509NameBuilder};

fn cert(cn: &str) -> X509 {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

fn b64(c: &X509) -> String {
    STANDARD.encode(c.to_der().unwrap())
}

fn sha1(c: &X509) -> String {
    certificate_sha1(c).unwrap()
}

fn record(name: &str, domains: &[&str], c: &X509) -> ProviderRecord {
    ProviderRecord {
        dn: format!("providerName={},o=postacert", escape_dn_value(name)),
        name: name.into(),
        unit: None,
        mail_receipt: PecAddress::parse(&format!("ricevute@{}", domains[0])).unwrap(),
        managed_domains: domains.iter().map(|d| Domain::parse(d).unwrap()).collect(),
        certificates: vec![c.clone()],
        certificate_hashes: vec![sha1(c)],
        ldif_url: None,
        description: None,
    }
}

/// A well-formed entry in the RFC 6109 §4.5 shape, one value per line.
fn entry(c: &X509) -> String {
    format!(
        "dn: providerName=Example PEC S.p.A.,o=postacert\n\
         objectclass: top\n\
         objectclass: provider\n\
         providerName: Example PEC S.p.A.\n\
         providerCertificateHash: {}\n\
         providerCertificate;binary:: {}\n\
         mailReceipt: ricevute@pec.example.it\n\
         LDIFLocationURL: https://pec.example.it/index.ldif.p7m\n\
         managedDomains: pec.example.it\n\
         managedDomains: cert.customer.example\n\
         description: Certified mail services\n",
        sha1(c),
        b64(c)
    )
}

fn errors_of(input: &str) -> Vec<String> {
    match ProviderIndex::parse(input.as_bytes()) {
        Ok(i) => panic!("accepted: {i:?}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn accepted_forms() {
    let c = cert("Example");
    let base = entry(&c);
    let folded = {
        // Fold every line longer than 20 bytes at arbitrary points.
        let mut s = String::new();
        for l in base.lines() {
            let mut rest = l;
            let mut first = true;
            while !rest.is_empty() {
                let n = rest.len().min(if first { 20 } else { 13 });
                if !first {
                    s.push(' ');
                }
                s.push_str(&rest[..n]);
                s.push('\n');
                rest = &rest[n..];
                first = false;
            }
        }
        s
    };
    let b64_values = base
        .replace(
            "providerName: Example PEC S.p.A.",
            &format!("providerName:: {}", STANDARD.encode("Example PEC S.p.A.")),
        )
        .replace(
            "mailReceipt: ricevute@pec.example.it",
            &format!(
                "mailReceipt:: {}",
                STANDARD.encode("ricevute@pec.example.it")
            ),
        );
    let oid_names = base
        .replace("providerCertificateHash:", "1.3.6.1.4.1.16572.2.2.1:")
        .replace("managedDomains:", "1.3.6.1.4.1.16572.2.2.5:");
    let cases: Vec<(&str, String)> = vec![
        ("plain", base.clone()),
        ("crlf", base.replace('\n', "\r\n")),
        ("continuation lines", folded.clone()),
        ("folded crlf", folded.replace('\n', "\r\n")),
        ("base64 values", b64_values),
        ("oid attribute names", oid_names),
        (
            "upper-case names",
            base.replace("managedDomains", "MANAGEDDOMAINS")
                .replace("objectclass", "objectClass"),
        ),
        (
            "lower-case hash",
            base.replace(&sha1(&c), &sha1(&c).to_lowercase()),
        ),
        ("colon hash", {
            let h = sha1(&c);
            let colon: Vec<String> = h
                .as_bytes()
                .chunks(2)
                .map(|p| String::from_utf8_lossy(p).into())
                .collect();
            base.replace(&h, &colon.join(":"))
        }),
        (
            "version, comments, root entry",
            format!(
                "version: 1\n# exported\n#  folded comment\n\ndn: o=postacert\nobjectclass: top\n\
             objectclass: organization\no: postacert\n\n\n# provider\n{base}\n\n"
            ),
        ),
        (
            "version above dn, bom",
            format!("\u{feff}version: 1\n{base}"),
        ),
        (
            "changetype add, blank with spaces",
            format!("  \n{}", base.replacen('\n', "\nchangetype: add\n", 1)),
        ),
        (
            "binary option elsewhere",
            base.replace(
                "providerCertificate;binary::",
                "providercertificate;BINARY;x-foo::",
            ),
        ),
        (
            "no binary option",
            base.replace("providerCertificate;binary::", "providerCertificate::"),
        ),
    ];
    for (what, input) in cases {
        let index =
            ProviderIndex::parse(input.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(index.len(), 1, "{what}");
        let r = &index.records()[0];
        assert_eq!(r.name, "Example PEC S.p.A.", "{what}");
        assert_eq!(
            r.dn, "providerName=Example PEC S.p.A.,o=postacert",
            "{what}"
        );
        assert_eq!(
            r.mail_receipt.to_string(),
            "ricevute@pec.example.it",
            "{what}"
        );
        assert_eq!(r.managed_domains.len(), 2, "{what}");
        assert_eq!(r.certificate_hashes, vec![sha1(&c)], "{what}");
        assert!(index.by_certificate(&c).is_some(), "{what}");
    }
}

#[test]
fn rejected_forms_name_the_line() {
    let c = cert("Example");
    let other = cert("Other");
    let base = entry(&c);
    let drop = |attr: &str| {
        base.lines()
            .filter(|l| !l.starts_with(attr))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing providerName",
            drop("providerName:"),
            "line 1: entry \"providerName=Example PEC S.p.A.,o=postacert\" lacks the MUST attribute providerName",
        ),
        (
            "missing mailReceipt",
            drop("mailReceipt"),
            "lacks the MUST attribute mailReceipt",
        ),
        (
            "missing managedDomains",
            drop("managedDomains"),
            "lacks the MUST attribute managedDomains",
        ),
        (
            "missing certificate",
            drop("providerCertificate;"),
            "lacks the MUST attribute providerCertificate",
        ),
        (
            "missing hash",
            drop("providerCertificateHash"),
            "lacks the MUST attribute providerCertificateHash",
        ),
        (
            "hash mismatch",
            base.replace(&sha1(&c), &sha1(&other)),
            "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\": providerCertificateHash",
        ),
        (
            "extra certificate without hash",
            base.replace(
                "mailReceipt",
                &format!("providerCertificate;binary:: {}\nmailReceipt", b64(&other)),
            ),
            "line 7: entry \"providerName=Example PEC S.p.A.,o=postacert\": the certificate with SHA-1",
        ),
        (
            "two names",
            base.replace(
                "providerName: Example PEC S.p.A.\n",
                "providerName: A\nproviderName: B\n",
            ),
            "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\" has 2 values of the single-valued attribute providerName",
        ),
        (
            "bad domain",
            base.replace(
                "managedDomains: pec.example.it",
                "managedDomains: pec..example",
            ),
            "line 9: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid managedDomains",
        ),
        (
            "bad address",
            base.replace("ricevute@pec.example.it", "ricevute"),
            "line 7: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid mailReceipt",
        ),
        (
            "bad hash",
            base.replace(&sha1(&c), "XYZ"),
            "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerCertificateHash",
        ),
        (
            "not a certificate",
            base.replace(&b64(&c), "AAAA"),
            "line 6: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerCertificate",
        ),
        (
            "bad base64",
            base.replace(&b64(&c), "!!!!"),
            "line 6: invalid base64",
        ),
        (
            "no colon",
            base.replace("objectclass: top", "objectclass top"),
            "line 2: expected `attribute: value`",
        ),
        (
            "bad attribute name",
            base.replace("objectclass: top", "object class: top"),
            "line 2: invalid attribute description",
        ),
        (
            "url value",
            base.replace("description: Certified", "description:< file:///etc/passwd"),
            "line 11: description has a URL value",
        ),
        (
            "no dn",
            base.replacen("dn:", "cn:", 1),
            "line 1: an entry must start with `dn:`",
        ),
        (
            "missing blank line",
            format!("{base}{base}"),
            "line 12: a second `dn:`",
        ),
        (
            "stray continuation",
            format!(" folded\n{base}"),
            "line 1: continuation line",
        ),
        (
            "changetype modify",
            base.replacen('\n', "\nchangetype: modify\n", 1),
            "line 2: change records are not supported",
        ),
        (
            "invalid utf-8 name",
            base.replace("providerName: Example PEC S.p.A.", "providerName:: /w=="),
            "line 4: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerName: not UTF-8",
        ),
        (
            "duplicate dn",
            format!("{base}\n{base}"),
            "line 13: entry \"providerName=Example PEC S.p.A.,o=postacert\" appears twice",
        ),
        (
            "duplicate certificate",
            format!("{base}\n{}", base.replace("Example PEC", "Copy PEC")),
            "line 13: entry \"providerName=Copy PEC S.p.A.,o=postacert\": certificate",
        ),
    ];
    for (what, input, want) in cases {
        let errs = errors_of(&input);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{what}: want {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn all_errors_are_collected_in_line_order() {
    let c = cert("Example");
    let good = entry(&c);
    let input = format!(
        "{}\n{}\n{}",
        good.replace("mailReceipt: ricevute@pec.example.it", "mailReceipt: nope"),
        "dn: providerName=X,o=postacert\nbroken line\n",
        good.replace("Example PEC", "Third PEC")
            .replace(&sha1(&c), &"0".repeat(40))
    );
    let errs = errors_of(&input);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("line 7:"), "{errs:#?}");
    assert!(errs[1].starts_with("line 14:"), "{errs:#?}");
    assert!(errs[2].starts_with("line 20:"), "{errs:#?}");
}

#[test]
fn limits() {
    let c = cert("Example");
    let base = entry(&c);
    let small = LdifLimits {
        max_bytes: 100,
        ..LdifLimits::default()
    };
    assert!(matches!(
        ProviderIndex::parse_with_limits(base.as_bytes(), &small),
        Err(IndexError::TooLarge { limit: 100 })
    ));
    let few = LdifLimits {
        max_entries: 2,
        ..LdifLimits::default()
    };
    let three = "dn: a=1\n\ndn: a=2\n\ndn: a=3\n";
    assert!(matches!(
        ProviderIndex::parse_with_limits(three.as_bytes(), &few),
        Err(IndexError::TooManyEntries { limit: 2, .. })
    ));
    let tiny = LdifLimits {
        max_value_bytes: 64,
        ..LdifLimits::default()
    };
    let errs = ProviderIndex::parse_with_limits(base.as_bytes(), &tiny).unwrap_err();
    assert!(
        errs.to_string()
            .contains("line 6: a value is larger than 64 bytes"),
        "{errs}"
    );
    // Errors are capped.
    let many = "x\n\n".repeat(1000);
    let errs = ProviderIndex::parse(many.as_bytes()).unwrap_err();
    assert_eq!(errs.errors().len(), MAX_REPORTED_ERRORS + 1);
    assert!(matches!(
        errs.errors().last(),
        Some(IndexError::TooManyErrors { .. })
    ));
}

#[test]
fn garbage_never_panics() {
    let c = cert("Example");
    let base = entry(&c).into_bytes();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b" :<\n\r#;=-.aZ09+/\xff\xc3";
    for round in 0..3000 {
        let mut input = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let at = (next() as usize) % (input.len() + 1);
            match next() % 3 {
                0 if at < input.len() => {
                    input.remove(at);
                }
                1 => input.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                _ if at < input.len() => input[at] = next() as u8,
                _ => {}
            }
        }
        if round % 10 == 0 {
            input = (0..(next() % 300))
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect();
        }
        let _ = ProviderIndex::parse(&input);
        let _ = parse_ldif(&input, &LdifLimits::default());
    }
}

#[test]
fn lookups() {
    let a = cert("A");
    let b = cert("B");
    let mut rb = record("Beta PEC", &["pec.beta.test", "cert.customer.test"], &b);
    rb.unit = Some("secondary".into());
    rb.dn = "providerUnit=secondary,providerName=Beta PEC,o=postacert".into();
    let rb_main = record("Beta PEC", &["pec.beta.test"], &cert("B2"));
    let index = ProviderIndex::new(vec![
        record("Alfa PEC", &["pec.alfa.test"], &a),
        rb,
        rb_main,
    ])
    .unwrap();
    let d = |s: &str| Domain::parse(s).unwrap();

    assert_eq!(index.by_certificate(&a).unwrap().name, "Alfa PEC");
    assert_eq!(
        index.by_certificate(&b).unwrap().unit.as_deref(),
        Some("secondary")
    );
    assert!(index.by_certificate(&cert("Stranger")).is_none());
    assert_eq!(
        index.by_domain(&d("PEC.Alfa.TEST")).unwrap().name,
        "Alfa PEC"
    );
    // The main record wins over the secondary environment listing the same domain.
    assert!(index.by_domain(&d("pec.beta.test")).unwrap().unit.is_none());
    assert!(
        index
            .by_domain(&d("cert.customer.test"))
            .unwrap()
            .unit
            .is_some()
    );
    assert!(index.is_pec_domain(&d("Cert.Customer.Test")));
    assert!(!index.is_pec_domain(&d("gmail.com")));
    let alfa = index.by_domain(&d("pec.alfa.test")).unwrap();
    assert!(alfa.manages(&d("PEC.ALFA.TEST")));
    assert!(!alfa.manages(&d("pec.beta.test")));
    assert!(alfa.holds_certificate(&a) && !alfa.holds_certificate(&b));
}

#[test]
fn by_certificate_compares_the_whole_certificate() {
    // A record whose hash says "a" but whose certificate is "b" can only be built in
    // code (the parser refuses it); the full comparison must still refuse a match.
    let a = cert("A");
    let b = cert("B");
    let mut r = record("Alfa PEC", &["pec.alfa.test"], &b);
    r.certificate_hashes = vec![sha1(&a).to_lowercase()];
    // The hash match is case-insensitive (caseIgnoreIA5Match, rules §8.3).
    let c = cert("C");
    let mut rc = record("Gamma PEC", &["pec.gamma.test"], &c);
    rc.certificate_hashes = vec![sha1(&c).to_lowercase()];
    let index = ProviderIndex::new(vec![r, rc]).unwrap();
    assert!(index.by_certificate(&a).is_none());
    assert!(index.by_certificate(&b).is_none());
    assert_eq!(index.by_certificate(&c).unwrap().name, "Gamma PEC");
}

#[test]
fn round_trip() {
    let a = cert("A");
    let a2 = cert("A, rollover");
    let mut ra = record(
        "Società PEC, S.p.A.",
        &["pec.alfa.test", "cert.alfa.test"],
        &a,
    );
    ra.certificates.push(a2.clone());
    ra.certificate_hashes.push(sha1(&a2));
    ra.ldif_url = Some("https://pec.alfa.test/index.ldif.p7m".into());
    ra.description = Some(" leading space and\nnewline".into());
    let mut rb = record("#Beta PEC ", &["pec.beta.test"], &cert("B"));
    rb.unit = Some("Ambiente 2".into());
    let index = ProviderIndex::new(vec![ra, rb]).unwrap();
    let text = index.to_ldif().unwrap();
    assert!(text.lines().all(|l| l.len() <= FOLD_COLUMN), "{text}");
    assert!(
        text.contains("\nproviderCertificate;binary:: MII"),
        "{text}"
    );
    assert!(text.contains("dn:: "), "non-ASCII dn is base64: {text}");
    assert!(text.contains("providerName:: "), "{text}");
    let back = ProviderIndex::parse(text.as_bytes()).unwrap();
    assert_eq!(back.records(), index.records());
    assert_eq!(back.to_ldif().unwrap(), text);
    assert_eq!(
        back.records()[1].dn,
        "providerName=\\#Beta PEC\\ ,o=postacert"
    );
    assert_eq!(
        back.records()[0].dn,
        "providerName=Società PEC\\, S.p.A.,o=postacert"
    );
}

#[test]
fn own_entry_from_config() {
    let domain = Domain::parse("pec.alfa.test").unwrap();
    let toml = pecd::pki::dev_config_toml(&domain, "Alfa PEC");
    // Validation wants the PKI files to exist; their content is not read here.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    std::fs::create_dir_all(base.join("certs")).unwrap();
    for f in ["ca.pem", "tls.pem", "tls.key", "signing.pem", "signing.key"] {
        std::fs::write(base.join("certs").join(f), b"").unwrap();
    }
    let config = Config::from_toml_str(&toml, base, &base.join("pecd.toml")).unwrap();
    let c = cert("Alfa");
    let own = ProviderRecord::for_this_provider(&config, &c).unwrap();
    assert_eq!(own.dn, "providerName=Alfa PEC,o=postacert");
    assert_eq!(own.name, "Alfa PEC");
    assert_eq!(own.mail_receipt, config.provider.receipt_mailbox);
    assert_eq!(own.managed_domains, vec![domain.clone()]);
    assert_eq!(own.certificate_hashes, vec![sha1(&c)]);
    let text = own.to_ldif().unwrap();
    assert!(
        text.starts_with(
            "dn: providerName=Alfa PEC,o=postacert\nobjectclass: top\nobjectclass: provider\n"
        ),
        "{text}"
    );
    let back = ProviderIndex::parse(text.as_bytes()).unwrap();
    assert_eq!(back.records(), std::slice::from_ref(&own));
    assert_eq!(
        ProviderIndex::default_path(&config),
        base.join("data").join(INDEX_FILE_NAME)
    );

    // with_own replaces an imported copy of our own entry.
    let imported = ProviderIndex::new(vec![
        own.clone(),
        record("Beta PEC", &["pec.beta.test"], &cert("B")),
    ])
    .unwrap();
    let merged = imported.with_own(own).unwrap();
    assert_eq!(merged.len(), 2);
    assert_eq!(merged.by_certificate(&c).unwrap().name, "Alfa PEC");
}

#[test]
fn save_atomic_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub").join(INDEX_FILE_NAME);
    assert!(ProviderIndex::load_or_empty(&path).unwrap().is_empty());
    assert!(matches!(
        ProviderIndex::load(&path),
        Err(IndexError::Io { .. })
    ));
    let index =
        ProviderIndex::new(vec![record("Alfa PEC", &["pec.alfa.test"], &cert("A"))]).unwrap();
    index.save_atomic(&path).unwrap();
    assert_eq!(ProviderIndex::load(&path).unwrap(), index);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from(INDEX_FILE_NAME)],
        "no temp file left"
    );
}
