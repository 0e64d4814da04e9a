//! Checked newtypes for what crosses the boundary (design principle 3, "parse, don't
//! validate"): a [`PecAddress`] is a syntactically valid addr-spec with a lower-cased
//! domain, a [`Domain`] a valid dot-atom host name. Invalid values cannot exist further in.
//!
//! Untrusted input: SMTP paths, `From:`/`To:`/`Cc:` values, index records. The grammar is
//! the dot-atom subset of RFC 5322 §3.4.1 that mail systems actually route (quoted local
//! parts are refused: PEC providers do not issue them).

use std::fmt;

/// Longest address accepted (RFC 5321 §4.5.3.1.3 path limit minus the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {MAX_ADDRESS_LEN} characters")]
    TooLong,
    #[error("address {0:?} has no '@'")]
    NoAt(String),
    #[error("address {0:?} has an invalid local part")]
    BadLocal(String),
    #[error("{0:?} is not a valid domain")]
    BadDomain(String),
}

/// A DNS domain, lower-case, dot-atom, each label 1–63 characters.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            Ok(Self(d))
        } else {
            Err(AddressError::BadDomain(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Domain {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox address `local@domain`. The local part keeps its case (RFC 5321 §2.4); the
/// domain is lower-cased. Comparisons for PEC purposes use [`PecAddress::key`].
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct PecAddress {
    local: String,
    domain: Domain,
}

fn atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl PecAddress {
    /// Parses a bare addr-spec, tolerating surrounding `<>` and whitespace.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(s)
            .trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| AddressError::NoAt(s.to_string()))?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .split('.')
                .all(|a| !a.is_empty() && a.bytes().all(atext));
        if !local_ok {
            return Err(AddressError::BadLocal(s.to_string()));
        }
        Ok(Self {
            local: local.to_string(),
            domain: Domain::parse(domain)?,
        })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The case-insensitive comparison key (logs and providers mix case, digest §13).
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_ascii_lowercase(), self.domain)
    }

    /// True when both name the same mailbox, ignoring case.
    pub fn same_mailbox(&self, other: &PecAddress) -> bool {
        self.domain == other.domain && self.local.eq_ignore_ascii_case(&other.local)
    }
}

impl TryFrom<String> for PecAddress {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PecAddress> for String {
    fn from(a: PecAddress) -> String {
        a.to_string()
    }
}

impl fmt::Display for PecAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl std::str::FromStr for PecAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_shapes_and_normalises_domain() {
        let a = PecAddress::parse(" <Mario.Rossi@PEC.Example.IT> ").unwrap();
        assert_eq!(a.to_string(), "Mario.Rossi@pec.example.it");
        assert_eq!(a.key(), "mario.rossi@pec.example.it");
        assert!(a.same_mailbox(&PecAddress::parse("mario.rossi@pec.example.it").unwrap()));
        assert!(PecAddress::parse("posta-certificata@sicurezzapostale.it").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "no-at",
            "@x.it",
            "a@",
            "a..b@x.it",
            "a b@x.it",
            "a@-x.it",
            "a@x..it",
            "\"q\"@x.it",
        ] {
            assert!(PecAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            PecAddress::parse(&format!("{}@x.it", "a".repeat(300))),
            Err(AddressError::TooLong)
        );
    }
}
