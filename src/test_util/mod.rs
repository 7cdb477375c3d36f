//! A signer that makes genuine WeChat Pay notifications (and the usual tamperings) from
//! fixed test keys, for tests, demos and benchmarks. Behind the `test-util` feature.
//!
//! ```
//! use tower_wechatpay::test_util::{TestSigner, sample_payment};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = TestSigner::public_key_mode();
//! let layer = signer.layer()?; // knows the test keys and the test APIv3 key
//! let genuine = signer.notification("TRANSACTION.SUCCESS", &sample_payment()).build()?;
//! assert!(layer.verify(&genuine.headers, &genuine.body).is_ok());
//!
//! let forged = genuine.clone().with_body(&b"{}"[..]);
//! assert!(layer.verify(&forged.headers, &forged.body).is_err());
//! # Ok(()) }
//! ```
//!
//! The private keys here are public test material: never configure them in production.

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "v2")]
mod v2;

#[cfg(feature = "v2")]
pub use v2::{
    OpenedV2, SignType, TEST_V2_KEY, V2TestSigner, open_v2, sample_v2_payment, sample_v2_refund,
};

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use serde_json::{Value, json};

use crate::backend::{NONCE_LEN, ResourceCipher, SigningKey, signed_message_parts};
use crate::body::BufferedBody;
use crate::error::ConfigError;
use crate::layer::WechatPayLayer;

/// The test APIv3 key (32 ASCII characters).
pub const TEST_APIV3_KEY: &str = "tWp7Tst3KeyForTowerWechatPay0001";
/// The test WeChat Pay public key id (public key mode).
pub const TEST_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000000042";
/// The test WeChat Pay public key (SPKI PEM) that [`TestSigner::public_key_mode`] signs for.
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("keys/public_key_mode.pub.pem");
/// The test platform certificate (X.509 PEM) that [`TestSigner::certificate_mode`] signs for.
pub const TEST_CERTIFICATE_PEM: &str = include_str!("keys/certificate_mode.cert.pem");
/// The serial of [`TEST_CERTIFICATE_PEM`], as WeChat Pay sends it.
pub const TEST_CERTIFICATE_SERIAL: &str = "3A7F19C0D2E4B6A85F1E0C9B7D3A2F4E6C8B1D05";

const PUBLIC_KEY_MODE_PRIVATE_PEM: &str = include_str!("keys/public_key_mode.key.pem");
const CERTIFICATE_MODE_PRIVATE_PEM: &str = include_str!("keys/certificate_mode.key.pem");
const STRANGER_PRIVATE_PEM: &str = include_str!("keys/stranger.key.pem");

/// Signs and encrypts notifications the way WeChat Pay does.
pub struct TestSigner {
    key: SigningKey,
    serial: String,
    cipher: ResourceCipher,
}

