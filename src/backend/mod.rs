//! The crypto seam: RSA-SHA256 verification and AES-256-GCM, from exactly one backend.
//!
//! Everything above this module sees only [`VerifyingKey`] and [`ResourceCipher`]; keys
//! are parsed once, here, when they are added, never per request.

#[cfg(all(feature = "aws-lc-rs", feature = "rustcrypto"))]
compile_error!(
    "tower-wechatpay: enable exactly one crypto backend. `rustcrypto` needs \
     `default-features = false` (which turns `aws-lc-rs` off)."
);
#[cfg(not(any(feature = "aws-lc-rs", feature = "rustcrypto")))]
compile_error!(
    "tower-wechatpay: enable exactly one crypto backend feature: `aws-lc-rs` (the default) \
     or `rustcrypto`."
);

#[cfg(feature = "aws-lc-rs")]
mod aws_lc;
#[cfg(all(feature = "aws-lc-rs", feature = "test-util"))]
pub(crate) use aws_lc::SigningKey;
#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc::{ResourceCipher, VerifyingKey};

#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc-rs")))]
mod rust_crypto;
#[cfg(all(
    feature = "rustcrypto",
    not(feature = "aws-lc-rs"),
    feature = "test-util"
))]
pub(crate) use rust_crypto::SigningKey;
#[cfg(all(feature = "rustcrypto", not(feature = "aws-lc-rs")))]
pub(crate) use rust_crypto::{ResourceCipher, VerifyingKey};

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
