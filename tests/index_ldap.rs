//! `pecd index refresh` against a real OpenLDAP `slapd` (Debian packages `slapd` and
//! `ldap-utils`: `/usr/sbin/slapd`, `ldapadd`), started on free loopback ports with a
//! throwaway `slapd.conf`, an mdb database in a temp dir, OpenLDAP's `core.schema` and a
//! schema this test writes itself for the index attributes and the `provider` object class
//! (rules digest §8.1). slapd serves `ldaps://` and `ldap://` (with StartTLS) with a
//! certificate of a dev PKI made for the directory (`pecd::pki::generate_dev_pki`: SAN
//! 127.0.0.1). Skipped, with a printed `SKIP:` reason, when slapd cannot be set up.
//!
//! Two instances made by `pecd init` (pec.alfa.test, pec.beta.test) are exported with
//! `pecd index export` and loaded with `ldapadd` under `o=postacert`. A third instance:
//! is refused a plain `ldap://` URL without `index.ldap_insecure`; fails to refresh over
//! `ldaps://` while the directory's CA is not trusted; refreshes over `ldaps://` (server
//! task and CLI) and over StartTLS once `index.ldap_ca` names that CA; then an invalid
//! entry added to the directory makes the next refresh fail with the reason and leaves the
//! index as it was; with slapd stopped, a refresh fails with a clear message and leaves the
//! index as it was.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT_DN: &str = "cn=admin,o=postacert";
const ROOT_PW: &str = "pecd-test";