impl std::fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigner")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl TestSigner {
    /// A signer from a PKCS#8 private key PEM, the serial it signs under and an APIv3 key.
    ///
    /// # Errors
    /// If the key does not parse or the APIv3 key is not 32 bytes.
    pub fn new(
        private_key_pem: &str,
        serial: &str,
        api_v3_key: impl AsRef<[u8]>,
    ) -> Result<Self, ConfigError> {
        let mut blocks = crate::pem::parse_all(private_key_pem.as_bytes())?.into_iter();
        let (Some(block), None) = (blocks.next(), blocks.next()) else {
            return Err(ConfigError::InvalidPem {
                reason: "more than one pem block where one key was expected",
            });
        };
        if block.label != "PRIVATE KEY" {
            return Err(ConfigError::UnexpectedPem {
                found: block.label.clone(),
                expected: "pkcs#8 private key",
            });
        }
        let key =
            SigningKey::from_pkcs8_der(&block.der).map_err(|_| ConfigError::InvalidPrivateKey)?;
        Ok(Self {
            key,
            serial: serial.to_owned(),
            cipher: cipher(api_v3_key.as_ref())?,
        })
    }

    /// Signs as WeChat Pay's public key [`TEST_PUBLIC_KEY_ID`].
    pub fn public_key_mode() -> Self {
        Self::fixed(PUBLIC_KEY_MODE_PRIVATE_PEM, TEST_PUBLIC_KEY_ID)
    }

    /// Signs as the platform certificate [`TEST_CERTIFICATE_SERIAL`].
    pub fn certificate_mode() -> Self {
        Self::fixed(CERTIFICATE_MODE_PRIVATE_PEM, TEST_CERTIFICATE_SERIAL)
    }

    /// Signs with a key nobody configured while claiming [`TEST_PUBLIC_KEY_ID`]: a forger.
    pub fn stranger() -> Self {
        Self::fixed(STRANGER_PRIVATE_PEM, TEST_PUBLIC_KEY_ID)
    }

    fn fixed(pem: &str, serial: &str) -> Self {
        // The fixed test keys ship with the crate; failing to parse them is a build bug.
        #[allow(clippy::expect_used)]
        Self::new(pem, serial, TEST_APIV3_KEY).expect("the bundled test keys parse")
    }

    /// The serial this signer puts in `Wechatpay-Serial`.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// A layer that knows both test keys and the test APIv3 key, with the system clock.
    ///
    /// # Errors
    /// Never with the bundled keys.
    pub fn layer(&self) -> Result<WechatPayLayer, ConfigError> {
        WechatPayLayer::new(TEST_APIV3_KEY)?
            .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?
            .add_certificate(TEST_CERTIFICATE_PEM)
    }

    /// Starts a notification of `event_type` whose decrypted resource is `resource`.
    pub fn notification(&self, event_type: &str, resource: &Value) -> NotificationBuilder<'_> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let original_type = if event_type.starts_with("REFUND.") {
            "refund"
        } else {
            "transaction"
        };
        NotificationBuilder {
            signer: self,
            event_type: event_type.to_owned(),
            resource: resource.to_string(),
            id: format!(
                "{:08x}-7e57-4c0d-9a1b-{:012x}",
                n,
                n.wrapping_mul(2_654_435_761)
            ),
            create_time: "2025-11-28T11:20:00+08:00".to_owned(),
            summary: "支付成功".to_owned(),
            original_type: original_type.to_owned(),
            algorithm: "AEAD_AES_256_GCM".to_owned(),
            associated_data: Some(original_type.to_owned()),
            resource_nonce: format!("{:012}", n.wrapping_mul(7_919) % 1_000_000_000_000),
            timestamp: None,
            nonce: format!("{:032X}", u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            serial: None,
            other_api_v3_key: None,
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn cipher(api_v3_key: &[u8]) -> Result<ResourceCipher, ConfigError> {
    let key: [u8; 32] = api_v3_key
        .try_into()
        .map_err(|_| ConfigError::ApiV3KeyLength {
            len: api_v3_key.len(),
        })?;
    ResourceCipher::new(&key).map_err(|_| ConfigError::ApiV3KeyLength { len: 32 })
}

/// One notification being made; every field has a realistic default.
#[derive(Debug, Clone)]
pub struct NotificationBuilder<'a> {
    signer: &'a TestSigner,
    event_type: String,
    resource: String,
    id: String,
    create_time: String,
    summary: String,
    original_type: String,
    algorithm: String,
    associated_data: Option<String>,
    resource_nonce: String,
    timestamp: Option<i64>,
    nonce: String,
    serial: Option<String>,
    other_api_v3_key: Option<Vec<u8>>,
}

impl NotificationBuilder<'_> {
    /// The envelope's `create_time` (RFC 3339; default: a fixed time in 2025).
    pub fn create_time(mut self, create_time: &str) -> Self {
        self.create_time = create_time.to_owned();
        self
    }

    /// `Wechatpay-Timestamp` (default: now).
    pub fn timestamp(mut self, unix_seconds: i64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }

    /// `Wechatpay-Nonce`.
    pub fn nonce(mut self, nonce: &str) -> Self {
        self.nonce = nonce.to_owned();
        self
    }

    /// `Wechatpay-Serial` (default: the signer's).
    pub fn serial(mut self, serial: &str) -> Self {
        self.serial = Some(serial.to_owned());
        self
    }

    /// The envelope `id`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }

    /// The envelope `summary`.
    pub fn summary(mut self, summary: &str) -> Self {
        self.summary = summary.to_owned();
        self
    }

    /// `resource.original_type` (default: `refund` for `REFUND.*`, else `transaction`).
    pub fn original_type(mut self, original_type: &str) -> Self {
        self.original_type = original_type.to_owned();
        self
    }

    /// `resource.algorithm` (default `AEAD_AES_256_GCM`).
    pub fn algorithm(mut self, algorithm: &str) -> Self {
        self.algorithm = algorithm.to_owned();
        self
    }

    /// `resource.associated_data`; `None` leaves the field out.
    pub fn associated_data(mut self, associated_data: Option<&str>) -> Self {
        self.associated_data = associated_data.map(str::to_owned);
        self
    }

    /// `resource.nonce`, the raw AES-GCM nonce (12 characters to be valid).
    pub fn resource_nonce(mut self, nonce: &str) -> Self {
        self.resource_nonce = nonce.to_owned();
        self
    }

    /// The decrypted resource as raw text (e.g. something that is not JSON).
    pub fn resource_text(mut self, text: &str) -> Self {
        self.resource = text.to_owned();
        self
    }

    /// Encrypts with another APIv3 key than the test one (the "wrong APIv3 key" case).
    pub fn encrypted_with(mut self, api_v3_key: &[u8]) -> Self {
        self.other_api_v3_key = Some(api_v3_key.to_vec());
        self
    }

    /// Encrypts, builds the envelope and signs it.
    ///
    /// # Errors
    /// [`ConfigError::ApiV3KeyLength`] if [`encrypted_with`](Self::encrypted_with) was
    /// given a key that is not 32 bytes, [`ConfigError::TestNotification`] if the resource
    /// nonce is not 12 bytes.
    pub fn build(self) -> Result<SignedNotification, ConfigError> {
        let other;
        let cipher = match &self.other_api_v3_key {
            Some(key) => {
                other = cipher(key)?;
                &other
            }
            None => &self.signer.cipher,
        };
        if self.resource_nonce.len() != NONCE_LEN {
            return Err(ConfigError::TestNotification {
                reason: "resource.nonce must be 12 bytes, the aes-256-gcm nonce length",
            });
        }
        let mut ciphertext = self.resource.into_bytes();
        cipher
            .seal(
                self.resource_nonce.as_bytes(),
                self.associated_data
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
                &mut ciphertext,
            )
            .map_err(|_| ConfigError::TestNotification {
                reason: "aes-256-gcm refused to encrypt the resource",
            })?;
        let mut resource = json!({
            "original_type": self.original_type,
            "algorithm": self.algorithm,
            "ciphertext": STANDARD.encode(&ciphertext),
        });
        if let Some(associated_data) = &self.associated_data {
            resource["associated_data"] = json!(associated_data);
        }
        resource["nonce"] = json!(self.resource_nonce);
        // WeChat Pay's field order and compact form (serde_json's map sorts keys, so the
        // envelope is written by hand).
        let body = format!(
            r#"{{"id":{},"create_time":{},"resource_type":"encrypt-resource","event_type":{},"summary":{},"resource":{}}}"#,
            json!(self.id),
            json!(self.create_time),
            json!(self.event_type),
            json!(self.summary),
            resource,
        );
        let serial = self.serial.unwrap_or_else(|| self.signer.serial.clone());
        let timestamp = self.timestamp.unwrap_or_else(now);
        self.signer.sign(body, timestamp, &self.nonce, &serial)
    }
}

