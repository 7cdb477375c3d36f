//! The layer's steps one by one, for the criterion benches. Not a stable API.

use http::HeaderMap;

use crate::decrypt::{decrypt_resource, parse_envelope};
use crate::layer::WechatPayLayer;
use crate::models::EventKind;
use crate::verify::verify_signature;

/// The `Wechatpay-*` checks before the body (header parsing, window, base64, key lookup).
/// `true` if they pass.
pub fn check_headers(layer: &WechatPayLayer, headers: &HeaderMap) -> bool {
    layer.pipeline().check_headers(headers).is_ok()
}

/// Header checks plus RSA-SHA256 over `timestamp\nnonce\nbody\n`. `true` if it verifies.
pub fn verify(layer: &WechatPayLayer, headers: &HeaderMap, body: &[u8]) -> bool {
    layer
        .pipeline()
        .check_headers(headers)
        .is_ok_and(|checked| verify_signature(&checked, body).is_ok())
}

/// Parses the envelope (borrowing from the body). `true` if it parses.
pub fn parse(body: &[u8]) -> bool {
    parse_envelope(body).is_ok()
}

/// Parses the envelope and decrypts the resource; the plaintext's length.
pub fn decrypt(layer: &WechatPayLayer, body: &[u8]) -> usize {
    parse_envelope(body)
        .and_then(|envelope| decrypt_resource(&layer.pipeline().cipher, &envelope.resource))
        .map_or(0, |plaintext| plaintext.len())
}

/// Classifies and parses a decrypted payment resource into its typed model.
pub fn model(plaintext: &str) -> bool {
    EventKind::of(Some("transaction"), "TRANSACTION.SUCCESS")
        .parse(plaintext)
        .is_ok()
}
