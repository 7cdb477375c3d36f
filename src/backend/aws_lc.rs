//! The default backend: aws-lc-rs (AWS-LC, BoringSSL lineage).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use super::{CryptoError, NONCE_LEN, TAG_LEN};

/// An RSA public key, parsed once.
pub(crate) struct VerifyingKey(ParsedPublicKey);

impl VerifyingKey {
    /// Accepts SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey` DER.
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .map(Self)
            .map_err(|_| CryptoError)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over the concatenation of `message`.
    pub(crate) fn verify(&self, message: &[&[u8]], signature: &[u8]) -> Result<(), CryptoError> {
        let mut context = Context::new(&SHA256);
        for part in message {
            context.update(part);
        }
        self.0
            .verify_digest_sig(&context.finish(), signature)
            .map_err(|_| CryptoError)
    }
}

/// AES-256-GCM keyed with the APIv3 key, set up once. AWS-LC wipes the key context when
/// it is freed (`OPENSSL_free` cleanses).
pub(crate) struct ResourceCipher(LessSafeKey);

impl ResourceCipher {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, CryptoError> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Decrypts `ciphertext ‖ tag` in place and returns the plaintext part of `buffer`.
    pub(crate) fn open<'b>(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &'b mut [u8],
    ) -> Result<&'b mut [u8], CryptoError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
        if buffer.len() < TAG_LEN {
            return Err(CryptoError);
        }
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buffer)
            .map_err(|_| CryptoError)
    }

    /// Encrypts `buffer` in place and appends the tag (the test signer's side).
    #[cfg(feature = "test-util")]
    pub(crate) fn seal(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buffer)
            .map_err(|_| CryptoError)
    }
}

/// An RSA private key: the test signer's, or the merchant's for the API client.
#[cfg(any(feature = "test-util", feature = "client"))]
pub(crate) struct SigningKey(aws_lc_rs::rsa::KeyPair);

#[cfg(any(feature = "test-util", feature = "client"))]
impl SigningKey {
    #[cfg(feature = "client")]
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        aws_lc_rs::rsa::KeyPair::from_der(der)
            .map(Self)
            .map_err(|_| CryptoError)
    }

    /// The modulus size in bits.
    #[cfg(feature = "client")]
    pub(crate) fn bits(&self) -> usize {
        self.0.public_modulus_len() * 8
    }

    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
            .map(Self)
            .map_err(|_| CryptoError)
    }

    pub(crate) fn sign(&self, message: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
        let joined = message.concat();
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                &joined,
                &mut signature,
            )
            .map_err(|_| CryptoError)?;
        Ok(signature)
    }
}
