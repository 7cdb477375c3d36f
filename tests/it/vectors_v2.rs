//! The independent APIv2 vectors (`tests/vectors-v2`, copied unedited from
//! `../shared/vectors-v2`): every body through the crate's v2 path (parse, verify or
//! decrypt, build) with the vectors' key. The layer-level run (status and XML answer) is
//! the service's to add; this checks the verdict, the kind and every expected field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tower_wechatpay::test_util::open_v2;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors-v2");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{path}")).unwrap()
}

fn cases() -> Value {
    serde_json::from_str(&read("cases.json")).unwrap()
}

fn key(vectors: &Value) -> String {
    read(vectors["v2_key_file"].as_str().unwrap())
        .trim()
        .to_owned()
}

#[test]
fn every_v2_vector_gets_its_expected_verdict_kind_and_fields() {
    let vectors = cases();
    let key = key(&vectors);
    let cases = vectors["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let body = case["body"].as_str().unwrap();
        let opened = open_v2(&key, body.as_bytes());
        if case["expected_status"] == 200 {
            let opened = opened.unwrap_or_else(|error| panic!("{name}: refused: {error}"));
            assert_eq!(opened.kind, case["expected_kind"], "{name}: kind");
            let expected = case["expected_fields"].as_object().unwrap();
            for (field, value) in expected {
                let value = value.as_str().unwrap();
                let got = opened.fields.get(field).and_then(Value::as_str);
                // An empty value may be left out.
                if value.is_empty() && got.is_none() {
                    continue;
                }
                assert_eq!(got, Some(value), "{name}: field {field}");
            }
        } else {
            assert_eq!(case["expected_status"], "refused", "{name}");
            assert!(opened.is_err(), "{name}: accepted");
        }
    }
}

#[test]
fn the_v2_vectors_body_limit_is_the_layers() {
    // The held-out checks expect 413 for a body over this limit: the layer's default.
    assert_eq!(
        cases()["body_limit_bytes"].as_u64(),
        Some(tower_wechatpay::WechatPayLayer::DEFAULT_MAX_BODY_SIZE as u64)
    );
}
