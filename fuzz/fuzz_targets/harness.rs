//! The harness every target shares, built from the shared vectors' keys so that the
//! vectors are meaningful seeds.

use std::sync::LazyLock;

use tower_wechatpay::test_util::fuzz::{FuzzKeys, Harness};

pub static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let keys = FuzzKeys {
        api_v3_key: include_str!("../../tests/vectors/keys/apiv3_key.txt").trim(),
        public_key_id: include_str!("../../tests/vectors/keys/wechatpay_public_key_id.txt").trim(),
        public_key_pem: include_str!("../../tests/vectors/keys/wechatpay_public_key.pem"),
        certificates: &[
            include_str!("../../tests/vectors/keys/platform_cert_a.pem"),
            include_str!("../../tests/vectors/keys/platform_cert_b.pem"),
        ],
        now: 1_764_300_000,
    };
    match Harness::new(&keys) {
        Ok(harness) => harness,
        Err(error) => panic!("the vectors' keys do not load: {error}"),
    }
});
