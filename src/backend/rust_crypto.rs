//! The pure-Rust backend: `rsa`, `sha2` and `aes-gcm` from RustCrypto.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::DigestVerifier;
use sha2::{Digest, Sha256};

use super::{CryptoError, NONCE_LEN, TAG_LEN};

/// An RSA public key, parsed once.
pub(crate) struct VerifyingKey(pkcs1v15::VerifyingKey<Sha256>);

impl VerifyingKey {
    /// Accepts SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey` DER.
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = rsa::PublicKey::from_public_key_der(der)
            .or_else(|_| rsa::PublicKey::from_pkcs1_der(der))
            .map_err(|_| CryptoError)?;
        // `new` keeps the SHA-256 DigestInfo prefix that PKCS#1 v1.5 requires.
        Ok(Self(pkcs1v15::VerifyingKey::new(key)))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over the concatenation of `message`.
    pub(crate) fn verify(&self, message: &[&[u8]], signature: &[u8]) -> Result<(), CryptoError> {
        let signature = pkcs1v15::Signature::try_from(signature).map_err(|_| CryptoError)?;
        self.0
            .verify_digest(
                |digest: &mut Sha256| {
                    for part in message {
                        Digest::update(digest, part);
                    }
                    Ok(())
                },
                &signature,
            )
            .map_err(|_| CryptoError)
    }
}

/// AES-256-GCM keyed with the APIv3 key, set up once. The `zeroize` feature of `aes-gcm`
/// wipes the expanded key schedule when it is dropped.
pub(crate) struct ResourceCipher(Aes256Gcm);

impl ResourceCipher {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, CryptoError> {
        Aes256Gcm::new_from_slice(key)
            .map(Self)
            .map_err(|_| CryptoError)
    }

    /// Decrypts `ciphertext ‖ tag` in place and returns the plaintext part of `buffer`.
    pub(crate) fn open<'b>(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &'b mut [u8],
    ) -> Result<&'b mut [u8], CryptoError> {
        if nonce.len() != NONCE_LEN {
            return Err(CryptoError);
        }
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError)?;
        let split = buffer.len().checked_sub(TAG_LEN).ok_or(CryptoError)?;
        let (message, tag) = buffer.split_at_mut(split);
        let tag = Tag::try_from(&*tag).map_err(|_| CryptoError)?;
        self.0
            .decrypt_inout_detached(&nonce, aad, message.into(), &tag)
            .map_err(|_| CryptoError)?;
        Ok(message)
    }

    /// Encrypts `buffer` in place and appends the tag (the test signer's side).
    #[cfg(feature = "test-util")]
    pub(crate) fn seal(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError)?;
        let tag = self
            .0
            .encrypt_inout_detached(&nonce, aad, buffer.as_mut_slice().into())
            .map_err(|_| CryptoError)?;
        buffer.extend_from_slice(&tag);
        Ok(())
    }
}

/// An RSA private key: the test signer's, or the merchant's for the API client.
#[cfg(any(feature = "test-util", feature = "client"))]
pub(crate) struct SigningKey(pkcs1v15::SigningKey<Sha256>);

#[cfg(any(feature = "test-util", feature = "client"))]
impl SigningKey {
    #[cfg(feature = "client")]
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        rsa::PrivateKey::from_pkcs1_der(der)
            .map(|key| Self(pkcs1v15::SigningKey::new(key)))
            .map_err(|_| CryptoError)
    }

    /// The modulus size in bits.
    #[cfg(feature = "client")]
    pub(crate) fn bits(&self) -> usize {
        use rsa::traits::PublicKeyParts;
        self.0.as_ref().size() * 8
    }

    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::PrivateKey::from_pkcs8_der(der)
            .map(|key| Self(pkcs1v15::SigningKey::new(key)))
            .map_err(|_| CryptoError)
    }

    pub(crate) fn sign(&self, message: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
        use rsa::signature::{SignatureEncoding, Signer};
        let joined = message.concat();
        self.0
            .try_sign(&joined)
            .map(|signature| signature.to_vec())
            .map_err(|_| CryptoError)
    }
}

/// HMAC-SHA256 of the concatenation of `message` under `key` (APIv2 `sign`).
#[cfg(feature = "v2")]
pub(crate) fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in message {
        mac.update(part);
    }
    let mut out = [0; 32];
    for (out, byte) in out.iter_mut().zip(mac.finalize().into_bytes().iter()) {
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
    use aes::cipher::block_padding::Pkcs7;
    use aes::cipher::{BlockModeDecrypt, KeyInit};
    if buffer.is_empty() || !buffer.len().is_multiple_of(16) {
        return Err(CryptoError);
    }
    let decryptor = ecb::Decryptor::<aes::Aes256>::new_from_slice(key).map_err(|_| CryptoError)?;
    let plaintext = decryptor
        .decrypt_padded::<Pkcs7>(buffer)
        .map_err(|_| CryptoError)?;
    Ok(plaintext.len())
}

/// AES-256-ECB encryption with PKCS#7 padding (the v2 test signer's side).
#[cfg(all(feature = "v2", feature = "test-util"))]
pub(crate) fn aes256_ecb_pkcs7_encrypt(
    key: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use aes::cipher::block_padding::Pkcs7;
    use aes::cipher::{BlockModeEncrypt, KeyInit};
    let encryptor = ecb::Encryptor::<aes::Aes256>::new_from_slice(key).map_err(|_| CryptoError)?;
    let mut buffer = vec![0; (plaintext.len() / 16 + 1) * 16];
    let length = plaintext.len();
    if let Some(head) = buffer.get_mut(..length) {
        head.copy_from_slice(plaintext);
    }
    let ciphertext_len = encryptor
        .encrypt_padded::<Pkcs7>(&mut buffer, length)
        .map_err(|_| CryptoError)?
        .len();
    buffer.truncate(ciphertext_len);
    Ok(buffer)
}
