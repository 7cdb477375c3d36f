//! APIv2 crypto (being written): `sign` verification, `req_info` decryption.

/// The AES-256 key for `req_info`: the lower-case hex MD5 of the APIv2 key.
pub(crate) fn refund_key(key: &[u8]) -> [u8; 32] {
    let _ = key;
    [0; 32]
}
