//! A captured request, read from a file: raw HTTP (request line, headers, a blank line, the
//! body) or JSON (`{"headers": …, "body": "…"}`, or `"body_base64"` for exact bytes).
//!
//! The body is kept byte for byte: the signature covers the exact bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::SimError;

/// How the capture was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A raw HTTP request.
    RawHttp,
    /// JSON with `headers` and `body` (or `body_base64`).
    Json,
}

/// A request as captured: its headers (names case-insensitive) and exact body.
#[derive(Debug, Clone)]
pub struct Capture {
    /// How the file was written.
    pub format: Format,
    /// The headers, in file order (repeated names kept).
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// The body is the rest of a raw HTTP file without `Content-Length` and ends with a
    /// newline, which may be the file's own (an editor adds one) rather than the request's.
    pub final_newline_unsure: bool,
    /// Remarks on how the capture was read (bytes ignored, chunks joined).
    pub notes: Vec<String>,
}

/// Reads a capture: JSON if it starts with `{`, else raw HTTP.
///
/// # Errors
/// A sentence saying what is wrong with the file and what a capture looks like.
pub fn parse(bytes: &[u8]) -> Result<Capture, SimError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes.trim_ascii_start();
    if start.is_empty() {
        return Err(SimError::new(
            "the capture is empty: save the whole request (raw HTTP, or JSON with headers and body)",
        ));
    }
    if start.starts_with(b"{") {
        parse_json(start)
    } else {
        parse_http(bytes)
    }
}

const NEITHER: &str = "neither raw HTTP (a request line such as `POST /notify HTTP/1.1`, the \
    headers, a blank line, the body) nor JSON with `headers` and `body`";

fn parse_json(bytes: &[u8]) -> Result<Capture, SimError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        SimError(format!(
            "not valid JSON (line {}, column {}): {NEITHER}",
            error.line(),
            error.column()
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(SimError(NEITHER.to_owned()));
    };
    let Some(given) = fields.get("headers") else {
        if fields.contains_key("resource") {
            return Err(SimError::new(
                "this is the body alone (JSON without `headers`): the diagnosis needs the \
                 headers too; save the whole request, as raw HTTP or as JSON \
                 {\"headers\": {…}, \"body\": \"…\"}",
            ));
        }
        return Err(SimError(format!("JSON without `headers`: {NEITHER}")));
    };
    let mut headers = HeaderMap::new();
    match given {
        Value::Object(map) => {
            for (name, value) in map {
                match value {
                    Value::Array(values) => {
                        for value in values {
                            insert(&mut headers, name, &header_text(name, value)?)?;
                        }
                    }
                    value => insert(&mut headers, name, &header_text(name, value)?)?,
                }
            }
        }
        Value::Array(pairs) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => {
                        insert(&mut headers, name, &header_text(name, value)?)?;
                    }
                    _ => {
                        return Err(SimError::new(
                            "`headers` as a list must hold [name, value] pairs of strings",
                        ));
                    }
                }
            }
        }
        _ => {
            return Err(SimError::new(
                "`headers` must be an object {name: value} or a list of [name, value] pairs",
            ));
        }
    }
    let body = match (fields.get("body_base64"), fields.get("body")) {
        (Some(Value::String(encoded)), _) => STANDARD
            .decode(encoded.trim().as_bytes())
            .map_err(|_| SimError::new("`body_base64` is not standard base64"))?,
        (Some(_), _) => return Err(SimError::new("`body_base64` must be a string")),
        (None, Some(Value::String(text))) => text.clone().into_bytes(),
        (None, Some(_)) => {
            return Err(SimError::new(
                "`body` must be a string holding the exact text received (or give the exact \
                 bytes as `body_base64`), not parsed JSON: the signature covers the bytes",
            ));
        }
        (None, None) => {
            return Err(SimError::new(
                "the JSON has no `body` (or `body_base64`): the diagnosis needs the exact body",
            ));
        }
    };
    Ok(Capture {
        format: Format::Json,
        headers,
        body,
        final_newline_unsure: false,
        notes: Vec::new(),
    })
}

