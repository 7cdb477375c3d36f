//! The platform certificates and `GET /v3/certificates`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde_json::{Value, json};
use tower_wechatpay::test_util::TestSigner;
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

use super::api::Reply;
use super::{CertificatesAnswer, ServeMode, Server};
use crate::error::{SimError, context};
use crate::keys::{PlatformCertificate, random_alphanumeric};

/// WeChat Pay's answer to a public-key-only merchant asking for platform certificates
/// (wechatpay-java#354, wechatpay-go#251).
const NO_CERTIFICATE: &str = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/doc/v3/merchant/4012153196";

/// A platform certificate the server holds, ready to sign with and to list.
pub(super) struct Platform {
    pub(super) certificate: PlatformCertificate,
    pub(super) signer: Arc<TestSigner>,
    effective_time: String,
    expire_time: String,
}

impl Platform {
    pub(super) fn new(
        certificate: &PlatformCertificate,
        api_v3_key: &str,
    ) -> Result<Self, SimError> {
        let parsed = Certificate::from_pem(certificate.cert_pem.as_bytes())
            .map_err(context("the platform certificate"))?;
        let validity = parsed.tbs_certificate().validity();
        Ok(Self {
            certificate: certificate.clone(),
            signer: Arc::new(certificate.signer(api_v3_key)?),
            effective_time: beijing(validity.not_before.to_unix_duration().as_secs())?,
            expire_time: beijing(validity.not_after.to_unix_duration().as_secs())?,
        })
    }

    /// The entry of `/v3/certificates`: the certificate encrypted under the APIv3 key.
    fn entry(&self) -> Result<Value, SimError> {
        let nonce = random_alphanumeric(12);
        let ciphertext = self
            .signer
            .seal(self.certificate.cert_pem.as_bytes(), &nonce, "certificate")
            .map_err(context("encrypting the platform certificate"))?;
        Ok(json!({
            "serial_no": self.certificate.serial,
            "effective_time": self.effective_time,
            "expire_time": self.expire_time,
            "encrypt_certificate": {
                "algorithm": "AEAD_AES_256_GCM",
                "nonce": nonce,
                "associated_data": "certificate",
                "ciphertext": ciphertext,
            }
        }))
    }
}

/// Unix seconds as WeChat Pay writes times: `2026-11-30T18:04:05+08:00`.
fn beijing(unix_seconds: u64) -> Result<String, SimError> {
    let seconds = i64::try_from(unix_seconds).map_err(context("a certificate time"))?;
    let offset = time::UtcOffset::from_hms(8, 0, 0).map_err(context("the +08:00 offset"))?;
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(context("a certificate time"))?
        .to_offset(offset);
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    ))
}

/// The DER inside a PEM block labelled `label`.
pub(super) fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>, SimError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let inside = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(inside, _)| inside)
        .ok_or_else(|| SimError(format!("no {begin} block")))?;
    let base64: String = inside.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(base64)
        .map_err(context(format!("the {label} block is not base64")))
}

/// `GET /v3/certificates[?algorithm_type=RSA|SM2|ALL]`.
pub(super) async fn certificates(
    State(server): State<Arc<Server>>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let rsa = match query.get("algorithm_type").map(String::as_str) {
        None | Some("RSA" | "ALL") => true,
        Some("SM2") => false,
        Some(other) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                &format!("algorithm_type 的值 {other} 无效，应为 RSA、SM2 或 ALL"),
            );
        }
    };
    if server.mode == ServeMode::PublicKey {
        return match server.certificates_answer {
            CertificatesAnswer::NotFound => {
                Reply::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", NO_CERTIFICATE)
            }
            CertificatesAnswer::SystemError => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统繁忙，请稍后重试",
            )
            .unsigned(),
            CertificatesAnswer::Empty => Reply::ok(json!({ "data": [] })),
        };
    }
    let mut data = Vec::new();
    if rsa {
        for platform in server.platforms() {
            match platform.entry() {
                Ok(entry) => data.push(entry),
                Err(error) => return Reply::system_error(&error),
            }
        }
    }
    Reply::ok(json!({ "data": data }))
}
