//! The one OpenSSL call pecd needs that the `openssl` crate does not offer as needed:
//! `PKCS7_verify` over detached content **without an output BIO**.
//!
//! `openssl::pkcs7::Pkcs7::verify` always hands OpenSSL a memory BIO for the verified
//! content, so OpenSSL writes a copy of the whole content into it while it digests it,
//! growing the buffer by reallocation (a 50 MB message costs about 110 MB at its peak),
//! even when the caller asks for no output. Passing no output BIO, as OpenSSL allows,
//! digests the content in place. This crate exists so that pecd itself can keep
//! `#![forbid(unsafe_code)]`: the `unsafe` is here, in one function.
//!
//! Owns: nothing but that call. Distrusts: nothing beyond what OpenSSL checks; the inputs
//! are already parsed, typed objects and a byte slice.

use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7Flags, Pkcs7Ref};
use openssl::stack::StackRef;
use openssl::x509::X509;
use openssl::x509::store::X509StoreRef;

/// Why a verification failed.
#[derive(Debug)]
pub enum Error {
    /// The content is longer than a memory BIO can take (`i32::MAX` bytes).
    TooLarge(usize),
    /// `PKCS7_TEXT` was asked for: OpenSSL would then copy the content into a buffer of
    /// its own to strip the text headers, which is what this crate exists to avoid.
    TextFlag,
    /// OpenSSL refused: a bad signature, a digest mismatch, an unusable certificate.
    OpenSsl(ErrorStack),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "content of {n} bytes is too large to verify"),
            Self::TextFlag => f.write_str("PKCS7_TEXT is not supported"),
            Self::OpenSsl(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// `PKCS7_verify(p7, certs, store, content, NULL, flags)`: checks the signature of `p7`
/// over the detached `content` (and, unless `flags` says otherwise, the signer's chain
/// against `store`). The content is read once, in place; nothing is copied out.
///
/// `p7` is taken mutably because OpenSSL records state in it while verifying: two
/// threads must not verify the same object at once.
pub fn verify_detached(
    p7: &mut Pkcs7Ref,
    certs: &StackRef<X509>,
    store: &X509StoreRef,
    content: &[u8],
    flags: Pkcs7Flags,
) -> Result<(), Error> {
    openssl_sys::init();
    if flags.contains(Pkcs7Flags::TEXT) {
        return Err(Error::TextFlag);
    }
    let len = i32::try_from(content.len()).map_err(|_| Error::TooLarge(content.len()))?;
    // SAFETY: `BIO_new_mem_buf` makes a read-only BIO over `content` without copying it
    // (with length 0 the pointer is not read); the slice outlives the BIO, which is freed
    // below before returning (`PKCS7_verify` pops it from its own chain before freeing
    // that). The other pointers come from live references: `certs` and `store` are only
    // read, `p7` is borrowed exclusively. A null output BIO is allowed: OpenSSL then only
    // digests the content (it would copy only with PKCS7_TEXT, refused above). Errors
    // left by earlier calls on this thread are cleared first, so a failure reports its own.
    unsafe {
        openssl_sys::ERR_clear_error();
        let bio = openssl_sys::BIO_new_mem_buf(content.as_ptr().cast(), len);
        if bio.is_null() {
            return Err(Error::OpenSsl(ErrorStack::get()));
        }
        let r = openssl_sys::PKCS7_verify(
            p7.as_ptr(),
            certs.as_ptr(),
            store.as_ptr(),
            bio,
            ptr::null_mut(),
            flags.bits(),
        );
        openssl_sys::BIO_free_all(bio);
        if r <= 0 {
            return Err(Error::OpenSsl(ErrorStack::get()));
        }
    }
    Ok(())
}

// Test code: an unwrap here fails the test; none sees peer input.
#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkcs7::Pkcs7;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn signer() -> (X509, PKey<openssl::pkey::Private>) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "signer").unwrap();
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
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    #[test]
    fn a_good_signature_verifies_and_any_changed_byte_fails() {
        let (cert, key) = signer();
        let content = b"Messaggio di posta certificata\r\n".repeat(1000);
        let certs = Stack::new().unwrap();
        let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
        let p7 = Pkcs7::sign(&cert, &key, &certs, &content, flags).unwrap();
        let store = X509StoreBuilder::new().unwrap().build();
        let check = Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY;
        let mut p7 = p7;
        verify_detached(&mut p7, &certs, &store, &content, check).unwrap();
        // The same answer as the openssl crate's own call.
        p7.verify(&certs, &store, Some(&content), None, check)
            .unwrap();
        for at in [0, content.len() / 2, content.len() - 1] {
            let mut changed = content.clone();
            changed[at] ^= 1;
            assert!(verify_detached(&mut p7, &certs, &store, &changed, check).is_err());
        }
        assert!(verify_detached(&mut p7, &certs, &store, &content[1..], check).is_err());
        assert!(verify_detached(&mut p7, &certs, &store, b"", check).is_err());
        assert!(matches!(
            verify_detached(&mut p7, &certs, &store, &content, check | Pkcs7Flags::TEXT),
            Err(Error::TextFlag)
        ));
    }
}
