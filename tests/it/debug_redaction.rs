//! `Debug` output redacts keys, the decrypted resource and payer data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{NOW, test_layer};
use tower_wechatpay::test_util::{TEST_APIV3_KEY, TestSigner, sample_payment};

const OPENID: &str = "oTestOpenid0000000000000SECRET";

#[test]
fn debug_output_redacts_keys_and_payer_data() {
    let layer = test_layer();
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let notification = layer.verify(&signed.headers, &signed.body).unwrap();
    let payment = notification.payment().unwrap();
    let debug = format!(
        "{layer:?} {notification:?} {:?} {payment:?} {:?} {:?}",
        layer.keys(),
        notification.event(),
        TestSigner::public_key_mode(),
    );
    for secret in [TEST_APIV3_KEY, OPENID, notification.resource_json()] {
        assert!(
            !debug.contains(secret),
            "Debug leaks {secret:.20}…: {debug}"
        );
    }
    assert!(debug.contains("<redacted>"));
    assert!(debug.contains(notification.id()));
    // The openid is still there for the handler that needs it.
    assert_eq!(payment.payer.openid.as_deref(), Some(OPENID));
}