impl TestSigner {
    /// Signs `body` exactly as given (a genuine request, whatever the body holds), with
    /// this signer's serial and a fresh nonce.
    ///
    /// # Errors
    /// Never with the bundled keys.
    pub fn sign_body(
        &self,
        body: impl Into<Bytes>,
        timestamp: i64,
    ) -> Result<SignedNotification, ConfigError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{:032X}", u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.sign(body, timestamp, &nonce, &self.serial)
    }

    /// Signs `body` exactly as given with this signer's serial, the given timestamp and
    /// nonce: what a simulator needs for a fresh signature on every delivery attempt.
    ///
    /// # Errors
    /// If the backend refuses to sign (never with a parsed RSA key).
    pub fn sign_body_with_nonce(
        &self,
        body: impl Into<Bytes>,
        timestamp: i64,
        nonce: &str,
    ) -> Result<SignedNotification, ConfigError> {
        self.sign(body, timestamp, nonce, &self.serial)
    }

    /// Encrypts `plaintext` with this signer's APIv3 key as WeChat Pay encrypts a resource
    /// (AES-256-GCM, `nonce` and `associated_data` as raw bytes) and returns the base64 of
    /// ciphertext ‖ tag: the `ciphertext` of a notification or of `/v3/certificates`.
    ///
    /// # Errors
    /// [`ConfigError::TestNotification`] if `nonce` is not 12 bytes.
    pub fn seal(
        &self,
        plaintext: &[u8],
        nonce: &str,
        associated_data: &str,
    ) -> Result<String, ConfigError> {
        if nonce.len() != NONCE_LEN {
            return Err(ConfigError::TestNotification {
                reason: "the nonce must be 12 bytes, the aes-256-gcm nonce length",
            });
        }
        let mut sealed = plaintext.to_vec();
        self.cipher
            .seal(nonce.as_bytes(), associated_data.as_bytes(), &mut sealed)
            .map_err(|_| ConfigError::TestNotification {
                reason: "aes-256-gcm refused to encrypt",
            })?;
        Ok(STANDARD.encode(sealed))
    }

    fn sign(
        &self,
        body: impl Into<Bytes>,
        timestamp: i64,
        nonce: &str,
        serial: &str,
    ) -> Result<SignedNotification, ConfigError> {
        let body = body.into();
        let timestamp = timestamp.to_string();
        let signature = self
            .key
            .sign(&signed_message_parts(
                timestamp.as_bytes(),
                nonce.as_bytes(),
                &body,
            ))
            .map_err(|_| ConfigError::InvalidPrivateKey)?;
        let signed = SignedNotification {
            headers: HeaderMap::new(),
            body,
        };
        Ok(signed
            .with_header("content-type", "application/json")
            .with_header("wechatpay-timestamp", &timestamp)
            .with_header("wechatpay-nonce", nonce)
            .with_header("wechatpay-serial", serial)
            .with_header("wechatpay-signature", &STANDARD.encode(signature))
            .with_header("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048"))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// A signed notification: the headers and the exact body, ready to send or to tamper with.
#[derive(Debug, Clone)]
pub struct SignedNotification {
    /// The `Wechatpay-*` headers and `Content-Type`.
    pub headers: HeaderMap,
    /// The exact body that was signed.
    pub body: Bytes,
}

impl SignedNotification {
    /// A `POST /` request carrying it.
    pub fn into_request(self) -> Request<BufferedBody> {
        self.into_request_to("/")
    }

    /// A `POST` request to `uri` carrying it.
    pub fn into_request_to(self, uri: &str) -> Request<BufferedBody> {
        let mut request = Request::new(BufferedBody::new(self.body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.parse().unwrap_or_default();
        *request.headers_mut() = self.headers;
        request
    }

    /// Replaces the body, keeping the signature (a tampered body).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a header (names are case-insensitive). Invalid names or values are ignored.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.headers.insert(name, value);
        }
        self
    }

    /// Removes a header.
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    /// Turns it into WeChat Pay's signature probe: `WECHATPAY/SIGNTEST/` + base64 junk.
    pub fn into_probe(self) -> Self {
        let junk = STANDARD.encode([1u8; 256]);
        self.with_header("wechatpay-signature", &format!("WECHATPAY/SIGNTEST/{junk}"))
    }

    /// The body as text (it is UTF-8 JSON).
    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_default()
    }
}

