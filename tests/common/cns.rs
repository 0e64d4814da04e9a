//! A CNS-profile PKI made with the `openssl` command for smart-card tests: a CA, cards
//! issued by it (subject as the CNS profile has it, `CN=<codice fiscale>/<card id>.<hash>`,
//! or `serialNumber=TINIT-<codice fiscale>`; client-authentication use), cards with given
//! validity dates, revocations and the CRL.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const CA_CNF: &str = "[ca]\ndefault_ca = cns\n[cns]\ndir = .\ndatabase = index.txt\n\
new_certs_dir = .\nserial = serial\ncrlnumber = crlnumber\ndefault_md = sha256\n\
policy = any\ncopy_extensions = none\ndefault_crl_days = 30\nunique_subject = no\n\
[any]\ncommonName = optional\nserialNumber = optional\ncountryName = optional\n\
organizationName = optional\n[card]\nbasicConstraints = CA:FALSE\n\
keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n\
[server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
extendedKeyUsage = serverAuth\n";

pub struct CnsPki {
    pub dir: PathBuf,
}

/// `openssl ca` with this CA's configuration, certificate and key, then `args`.
fn openssl_ca(dir: &Path, args: &[&str]) {
    let mut all = vec![
        "ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl CnsPki {
    /// A CA named `name` in `dir/<name>` (created).
    pub fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                &format!("/C=IT/O=Regione Test/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a card `name` with `subject` (openssl `-subj` syntax); `dates` are
    /// `YYYYMMDDHHMMSSZ` start and end (default: valid for a year from now). Returns the
    /// certificate's PEM file; the key is `<name>.key`.
    pub fn card(&self, name: &str, subject: &str, dates: Option<(&str, &str)>) -> PathBuf {
        self.issue(name, subject, dates, "card")
    }

    /// A certificate of this CA that is not for client authentication.
    pub fn server_cert(&self, name: &str, subject: &str) -> PathBuf {
        self.issue(name, subject, None, "server")
    }

    fn issue(&self, name: &str, subject: &str, dates: Option<(&str, &str)>, ext: &str) -> PathBuf {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        );
        let mut args = vec![
            "-batch",
            "-extensions",
            ext,
            "-notext",
            "-in",
            &csr,
            "-out",
            &pem,
        ];
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "365"]),
        }
        openssl_ca(&self.dir, &args);
        self.dir.join(pem)
    }

    /// Revokes card `name` and writes the CA's CRL to `out_dir/<CA>.crl.pem`.
    pub fn revoke(&self, name: &str, out_dir: &Path) {
        let pem = format!("{name}.pem");
        openssl_ca(&self.dir, &["-revoke", &pem]);
        self.write_crl(out_dir);
    }

    pub fn write_crl(&self, out_dir: &Path) {
        std::fs::create_dir_all(out_dir).unwrap();
        let name = self.dir.file_name().unwrap().to_string_lossy().to_string();
        let out = out_dir.join(format!("{name}.crl.pem"));
        openssl_ca(&self.dir, &["-gencrl", "-out", out.to_str().unwrap()]);
    }
}
