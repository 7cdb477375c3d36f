//! The crypto seam: RSA-SHA256 verification and AES-256-GCM, from exactly one backend.
//!
//! Everything above this module sees only [`VerifyingKey`] and [`ResourceCipher`]; keys
//! are parsed once, here, when they are added, never per request.

use x509_cert::der::asn1::{ObjectIdentifier, UintRef};
use x509_cert::der::{Decode, Reader, SliceReader};
use x509_cert::spki::SubjectPublicKeyInfoRef;

// Features are additive: with both backends enabled (e.g. `--all-features`, or two crates
// in one build asking for different ones), aws-lc-rs is used, as rustls picks its default
// provider. With none there is nothing to verify with.
#[cfg(not(any(feature = "aws-lc-rs", feature = "rustcrypto")))]
compile_error!(
    "tower-wechatpay: enable a crypto backend feature: `aws-lc-rs` (the default) or \
     `rustcrypto` (with `default-features = false`)."
);

#[cfg(feature = "aws-lc-rs")]
mod aws_lc;
#[cfg(all(feature = "aws-lc-rs", any(feature = "test-util", feature = "client")))]
pub(crate) use aws_lc::SigningKey;
#[cfg(all(feature = "aws-lc-rs", feature = "v2", feature = "test-util"))]
pub(crate) use aws_lc::aes256_ecb_pkcs7_encrypt;
#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc::{ResourceCipher, VerifyingKey};
#[cfg(all(feature = "aws-lc-rs", feature = "v2"))]
pub(crate) use aws_lc::{aes256_ecb_pkcs7_decrypt, hmac_sha256};

#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc-rs")))]
mod rust_crypto;
#[cfg(all(
    feature = "rustcrypto",
    not(feature = "aws-lc-rs"),
    any(feature = "test-util", feature = "client")
))]
pub(crate) use rust_crypto::SigningKey;
#[cfg(all(
    feature = "rustcrypto",
    not(feature = "aws-lc-rs"),
    feature = "v2",
    feature = "test-util"
))]
pub(crate) use rust_crypto::aes256_ecb_pkcs7_encrypt;
#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc-rs")))]
pub(crate) use rust_crypto::{ResourceCipher, VerifyingKey};
#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc-rs"), feature = "v2"))]
pub(crate) use rust_crypto::{aes256_ecb_pkcs7_decrypt, hmac_sha256};

/// The name of the active backend, for logs and benchmarks.
pub(crate) const BACKEND_NAME: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "rustcrypto"
};

/// AES-GCM authentication tag length, appended to every ciphertext.
pub(crate) const TAG_LEN: usize = 16;
/// AES-GCM nonce length WeChat Pay uses (`resource.nonce`, 12 raw bytes).
pub(crate) const NONCE_LEN: usize = 12;

/// The signed message is `timestamp \n nonce \n body \n`; it is hashed in pieces so the
/// body is never copied.
pub(crate) fn signed_message_parts<'a>(
    timestamp: &'a [u8],
    nonce: &'a [u8],
    body: &'a [u8],
) -> [&'a [u8]; 6] {
    [timestamp, b"\n", nonce, b"\n", body, b"\n"]
}

/// Why a backend refused an operation. Deliberately carries no detail: crypto errors
/// must not become an oracle, and the layer reports its own reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CryptoError;

/// The smallest RSA modulus accepted, in bits: WeChat Pay signs with RSA-2048.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// `rsaEncryption`, the algorithm of an RSA SubjectPublicKeyInfo.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a public key was refused when it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// Not an RSA public key the backend can use.
    NotRsa,
    /// An RSA key under [`MIN_RSA_BITS`].
    TooSmall { bits: usize },
}

/// Parses an RSA public key (SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey` DER) of at
/// least [`MIN_RSA_BITS`]. The size is checked here, the same way for every backend: left
/// to them, aws-lc-rs refuses a 1024-bit key and RustCrypto takes it.
pub(crate) fn parse_public_key(der: &[u8]) -> Result<VerifyingKey, KeyProblem> {
    let bits = rsa_modulus_bits(der).ok_or(KeyProblem::NotRsa)?;
    if bits < MIN_RSA_BITS {
        return Err(KeyProblem::TooSmall { bits });
    }
    VerifyingKey::from_der(der).map_err(|_| KeyProblem::NotRsa)
}

