//! Settings that would silently misbehave are refused when the layer is built, in any
//! order, and the builder gives the same layer whatever the order of its calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::test_layer;
use tower_wechatpay::dedupe::{Dedupe, InMemoryStore};
use tower_wechatpay::refresh::KeyRefresher;
use tower_wechatpay::test_util::{TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM};
use tower_wechatpay::{ConfigError, KeyRing, WechatPayLayer};

fn setting(error: ConfigError) -> &'static str {
    match error {
        ConfigError::InvalidSetting { setting, .. } => setting,
        other => panic!("expected InvalidSetting, got {other:?}"),
    }
}

#[test]
fn an_endless_lease_or_done_marker_is_refused_not_a_panic_later() {
    let lease = Dedupe::new(InMemoryStore::new()).lease(Duration::MAX);
    assert_eq!(
        setting(test_layer().dedupe(lease).unwrap_err()),
        "dedupe lease"
    );
    let keep = Dedupe::new(InMemoryStore::new()).keep_done(Duration::MAX);
    assert_eq!(
        setting(test_layer().dedupe(keep).unwrap_err()),
        "dedupe keep_done"
    );
}

#[test]
fn a_lease_shorter_than_the_deadline_plus_the_store_timeout_is_refused_in_either_order() {
    // 4 s deadline + 1 s store timeout: a 4 s lease could expire under a running handler.
    let short = || Dedupe::new(InMemoryStore::new()).lease(Duration::from_secs(4));
    let error = test_layer().dedupe(short()).unwrap_err();
    assert!(error.to_string().contains("answer deadline"), "{error}");
    assert!(
        test_layer()
            .dedupe(Dedupe::new(InMemoryStore::new()).lease(Duration::from_secs(5)))
            .is_ok()
    );
    // The other order: a deadline raised after the guard was set.
    let layer = test_layer()
        .answer_deadline(Duration::from_secs(3))
        .unwrap()
        .dedupe(short())
        .unwrap();
    assert_eq!(
        setting(layer.answer_deadline(Duration::from_secs(4)).unwrap_err()),
        "dedupe lease"
    );
}

#[test]
fn a_sub_second_tolerance_is_refused_instead_of_truncated_to_zero() {
    for tolerance in [
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_millis(1500),
    ] {
        let error = test_layer().timestamp_tolerance(tolerance).unwrap_err();
        assert_eq!(setting(error), "timestamp tolerance");
    }
    assert!(
        test_layer()
            .timestamp_tolerance(Duration::from_secs(1))
            .is_ok()
    );
}

#[test]
fn an_answer_deadline_past_wechat_pays_five_seconds_or_zero_is_refused() {
    assert!(
        test_layer()
            .answer_deadline(Duration::from_secs(6))
            .is_err()
    );
    assert!(test_layer().answer_deadline(Duration::ZERO).is_err());
    assert!(test_layer().answer_deadline(Duration::from_secs(5)).is_ok());
    assert!(test_layer().body_timeout(Duration::ZERO).is_err());
}

#[test]
fn key_ring_after_add_keeps_the_keys_added_before() {
    let ring = KeyRing::new();
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .key_ring(ring.clone());
    assert!(ring.contains(TEST_PUBLIC_KEY_ID));
    assert_eq!(layer.keys().len(), 1);
}

#[test]
fn key_ring_after_key_refresher_keeps_the_refresher() {
    let ring = KeyRing::new();
    let refresher = KeyRefresher::new(|_keys: KeyRing| async { Ok(()) });
    let _layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .key_refresher(refresher)
        .key_ring(ring.clone());
    assert!(ring.has_refresher());
}
