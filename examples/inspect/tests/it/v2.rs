//! APIv2 (XML) notifications through `inspect --v2-key-file`, over real HTTP: every case of
//! the independent vectors in `tests/vectors-v2/`, the answers in v2's language, and what
//! happens without a v2 key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::PathBuf;

use bytes::Bytes;
use example_support::harness::{Http, Running, TempDir, key_flags, start};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors-v2")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors().join("cases.json")).unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    document["cases"].as_array().unwrap().clone()
}

/// inspect with the v3 test keys and the vectors' v2 key.
fn inspect_v2(dir: &TempDir, v3: bool) -> Running {
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    if v3 {
        args.extend(key_flags(dir.path()));
    }
    args.push("--v2-key-file".to_owned());
    args.push(vectors().join("keys/v2_key.txt").display().to_string());
    start("inspect", &args)
}

async fn post(http: &Http, body: &str, content_type: &str) -> (StatusCode, Bytes) {
    let request = Request::post("/notify/v2")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    http.send(request).await
}

fn is_xml_success(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.starts_with("<xml>") && text.contains("<return_code><![CDATA[SUCCESS]]></return_code>")
}

fn read_line(inspect: &mut Running) -> Value {
    let mut line = String::new();
    inspect.stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
}

async fn every_vector_case_gets_its_expected_answer(v3: bool) {
    let dir = TempDir::new("inspect-v2");
    let mut inspect = inspect_v2(&dir, v3);
    let http = Http::new(&inspect.addr);
    let cases = cases();
    assert!(cases.len() >= 10);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let (status, body) = post(
            &http,
            case["body"].as_str().unwrap(),
            case["content_type"].as_str().unwrap(),
        )
        .await;
        if case["expected_status"] == 200 {
            assert_eq!(
                status,
                StatusCode::OK,
                "{name}: {}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                is_xml_success(&body),
                "{name}: {}",
                String::from_utf8_lossy(&body)
            );
            let line = read_line(&mut inspect);
            assert_eq!(line["version"], 2, "{name}: {line}");
            assert_eq!(line["kind"], case["expected_kind"], "{name}: {line}");
            for (field, value) in case["expected_fields"].as_object().unwrap() {
                assert_eq!(
                    &line["fields"][field], value,
                    "{name}: field {field} in {line}"
                );
            }
        } else {
            assert!(
                !status.is_success(),
                "{name}: refused case answered {status}"
            );
            assert!(
                status.is_server_error(),
                "{name}: v2 failures are 5xx, got {status}"
            );
            assert!(!is_xml_success(&body), "{name}");
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("<return_code><![CDATA[FAIL]]></return_code>"),
                "{name}: {text}"
            );
        }
    }
    // Nothing refused reached the printer: one genuine payment after all cases is the very
    // next line.
    let first = cases.iter().find(|c| c["expected_status"] == 200).unwrap();
    let (status, _) = post(&http, first["body"].as_str().unwrap(), "text/xml").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read_line(&mut inspect)["kind"], first["expected_kind"]);
}

#[tokio::test]
async fn every_v2_vector_case_gets_its_expected_answer_beside_the_v3_keys() {
    every_vector_case_gets_its_expected_answer(true).await;
}

#[tokio::test]
async fn a_merchant_with_only_the_v2_key_needs_no_v3_flags() {
    every_vector_case_gets_its_expected_answer(false).await;
}

#[tokio::test]
async fn a_v2_body_over_the_limit_is_413_in_xml() {
    let dir = TempDir::new("inspect-v2-big");
    let inspect = inspect_v2(&dir, true);
    let http = Http::new(&inspect.addr);
    let big = format!("<xml><attach>{}</attach></xml>", "a".repeat(70 * 1024));
    let (status, body) = post(&http, &big, "text/xml").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!is_xml_success(&body));
}

#[tokio::test]
async fn without_a_v2_key_xml_is_refused_and_the_log_says_what_to_configure() {
    let dir = TempDir::new("inspect-no-v2");
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(key_flags(dir.path()));
    let inspect = start("inspect", &args);
    let http = Http::new(&inspect.addr);
    let case = cases()
        .into_iter()
        .find(|c| c["expected_status"] == 200)
        .unwrap();
    let (status, body) = post(&http, case["body"].as_str().unwrap(), "text/xml").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!is_xml_success(&body), "{}", String::from_utf8_lossy(&body));
    inspect.wait_log(&["no v2 key is configured", "v2_key"]);
}

#[tokio::test]
async fn a_body_without_headers_that_is_not_xml_is_still_refused_as_v3() {
    let dir = TempDir::new("inspect-v2-json");
    let inspect = inspect_v2(&dir, true);
    let http = Http::new(&inspect.addr);
    let (status, body) = post(&http, r#"{"id":"x"}"#, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["code"], "FAIL");
}
