//! Unit tests of the configuration parser. Their unwraps see only configuration text and
//! files written here, never peer input.

use super::*;

/// The credential files every valid config needs, created empty (only existence and
/// readability are checked at parse time).
const FILES: &[&str] = &[
    "certs/signing.pem",
    "certs/signing.key",
    "certs/tls.pem",
    "certs/tls.key",
    "certs/ca.pem",
    "certs/chain.pem",
];

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    for f in FILES {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    dir
}

const MINIMAL: &str = r#"
        [provider]
        name = "Example PEC S.p.A."
        domains = ["pec.example.it", "cert.customer.example"]
        [signing]
        cert = "certs/signing.pem"
        key = "certs/signing.key"
        [tls]
        cert = "certs/tls.pem"
        key = "certs/tls.key"
    "#;

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, dir, &dir.join("pecd.toml"))
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let dir = fixture();
    let c = parse_in(dir.path(), MINIMAL).unwrap();
    assert_eq!(c.provider.domains[0].as_str(), "pec.example.it");
    assert_eq!(
        c.provider.service_address.to_string(),
        "posta-certificata@pec.example.it"
    );
    assert_eq!(c.provider.receipt_mailbox, c.provider.service_address);
    assert_eq!(c.provider.hostname, "mail.pec.example.it");
    assert_eq!(c.listen, ListenConfig::default());
    assert_eq!(c.listen.smtp, Some("0.0.0.0:25".parse().unwrap()));
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.limits.max_message_bytes, 52_428_800);
    assert_eq!(c.trace, TraceConfig::default());
    assert_eq!(c.store.dir, dir.path().join("data"));
    assert!(c.store.group_commit);
    assert!(c.routes.is_empty() && c.trust.ca.is_empty() && c.antivirus.clamd.is_none());
}

#[test]
fn full_config_is_read_and_relative_paths_resolved() {
    let dir = fixture();
    let text = format!(
        r#"{MINIMAL}
            [trust]
            ca = ["certs/ca.pem", "{abs}"]
            [listen]
            smtp = "127.0.0.1:2525"
            https = "off"
            imaps = "[::1]:9993"
            [limits]
            max_recipients = 50
            max_message_bytes = 31457280
            [store]
            dir = "/var/lib/pecd"
            group_commit = false
            [trace]
            retention_months = 36
            [routes]
            "pec.other.test" = "127.0.0.1:2526"
            "pec.third.test" = "mx.third.test:25"
            [relay]
            trusted_ca = ["certs/ca.pem"]
            [antivirus]
            clamd = "/run/clamav/clamd.ctl"
            "#,
        abs = dir.path().join("certs/chain.pem").display()
    );
    let c = parse_in(dir.path(), &text).unwrap();
    assert_eq!(c.signing.cert, dir.path().join("certs/signing.pem"));
    assert_eq!(
        c.trust.ca,
        vec![
            dir.path().join("certs/ca.pem"),
            dir.path().join("certs/chain.pem")
        ]
    );
    assert_eq!(c.listen.smtp, Some("127.0.0.1:2525".parse().unwrap()));
    assert_eq!(c.listen.https, None);
    assert_eq!(c.listen.submission, Some("0.0.0.0:587".parse().unwrap()));
    assert_eq!(c.limits.max_recipients, 50);
    assert_eq!(c.store.dir, PathBuf::from("/var/lib/pecd"));
    assert!(!c.store.group_commit);
    assert_eq!(c.trace.retention_months, 36);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.routes[&Domain::parse("pec.other.test").unwrap()],
        "127.0.0.1:2526"
    );
    assert_eq!(c.relay.trusted_ca.len(), 1);
    assert_eq!(c.antivirus.clamd.as_deref(), Some("/run/clamav/clamd.ctl"));
}