fn header_text(name: &str, value: &Value) -> Result<String, SimError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        _ => Err(SimError(format!(
            "header `{name}`: the value must be a string (or a list of strings)"
        ))),
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), SimError> {
    let header = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| SimError(format!("`{name}` is not a valid header name")))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        SimError(format!(
            "header `{name}`: the value holds control characters"
        ))
    })?;
    headers.append(header, value);
    Ok(())
}

/// One line of the head and where the next starts.
fn line_at(bytes: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(start..)?;
    if rest.is_empty() {
        return None;
    }
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &rest[..end];
            Some((line.strip_suffix(b"\r").unwrap_or(line), start + end + 1))
        }
        None => Some((rest, bytes.len())),
    }
}

fn is_request_line(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = line.split(' ').filter(|part| !part.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && !target.is_empty()
        && version.starts_with("HTTP/")
}

fn parse_http(bytes: &[u8]) -> Result<Capture, SimError> {
    // Blank lines before the request line are allowed (RFC 9112 §2.2).
    let mut at = 0;
    let request_line = loop {
        match line_at(bytes, at) {
            Some((line, next)) if line.trim_ascii().is_empty() => at = next,
            Some((line, next)) => {
                at = next;
                break line;
            }
            None => return Err(SimError(NEITHER.to_owned())),
        }
    };
    if !is_request_line(request_line) {
        return Err(SimError(NEITHER.to_owned()));
    }
    let mut headers = HeaderMap::new();
    let mut last: Option<(HeaderName, Vec<u8>)> = None;
    let mut number = 1;
    let body_start = loop {
        number += 1;
        let Some((line, next)) = line_at(bytes, at) else {
            return Err(SimError::new(
                "the headers are not followed by a blank line and the body: save the whole \
                 request",
            ));
        };
        at = next;
        if line.trim_ascii().is_empty() {
            break next;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            // An obsolete folded continuation line: part of the previous value.
            let Some((_, value)) = last.as_mut() else {
                return Err(SimError(format!(
                    "line {number} starts with whitespace but follows no header"
                )));
            };
            value.push(b' ');
            value.extend_from_slice(line.trim_ascii());
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(SimError(format!(
                "line {number} is not a header (`Name: value`); a blank line must separate \
                 the headers from the body"
            )));
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii_end())
            .map_err(|_| SimError(format!("line {number}: not a valid header name")))?;
        if let Some((name, value)) = last.take() {
            append(&mut headers, name, &value)?;
        }
        last = Some((name, line[colon + 1..].trim_ascii().to_vec()));
    };
    if let Some((name, value)) = last.take() {
        append(&mut headers, name, &value)?;
    }
    let rest = bytes.get(body_start..).unwrap_or_default();
    let mut notes = Vec::new();
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .any(|value| value.as_bytes().to_ascii_lowercase().ends_with(b"chunked"));
    let (body, final_newline_unsure) = if chunked {
        notes.push("Transfer-Encoding: chunked: the body is the chunks joined".to_owned());
        (dechunk(rest)?, false)
    } else if let Some(length) = headers.get(CONTENT_LENGTH) {
        let length: usize = length
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| SimError::new("Content-Length is not a number"))?;
        if rest.len() < length {
            return Err(SimError(format!(
                "the body is cut short: Content-Length says {length} bytes, the capture holds \
                 {} after the headers (save the whole request)",
                rest.len()
            )));
        }
        if rest.len() > length {
            notes.push(format!(
                "{} byte(s) after the Content-Length of {length} ignored",
                rest.len() - length
            ));
        }
        (rest[..length].to_vec(), false)
    } else {
        (rest.to_vec(), rest.ends_with(b"\n"))
    };
    Ok(Capture {
        format: Format::RawHttp,
        headers,
        body,
        final_newline_unsure,
        notes,
    })
}

fn append(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) -> Result<(), SimError> {
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        SimError(format!(
            "header `{name}`: the value holds control characters"
        ))
    })?;
    headers.append(name, value);
    Ok(())
}

