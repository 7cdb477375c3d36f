//! The notification envelope and AES-256-GCM decryption of its resource.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::backend::{NONCE_LEN, ResourceCipher, TAG_LEN};
use crate::error::{Rejection, RejectionKind};

/// The only resource algorithm WeChat Pay uses for RSA-signed notifications.
pub(crate) const AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// The JSON envelope WeChat Pay posts. Strings borrow from the body where they can.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) create_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) resource_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) summary: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) resource: EncryptedResource<'a>,
}

/// `resource`: the encrypted business object.
#[derive(Deserialize)]
pub(crate) struct EncryptedResource<'a> {
    #[serde(borrow, default)]
    pub(crate) original_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) algorithm: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) ciphertext: RawText<'a>,
    // May be absent or empty: both mean no associated data.
    #[serde(borrow, default)]
    pub(crate) associated_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) nonce: Cow<'a, str>,
}

/// A JSON string taken as raw bytes: the base64 ciphertext is ASCII, so skipping UTF-8
/// validation of its ~1 KB costs nothing in correctness (base64 decoding checks every
/// byte). Borrowed from the body unless the string has escapes.
pub(crate) struct RawText<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E>(self, bytes: &'de [u8]) -> Result<Self::Value, E> {
                Ok(RawText(Cow::Borrowed(bytes)))
            }
            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                Ok(RawText(Cow::Owned(bytes.to_vec())))
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(RawText(Cow::Borrowed(text.as_bytes())))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(RawText(Cow::Owned(text.as_bytes().to_vec())))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// Parses the envelope from the exact body bytes.
pub(crate) fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, Rejection> {
    serde_json::from_slice(body).map_err(|_| {
        Rejection::new(
            RejectionKind::MalformedEnvelope,
            "malformed notification envelope",
        )
    })
}

/// Decrypts `resource` with the APIv3 key: base64 ciphertext ‖ tag, the raw 12-byte nonce
/// and the raw `associated_data`. Returns the UTF-8 plaintext.
pub(crate) fn decrypt_resource(
    cipher: &ResourceCipher,
    resource: &EncryptedResource<'_>,
) -> Result<String, Rejection> {
    if resource.algorithm != AES_256_GCM {
        return Err(Rejection::new(
            RejectionKind::UnsupportedAlgorithm,
            "unsupported resource algorithm",
        ));
    }
    let failed = || {
        Rejection::new(
            RejectionKind::DecryptionFailed,
            "could not decrypt resource",
        )
    };
    let nonce = resource.nonce.as_bytes();
    if nonce.len() != NONCE_LEN {
        return Err(failed());
    }
    let mut buffer = STANDARD
        .decode(&resource.ciphertext.0)
        .map_err(|_| failed())?;
    if buffer.len() < TAG_LEN {
        return Err(failed());
    }
    let aad = resource
        .associated_data
        .as_deref()
        .unwrap_or_default()
        .as_bytes();
    let plaintext_len = cipher
        .open(nonce, aad, &mut buffer)
        .map_err(|_| failed())?
        .len();
    buffer.truncate(plaintext_len);
    String::from_utf8(buffer).map_err(|_| {
        Rejection::new(
            RejectionKind::MalformedResource,
            "decrypted resource is not utf-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
    const NONCE: &str = "0123456789ab";

    fn sealed(plaintext: &[u8]) -> String {
        let cipher = ResourceCipher::new(KEY).unwrap();
        let mut buffer = plaintext.to_vec();
        cipher
            .seal(NONCE.as_bytes(), b"transaction", &mut buffer)
            .unwrap();
        STANDARD.encode(buffer)
    }

    fn open(ciphertext: &str) -> Result<String, Rejection> {
        let resource = EncryptedResource {
            original_type: None,
            algorithm: Cow::Borrowed(AES_256_GCM),
            ciphertext: RawText(Cow::Borrowed(ciphertext.as_bytes())),
            associated_data: Some(Cow::Borrowed("transaction")),
            nonce: Cow::Borrowed(NONCE),
        };
        decrypt_resource(&ResourceCipher::new(KEY).unwrap(), &resource)
    }

    #[test]
    fn a_ciphertext_of_exactly_the_tag_is_an_empty_plaintext_not_a_failure() {
        let tag_only = sealed(b"");
        assert_eq!(STANDARD.decode(&tag_only).unwrap().len(), TAG_LEN);
        assert_eq!(open(&tag_only).unwrap(), "");
        assert_eq!(open(&sealed(b"{}")).unwrap(), "{}");
    }

    #[test]
    fn a_ciphertext_shorter_than_the_tag_is_a_decryption_failure() {
        let tag_only = STANDARD.decode(sealed(b"")).unwrap();
        let short = STANDARD.encode(&tag_only[..TAG_LEN - 1]);
        assert_eq!(
            open(&short).unwrap_err().kind(),
            RejectionKind::DecryptionFailed
        );
    }
}
