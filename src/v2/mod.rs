//! APIv2 XML notifications on the same route as v3 (feature `v2`): payment results signed
//! with `sign` (MD5 or HMAC-SHA256 under the APIv2 key) and refund results whose `req_info`
//! is AES-256-ECB encrypted under the MD5 of that key. Facts: `PROTOCOL-V2.md`.
//!
//! A body is v2 when it starts with `<xml` after optional whitespace, whatever its
//! `Content-Type`; everything else stays on the v3 path. Verification fails closed: a
//! payment without a `sign`, or whose `sign` does not verify, and a refund whose `req_info`
//! does not decrypt to well-formed XML never reach the handler, whatever `return_code`
//! says.

pub(crate) mod crypto;
pub(crate) mod models;
pub(crate) mod xml;

use zeroize::Zeroizing;

use crate::error::{ConfigError, Rejection};
use crate::notification::Notification;

/// The APIv2 key, ready to use: the key itself (signatures) and the AES-256 key derived
/// from it for refunds (the lower-case hex MD5 of the key, as its 32 ASCII bytes).
#[derive(Clone)]
pub(crate) struct V2Key {
    pub(crate) key: Zeroizing<Vec<u8>>,
    pub(crate) refund_key: Zeroizing<[u8; 32]>,
}

impl V2Key {
    /// The 32-character APIv2 key (surrounding whitespace is the caller's to trim).
    pub(crate) fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() != 32 || !key.iter().all(u8::is_ascii_graphic) {
            return Err(ConfigError::InvalidSetting {
                setting: "v2 key",
                reason: format!(
                    "the apiv2 key is the 32-character key set in the merchant platform \
                     (API安全 → API密钥), got {} bytes",
                    key.len()
                ),
            });
        }
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            refund_key: Zeroizing::new(crypto::refund_key(key)),
        })
    }
}

/// Whether `body` is an APIv2 notification: `<xml` after optional ASCII whitespace.
pub(crate) fn looks_like_v2(body: &[u8]) -> bool {
    body.trim_ascii_start().starts_with(b"<xml")
}

/// Verifies (payment) or decrypts (refund) one v2 notification and builds the
/// [`Notification`] the handler gets. The error is the refusal, with a fixed message.
pub(crate) fn open(key: &V2Key, body: &[u8]) -> Result<Notification, Rejection> {
    models::open(key, body)
}
