//! Certificate revocation lists read from local files (rules digest §6.2, "signature
//! validity": check CRL; "if CRLs are cached, refresh often enough to keep the delay after a
//! revocation small").
//!
//! Owns: parsing CRLs (PEM or DER, one per file) from `[trust] crl_dir`, checking their
//! signatures, telling whether a signer certificate is revoked ([`CrlSet::check`]), and
//! the cached snapshot that is reloaded when the files change ([`CrlStore`]). Nothing is
//! fetched from the network: an operator or a cron job drops the CRLs (e.g. downloaded
//! from the certificates' CRL distribution points) into the directory.
//!
//! Untrusted input: the CRL files (operator-supplied, but parsed by OpenSSL and checked).
//!
//! Signature policy: a CRL whose issuer certificate is among the `[trust] ca` certificates
//! must verify with that certificate's key, or it is refused (at start-up: a configuration
//! error; on reload: logged, and the previously loaded version of that file stays in
//! force). When the issuer certificate is not available, the CRL is matched by issuer name
//! only (the openssl crate exposes no authority key identifier for CRLs) and every verdict
//! drawn from it says that its signature was not checked. That is safe in one direction
//! only: an unchecked CRL can make us *distrust* a certificate, never trust one, and the
//! directory is written by the operator.
//!
//! Does I/O (reading the directory), like [`super::index`]'s loaders; [`CrlStore::current`]
//! blocks on the file system, so callers run it off the async executor.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{CrlStatus, X509, X509Crl, X509NameRef};

/// How often [`CrlStore::current`] looks at the directory for changed files, at most:
/// a revocation dropped into `crl_dir` is in force within this delay (rule §6.2).
pub const CRL_RECHECK: Duration = Duration::from_secs(30);

/// Errors of this module, by cause; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a CRL (PEM or DER): {detail}", .path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("{}: the CRL signature does not verify with the key of its issuer {issuer}", .path.display())]
    BadSignature { path: PathBuf, issuer: String },
}

/// One CRL as loaded.
struct LoadedCrl {
    path: PathBuf,
    crl: X509Crl,
    issuer: String,
    /// Verified with the key of an issuer certificate from `[trust] ca`.
    signature_checked: bool,
}

/// Why a certificate is not to be trusted: a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revocation date, RFC 3339 UTC (or OpenSSL's text if it cannot be converted).
    pub revoked_at: String,
    /// The file of the CRL that lists the certificate.
    pub crl: PathBuf,
    /// The CRL issuer, `CN=..., O=...`.
    pub issuer: String,
    /// The CRL signature was verified with the issuer certificate's key.
    pub signature_checked: bool,
}

impl Revocation {
    /// The reason written to the trace and into the anomaly envelope.
    pub fn describe(&self) -> String {
        let file = self.crl.file_name().map_or_else(
            || self.crl.display().to_string(),
            |f| f.to_string_lossy().into(),
        );
        format!(
            "certificato revocato il {} (CRL di {}, file {}{})",
            self.revoked_at,
            self.issuer,
            file,
            if self.signature_checked {
                ""
            } else {
                "; firma della CRL non verificata: certificato dell'emittente assente da [trust] ca"
            }
        )
    }
}

/// A set of loaded CRLs.
#[derive(Default)]
pub struct CrlSet {
    crls: Vec<Arc<LoadedCrl>>,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.crls.iter().map(|c| &c.path))
            .finish()
    }
}

fn name_line(n: &X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn same_name(a: &X509NameRef, b: &X509NameRef) -> bool {
    a.try_cmp(b).is_ok_and(|o| o == Ordering::Equal)
}

/// `t` as RFC 3339 UTC.
fn rfc3339(t: &Asn1TimeRef) -> String {
    let as_unix = Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(t))
        .ok()
        .and_then(|d| {
            jiff::Timestamp::from_second(i64::from(d.days) * 86_400 + i64::from(d.secs)).ok()
        });
    match as_unix {
        Some(ts) => ts.to_string(),
        None => t.to_string(),
    }
}