/// The modulus size of an RSA public key in SPKI or PKCS#1 DER; `None` if it is neither.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let pkcs1 = match SubjectPublicKeyInfoRef::from_der(der) {
        Ok(spki) if spki.algorithm.oid == RSA_ENCRYPTION => spki.subject_public_key.as_bytes()?,
        Ok(_) => return None,
        Err(_) => der,
    };
    let mut reader = SliceReader::new(pkcs1).ok()?;
    let modulus = reader
        .sequence(|fields| {
            let modulus = UintRef::decode(fields)?;
            UintRef::decode(fields)?; // publicExponent
            Ok::<_, x509_cert::der::Error>(modulus)
        })
        .ok()?;
    reader.finish().ok()?;
    // `as_bytes` has no leading zero bytes.
    let bytes = modulus.as_bytes();
    let first = *bytes.first()?;
    Some((bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

/// The modulus size of an RSA private key in PKCS#8 (`pkcs8`) or PKCS#1 DER; `None` if it
/// is neither. Read before the backend parses it, so a small key is named as such whatever
/// the backend (aws-lc-rs refuses keys under 2048 bits without saying why).
#[cfg(feature = "client")]
pub(crate) fn rsa_private_key_bits(der: &[u8], pkcs8: bool) -> Option<usize> {
    use x509_cert::der::asn1::OctetStringRef;
    use x509_cert::spki::AlgorithmIdentifierRef;
    let pkcs1 = if pkcs8 {
        let mut reader = SliceReader::new(der).ok()?;
        let key = reader
            .sequence(|fields| {
                UintRef::decode(fields)?; // version
                let algorithm = AlgorithmIdentifierRef::decode(fields)?;
                let key = <&OctetStringRef>::decode(fields)?;
                let rest = fields.remaining_len();
                fields.read_slice(rest)?; // optional attributes, public key
                Ok::<_, x509_cert::der::Error>((algorithm.oid, key.as_bytes()))
            })
            .ok()?;
        if key.0 != RSA_ENCRYPTION {
            return None;
        }
        key.1
    } else {
        der
    };
    let mut reader = SliceReader::new(pkcs1).ok()?;
    let modulus = reader
        .sequence(|fields| {
            UintRef::decode(fields)?; // version
            let modulus = UintRef::decode(fields)?;
            let rest = fields.remaining_len();
            fields.read_slice(rest)?; // exponents, primes, coefficients
            Ok::<_, x509_cert::der::Error>(modulus)
        })
        .ok()?;
    let bytes = modulus.as_bytes();
    let first = *bytes.first()?;
    Some((bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        let blocks = crate::pem::parse_all(pem.as_bytes()).unwrap();
        blocks[0].der.to_vec()
    }

    #[test]
    fn the_modulus_size_is_read_from_spki_and_pkcs1() {
        let spki = der(include_str!("../test_util/keys/public_key_mode.pub.pem"));
        assert_eq!(rsa_modulus_bits(&spki), Some(2048));
        let pkcs1 = der(include_str!("../../tests/keys/public_key_mode.pkcs1.pem"));
        assert_eq!(rsa_modulus_bits(&pkcs1), Some(2048));
        let small = der(include_str!("../../tests/keys/rsa1024.pub.pem"));
        assert_eq!(rsa_modulus_bits(&small), Some(1024));
    }

    #[test]
    fn keys_under_2048_bits_are_refused_by_every_backend() {
        let small = der(include_str!("../../tests/keys/rsa1024.pub.pem"));
        assert!(matches!(
            parse_public_key(&small),
            Err(KeyProblem::TooSmall { bits: 1024 })
        ));
        let spki = der(include_str!("../test_util/keys/public_key_mode.pub.pem"));
        assert!(parse_public_key(&spki).is_ok());
    }

    #[test]
    fn what_is_not_an_rsa_key_has_no_modulus() {
        assert_eq!(rsa_modulus_bits(&[]), None);
        assert_eq!(rsa_modulus_bits(&[0x30, 0x00]), None);
        assert_eq!(rsa_modulus_bits(b"garbage"), None);
        assert!(matches!(
            parse_public_key(b"garbage"),
            Err(KeyProblem::NotRsa)
        ));
    }
}

#[cfg(test)]
mod backend_choice {
    #[test]
    fn aws_lc_rs_wins_when_both_backends_are_enabled() {
        let expected = if cfg!(feature = "aws-lc-rs") {
            "aws-lc-rs"
        } else {
            "rustcrypto"
        };
        assert_eq!(super::BACKEND_NAME, expected);
        assert_eq!(crate::CRYPTO_BACKEND, expected);
    }
}