/// The index schema of digest §8.1, in slapd.conf syntax.
const PEC_SCHEMA: &str = r#"
attributetype ( 1.3.6.1.4.1.16572.2.2.1 NAME 'providerCertificateHash'
    EQUALITY caseIgnoreIA5Match
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
attributetype ( 1.3.6.1.4.1.16572.2.2.2 NAME 'providerCertificate'
    EQUALITY certificateExactMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.8 )
attributetype ( 1.3.6.1.4.1.16572.2.2.3 NAME 'providerName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.16572.2.2.4 NAME 'mailReceipt'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.16572.2.2.5 NAME 'managedDomains'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
attributetype ( 1.3.6.1.4.1.16572.2.2.6 NAME 'LDIFLocationURL'
    EQUALITY caseExactMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.16572.2.2.7 NAME 'providerUnit'
    EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.16572.2.1.1 NAME 'LDIFLocationURLObject' SUP top AUXILIARY
    MAY LDIFLocationURL )
objectclass ( 1.3.6.1.4.1.16572.2.1.2 NAME 'provider' SUP top STRUCTURAL
    MUST ( providerCertificateHash $ providerCertificate $ providerName $ mailReceipt $
           managedDomains )
    MAY ( description $ LDIFLocationURL $ providerUnit ) )
"#;

fn pecd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args(args)
        .env("PECD_LOG", "warn")
        .output()
        .expect("run pecd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = pecd(args);
    assert!(
        out.status.success(),
        "pecd {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn init(dir: &Path, domain: &str) -> String {
    ok(&["init", "--dir", dir.to_str().unwrap(), "--domain", domain]);
    dir.join("pecd.toml").to_str().unwrap().to_string()
}

fn find(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Where Debian's slapd keeps its backend modules (`back_mdb.so`); `None` when mdb is
/// built in.
fn module_dir() -> Option<&'static str> {
    [
        "/usr/lib/ldap",
        "/usr/lib/x86_64-linux-gnu/ldap",
        "/usr/lib64/openldap",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("back_mdb.so").is_file())
}

/// Kills and reaps slapd however the test ends.
struct Slapd {
    child: Option<Child>,
    log: PathBuf,
    /// `ldap://127.0.0.1:PORT` (plain, StartTLS offered).
    url: String,
    /// `ldaps://127.0.0.1:PORT`.
    ldaps_url: String,
    /// The CA that issued slapd's certificate.
    ca: PathBuf,
}

impl Slapd {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts slapd in `dir`, or says why it cannot.
fn start_slapd(dir: &Path) -> Result<Slapd, String> {
    let slapd = find("slapd", &["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .ok_or("slapd not installed (Debian package slapd)")?;
    find("ldapadd", &[]).ok_or("ldapadd not installed (Debian package ldap-utils)")?;
    let core = [
        "/etc/ldap/schema/core.schema",
        "/etc/openldap/schema/core.schema",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .ok_or("OpenLDAP core.schema not found")?;
    let db = dir.join("db");
    std::fs::create_dir_all(&db).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("pec.schema"), PEC_SCHEMA).map_err(|e| e.to_string())?;
    // The directory's own PKI: its server certificate names 127.0.0.1.
    let domain = pecd::pec::address::Domain::parse("ldap.directory.test").unwrap();
    let pki = pecd::pki::generate_dev_pki(&dir.join("pki"), &domain, "Directory CA", false)
        .map_err(|e| e.to_string())?;
    let mut conf = format!(
        "include {core}\ninclude {}\npidfile {}\nargsfile {}\n\
         TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
        dir.join("pec.schema").display(),
        dir.join("slapd.pid").display(),
        dir.join("slapd.args").display(),
        pki.ca_cert.display(),
        pki.tls_cert.display(),
        pki.tls_key.display(),
    );
    if let Some(m) = module_dir() {
        conf.push_str(&format!("modulepath {m}\nmoduleload back_mdb\n"));
    }
    conf.push_str(&format!(
        "database mdb\nmaxsize 16777216\nsuffix \"o=postacert\"\nrootdn \"{ROOT_DN}\"\n\
         rootpw {ROOT_PW}\ndirectory {}\naccess to * by * read\n",
        db.display()
    ));
    let conf_path = dir.join("slapd.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;

    let port = free_port()?;
    let tls_port = free_port()?;
    let url = format!("ldap://127.0.0.1:{port}");
    let ldaps_url = format!("ldaps://127.0.0.1:{tls_port}");
    let log = dir.join("slapd.log");
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    // `-d` keeps slapd in the foreground (so it is our child to kill); level 256 = stats.
    let child = Command::new(&slapd)
        .args(["-f", conf_path.to_str().unwrap()])
        .args(["-h", &format!("{url}/ {ldaps_url}/")])
        .args(["-d", "256"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", slapd.display()))?;
    let mut s = Slapd {
        child: Some(child),
        log,
        url,
        ldaps_url,
        ca: pki.ca_cert,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
        {
            return Ok(s);
        }
        let exited = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            let why = format!(
                "slapd did not start ({}); its log:\n{}",
                exited.map_or("timed out".into(), |st| st.to_string()),
                s.log()
            );
            s.stop();
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ldapadd(slapd: &Slapd, ldif: &str) -> Output {
    let mut child = Command::new("ldapadd")
        .args(["-x", "-H", &slapd.url, "-D", ROOT_DN, "-w", ROOT_PW])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ldapadd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ldapadd_ok(slapd: &Slapd, ldif: &str) {
    let out = ldapadd(slapd, ldif);
    assert!(
        out.status.success(),
        "ldapadd failed:\n{}{}\nLDIF:\n{ldif}\nslapd log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        slapd.log()
    );
}

/// An export without its `version: 1` line (one per ldapadd input is enough).
fn export(config: &str) -> String {
    let ldif = ok(&["index", "export", "--config", config]);
    ldif.trim_start_matches("version: 1\n")
        .trim_start_matches('\n')
        .to_string()
}

fn listed_names(config: &str) -> Vec<String> {
    let mut names: Vec<String> = ok(&["index", "list", "--json", "--config", config])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["managed_domains"][0].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn refresh_from_a_real_slapd() {
    let tmp = tempfile::tempdir().unwrap();
    let mut slapd = match start_slapd(&tmp.path().join("slapd")) {
        Ok(s) => s,
        Err(why) => {
            assert!(
                std::env::var_os("PECD_REQUIRE_TOOLS").is_none_or(|v| v.is_empty()),
                "slapd cannot be set up: {why} (PECD_REQUIRE_TOOLS is set: this must run here)"
            );
            println!("SKIP: {why}");
            return;
        }
    };

    let alfa = init(&tmp.path().join("alfa"), "pec.alfa.test");
    let beta = init(&tmp.path().join("beta"), "pec.beta.test");
    let gamma = init(&tmp.path().join("gamma"), "pec.gamma.test");
    let gamma_index = tmp.path().join("gamma/data/index.ldif");

    ldapadd_ok(
        &slapd,
        "dn: o=postacert\nobjectClass: top\nobjectClass: organization\n\
         objectClass: LDIFLocationURLObject\no: postacert\n\
         LDIFLocationURL: https://igpec.example/index.ldif\n",
    );
    let alfa_entry = export(&alfa);
    ldapadd_ok(&slapd, &alfa_entry);
    ldapadd_ok(&slapd, &export(&beta));

    // No ldap_url yet: a clear refusal.
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("index.ldap_url is not set"),
        "{}",
        text(&out.stderr)
    );

    let gamma_toml = std::fs::read_to_string(&gamma).unwrap();
    let with_index = |index: &str| {
        std::fs::write(&gamma, format!("{gamma_toml}\n[index]\n{index}\n")).unwrap();
    };

    // Plain LDAP without ldap_insecure: refused at config validation, naming the fixes.
    with_index(&format!("ldap_url = \"{}\"", slapd.url));
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "plain ldap:// was accepted: {err}");
    assert!(
        err.contains("index.ldap_url")
            && err.contains("is plain LDAP")
            && err.contains("index.ldap_insecure = true"),
        "{err}"
    );

    // ldaps:// while the directory's CA is not trusted: the handshake fails, nothing is
    // fetched (a man in the middle with any certificate gets the same).
    with_index(&format!("ldap_url = \"{}\"", slapd.ldaps_url));
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "an untrusted directory was accepted");
    assert!(
        err.contains("cannot connect") && err.contains("certificate"),
        "{err}"
    );
    println!("untrusted directory: {err}");
    assert!(!gamma_index.exists(), "something was fetched");

    // StartTLS on the ldap:// port, with the directory's CA trusted.
    let ca = slapd.ca.to_str().unwrap().to_string();
    with_index(&format!(
        "ldap_url = \"{}\"\nldap_starttls = true\nldap_ca = \"{ca}\"",
        slapd.url
    ));
    let log_before = slapd.log().len();
    let said = ok(&["index", "refresh", "--config", &gamma]);
    assert!(said.contains("refreshed 2 provider entries"), "{said}");
    let starttls_log = slapd.log().split_off(log_before);
    assert!(
        starttls_log.contains("oid=1.3.6.1.4.1.1466.20037"),
        "no StartTLS in the slapd log:\n{starttls_log}"
    );

    // Plain ldap:// explicitly allowed: works, with a warning.
    with_index(&format!(
        "ldap_url = \"{}\"\nldap_insecure = true",
        slapd.url
    ));
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("plain LDAP"),
        "no warning: {}",
        text(&out.stderr)
    );

    // ldaps:// with the directory's CA trusted: the rest of the test.
    with_index(&format!(
        "ldap_url = \"{}\"\nldap_ca = \"{ca}\"",
        slapd.ldaps_url
    ));
    std::fs::remove_file(&gamma_index).unwrap();

    // The server task: a gateway with only its own entry picks up both at its first
    // refresh, and stops when told to.
    server_task_refreshes(&gamma);

    let said = ok(&["index", "refresh", "--config", &gamma]);
    assert!(said.contains("refreshed 2 provider entries"), "{said}");
    assert_eq!(
        listed_names(&gamma),
        vec!["pec.alfa.test".to_string(), "pec.beta.test".to_string()]
    );
    let before = std::fs::read(&gamma_index).unwrap();
    // The refreshed copy is what an LDIF import of the two exports would give.
    let imported = pecd::pec::index::ProviderIndex::parse(&before).unwrap();
    assert!(imported.records().iter().all(|r| r.certificates.len() == 1));

    // An invalid entry in the directory: alfa's certificate under another name with a
    // hash that is not its SHA-1. The whole refresh is refused, the copy kept.
    let bad = alfa_entry
        .replace("pec.alfa.test", "pec.bogus.test")
        .replace("providerName=", "providerName=Bogus ")
        .replace("providerName: ", "providerName: Bogus ");
    let bad = regex_free_replace_hash(&bad);
    ldapadd_ok(&slapd, &bad);
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a bad entry was accepted: {err}");
    assert!(err.contains("the previous index is unchanged"), "{err}");
    assert!(err.contains("problem in the provider entries"), "{err}");
    assert!(err.contains("Bogus"), "{err}");
    println!("bad entry: {err}");
    assert_eq!(std::fs::read(&gamma_index).unwrap(), before);

    // Directory down: a clear failure, the copy kept.
    slapd.stop();
    let out = pecd(&["index", "refresh", "--config", &gamma]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "refresh succeeded with slapd stopped"
    );
    assert!(
        err.contains(&format!("refresh from {} failed", slapd.ldaps_url))
            && err.contains("the previous index is unchanged")
            && err.contains("cannot connect"),
        "{err}"
    );
    println!("directory down: {err}");
    assert_eq!(std::fs::read(&gamma_index).unwrap(), before);
    assert_eq!(listed_names(&gamma).len(), 2);
}

fn server_task_refreshes(config: &str) {
    use pecd::config::Config;
    use pecd::gateway::Gateway;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gw = Gateway::open(
            Config::load(Path::new(config)).unwrap(),
            pecd::clock::system(),
        )
        .unwrap();
        assert_eq!(gw.index().len(), 1, "only the gateway's own entry");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(pecd::pec::index::refresh_task(gw.clone(), stop_rx));
        let deadline = Instant::now() + Duration::from_secs(20);
        while gw.index().len() != 3 {
            assert!(
                Instant::now() < deadline,
                "the refresh task did not refresh"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let alfa = pecd::pec::address::Domain::parse("pec.alfa.test").unwrap();
        assert!(gw.index().is_pec_domain(&alfa));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the refresh task stops when told to")
            .unwrap();
    });
}

/// Replaces the value of `providerCertificateHash:` with 40 zeros.
fn regex_free_replace_hash(ldif: &str) -> String {
    ldif.lines()
        .map(|l| {
            if l.starts_with("providerCertificateHash: ") {
                format!("providerCertificateHash: {}", "0".repeat(40))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