/// Joins a chunked body (RFC 9112 §7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, SimError> {
    let bad = || SimError::new("the chunked body is malformed (Transfer-Encoding: chunked)");
    let mut body = Vec::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size.trim_ascii())
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(bad)?;
        rest = &rest[end + 1..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or_else(bad)?;
        body.extend_from_slice(chunk);
        rest = &rest[size..];
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"id":"1","resource":{"x":"a b"}}"#;

    fn raw(eol: &str, content_length: bool) -> Vec<u8> {
        let mut text = format!("POST /notify HTTP/1.1{eol}Host: example.com{eol}");
        text.push_str(&format!("wechatpay-timestamp: 1700000000 {eol}"));
        if content_length {
            text.push_str(&format!("Content-Length: {}{eol}", BODY.len()));
        }
        text.push_str(eol);
        text.push_str(BODY);
        text.into_bytes()
    }

    #[test]
    fn raw_http_with_crlf_or_lf_keeps_the_body_exact_and_names_case_insensitive() {
        for eol in ["\r\n", "\n"] {
            for content_length in [true, false] {
                let capture = parse(&raw(eol, content_length)).unwrap();
                assert_eq!(capture.format, Format::RawHttp);
                assert_eq!(capture.body, BODY.as_bytes());
                assert_eq!(capture.headers["Wechatpay-Timestamp"], "1700000000");
                assert!(!capture.final_newline_unsure);
            }
        }
    }

    #[test]
    fn content_length_bounds_the_body_and_a_short_body_is_refused() {
        let mut bytes = raw("\r\n", true);
        bytes.extend_from_slice(b"\n");
        let capture = parse(&bytes).unwrap();
        assert_eq!(capture.body, BODY.as_bytes());
        assert_eq!(capture.notes.len(), 1);
        let short = &raw("\r\n", true)[..raw("\r\n", true).len() - 1];
        assert!(parse(short).unwrap_err().0.contains("cut short"));
    }

    #[test]
    fn without_content_length_a_final_newline_is_kept_but_flagged() {
        let mut bytes = raw("\n", false);
        bytes.push(b'\n');
        let capture = parse(&bytes).unwrap();
        assert_eq!(capture.body, format!("{BODY}\n").as_bytes());
        assert!(capture.final_newline_unsure);
    }

    #[test]
    fn a_chunked_body_is_joined() {
        let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse(bytes).unwrap().body, b"{\"a\":1}");
    }

    #[test]
    fn json_takes_an_object_or_pairs_and_body_or_body_base64() {
        let object = format!(
            r#"{{"headers": {{"Wechatpay-Nonce": "n", "Wechatpay-Timestamp": 1700000000}}, "body": {}}}"#,
            serde_json::to_string(BODY).unwrap()
        );
        let capture = parse(object.as_bytes()).unwrap();
        assert_eq!(capture.format, Format::Json);
        assert_eq!(capture.headers["wechatpay-nonce"], "n");
        assert_eq!(capture.headers["wechatpay-timestamp"], "1700000000");
        assert_eq!(capture.body, BODY.as_bytes());

        let pairs = format!(
            r#"{{"headers": [["WECHATPAY-NONCE", "n"]], "body_base64": "{}"}}"#,
            STANDARD.encode(b"\xff\x00")
        );
        let capture = parse(pairs.as_bytes()).unwrap();
        assert_eq!(capture.headers["wechatpay-nonce"], "n");
        assert_eq!(capture.body, b"\xff\x00");
    }

    #[test]
    fn anything_else_is_refused_with_what_a_capture_looks_like() {
        for bad in [
            &b"hello world"[..],
            b"",
            b"{not json",
            b"[1,2]",
            br#"{"id":"x","resource":{}}"#,
            br#"{"headers":{},"body":{"id":"x"}}"#,
            b"POST /notify HTTP/1.1\r\nHost: x\r\n",
            b"POST /notify HTTP/1.1\r\nnot a header\r\n\r\n{}",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(
            parse(br#"{"id":"x","resource":{}}"#)
                .unwrap_err()
                .0
                .contains("body alone")
        );
    }
}
