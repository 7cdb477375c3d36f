//! Signing a merchant API request (`Authorization: WECHATPAY2-SHA256-RSA2048 …`) and the
//! random nonce it carries.

use crate::backend::SigningKey;
use crate::client::error::ClientError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The authorization scheme, as WeChat Pay names it.
pub(crate) const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// The five lines the merchant signs: `METHOD\nTARGET\nTIMESTAMP\nNONCE\nBODY\n`, where
/// TARGET is the path and query exactly as sent and BODY the exact bytes (empty for GET).
pub(crate) fn message<'a>(
    method: &'a str,
    target: &'a str,
    timestamp: &'a str,
    nonce: &'a str,
    body: &'a [u8],
) -> [&'a [u8]; 10] {
    [
        method.as_bytes(),
        b"\n",
        target.as_bytes(),
        b"\n",
        timestamp.as_bytes(),
        b"\n",
        nonce.as_bytes(),
        b"\n",
        body,
        b"\n",
    ]
}

/// One request's signed parts.
pub(crate) struct Signed<'a> {
    pub(crate) method: &'a str,
    /// The path and query exactly as sent.
    pub(crate) target: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) nonce: &'a str,
    pub(crate) body: &'a [u8],
}

/// The `Authorization` header value for one request, fields in the official SDKs' order.
pub(crate) fn authorization(
    key: &SigningKey,
    mchid: &str,
    serial: &str,
    request: &Signed<'_>,
) -> Result<String, ClientError> {
    let timestamp = request.timestamp.to_string();
    let nonce = request.nonce;
    let signature = key
        .sign(&message(
            request.method,
            request.target,
            &timestamp,
            nonce,
            request.body,
        ))
        .map_err(|_| ClientError::Signing)?;
    Ok(format!(
        r#"{SCHEME} mchid="{mchid}",nonce_str="{nonce}",timestamp="{timestamp}",serial_no="{serial}",signature="{}""#,
        STANDARD.encode(signature)
    ))
}

/// 32 random characters of `[0-9A-Za-z]`, as the official SDKs send.
pub(crate) fn nonce() -> Result<String, ClientError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ClientError::Signing)?;
    // 256 = 4 * 62 + 8: the first 8 characters are a little likelier; a nonce only has
    // to be unique, not uniform.
    Ok(bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect())
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters, so a
/// caller's `out_trade_no` can never add a path segment or a query.
pub(crate) fn escape_segment(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// A path parameter, escaped; empty, `.` and `..` are refused (a server may resolve them
/// as path steps, querying something else than asked).
pub(crate) fn path_param(name: &'static str, value: &str) -> Result<String, ClientError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(ClientError::InvalidArgument {
            name,
            reason: "must not be empty, `.` or `..`",
        });
    }
    Ok(escape_segment(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_message_is_five_lines_each_ending_in_a_line_feed() {
        let joined = message("GET", "/v3/certificates", "1700000000", "N", b"").concat();
        assert_eq!(joined, b"GET\n/v3/certificates\n1700000000\nN\n\n");
        let joined = message("POST", "/v3/x?a=1", "1", "N", b"{}\n").concat();
        assert_eq!(joined, b"POST\n/v3/x?a=1\n1\nN\n{}\n\n");
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn path_segments_cannot_add_segments_or_queries() {
        assert_eq!(escape_segment("ORDER_1-2.3~x"), "ORDER_1-2.3~x");
        assert_eq!(escape_segment("a/b?c=d#e f"), "a%2Fb%3Fc%3Dd%23e%20f");
        assert_eq!(escape_segment("订单"), "%E8%AE%A2%E5%8D%95");
    }

    #[test]
    fn empty_and_dot_segments_are_refused() {
        assert!(path_param("out_trade_no", "").is_err());
        assert!(path_param("out_trade_no", ".").is_err());
        assert!(path_param("out_trade_no", "..").is_err());
        assert_eq!(path_param("out_trade_no", "A/B").unwrap(), "A%2FB");
    }
}
