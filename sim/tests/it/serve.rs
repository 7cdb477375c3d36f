//! `wechatpay-sim serve`: the binary over HTTP (and the app in-process where a variant of
//! the configuration is all that differs), with a test-side merchant signer and response
//! verifier written from the protocol, not from the server's code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use axum::Router;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_wechatpay::{Handled, KeyRing, Notification, Notified};
use wechatpay_sim::keys::Keys;
use wechatpay_sim::serve::{CertificatesAnswer, Log, ServeMode, Server, app};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use crate::support::{Running, arg, healthy_receiver, keys, serve, sim, stderr};

// ---------------------------------------------------------------------------------------
// The merchant's side: signing requests, verifying and decrypting answers.

/// Signs requests as a merchant API client does (MERCHANT-API.md §1).
struct Merchant {
    key: RsaKeyPair,
    mchid: String,
    serial: String,
}

impl Merchant {
    fn new(keys: &Keys) -> Self {
        Self {
            key: RsaKeyPair::from_pkcs8(&pem_der(&keys.merchant_key_pem)).unwrap(),
            mchid: keys.mchid.clone(),
            serial: keys.merchant_serial.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> String {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .unwrap();
        STANDARD.encode(signature)
    }

    /// The `Authorization` value for `METHOD\ntarget\ntimestamp\nnonce\nbody\n`.
    fn authorization(&self, method: &str, target: &str, timestamp: i64, body: &str) -> String {
        let nonce = "N0NCE0N0NCE0N0NCE0N0NCE0N0NCE012";
        let message = format!("{method}\n{target}\n{timestamp}\n{nonce}\n{body}\n");
        // GO's order is the usual one; the server must accept any.
        format!(
            "WECHATPAY2-SHA256-RSA2048 serial_no=\"{}\",timestamp=\"{timestamp}\",mchid=\"{}\",signature=\"{}\",nonce_str=\"{nonce}\"",
            self.serial,
            self.mchid,
            self.sign(message.as_bytes())
        )
    }
}

fn now() -> i64 {
    wechatpay_sim::notify::unix_now()
}

/// The DER of the one PEM block in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(body).unwrap()
}

/// The SPKI DER of a certificate.
fn certificate_key(cert_pem: &str) -> Vec<u8> {
    Certificate::from_pem(cert_pem.as_bytes())
        .unwrap()
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// Whether the answer's signature verifies under `spki_der` (MERCHANT-API.md §2).
fn verifies(answer: &Answer, spki_der: &[u8]) -> bool {
    let header = |name: &str| answer.header(name).unwrap_or_default();
    let Ok(signature) = STANDARD.decode(header("wechatpay-signature")) else {
        return false;
    };
    let mut message = format!(
        "{}\n{}\n",
        header("wechatpay-timestamp"),
        header("wechatpay-nonce")
    )
    .into_bytes();
    message.extend_from_slice(&answer.body);
    message.push(b'\n');
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki_der)
        .verify(&message, &signature)
        .is_ok()
}

/// Checks the answer is signed by the WeChat Pay public key.
fn assert_signed_by_public_key(answer: &Answer, keys: &Keys) {
    assert_eq!(
        answer.header("wechatpay-serial").as_deref(),
        Some(keys.public_key_id.as_str()),
        "{answer:?}"
    );
    assert!(
        verifies(answer, &pem_der(&keys.public_key_pem)),
        "{answer:?}"
    );
    assert_signature_headers(answer);
}

/// Checks the answer is signed by the platform certificate `cert_pem` (serial `serial`).
fn assert_signed_by_certificate(answer: &Answer, serial: &str, cert_pem: &str) {
    assert_eq!(
        answer.header("wechatpay-serial").as_deref(),
        Some(serial),
        "{answer:?}"
    );
    assert!(verifies(answer, &certificate_key(cert_pem)), "{answer:?}");
    assert_signature_headers(answer);
}

fn assert_signature_headers(answer: &Answer) {
    assert_eq!(
        answer.header("wechatpay-signature-type").as_deref(),
        Some("WECHATPAY2-SHA256-RSA2048")
    );
    let timestamp: i64 = answer
        .header("wechatpay-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!((now() - timestamp).abs() < 60);
    assert!(!answer.header("wechatpay-nonce").unwrap().is_empty());
    assert!(answer.header("request-id").is_some());
}

fn assert_unsigned(answer: &Answer) {
    for name in [
        "wechatpay-signature",
        "wechatpay-serial",
        "wechatpay-timestamp",
        "wechatpay-nonce",
    ] {
        assert!(answer.header(name).is_none(), "{name}: {answer:?}");
    }
    assert!(answer.header("request-id").is_some(), "{answer:?}");
}

/// The certificates of a `/v3/certificates` answer, decrypted with the APIv3 key:
/// (listed serial, PEM).
fn decrypt_certificates(answer: &Answer, api_v3_key: &str) -> Vec<(String, String)> {
    let body = answer.json();
    let data = body["data"].as_array().unwrap();
    data.iter()
        .map(|entry| {
            let sealed = &entry["encrypt_certificate"];
            assert_eq!(sealed["algorithm"], "AEAD_AES_256_GCM");
            assert_eq!(sealed["associated_data"], "certificate");
            let nonce = sealed["nonce"].as_str().unwrap();
            assert_eq!(nonce.len(), 12);
            for time in ["effective_time", "expire_time"] {
                let text = entry[time].as_str().unwrap();
                assert!(text.ends_with("+08:00") && text.len() == 25, "{text}");
            }
            assert!(entry["effective_time"].as_str() < entry["expire_time"].as_str());
            let mut ciphertext = STANDARD
                .decode(sealed["ciphertext"].as_str().unwrap())
                .unwrap();
            let key =
                LessSafeKey::new(UnboundKey::new(&AES_256_GCM, api_v3_key.as_bytes()).unwrap());
            let plain = key
                .open_in_place(
                    Nonce::try_assume_unique_for_key(nonce.as_bytes()).unwrap(),
                    Aad::from(b"certificate"),
                    &mut ciphertext,
                )
                .unwrap();
            let pem = String::from_utf8(plain.to_vec()).unwrap();
            let serial = entry["serial_no"].as_str().unwrap().to_owned();
            assert_eq!(KeyRing::new().add_certificate(&pem).unwrap(), serial);
            (serial, pem)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Talking to the server: the binary over HTTP, or the app in-process.

#[derive(Clone)]
enum Api {
    Http(SocketAddr),
    InProcess(Router),
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Api {
    async fn send(&self, request: Request<Bytes>) -> Answer {
        let (parts, body) = match self {
            Api::Http(addr) => {
                let (mut parts, body) = request.into_parts();
                parts.uri = format!("http://{addr}{}", parts.uri).parse().unwrap();
                let client = Client::builder(TokioExecutor::new()).build_http();
                let response = client
                    .request(Request::from_parts(parts, Full::new(body)))
                    .await
                    .unwrap();
                let (parts, body) = response.into_parts();
                (parts, body.collect().await.unwrap().to_bytes())
            }
            Api::InProcess(router) => {
                let response = router
                    .clone()
                    .oneshot(request.map(axum::body::Body::from))
                    .await
                    .unwrap();
                let (parts, body) = response.into_parts();
                (parts, body.collect().await.unwrap().to_bytes())
            }
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET target` as a merchant API client sends it, plus `extra` headers.
    async fn get(&self, merchant: &Merchant, target: &str, extra: &[(&str, &str)]) -> Answer {
        let authorization = merchant.authorization("GET", target, now(), "");
        self.raw_get(
            target,
            &[
                ("accept", "application/json"),
                ("user-agent", "wechatpay-sim-tests/1.0"),
                ("authorization", &authorization),
            ],
            extra,
        )
        .await
    }

    async fn raw_get(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(Method::GET).uri(target);
        for (name, value) in headers.iter().chain(extra) {
            request = request.header(*name, *value);
        }
        self.send(request.body(Bytes::new()).unwrap()).await
    }

    /// `POST /sim/…` with a JSON body (the unauthenticated control endpoints).
    async fn control(&self, path: &str, body: &Value) -> Answer {
        self.control_raw(path, body.to_string()).await
    }

    async fn control_raw(&self, path: &str, body: String) -> Answer {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .unwrap();
        self.send(request).await
    }
}

/// The app in-process.
fn in_process(keys: &Keys, mode: ServeMode, answer: CertificatesAnswer) -> Api {
    let server = Server::new(keys.clone(), mode, answer, Log::silent()).unwrap();
    Api::InProcess(app(server))
}

/// The running server's API over HTTP.
trait ApiOf {
    fn api(&self) -> Api;
}

impl ApiOf for Running {
    fn api(&self) -> Api {
        Api::Http(self.addr)
    }
}

// ---------------------------------------------------------------------------------------
// /v3/certificates and the choice of signer.

#[tokio::test]
async fn certificate_mode_serves_the_platform_certificate_encrypted_and_signed_with_it() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &["--mode", "certificate"]).await;
    let api = server.api();
    for target in ["/v3/certificates", "/v3/certificates?algorithm_type=RSA"] {
        let answer = api.get(&merchant, target, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
        let listed = decrypt_certificates(&answer, &keys.api_v3_key);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, keys.platform.serial);
        assert_eq!(listed[0].1.trim(), keys.platform.cert_pem.trim());
    }
    // Certificate mode ignores a Wechatpay-Serial naming the public key (no switch made).
    let answer = api
        .get(
            &merchant,
            "/v3/certificates",
            &[("wechatpay-serial", &keys.public_key_id)],
        )
        .await;
    assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
}

#[tokio::test]
async fn both_mode_signs_with_the_key_wechatpay_serial_names() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &[]).await; // --mode both is the default
    let api = server.api();

    let plain = api.get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(plain.status, StatusCode::OK, "{plain:?}");
    assert_signed_by_certificate(&plain, &keys.platform.serial, &keys.platform.cert_pem);
    assert_eq!(decrypt_certificates(&plain, &keys.api_v3_key).len(), 1);

    let public = api
        .get(
            &merchant,
            "/v3/certificates",
            &[("wechatpay-serial", &keys.public_key_id)],
        )
        .await;
    assert_eq!(public.status, StatusCode::OK, "{public:?}");
    assert_signed_by_public_key(&public, &keys);

    let named = api
        .get(
            &merchant,
            "/v3/certificates",
            &[("wechatpay-serial", &keys.platform.serial)],
        )
        .await;
    assert_signed_by_certificate(&named, &keys.platform.serial, &keys.platform.cert_pem);

    let unknown = api
        .get(
            &merchant,
            "/v3/certificates",
            &[(
                "wechatpay-serial",
                "PUB_KEY_ID_0000000000000000000000000000000000",
            )],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{unknown:?}");
    assert_eq!(unknown.json()["code"], "INVALID_REQUEST");
    assert_unsigned(&unknown);
}

#[tokio::test]
async fn public_key_mode_answers_not_found_by_default_signed_with_the_public_key() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &["--mode", "public-key"]).await;
    let answer = server.api().get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["code"], "RESOURCE_NOT_EXISTS");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("无可用的平台证书"),
        "{body}"
    );
    assert_signed_by_public_key(&answer, &keys);

    // Everything else is public-key-signed too, whatever Wechatpay-Serial names.
    let order = server
        .api()
        .get(
            &merchant,
            &format!(
                "/v3/pay/transactions/id/4200000000000000000000000001?mchid={}",
                keys.mchid
            ),
            &[("wechatpay-serial", &keys.platform.serial)],
        )
        .await;
    assert_eq!(order.status, StatusCode::NOT_FOUND, "{order:?}");
    assert_signed_by_public_key(&order, &keys);
}

#[tokio::test]
async fn public_key_mode_can_answer_system_error_or_an_empty_list() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);

    let api = in_process(&keys, ServeMode::PublicKey, CertificatesAnswer::SystemError);
    let answer = api.get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert_eq!(answer.json()["code"], "SYSTEM_ERROR");
    assert_unsigned(&answer);

    let api = in_process(&keys, ServeMode::PublicKey, CertificatesAnswer::Empty);
    let answer = api.get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json(), json!({ "data": [] }));
    assert_signed_by_public_key(&answer, &keys);
}

#[tokio::test]
async fn the_flag_chooses_the_public_key_only_answer() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(
        &keys,
        &["--mode", "public-key", "--certificates-answer", "empty"],
    )
    .await;
    let answer = server.api().get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json(), json!({ "data": [] }));
    assert_signed_by_public_key(&answer, &keys);
}

// ---------------------------------------------------------------------------------------
// Rejected requests.

/// A request signed by `merchant` but altered by `spoil` before sending.
async fn spoiled(api: &Api, keys: &Keys, authorization: &str) -> Answer {
    let _ = keys;
    api.raw_get(
        "/v3/certificates",
        &[
            ("accept", "*/*"),
            ("user-agent", "tests"),
            ("authorization", authorization),
        ],
        &[],
    )
    .await
}

fn assert_sign_error(answer: &Answer, timestamp: i64) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_unsigned(answer);
    assert!(
        answer
            .header("request-id")
            .unwrap()
            .rsplit_once('-')
            .is_some_and(|(_, code)| code.bytes().all(|b| b.is_ascii_digit())),
        "{answer:?}"
    );
    let body = answer.json();
    assert_eq!(body["code"], "SIGN_ERROR");
    assert_eq!(body["message"], "错误的签名，验签失败");
    assert_eq!(body["detail"]["field"], "signature");
    assert_eq!(body["detail"]["location"], "authorization");
    let info = &body["detail"]["sign_information"];
    assert_eq!(info["method"], "GET");
    assert_eq!(info["url"], "/v3/certificates");
    let rebuilt =
        format!("GET\n/v3/certificates\n{timestamp}\nN0NCE0N0NCE0N0NCE0N0NCE0N0NCE012\n\n");
    assert_eq!(info["truncated_sign_message"], rebuilt.as_str());
    assert_eq!(info["sign_message_length"], rebuilt.len());
}

#[tokio::test]
async fn a_signature_over_another_target_is_a_sign_error_showing_what_the_server_rebuilt() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &[]).await;
    let ts = now();
    // Signed without the query it is sent with… inverted: signed with one it is sent without.
    let authorization =
        merchant.authorization("GET", "/v3/certificates?algorithm_type=RSA", ts, "");
    let answer = spoiled(&server.api(), &keys, &authorization).await;
    assert_sign_error(&answer, ts);
    assert_eq!(answer.json()["detail"]["detail"]["issue"], "sign not match");
}

#[tokio::test]
async fn a_wrong_serial_no_or_mchid_is_a_sign_error() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    let ts = now();

    let mut wrong_serial = Merchant::new(&keys);
    wrong_serial.serial = keys.platform.serial.clone(); // a platform serial, not the merchant's
    let answer = spoiled(
        &api,
        &keys,
        &wrong_serial.authorization("GET", "/v3/certificates", ts, ""),
    )
    .await;
    assert_sign_error(&answer, ts);

    let mut wrong_mchid = Merchant::new(&keys);
    wrong_mchid.mchid = "1900000001".to_owned();
    let answer = spoiled(
        &api,
        &keys,
        &wrong_mchid.authorization("GET", "/v3/certificates", ts, ""),
    )
    .await;
    assert_sign_error(&answer, ts);

    // And the genuine one passes, so the failures above are about the field changed.
    let answer = spoiled(
        &api,
        &keys,
        &merchant.authorization("GET", "/v3/certificates", ts, ""),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

#[tokio::test]
async fn a_stale_or_future_timestamp_is_a_sign_error() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &[]).await;
    for ts in [now() - 301 - 60, now() + 301 + 60] {
        let answer = spoiled(
            &server.api(),
            &keys,
            &merchant.authorization("GET", "/v3/certificates", ts, ""),
        )
        .await;
        assert_sign_error(&answer, ts);
    }
    let ts = now() - 200;
    let answer = spoiled(
        &server.api(),
        &keys,
        &merchant.authorization("GET", "/v3/certificates", ts, ""),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_is_401() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    let genuine = merchant.authorization("GET", "/v3/certificates", now(), "");
    let cases = [
        None,
        Some(genuine.replacen("WECHATPAY2-SHA256-RSA2048", "Bearer", 1)),
        Some(genuine.replacen("mchid=", "merchant=", 1)),
        Some(genuine.replacen(",mchid=", ",mchid=\"1\",mchid=", 1)),
        Some(genuine.replace('"', "")),
    ];
    for authorization in cases {
        let mut headers = vec![("accept", "application/json"), ("user-agent", "tests")];
        if let Some(value) = &authorization {
            headers.push(("authorization", value));
        }
        let answer = api.raw_get("/v3/certificates", &headers, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{authorization:?}: {answer:?}"
        );
        assert_eq!(answer.json()["code"], "SIGN_ERROR");
        assert_unsigned(&answer);
    }
}

#[tokio::test]
async fn a_request_without_accept_or_user_agent_is_invalid() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &[]).await;
    let authorization = merchant.authorization("GET", "/v3/certificates", now(), "");
    for headers in [
        vec![
            ("user-agent", "tests"),
            ("authorization", authorization.as_str()),
        ],
        vec![
            ("accept", "application/json"),
            ("authorization", authorization.as_str()),
        ],
    ] {
        let answer = server
            .api()
            .raw_get("/v3/certificates", &headers, &[])
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
        let body = answer.json();
        assert_eq!(body["code"], "INVALID_REQUEST");
        assert_eq!(body["message"], "Http头缺少Accept或User-Agent");
        assert_unsigned(&answer);
    }
    // Without a signature either, the signature is what is reported.
    let bare = server.api().raw_get("/v3/certificates", &[], &[]).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED, "{bare:?}");
    assert_eq!(bare.json()["code"], "SIGN_ERROR");
}

// ---------------------------------------------------------------------------------------
// Orders and refunds.

/// `/` `*` `|` and a space, as a client's path escaping sends them.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_paid_order_is_found_by_both_numbers_through_escaped_path_parameters() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &[]).await;
    let api = server.api();
    let out_trade_no = "SIM*ORDER|2025 01";
    let paid = api
        .control(
            "/sim/pay",
            &json!({ "out_trade_no": out_trade_no, "amount": 990 }),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    let order = paid.json();
    assert_eq!(order["mchid"], keys.mchid.as_str());
    assert_eq!(order["out_trade_no"], out_trade_no);
    assert_eq!(order["trade_state"], "SUCCESS");
    assert_eq!(order["amount"]["total"], 990);
    assert_eq!(order["amount"]["payer_total"], 990);
    let transaction_id = order["transaction_id"].as_str().unwrap().to_owned();
    assert!(transaction_id.len() >= 28 && transaction_id.bytes().all(|b| b.is_ascii_digit()));
    for field in [
        "appid",
        "trade_type",
        "trade_state_desc",
        "bank_type",
        "success_time",
        "payer",
    ] {
        assert!(order.get(field).is_some(), "{field}: {order}");
    }

    for target in [
        format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            escape(out_trade_no),
            keys.mchid
        ),
        format!(
            "/v3/pay/transactions/id/{transaction_id}?mchid={}",
            keys.mchid
        ),
    ] {
        let answer = api.get(&merchant, &target, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {answer:?}");
        assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
        assert_eq!(answer.json(), order);
    }

    // The query's mchid is required and must be this merchant's.
    for target in [
        format!("/v3/pay/transactions/id/{transaction_id}"),
        format!("/v3/pay/transactions/id/{transaction_id}?mchid=1900000001"),
    ] {
        let answer = api.get(&merchant, &target, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{target}: {answer:?}"
        );
        assert_eq!(answer.json()["code"], "PARAM_ERROR");
        assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
    }

    // A direct order is not a partner order.
    let answer = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/partner/transactions/id/{transaction_id}?sp_mchid={}&sub_mchid=1900000109",
                keys.mchid
            ),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    assert_eq!(answer.json()["code"], "ORDER_NOT_EXIST");
}

#[tokio::test]
async fn a_partner_order_is_found_with_sp_mchid_and_sub_mchid() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    let paid = api
        .control(
            "/sim/pay",
            &json!({ "out_trade_no": "P/2025/0001", "amount": 100, "sub_mchid": "1900000109" }),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    let order = paid.json();
    assert_eq!(order["sp_mchid"], keys.mchid.as_str());
    assert_eq!(order["sub_mchid"], "1900000109");
    assert!(order.get("mchid").is_none(), "{order}");
    assert!(order["payer"].get("sub_openid").is_some(), "{order}");
    let transaction_id = order["transaction_id"].as_str().unwrap();
    let query = format!("sp_mchid={}&sub_mchid=1900000109", keys.mchid);
    for target in [
        format!(
            "/v3/pay/partner/transactions/out-trade-no/{}?{query}",
            escape("P/2025/0001")
        ),
        format!("/v3/pay/partner/transactions/id/{transaction_id}?{query}"),
    ] {
        let answer = api
            .get(
                &merchant,
                &target,
                &[("wechatpay-serial", &keys.public_key_id)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {answer:?}");
        assert_signed_by_public_key(&answer, &keys);
        assert_eq!(answer.json(), order);
    }
    // Another sub-merchant, or none, finds nothing / is refused.
    let answer = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/partner/transactions/id/{transaction_id}?sp_mchid={}&sub_mchid=1900000110",
                keys.mchid
            ),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/partner/transactions/id/{transaction_id}?sp_mchid={}",
                keys.mchid
            ),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["code"], "PARAM_ERROR");
    // Nor is it a direct order.
    let answer = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/transactions/id/{transaction_id}?mchid={}",
                keys.mchid
            ),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_orders_and_refunds_are_404_and_signed() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Running::start(&keys, &["--mode", "certificate"]).await;
    let api = server.api();
    for target in [
        format!(
            "/v3/pay/transactions/id/4200000000000000000000000001?mchid={}",
            keys.mchid
        ),
        format!(
            "/v3/pay/transactions/out-trade-no/NOPE0001?mchid={}",
            keys.mchid
        ),
        format!(
            "/v3/pay/partner/transactions/out-trade-no/NOPE0001?sp_mchid={}&sub_mchid=1900000109",
            keys.mchid
        ),
    ] {
        let answer = api.get(&merchant, &target, &[]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{target}: {answer:?}");
        assert_eq!(answer.json()["code"], "ORDER_NOT_EXIST");
        assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
    }
    let answer = api
        .get(&merchant, "/v3/refund/domestic/refunds/NOPE0001", &[])
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    assert_eq!(answer.json()["code"], "RESOURCE_NOT_EXISTS");
    assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
}

#[tokio::test]
async fn a_refund_is_answered_by_the_refund_query_with_status() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    let order = api
        .control(
            "/sim/pay",
            &json!({ "out_trade_no": "ORDER-R-1", "amount": 500 }),
        )
        .await
        .json();
    let refunded = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "ORDER-R-1", "out_refund_no": "REFUND|1", "amount": 200 }),
        )
        .await;
    assert_eq!(refunded.status, StatusCode::OK, "{refunded:?}");
    let answer = api
        .get(
            &merchant,
            &format!("/v3/refund/domestic/refunds/{}", escape("REFUND|1")),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_signed_by_certificate(&answer, &keys.platform.serial, &keys.platform.cert_pem);
    let refund = answer.json();
    assert_eq!(refund, refunded.json());
    assert_eq!(refund["status"], "SUCCESS");
    assert!(refund.get("refund_status").is_none());
    assert_eq!(refund["out_refund_no"], "REFUND|1");
    assert_eq!(refund["out_trade_no"], "ORDER-R-1");
    assert_eq!(refund["transaction_id"], order["transaction_id"]);
    assert_eq!(refund["amount"]["total"], 500);
    assert_eq!(refund["amount"]["refund"], 200);
    assert!(
        refund["refund_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    // The order now reads REFUND (paid, then refunded); more than what is left is refused.
    let after = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/transactions/out-trade-no/ORDER-R-1?mchid={}",
                keys.mchid
            ),
            &[],
        )
        .await
        .json();
    assert_eq!(after["trade_state"], "REFUND");
    let too_much = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "ORDER-R-1", "out_refund_no": "REFUND-2", "amount": 301 }),
        )
        .await;
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST, "{too_much:?}");
    let again = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "ORDER-R-1", "out_refund_no": "REFUND|1", "amount": 1 }),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");

    // A partner refund is found with its sub_mchid only.
    api.control(
        "/sim/pay",
        &json!({ "out_trade_no": "ORDER-P-1", "amount": 100, "sub_mchid": "1900000109" }),
    )
    .await;
    let partner = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "ORDER-P-1", "out_refund_no": "REFUND-P-1", "amount": 100 }),
        )
        .await;
    assert_eq!(partner.status, StatusCode::OK, "{partner:?}");
    let found = api
        .get(
            &merchant,
            "/v3/refund/domestic/refunds/REFUND-P-1?sub_mchid=1900000109",
            &[],
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{found:?}");
    let missing = api
        .get(&merchant, "/v3/refund/domestic/refunds/REFUND-P-1", &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
}

#[tokio::test]
async fn sim_pay_refuses_bad_input_and_duplicates() {
    let (_dir, keys) = keys();
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    for (body, says) in [
        ("not json".to_owned(), "JSON object"),
        (json!({ "amount": 1 }).to_string(), "out_trade_no"),
        (json!({ "out_trade_no": "", "amount": 1 }).to_string(), "out_trade_no"),
        (json!({ "out_trade_no": "A1" }).to_string(), "amount"),
        (json!({ "out_trade_no": "A1", "amount": 0 }).to_string(), "amount"),
        (json!({ "out_trade_no": "A1", "amount": -5 }).to_string(), "amount"),
        (json!({ "out_trade_no": "A1", "amount": 1.5 }).to_string(), "amount"),
        (json!({ "out_trade_no": "A1", "amount": "100" }).to_string(), "amount"),
        (json!({ "out_trade_no": "A1", "amount": 1, "notify_url": "ftp://x" }).to_string(), "notify_url"),
        (json!({ "out_trade_no": "A1", "amount": 1, "notify_url": "http://127.0.0.1:9/n", "schedule": "soon" }).to_string(), "schedule"),
    ] {
        let answer = api.control_raw("/sim/pay", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {answer:?}");
        let message = answer.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{body}: {message}");
    }
    let first = api
        .control("/sim/pay", &json!({ "out_trade_no": "A1", "amount": 1 }))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let second = api
        .control("/sim/pay", &json!({ "out_trade_no": "A1", "amount": 2 }))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{second:?}");
    assert!(second.header("request-id").is_some());
    let refund_of_nothing = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "NOPE", "out_refund_no": "R1", "amount": 1 }),
        )
        .await;
    assert_eq!(
        refund_of_nothing.status,
        StatusCode::NOT_FOUND,
        "{refund_of_nothing:?}"
    );
}

/// A receiver of `keys` recording each notification's serial and decrypted resource.
async fn recording_receiver(keys: &Keys) -> (SocketAddr, Arc<Mutex<Vec<(String, String, Value)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Notification>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push((
                        n.event_type().to_owned(),
                        n.serial().to_owned(),
                        n.resource_value().unwrap(),
                    ));
                    Handled::Done
                }
            }),
        )
        .route_layer(keys.receiver_layer().unwrap());
    (serve(app).await, seen)
}

#[tokio::test]
async fn sim_pay_with_a_notify_url_delivers_the_notification_to_a_receiver() {
    let (_dir, keys) = keys();
    let (receiver, seen) = healthy_receiver(&keys).await;
    let mut server = Running::start(&keys, &[]).await;
    let paid = server
        .api()
        .control(
            "/sim/pay",
            &json!({
                "out_trade_no": "NOTIFY-0001",
                "amount": 2500,
                "notify_url": format!("http://{receiver}/notify"),
            }),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    let attempt = server
        .wait_for(|line| line.contains("NOTIFY-0001") && line.contains("attempt 1"))
        .await;
    assert!(attempt.contains("204"), "{attempt}");
    server
        .wait_for(|line| {
            line.contains("NOTIFY-0001") && line.contains("acknowledged after 1 attempt")
        })
        .await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, "TRANSACTION.SUCCESS");
}

/// Waits until `seen` holds `count` entries.
async fn wait_until_seen<T>(seen: &Mutex<Vec<T>>, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < count {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn notifications_carry_what_the_queries_answer() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let (receiver, seen) = recording_receiver(&keys).await;
    let api = in_process(&keys, ServeMode::Both, CertificatesAnswer::NotFound);
    let url = format!("http://{receiver}/notify");
    let paid = api
        .control(
            "/sim/pay",
            &json!({ "out_trade_no": "N-0002", "amount": 300, "sub_mchid": "1900000109",
                     "notify_url": url, "schedule": "once" }),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    wait_until_seen(&seen, 1).await;
    {
        let seen = seen.lock().unwrap();
        let (event, serial, resource) = &seen[0];
        assert_eq!(event, "TRANSACTION.SUCCESS");
        assert_eq!(serial, &keys.platform.serial); // both mode: certificate-signed
        assert_eq!(resource, &paid.json());
    }
    let query = api
        .get(
            &merchant,
            &format!(
                "/v3/pay/partner/transactions/out-trade-no/N-0002?sp_mchid={}&sub_mchid=1900000109",
                keys.mchid
            ),
            &[],
        )
        .await;
    assert_eq!(query.json(), paid.json());

    let refunded = api
        .control(
            "/sim/refund",
            &json!({ "out_trade_no": "N-0002", "out_refund_no": "N-R-0002", "amount": 300,
                     "notify_url": url, "notify_mode": "public-key", "schedule": "fast" }),
        )
        .await;
    assert_eq!(refunded.status, StatusCode::OK, "{refunded:?}");
    wait_until_seen(&seen, 2).await;
    let seen = seen.lock().unwrap();
    let (event, serial, resource) = &seen[1];
    assert_eq!(event, "REFUND.SUCCESS");
    assert_eq!(serial, &keys.public_key_id);
    assert_eq!(resource["refund_status"], "SUCCESS");
    assert_eq!(resource["sp_mchid"], keys.mchid.as_str());
    assert_eq!(resource["sub_mchid"], "1900000109");
    assert_eq!(resource["out_refund_no"], "N-R-0002");
    assert_eq!(resource["refund_id"], refunded.json()["refund_id"]);
    assert_eq!(resource["amount"]["refund"], 300);
}

#[tokio::test]
async fn rotation_adds_a_platform_certificate_and_signs_with_it() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let mut server = Running::start(&keys, &["--mode", "certificate", "--rotate-after", "1"]).await;
    let api = server.api();
    let before = api.get(&merchant, "/v3/certificates", &[]).await;
    // (The first answer may come before or after the rotation; only its signature matters.)
    assert_eq!(before.status, StatusCode::OK);

    let line = server.wait_for(|line| line.starts_with("rotated")).await;
    let new_serial = line
        .split_whitespace()
        .find(|word| word.len() == 40 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no serial in {line}"))
        .to_owned();
    assert_ne!(new_serial, keys.platform.serial);

    let after = api.get(&merchant, "/v3/certificates", &[]).await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
    let listed = decrypt_certificates(&after, &keys.api_v3_key);
    let serials: Vec<&str> = listed.iter().map(|(serial, _)| serial.as_str()).collect();
    assert_eq!(
        serials,
        [keys.platform.serial.as_str(), new_serial.as_str()]
    );
    let new_pem = &listed[1].1;
    assert_signed_by_certificate(&after, &new_serial, new_pem);
    assert!(!verifies(&after, &certificate_key(&keys.platform.cert_pem)));
}

#[tokio::test]
async fn both_mode_after_rotation_still_signs_with_an_older_certificate_when_named() {
    let (_dir, keys) = keys();
    let merchant = Merchant::new(&keys);
    let server = Server::new(
        keys.clone(),
        ServeMode::Both,
        CertificatesAnswer::NotFound,
        Log::silent(),
    )
    .unwrap();
    let new_serial = server.rotate().await.unwrap();
    assert_eq!(
        server.platform_serials(),
        [keys.platform.serial.clone(), new_serial.clone()]
    );
    let api = Api::InProcess(app(server));
    let old = api
        .get(
            &merchant,
            "/v3/certificates",
            &[("wechatpay-serial", &keys.platform.serial)],
        )
        .await;
    assert_signed_by_certificate(&old, &keys.platform.serial, &keys.platform.cert_pem);
    let plain = api.get(&merchant, "/v3/certificates", &[]).await;
    let listed = decrypt_certificates(&plain, &keys.api_v3_key);
    assert_signed_by_certificate(&plain, &new_serial, &listed[1].1);
}

// ---------------------------------------------------------------------------------------
// Bad input to the command.

#[tokio::test]
async fn serve_refuses_a_missing_key_directory_and_a_taken_address() {
    let (dir, keys) = keys();
    let missing = dir.path().join("nope");
    let output = sim(&["serve", "--keys", arg(&missing), "--listen", "127.0.0.1:0"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim().lines().count(),
        1,
        "{}",
        stderr(&output)
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = sim(&["serve", "--keys", arg(&keys.dir), "--listen", &addr]).await;
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains(&addr), "{message}");

    let output = sim(&[
        "serve",
        "--keys",
        arg(&keys.dir),
        "--listen",
        "not an address",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
}
