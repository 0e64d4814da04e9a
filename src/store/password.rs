//! Mailbox passwords: the clear-text wrapper that never prints itself, argon2id hashing
//! and checking, and the strength rule an owner's new password must meet.
//!
//! Hashes are argon2id PHC strings (argon2 crate defaults: v19, m = 19 MiB, t = 2, p = 1);
//! hashing and verifying are CPU-bound and happen in the caller's thread, never in the
//! committer. Untrusted input: every password (any length, any characters) and every
//! stored hash (a corrupt one is an error, not a panic).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;

use super::StoreError;
use crate::pec::address::PecAddress;

/// A password in clear, redacted in `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An argon2id PHC string of `p` with a fresh random salt.
pub(crate) fn hash(p: &Password) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| StoreError::Password(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Password(e.to_string()))?;
    Argon2::default()
        .hash_password(p.0.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Password(e.to_string()))
}

/// A hash of no password, verified for unknown mailboxes so that they take as long as
/// known ones.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$4Vh4wOfGI/ubZ3f6NbOVTKhZlVgI6dz3GNjJE2GixxE";

/// Whether `p` matches the PHC string `stored`.
pub(crate) fn matches(p: &Password, stored: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(stored).map_err(|e| StoreError::Password(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(p.0.as_bytes(), &parsed)
        .is_ok())
}

/// Shortest password an owner may choose (AgID's guidelines ask for at least 8; PEC
/// mailboxes carry legal value, so pecd asks for more).
pub const MIN_LENGTH: usize = 10;
/// Longest accepted (argon2 takes any length, but a megabyte "password" is an attack).
pub const MAX_LENGTH: usize = 256;

/// Why a new password was refused (rule: minimum strength, not the address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password must have at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("the password may have at most {MAX_LENGTH} characters")]
    TooLong,
    #[error(
        "the password must mix at least three of: lower-case letters, upper-case letters, \
         digits, other characters"
    )]
    TooSimple,
    #[error("the password must not contain the mailbox address or its user name")]
    ContainsAddress,
    #[error("the new password must differ from the current one")]
    Unchanged,
    #[error("the password must not contain control characters")]
    ControlCharacters,
}

impl WeakPassword {
    /// The same reason in Italian, for the webmail and the API's `motivo`.
    pub fn italian(&self) -> String {
        match self {
            Self::TooShort => format!("La password deve avere almeno {MIN_LENGTH} caratteri"),
            Self::TooLong => format!("La password può avere al massimo {MAX_LENGTH} caratteri"),
            Self::TooSimple => "La password deve combinare almeno tre tipi di caratteri tra \
                                minuscole, maiuscole, cifre e altri simboli"
                .into(),
            Self::ContainsAddress => {
                "La password non deve contenere l'indirizzo della casella né il nome utente".into()
            }
            Self::Unchanged => "La nuova password deve essere diversa da quella attuale".into(),
            Self::ControlCharacters => {
                "La password non deve contenere caratteri di controllo".into()
            }
        }
    }
}

/// The strength rule for a password the owner chooses for `address`. (Whether it equals
/// the current one needs the stored hash: [`crate::store::Store::change_own_password`].)
pub fn check_strength(p: &Password, address: &PecAddress) -> Result<(), WeakPassword> {
    let s = p.as_str();
    let n = s.chars().count();
    if n < MIN_LENGTH {
        return Err(WeakPassword::TooShort);
    }
    if n > MAX_LENGTH {
        return Err(WeakPassword::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(WeakPassword::ControlCharacters);
    }
    let classes = [
        s.chars().any(char::is_lowercase),
        s.chars().any(char::is_uppercase),
        s.chars().any(|c| c.is_ascii_digit()),
        s.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|c| **c).count() < 3 {
        return Err(WeakPassword::TooSimple);
    }
    let lower = s.to_lowercase();
    let addr = address.to_string().to_lowercase();
    let local = addr.split('@').next().unwrap_or_default();
    if lower.contains(&addr) || (local.chars().count() >= 3 && lower.contains(local)) {
        return Err(WeakPassword::ContainsAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &str) -> Result<(), WeakPassword> {
        let Ok(owner) = PecAddress::parse("mario.rossi@pec.example.it") else {
            panic!("the test address parses");
        };
        check_strength(&Password::new(p), &owner)
    }

    #[test]
    fn the_strength_rule() {
        assert_eq!(check("Ab1-short"), Err(WeakPassword::TooShort));
        assert_eq!(check("alllowercaseletters"), Err(WeakPassword::TooSimple));
        assert_eq!(check("lowercase and 1234"), Ok(()));
        assert_eq!(
            check("Mario.Rossi-2026"),
            Err(WeakPassword::ContainsAddress)
        );
        assert_eq!(
            check("x mario.rossi@PEC.example.it"),
            Err(WeakPassword::ContainsAddress)
        );
        assert_eq!(
            check("Tab\there-2026"),
            Err(WeakPassword::ControlCharacters)
        );
        assert_eq!(check(&"Aa1".repeat(100)), Err(WeakPassword::TooLong));
        // Ten characters count as characters, not bytes.
        assert_eq!(check("àèìòùÀ1234"), Ok(()));
        assert_eq!(check("Corretto-Cavallo-9"), Ok(()));
    }

    #[test]
    fn hashes_verify_and_redact() -> Result<(), StoreError> {
        let p = Password::new("Corretto-Cavallo-9");
        let h = hash(&p)?;
        assert!(h.starts_with("$argon2id$"));
        assert!(matches(&p, &h)?);
        assert!(!matches(&Password::new("other"), &h)?);
        assert!(matches(&p, "not a hash").is_err());
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        Ok(())
    }
}
