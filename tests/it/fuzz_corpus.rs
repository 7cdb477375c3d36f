#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays the fuzz targets' committed inputs (fuzz/seeds, and any crash reproducers under
//! fuzz/regressions) through the same harness the fuzzers run, under whichever backend
//! this build uses. The fuzzers themselves run with `bash fuzz/run.sh` (nightly).

use std::fs;
use std::path::{Path, PathBuf};

use http::StatusCode;
use tower_wechatpay::test_util::fuzz::{FuzzKeys, Harness};

fn harness() -> Harness {
    let keys = FuzzKeys {
        api_v3_key: include_str!("../vectors/keys/apiv3_key.txt").trim(),
        public_key_id: include_str!("../vectors/keys/wechatpay_public_key_id.txt").trim(),
        public_key_pem: include_str!("../vectors/keys/wechatpay_public_key.pem"),
        certificates: &[
            include_str!("../vectors/keys/platform_cert_a.pem"),
            include_str!("../vectors/keys/platform_cert_b.pem"),
        ],
        now: 1_764_300_000,
    };
    Harness::new(&keys).unwrap()
}

/// Every input for `target`: its seeds, then its reproducers (a missing folder is empty).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for folder in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    found.sort();
    found
}

fn replay(target: &str, minimum: usize, case: impl Fn(&Harness, &[u8])) {
    let harness = harness();
    let inputs = inputs(target);
    assert!(
        inputs.len() >= minimum,
        "expected at least {minimum} committed inputs for {target}, found {}",
        inputs.len()
    );
    for (path, bytes) in inputs {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&harness, &bytes)));
        assert!(outcome.is_ok(), "{} broke an invariant", path.display());
    }
}

#[test]
fn layer_inputs_hold_every_invariant() {
    replay("layer", 20, |harness, bytes| {
        let _ = harness.layer_case(bytes);
    });
}

#[test]
fn envelope_inputs_hold_every_invariant() {
    replay("envelope", 10, Harness::envelope_case);
}

#[test]
fn decrypt_inputs_hold_every_invariant() {
    replay("decrypt", 3, Harness::decrypt_case);
}

#[test]
fn key_inputs_hold_every_invariant() {
    replay("keys", 6, Harness::key_case);
}

/// The harness's invariants are real: a genuine vector reaches the handler and is
/// acknowledged, the handler's retry is a 500, a corrupted signature never reaches it, and
/// a re-signed (mutated) body does. If the harness accepted everything or nothing, the
/// replays above would prove little.
#[test]
fn the_layer_harness_tells_genuine_from_forged() {
    let harness = harness();
    let inputs = inputs("layer");
    let seed = |name: &str| {
        inputs
            .iter()
            .find(|(path, _)| path.ends_with(name))
            .map(|(_, bytes)| bytes.clone())
            .unwrap()
    };
    let genuine = seed("accept_public_key");
    let outcome = harness.layer_case(&genuine).unwrap();
    assert!(outcome.status.is_success(), "{}", outcome.status);
    assert!(outcome.handler_ran);

    let mut retried = genuine.clone();
    retried[0] = 3 << 2; // the handler answers 500
    let outcome = harness.layer_case(&retried).unwrap();
    assert_eq!(outcome.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(outcome.handler_ran);

    let text = String::from_utf8(genuine).unwrap();
    let forged = text.replacen("Wechatpay-Nonce: ", "Wechatpay-Nonce: X", 1);
    let outcome = harness.layer_case(forged.as_bytes()).unwrap();
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    assert!(!outcome.handler_ran);

    // Flag 1 signs whatever body follows with the test key: even a truncated one gets past
    // the signature (and is then refused as a malformed envelope, 500, never acknowledged).
    let mut resigned = seed("accept_public_key_resigned");
    resigned.truncate(resigned.len() - 10);
    let outcome = harness.layer_case(&resigned).unwrap();
    assert_eq!(outcome.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!outcome.handler_ran);
}