#[test]
fn load_resolves_against_the_config_directory() {
    let dir = fixture();
    let path = dir.path().join("pecd.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    // Relative to the file, not to the working directory of the test.
    let c = Config::load(&path).unwrap();
    assert_eq!(c.path, path);
    assert_eq!(c.tls.key, dir.path().join("certs/tls.key"));
    assert!(matches!(
        Config::load(&dir.path().join("nope.toml")),
        Err(ConfigError::Read { .. })
    ));
}

/// Each case: a config text and the (key, message fragment) pairs it must report, all
/// of them in one error.
#[test]
fn every_problem_is_reported_together_with_its_key() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            r#"
                [provider]
                name = ""
                domains = ["pec.example.it", "bad..dom", "PEC.example.it"]
                service_address = "posta-certificata@elsewhere.it"
                hostname = "not a host"
                [signing]
                cert = "certs/missing.pem"
                [tls]
                cert = "certs/tls.pem"
                key = "certs"
                [trust]
                ca = ["certs/ca.pem", 7]
                [listen]
                smtp = "25"
                submission = "0.0.0.0:4465"
                smtps = "127.0.0.1:4465"
                [limits]
                max_recipients = 10
                max_message_bytes = 1000
                max_line_length = 0
                default_quota_bytes = -1
                command_timeout_secs = "300"
                [trace]
                retention_months = 12
                [routes]
                "pec.b.test" = "127.0.0.1"
                "bad..dom" = "127.0.0.1:25"
                pec.c.test = "127.0.0.1:25"
                [antivirus]
                clamd = "clamd-socket"
                [index]
                ldap_url = "ldap://dir.example"
                ldap_base = "postacert"
                refresh_secs = 172800
                "#,
            &[
                ("provider.name", "must not be empty"),
                ("provider.domains[1]", "\"bad..dom\" is not a valid domain"),
                ("provider.domains[2]", "already listed"),
                ("provider.service_address", "not one of provider.domains"),
                ("provider.hostname", "not a valid domain"),
                ("signing.cert", "does not exist"),
                ("signing.key", "missing (required)"),
                ("tls.key", "not a regular file"),
                ("trust.ca[1]", "expected a string"),
                ("listen.smtp", "is not \"IP:PORT\""),
                ("listen.smtps", "clashes with listen.submission"),
                ("limits.max_recipients", "below 50: DM 2/11/2005 art. 12"),
                ("limits.max_message_bytes", "30 MiB: DM 2/11/2005 art. 12"),
                ("limits.max_line_length", "RFC 5321"),
                ("limits.default_quota_bytes", "out of range"),
                ("limits.command_timeout_secs", "expected an integer"),
                ("trace.retention_months", "DPR 68/2005"),
                ("routes.\"pec.b.test\"", "no port"),
                ("routes.\"bad..dom\"", "not a valid domain"),
                ("routes.\"pec\"", "quote domain keys"),
                ("antivirus.clamd", "absolute unix socket path"),
                ("index.ldap_url", "set index.ldap_insecure = true"),
                ("index.ldap_base", "is not a DN"),
                ("index.refresh_secs", "out of range"),
            ],
        ),
        (
            r#"
                colour = "blue"
                [provider]
                nmae = "typo"
                domains = []
                [signing]
                cert = "certs/signing.pem"
                key = "certs/signing.key"
                [tls]
                cert = "certs/tls.pem"
                key = "certs/tls.key"
                [limits]
                max_mesage_bytes = 1
                "#,
            &[
                ("colour", "unknown section or key"),
                (
                    "provider.nmae",
                    "unknown key (known keys in [provider]: name,",
                ),
                ("provider.name", "missing (required)"),
                ("provider.domains", "at least one"),
                ("limits.max_mesage_bytes", "unknown key"),
            ],
        ),
        (
            r#"
                provider = "x"
                [tls]
                cert = "certs/tls.pem"
                key = "certs/tls.key"
                "#,
            &[
                ("provider", "expected a table"),
                ("provider.name", "missing (required)"),
                ("provider.domains", "at least one"),
                ("signing.cert", "missing (required)"),
                ("signing.key", "missing (required)"),
            ],
        ),
    ];
    let dir = fixture();
    for (text, expected) in cases {
        let err = parse_in(dir.path(), text).unwrap_err();
        let problems = err.problems();
        let shown = err.to_string();
        for (key, fragment) in *expected {
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == *key && p.message.contains(fragment)),
                "missing {key}: …{fragment}… in\n{shown}"
            );
        }
        assert_eq!(
            problems.len(),
            expected.len(),
            "unexpected extras in\n{shown}"
        );
        assert!(shown.contains("pecd.toml"), "file not named: {shown}");
    }
}

