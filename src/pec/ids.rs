//! The PEC message identifier (*identificativo*, digest §2.1): `[string]@[provider domain]`,
//! unique per accepted message, replacing the client's `Message-ID` in the envelope and in
//! the copy inside `postacert.eml`. Ours are `opec-<yyyymmddhhmmss>.<24 hex random>@<host>`:
//! sortable by time, and 96 random bits make a collision practically impossible without
//! any shared counter (so two processes or a restart can never reuse one).

use super::time::PecTime;

/// A fresh identificativo for the provider host `host` at `at`.
pub fn new_identificativo(at: &PecTime, host: &str) -> String {
    format!("opec-{}.{}@{}", at.compact(), random_hex(12), host)
}

/// A fresh `Message-ID` value (without brackets) for a receipt or notice we generate.
pub fn new_message_id(at: &PecTime, host: &str) -> String {
    format!("pecd-{}.{}@{}", at.compact(), random_hex(12), host)
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if openssl::rand::rand_bytes(&mut buf).is_err() {
        // The CSPRNG failing is unheard of on Linux; degrade to time + address entropy.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let b = t.to_le_bytes();
        for (i, x) in buf.iter_mut().enumerate() {
            *x = b[i % b.len()] ^ (i as u8).wrapping_mul(31);
        }
    }
    hex::encode(buf)
}

/// Strips angle brackets and whitespace: `<a@b>` → `a@b`.
pub fn bare(id: &str) -> &str {
    let t = id.trim();
    t.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(t)
        .trim()
}

/// Adds angle brackets when missing: `a@b` → `<a@b>`.
pub fn bracketed(id: &str) -> String {
    format!("<{}>", bare(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_unique_and_shaped() {
        let t = PecTime::italian("2025-01-10T08:14:03Z".parse().unwrap());
        let a = new_identificativo(&t, "pec.example.it");
        let b = new_identificativo(&t, "pec.example.it");
        assert_ne!(a, b);
        assert!(a.starts_with("opec-20250110091403."));
        assert!(a.ends_with("@pec.example.it"));
        assert_eq!(bare(" <x@y> "), "x@y");
        assert_eq!(bracketed("x@y"), "<x@y>");
    }
}