/// A direct payment success resource (990 fen, order `2025112811200060181590`).
pub fn sample_payment() -> Value {
    json!({
        "mchid": "1900012345",
        "appid": "wx8888888888888888",
        "out_trade_no": "2025112811200060181590",
        "transaction_id": "4200830166131860913909960308",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "attach": "",
        "success_time": "2025-11-28T11:20:00+08:00",
        "payer": { "openid": "oTestOpenid0000000000000SECRET" },
        "amount": { "total": 990, "payer_total": 990, "currency": "CNY", "payer_currency": "CNY" }
    })
}

/// A partner (服务商) payment success resource.
pub fn sample_partner_payment() -> Value {
    json!({
        "sp_appid": "wx8888888888888888",
        "sp_mchid": "1230000109",
        "sub_appid": "wxd678efh567hg6999",
        "sub_mchid": "1900000109",
        "out_trade_no": "1217752501201407033233368018",
        "transaction_id": "1217752501201407033233368018",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "success_time": "2018-06-08T10:34:56+08:00",
        "payer": { "sp_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "sub_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
        "amount": { "total": 100, "payer_total": 100, "currency": "CNY", "payer_currency": "CNY" },
        "scene_info": { "device_id": "013467007045764" }
    })
}

/// A combine payment (合单) success resource with two sub-orders.
pub fn sample_combine_payment() -> Value {
    json!({
        "combine_appid": "wxd678efh567hg6787",
        "combine_mchid": "1900000109",
        "combine_out_trade_no": "20150806125346",
        "scene_info": { "device_id": "POS1:123" },
        "combine_payer_info": { "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
        "sub_orders": [
            {
                "mchid": "1900000109", "trade_type": "JSAPI", "trade_state": "SUCCESS",
                "bank_type": "CMC", "attach": "深圳分店", "success_time": "2015-05-20T13:29:35.120+08:00",
                "transaction_id": "1009660380201506130728806387", "out_trade_no": "20150806125346",
                "amount": { "total_amount": 10, "payer_amount": 10, "currency": "CNY", "payer_currency": "CNY" }
            },
            {
                "mchid": "1900000110", "trade_type": "JSAPI", "trade_state": "SUCCESS",
                "transaction_id": "1009660380201506130728806388", "out_trade_no": "20150806125347",
                "amount": { "total_amount": 20, "payer_amount": 20, "currency": "CNY" }
            }
        ]
    })
}

/// A refund success resource for [`sample_payment`]'s order.
pub fn sample_refund() -> Value {
    json!({
        "mchid": "1900012345",
        "out_trade_no": "2025112811200060181590",
        "transaction_id": "4200830166131860913909960308",
        "out_refund_no": "R2025112811200060181590",
        "refund_id": "50000000382019052709732678859",
        "refund_status": "SUCCESS",
        "success_time": "2025-11-28T12:00:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": { "total": 990, "refund": 990, "payer_total": 990, "payer_refund": 990 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_nonce_of_the_wrong_length_is_reported_as_such() {
        let signer = TestSigner::public_key_mode();
        let error = signer
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .resource_nonce("short")
            .build()
            .unwrap_err();
        assert!(
            matches!(error, ConfigError::TestNotification { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("12 bytes"), "{error}");
    }

    #[test]
    fn a_signer_key_that_is_not_pem_says_why() {
        let error = TestSigner::new("MIIB", "serial", TEST_APIV3_KEY).unwrap_err();
        assert_eq!(
            error,
            ConfigError::InvalidPem {
                reason: "no -----BEGIN line found"
            }
        );
    }
}