/// Parses one CRL file's bytes (PEM when it has a PEM header, DER otherwise) and checks
/// its signature against the CA certificates whose subject is the CRL issuer.
fn parse_one(path: &Path, bytes: &[u8], cas: &[X509]) -> Result<LoadedCrl, CrlError> {
    let pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    let parsed = if pem {
        X509Crl::from_pem(bytes)
    } else {
        X509Crl::from_der(bytes)
    };
    let crl = parsed.map_err(|e| CrlError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let issuer = name_line(crl.issuer_name());
    let mut candidates = cas
        .iter()
        .filter(|ca| same_name(ca.subject_name(), crl.issuer_name()))
        .peekable();
    let signature_checked = candidates.peek().is_some();
    if signature_checked {
        let verifies = candidates.any(|ca| {
            ca.public_key()
                .and_then(|k| crl.verify(&k))
                .unwrap_or(false)
        });
        if !verifies {
            return Err(CrlError::BadSignature {
                path: path.to_path_buf(),
                issuer,
            });
        }
    }
    Ok(LoadedCrl {
        path: path.to_path_buf(),
        crl,
        issuer,
        signature_checked,
    })
}

/// The `*.pem` / `*.crl` files of `dir` with their size and modification time, sorted.
fn listing(dir: &Path) -> Result<Vec<(PathBuf, u64, Option<SystemTime>)>, CrlError> {
    let read_err = |source| CrlError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crl"));
        if !wanted {
            continue;
        }
        // Follows symlinks, so a link to a CRL elsewhere counts.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            out.push((path, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    Ok(out)
}

impl CrlSet {
    /// Loads every `*.pem` / `*.crl` file of `dir`. The set holds the files that loaded;
    /// the errors name the others. `Err` only when the directory itself cannot be read.
    pub fn load_dir(dir: &Path, cas: &[X509]) -> Result<(CrlSet, Vec<CrlError>), CrlError> {
        let files = listing(dir)?;
        let mut set = CrlSet::default();
        let mut errors = Vec::new();
        for (path, _, _) in files {
            match std::fs::read(&path)
                .map_err(|source| CrlError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|b| parse_one(&path, &b, cas))
            {
                Ok(c) => set.crls.push(Arc::new(c)),
                Err(e) => errors.push(e),
            }
        }
        Ok((set, errors))
    }

    /// A set of one CRL given as bytes (`pecd verify --crl`).
    pub fn from_bytes(path: &Path, bytes: &[u8], cas: &[X509]) -> Result<CrlSet, CrlError> {
        Ok(CrlSet {
            crls: vec![Arc::new(parse_one(path, bytes, cas)?)],
        })
    }

    /// How many CRLs are loaded.
    pub fn len(&self) -> usize {
        self.crls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    /// `Some` when a CRL of `cert`'s issuer lists it as revoked. A certificate listed with
    /// the `removeFromCRL` reason (a lifted hold) is not revoked. The revocation counts
    /// whatever its date: the issuer has withdrawn the certificate.
    /// The latest `nextUpdate` of the CRLs of `cert`'s issuer, when every one of them is
    /// past it at `now` (RFC 5280 §5.1.2.5: the issuer has published, or should have, a
    /// newer list; this one may miss recent revocations). `None`: a current CRL is here
    /// (or none has a `nextUpdate`, or none covers `cert`).
    pub fn stale(&self, cert: &X509, now: jiff::Timestamp) -> Option<String> {
        let mut latest: Option<(jiff::Timestamp, String)> = None;
        for c in self
            .crls
            .iter()
            .filter(|c| same_name(c.crl.issuer_name(), cert.issuer_name()))
        {
            let next = c.crl.next_update()?;
            let text = rfc3339(next);
            let at: jiff::Timestamp = text.parse().ok()?;
            if at >= now {
                return None;
            }
            if latest.as_ref().is_none_or(|(l, _)| at > *l) {
                latest = Some((at, text));
            }
        }
        latest.map(|(_, t)| t)
    }

    /// Whether a CRL of `cert`'s issuer is in the set.
    pub fn covers(&self, cert: &X509) -> bool {
        self.crls
            .iter()
            .any(|c| same_name(c.crl.issuer_name(), cert.issuer_name()))
    }

    pub fn check(&self, cert: &X509) -> Option<Revocation> {
        self.crls
            .iter()
            .filter(|c| same_name(c.crl.issuer_name(), cert.issuer_name()))
            .find_map(|c| match c.crl.get_by_cert(cert) {
                CrlStatus::Revoked(r) => Some(Revocation {
                    revoked_at: rfc3339(r.revocation_date()),
                    crl: c.path.clone(),
                    issuer: c.issuer.clone(),
                    signature_checked: c.signature_checked,
                }),
                CrlStatus::NotRevoked | CrlStatus::RemoveFromCrl(_) => None,
            })
    }
}

/// The snapshot in force and what it was built from.
struct State {
    set: Arc<CrlSet>,
    files: Vec<(PathBuf, u64, Option<SystemTime>)>,
    checked: Instant,
}

/// The CRLs of `[trust] crl_dir`, reloaded when the files change (checked at most every
/// `max_age`, see [`CrlStore::current`]).
pub struct CrlStore {
    dir: PathBuf,
    cas: Vec<X509>,
    state: RwLock<State>,
}

impl std::fmt::Debug for CrlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrlStore({})", self.dir.display())
    }
}

