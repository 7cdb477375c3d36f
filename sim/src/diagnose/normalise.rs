//! What a body may have looked like before a proxy or framework rewrote it: the bodies
//! WeChat Pay could have signed, to try when the signature fails over the bytes received.

use serde_json::{Map, Value};

/// The envelope's fields in the order WeChat Pay writes them.
pub const ENVELOPE_ORDER: [&str; 6] = [
    "id",
    "create_time",
    "resource_type",
    "event_type",
    "summary",
    "resource",
];

/// `resource`'s fields in the order WeChat Pay writes them.
pub const RESOURCE_ORDER: [&str; 5] = [
    "original_type",
    "algorithm",
    "ciphertext",
    "associated_data",
    "nonce",
];

/// A body to try, and how it differs from the one received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// How it was made, e.g. `compact JSON in WeChat Pay's field order`.
    pub label: String,
    /// The bytes.
    pub body: Vec<u8>,
}

/// The bodies WeChat Pay may have signed, the least changed first, each different from
/// `body` and from each other: the bytes received without a trailing newline, with CRLF
/// turned into LF, trimmed; the JSON re-serialised compactly (its own key order, WeChat
/// Pay's field order, sorted keys), each with and without a trailing newline; the bytes
/// received with a trailing newline.
pub fn candidates(body: &[u8]) -> Vec<Candidate> {
    let mut made: Vec<Candidate> = Vec::new();
    let mut add = |label: String, bytes: Vec<u8>| {
        if bytes != body && made.iter().all(|candidate| candidate.body != bytes) {
            made.push(Candidate { label, body: bytes });
        }
    };
    // The bytes received, barely touched, first: the most precise explanation.
    let without_newline = body
        .strip_suffix(b"\r\n")
        .or_else(|| body.strip_suffix(b"\n"))
        .unwrap_or(body);
    add(
        "the bytes received without the trailing newline".to_owned(),
        without_newline.to_vec(),
    );
    add(
        "the bytes received with CRLF turned into LF".to_owned(),
        crlf_to_lf(body),
    );
    add(
        "the bytes received without surrounding whitespace".to_owned(),
        body.trim_ascii().to_vec(),
    );
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let forms = [
            ("compact JSON in its own key order", value.clone()),
            (
                "compact JSON in WeChat Pay's field order",
                wechat_order(&value),
            ),
            ("compact JSON with the keys sorted", sorted(&value)),
        ];
        for (label, form) in forms {
            if let Ok(compact) = serde_json::to_vec(&form) {
                let mut with_newline = compact.clone();
                with_newline.push(b'\n');
                add(label.to_owned(), compact);
                add(format!("{label}, with a trailing newline"), with_newline);
            }
        }
    }
    let mut with_newline = body.to_vec();
    with_newline.push(b'\n');
    add(
        "the bytes received with a trailing newline".to_owned(),
        with_newline,
    );
    made
}

/// The envelope with its fields (and `resource`'s) in WeChat Pay's order; other fields
/// follow in their own order.
pub fn wechat_order(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut ordered = ordered_map(fields, &ENVELOPE_ORDER);
            if let Some(Value::Object(resource)) = ordered.get("resource") {
                let resource = Value::Object(ordered_map(resource, &RESOURCE_ORDER));
                ordered.insert("resource".to_owned(), resource);
            }
            Value::Object(ordered)
        }
        other => other.clone(),
    }
}

fn ordered_map(fields: &Map<String, Value>, order: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for name in order {
        if let Some(value) = fields.get(*name) {
            out.insert((*name).to_owned(), value.clone());
        }
    }
    for (name, value) in fields {
        if !out.contains_key(name) {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

/// The value with every object's keys sorted, at every depth.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            let mut out = Map::new();
            for name in names {
                if let Some(inner) = fields.get(name) {
                    out.insert(name.clone(), sorted(inner));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn crlf_to_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\r' && bytes.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPACT: &str = r#"{"id":"1","create_time":"t","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"Y3Q=","associated_data":"transaction","nonce":"n"}}"#;

    fn labels_for(received: &[u8]) -> Vec<String> {
        candidates(received)
            .into_iter()
            .filter(|candidate| candidate.body == COMPACT.as_bytes())
            .map(|candidate| candidate.label)
            .collect()
    }

    #[test]
    fn a_pretty_printed_body_compacts_back_to_the_original() {
        let value: Value = serde_json::from_str(COMPACT).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(
            labels_for(pretty.as_bytes()),
            ["compact JSON in its own key order"]
        );
    }

    #[test]
    fn sorted_keys_go_back_to_wechat_pays_field_order() {
        let value: Value = serde_json::from_str(COMPACT).unwrap();
        let sorted = serde_json::to_string(&sorted(&value)).unwrap();
        assert_ne!(sorted, COMPACT);
        assert_eq!(
            labels_for(sorted.as_bytes()),
            ["compact JSON in WeChat Pay's field order"]
        );
    }

    #[test]
    fn escaped_unicode_and_a_trailing_newline_are_undone() {
        let escaped = COMPACT.replace("支付成功", r"\u652f\u4ed8\u6210\u529f") + "\n";
        assert_eq!(
            labels_for(escaped.as_bytes()),
            ["compact JSON in its own key order"]
        );
        let newline = format!("{COMPACT}\r\n");
        assert_eq!(
            labels_for(newline.as_bytes()),
            ["the bytes received without the trailing newline"]
        );
    }

    #[test]
    fn candidates_never_repeat_the_body_or_each_other() {
        let made = candidates(COMPACT.as_bytes());
        assert!(made.iter().all(|c| c.body != COMPACT.as_bytes()));
        for (i, a) in made.iter().enumerate() {
            assert!(
                made[i + 1..].iter().all(|b| b.body != a.body),
                "{}",
                a.label
            );
        }
        assert!(!candidates(b"not json\r\n").is_empty());
    }
}