#[test]
fn syntax_errors_name_the_file() {
    let err = parse_in(Path::new("/x"), "[provider\nname=").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().starts_with("/x/pecd.toml: not valid TOML"));
}

#[test]
fn host_port_shapes() {
    for ok in [
        "127.0.0.1:25",
        "[::1]:25",
        "mx.example.it:2525",
        "localhost:1",
    ] {
        assert!(check_host_port(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "host",
        "host:",
        "host:0",
        "host:99999",
        "::1:25",
        "a b:25",
        ":25",
    ] {
        assert!(check_host_port(bad).is_err(), "{bad}");
    }
}

/// `config/pecd.toml` must parse, document every key (set, or shown commented out), and
/// show the defaults this code actually uses.
#[test]
fn annotated_example_is_in_sync() {
    let example = include_str!("../../config/pecd.toml");
    let dir = fixture();
    let (parsed, absent) = parse(example, dir.path(), &dir.path().join("pecd.toml"));
    let c = parsed.unwrap();
    for key in &absent {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        assert!(
            example.contains(&format!("# {leaf} = ")),
            "config/pecd.toml does not document {key}"
        );
    }
    let d = parse_in(dir.path(), MINIMAL).unwrap();
    assert_eq!(c.listen, d.listen, "listen defaults drifted");
    assert_eq!(c.limits, d.limits, "limits defaults drifted");
    assert_eq!(c.trace, d.trace, "trace defaults drifted");
    assert_eq!(c.store, d.store, "store defaults drifted");
    assert_eq!(c.antivirus, d.antivirus, "antivirus defaults drifted");
    assert_eq!(
        (
            c.relay.max_transactions,
            c.relay.max_transactions_per_domain
        ),
        (
            d.relay.max_transactions,
            d.relay.max_transactions_per_domain
        ),
        "relay defaults drifted"
    );
    assert_eq!(c.index, d.index, "index defaults drifted");
    assert_eq!(c.provider.service_address, d.provider.service_address);
    assert_eq!(c.provider.receipt_mailbox, d.provider.receipt_mailbox);
    assert_eq!(c.provider.hostname, d.provider.hostname);
}

#[test]
fn total_size_and_login_limits() {
    let dir = fixture();
    let d = parse_in(dir.path(), MINIMAL).unwrap().limits;
    assert_eq!(d.max_total_bytes, 100 * 1024 * 1024);
    assert_eq!((d.auth_max_failures, d.auth_lockout_secs), (10, 900));
    // Absent, it follows a larger max_message_bytes instead of refusing it.
    let big = format!("{MINIMAL}\n[limits]\nmax_message_bytes = 209715200\n");
    let c = parse_in(dir.path(), &big).unwrap().limits;
    assert_eq!(c.max_total_bytes, 209_715_200);
    let set = format!(
        "{MINIMAL}\n[limits]\nmax_total_bytes = 62914560\nauth_max_failures = 3\nauth_lockout_secs = 60\n"
    );
    let c = parse_in(dir.path(), &set).unwrap().limits;
    assert_eq!(
        (c.max_total_bytes, c.auth_max_failures, c.auth_lockout_secs),
        (62_914_560, 3, 60)
    );
    for (text, key, fragment) in [
        (
            "max_total_bytes = 40000000",
            "limits.max_total_bytes",
            "below limits.max_message_bytes",
        ),
        (
            "max_message_bytes = 31457280\nmax_total_bytes = 1000",
            "limits.max_total_bytes",
            "DM 2/11/2005 art. 12",
        ),
        (
            "auth_max_failures = 0",
            "limits.auth_max_failures",
            "out of range",
        ),
        (
            "auth_lockout_secs = 0",
            "limits.auth_lockout_secs",
            "out of range",
        ),
    ] {
        let err = parse_in(dir.path(), &format!("{MINIMAL}\n[limits]\n{text}\n")).unwrap_err();
        let p = err.problems();
        assert!(
            p.len() == 1 && p[0].key == key && p[0].message.contains(fragment),
            "{text}: {err}"
        );
    }
}

/// Issue #13: port 25 takes what a provider builds around a maximum-size original; the
/// connection and DATA limits have defaults, bounds, and per-network limits by CIDR.
#[test]
fn incoming_size_connection_and_data_limits() {
    let dir = fixture();
    let d = parse_in(dir.path(), MINIMAL).unwrap().limits;
    // The QP worst case of a 50 MiB original (×3.12) plus 1 MiB of envelope.
    assert_eq!(
        d.max_incoming_message_bytes,
        52_428_800 / 8 * 25 + 1_048_576
    );
    assert!(d.max_incoming_message_bytes as f64 > 52_428_800.0 * 78.0 / 25.0);
    assert_eq!(
        (d.max_connections, d.max_connections_per_listener),
        (2000, 1000)
    );
    assert_eq!(d.max_inflight_data_bytes, 1 << 30);
    assert_eq!(d.max_processing_bytes, 256 << 20);
    assert!(d.network_connections.is_empty());
    // It follows max_message_bytes when absent.
    let big = format!("{MINIMAL}\n[limits]\nmax_message_bytes = 209715200\n");
    let c = parse_in(dir.path(), &big).unwrap().limits;
    assert_eq!(
        c.max_incoming_message_bytes,
        209_715_200 / 8 * 25 + 1_048_576
    );
    assert_eq!(c.max_inflight_data_bytes, 2 * c.max_incoming_message_bytes);
    let set = format!(
        "{MINIMAL}\n[limits]\nnetwork_connections = {{ \"10.0.0.0/8\" = 500, \"192.0.2.7\" = 300, \"2001:db8::/32\" = 50 }}\n"
    );
    let c = parse_in(dir.path(), &set).unwrap().limits;
    let mut nets: Vec<String> = c
        .network_connections
        .iter()
        .map(|(n, l)| format!("{n}={l}"))
        .collect();
    nets.sort();
    assert_eq!(
        nets,
        ["10.0.0.0/8=500", "192.0.2.7/32=300", "2001:db8::/32=50"]
    );
    for (text, key, fragment) in [
        (
            "max_incoming_message_bytes = 52428800",
            "limits.max_incoming_message_bytes",
            "base64",
        ),
        (
            "max_inflight_data_bytes = 1000",
            "limits.max_inflight_data_bytes",
            "must fit",
        ),
        (
            "max_connections = 0",
            "limits.max_connections",
            "out of range",
        ),
        (
            "network_connections = { \"10.0.0.1/8\" = 5 }",
            "limits.network_connections.\"10.0.0.1/8\"",
            "host bits",
        ),
        (
            "network_connections = { \"nat\" = 5 }",
            "limits.network_connections.\"nat\"",
            "not a network",
        ),
        (
            "network_connections = { \"10.0.0.0/8\" = 0 }",
            "limits.network_connections.\"10.0.0.0/8\"",
            "out of range",
        ),
    ] {
        let err = parse_in(dir.path(), &format!("{MINIMAL}\n[limits]\n{text}\n")).unwrap_err();
        let p = err.problems();
        assert!(
            p.len() == 1 && p[0].key == key && p[0].message.contains(fragment),
            "{text}: {err}"
        );
    }
}

/// Digest §8.2: the index is fetched over a channel that authenticates the directory.
/// Plain `ldap://` is refused unless `ldap_insecure` says so; `ldaps://` and StartTLS are
/// accepted, with `ldap_ca` a readable PEM of certificates.
#[test]
fn index_ldap_needs_tls_or_an_explicit_insecure() {
    let dir = fixture();
    let pki = dir.path().join("pki");
    let d = crate::pec::address::Domain::parse("pec.example.it").unwrap();
    crate::pki::generate_dev_pki(&pki, &d, "Example PEC S.p.A.", false).unwrap();
    let with = |index: &str| parse_in(dir.path(), &format!("{MINIMAL}\n[index]\n{index}\n"));
    let refused = |index: &str, key: &str, fragment: &str| {
        let err = with(index).unwrap_err();
        assert!(
            err.problems()
                .iter()
                .any(|p| p.key == key && p.message.contains(fragment)),
            "{index}: expected {key}: …{fragment}… in\n{err}"
        );
        assert_eq!(err.problems().len(), 1, "{err}");
    };

    // Plain LDAP: refused, naming the key and the ways out.
    let err = with("ldap_url = \"ldap://dir.example:389\"").unwrap_err();
    let shown = err.to_string();
    for fix in [
        "index.ldap_url",
        "ldaps://",
        "index.ldap_starttls = true",
        "index.ldap_insecure = true",
    ] {
        assert!(shown.contains(fix), "{fix} not named in\n{shown}");
    }
    // … unless explicitly allowed.
    let c = with("ldap_url = \"ldap://dir.example\"\nldap_insecure = true").unwrap();
    assert!(c.index.ldap_is_plain() && c.index.ldap_insecure);

    let c = with("ldap_url = \"LDAPS://dir.example\"").unwrap();
    assert!(!c.index.ldap_is_plain() && !c.index.ldap_starttls);
    let c =
        with("ldap_url = \"ldap://dir.example\"\nldap_starttls = true\nldap_ca = \"pki/ca.pem\"")
            .unwrap();
    assert!(!c.index.ldap_is_plain());
    assert_eq!(c.index.ldap_ca, Some(dir.path().join("pki/ca.pem")));

    refused(
        "ldap_url = \"ldaps://dir.example\"\nldap_starttls = true",
        "index.ldap_starttls",
        "ldap:// only",
    );
    refused(
        "ldap_url = \"ldaps://dir.example\"\nldap_ca = \"pki/missing.pem\"",
        "index.ldap_ca",
        "does not exist",
    );
    // certs/ca.pem of the fixture is empty: not a CA file.
    refused(
        "ldap_url = \"ldaps://dir.example\"\nldap_ca = \"certs/ca.pem\"",
        "index.ldap_ca",
        "no certificate found",
    );
    refused(
        "ldap_url = \"ldap://dir.example\"\nldap_insecure = true\nldap_ca = \"pki/ca.pem\"",
        "index.ldap_ca",
        "plain LDAP",
    );
    refused(
        "ldap_url = \"ldaps://dir.example/o=postacert\"",
        "index.ldap_url",
        "no path",
    );
    refused(
        "ldap_url = \"http://dir.example\"",
        "index.ldap_url",
        "is not",
    );
}

/// `[trust] crl_dir`: optional; must be a directory whose every CRL file loads, and each
/// one that does not is reported by name under the key.
#[test]
fn trust_crl_dir() {
    let dir = fixture();
    assert_eq!(parse_in(dir.path(), MINIMAL).unwrap().trust.crl_dir, None);
    std::fs::create_dir(dir.path().join("crls")).unwrap();
    // Files that are not *.pem / *.crl are not CRLs and are ignored.
    std::fs::write(dir.path().join("crls/README"), b"dropped by cron").unwrap();
    let text = format!("{MINIMAL}\n[trust]\ncrl_dir = \"crls\"\n");
    let c = parse_in(dir.path(), &text).unwrap();
    assert_eq!(c.trust.crl_dir, Some(dir.path().join("crls")));

    std::fs::write(dir.path().join("crls/broken.crl"), b"not a CRL").unwrap();
    std::fs::write(dir.path().join("crls/empty.pem"), b"").unwrap();
    let err = parse_in(dir.path(), &text).unwrap_err();
    let about: Vec<&Problem> = err
        .problems()
        .iter()
        .filter(|p| p.key == "trust.crl_dir")
        .collect();
    assert_eq!(about.len(), 2, "{err}");
    assert!(about[0].message.contains("broken.crl"), "{err}");
    assert!(about[1].message.contains("empty.pem"), "{err}");

    let missing = format!("{MINIMAL}\n[trust]\ncrl_dir = \"nowhere\"\n");
    let err = parse_in(dir.path(), &missing).unwrap_err();
    assert!(
        err.problems()
            .iter()
            .any(|p| p.key == "trust.crl_dir" && p.message.contains("not a directory")),
        "{err}"
    );
}

#[test]
fn plans_and_spamd_are_read_and_checked() {
    let dir = fixture();
    let ok = format!(
        "{MINIMAL}\n[antispam]\nspamd = \"/run/spamd.sock\"\n\
         [plans.base]\nmailbox_bytes = 2000000000\n[plans.maxi-2]\nmailbox_bytes = 4000000000\n\
         archive_bytes = 8000000000\n"
    );
    let c = parse_in(dir.path(), &ok).unwrap();
    assert_eq!(c.antispam.spamd.as_deref(), Some("/run/spamd.sock"));
    let base = c.plan("base").unwrap();
    assert_eq!(
        (base.mailbox_bytes, base.archive_bytes),
        (2_000_000_000, None)
    );
    let maxi = c.plan("maxi-2").unwrap();
    assert_eq!(
        (maxi.mailbox_bytes, maxi.archive_bytes),
        (4_000_000_000, Some(8_000_000_000))
    );
    let unknown = c.plan("oro").unwrap_err().to_string();
    assert_eq!(unknown, "no plan \"oro\" (configured: base, maxi-2)");
    let none = parse_in(dir.path(), MINIMAL).unwrap();
    assert!(none.plans.is_empty());
    assert!(
        none.plan("base")
            .unwrap_err()
            .to_string()
            .contains("no [plans.NAME]")
    );

    let bad = format!(
        "{MINIMAL}\n[antispam]\nspamd = \"spamd\"\n\
         [plans.tiny]\nmailbox_bytes = 1000\n[plans.\"a b\"]\nmailbox_bytes = 2000000000\n\
         [plans.odd]\nmailbox_bytes = \"2 GB\"\n[plans.extra]\nmailbox_bytes = 2000000000\narchive = 3\n\
         [plans.small]\nmailbox_bytes = 2000000000\narchive_bytes = 10\n\
         [plans.empty]\n"
    );
    let ConfigError::Invalid { problems, .. } = parse_in(dir.path(), &bad).unwrap_err() else {
        panic!("not Invalid");
    };
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    for want in [
        "antispam.spamd: ",
        "plans.tiny.mailbox_bytes: 1000 is below limits.max_message_bytes",
        "plans.a b: a plan name is",
        "plans.odd.mailbox_bytes: expected an integer",
        "plans.extra.archive: unknown key",
        "plans.empty.mailbox_bytes: missing (required)",
        "plans.small.archive_bytes: 10 is below limits.max_message_bytes",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "{want} not in {text:#?}"
        );
    }
}

mod storage;

/// `[relay]` limits: Postfix's defaults when absent (100 in all, 20 per domain, which a
/// lower total caps), values in range, and a per-domain limit above the total refused
/// with both keys named.
#[test]
fn relay_transaction_limits() {
    let dir = fixture();
    let with = |relay: &str| parse_in(dir.path(), &format!("{MINIMAL}\n[relay]\n{relay}\n"));
    let limits = |relay: &str| {
        let c = with(relay).unwrap();
        (
            c.relay.max_transactions,
            c.relay.max_transactions_per_domain,
        )
    };
    assert_eq!(limits(""), (100, 20));
    assert_eq!(limits("max_transactions = 8"), (8, 8));
    assert_eq!(
        limits("max_transactions = 500\nmax_transactions_per_domain = 64"),
        (500, 64)
    );
    for (text, key, fragment) in [
        (
            "max_transactions = 0",
            "relay.max_transactions",
            "out of range",
        ),
        (
            "max_transactions_per_domain = 0",
            "relay.max_transactions_per_domain",
            "out of range",
        ),
        (
            "max_transactions = \"many\"",
            "relay.max_transactions",
            "expected an integer",
        ),
        (
            "max_transactions = 10\nmax_transactions_per_domain = 20",
            "relay.max_transactions_per_domain",
            "20 is above relay.max_transactions (10)",
        ),
    ] {
        let err = with(text).unwrap_err();
        let p = err.problems();
        assert!(
            p.len() == 1 && p[0].key == key && p[0].message.contains(fragment),
            "{text}: {err}"
        );
    }
}
