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

/// HMAC-SHA256 of the concatenation of `message` under `key` (APIv2 `sign`).
#[cfg(feature = "v2")]
pub(crate) fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    for part in message {
        context.update(part);
    }
    let mut out = [0; 32];
    let tag = context.sign();
    for (out, byte) in out.iter_mut().zip(tag.as_ref()) {
        *out = *byte;
    }
    out
}

/// AES-256-ECB decryption with PKCS#7 unpadding, in place (APIv2 refund `req_info`);
/// returns the plaintext's length (a prefix of `buffer`). `buffer` must be a non-empty
/// multiple of the block size.
#[cfg(feature = "v2")]
pub(crate) fn aes256_ecb_pkcs7_decrypt(
    key: &[u8; 32],
    buffer: &mut [u8],
) -> Result<usize, CryptoError> {
    use aws_lc_rs::cipher::{
        AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
    };
    if buffer.is_empty() || !buffer.len().is_multiple_of(16) {
        return Err(CryptoError);
    }
    let key = UnboundCipherKey::new(&AES_256, key).map_err(|_| CryptoError)?;
    let key = PaddedBlockDecryptingKey::ecb_pkcs7(key).map_err(|_| CryptoError)?;
    let plaintext = key
        .decrypt(buffer, DecryptionContext::None)
        .map_err(|_| CryptoError)?;
    Ok(plaintext.len())
}

/// AES-256-ECB encryption with PKCS#7 padding (the v2 test signer's side).
#[cfg(all(feature = "v2", feature = "test-util"))]
pub(crate) fn aes256_ecb_pkcs7_encrypt(
    key: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use aws_lc_rs::cipher::{AES_256, PaddedBlockEncryptingKey, UnboundCipherKey};
    let key = UnboundCipherKey::new(&AES_256, key).map_err(|_| CryptoError)?;
    let key = PaddedBlockEncryptingKey::ecb_pkcs7(key).map_err(|_| CryptoError)?;
    let mut buffer = plaintext.to_vec();
    key.encrypt(&mut buffer).map_err(|_| CryptoError)?;
    Ok(buffer)
}