impl CrlStore {
    /// Loads the directory; any file that does not load is an error (start-up is strict,
    /// so a broken CRL is noticed before it silently stops applying).
    pub fn open(dir: &Path, cas: Vec<X509>) -> Result<CrlStore, CrlError> {
        let files = listing(dir)?;
        let (set, mut errors) = CrlSet::load_dir(dir, &cas)?;
        if !errors.is_empty() {
            return Err(errors.remove(0));
        }
        Ok(CrlStore {
            dir: dir.to_path_buf(),
            cas,
            state: RwLock::new(State {
                set: Arc::new(set),
                files,
                checked: Instant::now(),
            }),
        })
    }

    /// The CRLs in force. When the last look at the directory is older than `max_age`
    /// (normally [`CRL_RECHECK`]), looks again and reloads if a file was added, removed or
    /// changed (size or modification time). Blocking: call it off the async executor.
    pub fn current(&self, max_age: Duration) -> Arc<CrlSet> {
        {
            let s = self.state.read().unwrap_or_else(|p| p.into_inner());
            if s.checked.elapsed() < max_age {
                return s.set.clone();
            }
        }
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        // Another thread may have looked while this one waited for the lock.
        if s.checked.elapsed() < max_age {
            return s.set.clone();
        }
        s.checked = Instant::now();
        let files = match listing(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "CRL directory unreadable; the loaded CRLs stay in force");
                return s.set.clone();
            }
        };
        if files == s.files {
            return s.set.clone();
        }
        let mut fresh = CrlSet::default();
        for (path, _, _) in &files {
            let loaded = std::fs::read(path)
                .map_err(|source| CrlError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|b| parse_one(path, &b, &self.cas));
            match loaded {
                Ok(c) => fresh.crls.push(Arc::new(c)),
                Err(e) => {
                    // Half-written or replaced by something broken: the version loaded
                    // before stays in force, so a revocation is never lost by a bad copy.
                    tracing::warn!(error = %e, "CRL not reloaded; the previous version stays in force");
                    if let Some(old) = s.set.crls.iter().find(|c| &c.path == path) {
                        fresh.crls.push(old.clone());
                    }
                }
            }
        }
        tracing::info!(dir = %self.dir.display(), crls = fresh.len(), "CRLs reloaded");
        s.set = Arc::new(fresh);
        s.files = files;
        s.set.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A CA (via the dev PKI) and a CRL revoking its signing certificate, made with the
    /// `openssl` CLI. Returns (certs dir, CA cert, signing cert, CRL PEM, CRL DER).
    struct Fixture {
        dir: tempfile::TempDir,
        ca: X509,
        leaf: X509,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let domain = crate::pec::address::Domain::parse("pec.crl.test").unwrap();
        let files =
            crate::pki::generate_dev_pki(dir.path(), &domain, "CRL Test Provider", false).unwrap();
        let ca = X509::from_pem(&std::fs::read(&files.ca_cert).unwrap()).unwrap();
        let leaf = X509::from_pem(&std::fs::read(&files.signing_cert).unwrap()).unwrap();
        Fixture { dir, ca, leaf }
    }

    /// Writes `name` (PEM) in the fixture dir: a CRL signed by the CA revoking `revoke`.
    fn make_crl(f: &Fixture, name: &str, revoke: &[&str]) -> PathBuf {
        let d = f.dir.path();
        std::fs::write(d.join("index.txt"), b"").unwrap();
        std::fs::write(d.join("crlnumber"), b"01\n").unwrap();
        let conf = "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\n\
                    default_md=sha256\ndefault_crl_days=7\n";
        std::fs::write(d.join("ca.cnf"), conf).unwrap();
        for cert in revoke {
            openssl(
                d,
                &[
                    "ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-revoke",
                    cert,
                ],
            );
        }
        let out = d.join(name);
        openssl(
            d,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-gencrl",
                "-out",
                out.to_str().unwrap(),
            ],
        );
        out
    }

    #[test]
    fn pem_and_der_crls_revoke_the_listed_certificate_only() {
        let f = fixture();
        let pem = make_crl(&f, "list.pem", &["signing.pem"]);
        let crls = f.dir.path().join("crls");
        std::fs::create_dir(&crls).unwrap();
        std::fs::copy(&pem, crls.join("a.pem")).unwrap();
        let der = X509Crl::from_pem(&std::fs::read(&pem).unwrap())
            .unwrap()
            .to_der()
            .unwrap();
        std::fs::write(crls.join("b.crl"), &der).unwrap();
        std::fs::write(crls.join("notes.txt"), b"ignored").unwrap();

        let (set, errors) = CrlSet::load_dir(&crls, std::slice::from_ref(&f.ca)).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.len(), 2);
        let r = set
            .check(&f.leaf)
            .expect("the signing certificate is revoked");
        assert!(r.signature_checked);
        assert!(r.issuer.contains("CRL Test Provider"), "{}", r.issuer);
        // RFC 3339, today's date (the CLI revoked it just now).
        let today = jiff::Timestamp::now().to_string();
        assert_eq!(&r.revoked_at[..10], &today[..10], "{}", r.revoked_at);
        assert!(r.describe().starts_with("certificato revocato il "));
        // The TLS certificate of the same CA is not on the list.
        let tls = X509::from_pem(&std::fs::read(f.dir.path().join("tls.pem")).unwrap()).unwrap();
        assert!(set.check(&tls).is_none());
    }

    #[test]
    fn a_crl_past_its_next_update_is_stale() {
        let f = fixture();
        let pem = make_crl(&f, "list.pem", &[]);
        let set = CrlSet::from_bytes(&pem, &std::fs::read(&pem).unwrap(), &[]).unwrap();
        let now = jiff::Timestamp::now();
        // default_crl_days = 7: current today and in six days, out of date in eight.
        assert_eq!(set.stale(&f.leaf, now), None);
        assert_eq!(
            set.stale(&f.leaf, now + jiff::SignedDuration::from_hours(24 * 6)),
            None
        );
        let due = set
            .stale(&f.leaf, now + jiff::SignedDuration::from_hours(24 * 8))
            .expect("stale after nextUpdate");
        let due: jiff::Timestamp = due.parse().unwrap();
        let week = now + jiff::SignedDuration::from_hours(24 * 7);
        assert!(
            due.duration_since(week).abs() < jiff::SignedDuration::from_mins(5),
            "{due}"
        );
    }

    #[test]
    fn issuer_must_match_and_unknown_issuers_are_name_matched_unchecked() {
        let f = fixture();
        let pem = make_crl(&f, "list.pem", &["signing.pem"]);
        let bytes = std::fs::read(&pem).unwrap();
        // Without the CA: loaded, applies by issuer name, signature not checked.
        let set = CrlSet::from_bytes(&pem, &bytes, &[]).unwrap();
        let r = set.check(&f.leaf).unwrap();
        assert!(!r.signature_checked);
        assert!(r.describe().contains("firma della CRL non verificata"));
        // A certificate of another CA (same provider name, so same issuer name, but
        // another serial) is not affected.
        let other = fixture();
        assert!(set.check(&other.leaf).is_none());
        // A CRL whose issuer certificate is known but whose signature does not verify
        // (another CA with the same name and a different key) is refused, naming the file.
        let same_named = CrlSet::from_bytes(&pem, &bytes, std::slice::from_ref(&other.ca));
        match same_named {
            Err(CrlError::BadSignature { path, .. }) => assert_eq!(path, pem),
            other => panic!("expected a bad signature, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_reported_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.crl"), b"not a crl").unwrap();
        std::fs::write(
            dir.path().join("bad.pem"),
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let (set, errors) = CrlSet::load_dir(dir.path(), &[]).unwrap();
        assert!(set.is_empty());
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].contains("bad.crl") && shown[1].contains("bad.pem"),
            "{shown:?}"
        );
        let err = CrlStore::open(dir.path(), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("bad.crl"), "{err}");
        assert!(CrlStore::open(&dir.path().join("missing"), Vec::new()).is_err());
    }

    #[test]
    fn store_reloads_when_files_change_and_keeps_old_version_on_a_bad_copy() {
        let f = fixture();
        let empty = make_crl(&f, "empty.pem", &[]);
        let crls = f.dir.path().join("crls");
        std::fs::create_dir(&crls).unwrap();
        std::fs::copy(&empty, crls.join("ca.crl")).unwrap();
        let store = CrlStore::open(&crls, vec![f.ca.clone()]).unwrap();
        assert!(store.current(CRL_RECHECK).check(&f.leaf).is_none());

        // The operator drops a new CRL revoking the signing certificate.
        let revoking = make_crl(&f, "revoking.pem", &["signing.pem"]);
        std::fs::copy(&revoking, crls.join("ca.crl")).unwrap();
        // Within the recheck delay the cached snapshot is still used...
        assert!(store.current(CRL_RECHECK).check(&f.leaf).is_none());
        // ...once it has passed the change is seen.
        assert!(store.current(Duration::ZERO).check(&f.leaf).is_some());

        // A broken copy over it keeps the loaded version in force.
        std::fs::write(crls.join("ca.crl"), b"half-writ").unwrap();
        assert!(store.current(Duration::ZERO).check(&f.leaf).is_some());

        // Removing the file lifts the revocation.
        std::fs::remove_file(crls.join("ca.crl")).unwrap();
        assert!(store.current(Duration::ZERO).check(&f.leaf).is_none());
    }
}
