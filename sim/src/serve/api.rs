//! What every `/v3/…` request goes through, as at WeChat Pay: the `Authorization`
//! signature check, then the `Accept`/`User-Agent` check (so a request without either
//! header and without a signature is answered 401), the choice of signer, and the
//! signature on the answer. Also the `Request-ID` every answer carries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tower_wechatpay::test_util::TestSigner;

use super::{ServeMode, Server};
use crate::keys::random_alphanumeric;
use crate::notify::unix_now;

/// The scheme of a merchant's `Authorization` header.
pub(super) const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// How far a request's timestamp may be from now, in seconds.
pub(super) const TIMESTAMP_WINDOW: i64 = 300;
/// How much of the body `truncated_sign_message` shows, in characters.
const SHOWN_BODY: usize = 128;
/// The largest request body read.
const BODY_LIMIT: usize = 1 << 20;

/// Marks an answer that must go out unsigned (a 5xx, as WeChat Pay sends them).
#[derive(Debug, Clone, Copy)]
struct Unsigned;

/// A JSON answer; signed by the `/v3` layer unless marked unsigned.
#[derive(Debug)]
pub(super) struct Reply {
    status: StatusCode,
    body: Value,
    signed: bool,
}

impl Reply {
    /// 200 with `body`.
    pub(super) fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            signed: true,
        }
    }

    /// `{"code","message"}` with `status`.
    pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({ "code": code, "message": message }),
            signed: true,
        }
    }

    /// Adds `detail` to an error.
    pub(super) fn detail(mut self, detail: Value) -> Self {
        self.body["detail"] = detail;
        self
    }

    /// Sends it unsigned.
    pub(super) fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// 500 `SYSTEM_ERROR`, unsigned: something the simulator itself could not do.
    pub(super) fn system_error(error: &dyn std::fmt::Display) -> Self {
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            &format!("系统繁忙，请稍后重试 (wechatpay-sim: {error})"),
        )
        .unsigned()
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if !self.signed {
            response.extensions_mut().insert(Unsigned);
        }
        response
    }
}

/// The `/v3` layer.
pub(super) async fn merchant_api(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let line = format!("{} {target}", parts.method);
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                "请求体无法读取或超过 1 MiB",
            )
            .unsigned()
            .into_response();
        }
    };
    if let Err((reply, why)) = verify(&server, &parts.method, &target, &parts.headers, &body) {
        server.log.line(format!(
            "{line} → {} SIGN_ERROR: {why}",
            reply.status().as_u16()
        ));
        return reply.into_response();
    }
    if !present(&parts.headers, &ACCEPT) || !present(&parts.headers, &USER_AGENT) {
        server.log.line(format!(
            "{line} → 400 INVALID_REQUEST: no Accept or User-Agent"
        ));
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Http头缺少Accept或User-Agent",
        )
        .unsigned()
        .into_response();
    }
    let signer = match choose_signer(&server, &parts.headers) {
        Ok(signer) => signer,
        Err((reply, why)) => {
            server
                .log
                .line(format!("{line} → 400 INVALID_REQUEST: {why}"));
            return reply.into_response();
        }
    };
    let request = Request::from_parts(parts, Body::from(body));
    let response = next.run(request).await;
    if response.extensions().get::<Unsigned>().is_some() {
        server.log.line(format!(
            "{line} → {} (unsigned)",
            response.status().as_u16()
        ));
        return response;
    }
    let status = response.status().as_u16();
    let signed = sign(response, &signer).await;
    server
        .log
        .line(format!("{line} → {status} (signed by {})", signer.serial()));
    signed
}

fn present(headers: &HeaderMap, name: &http::HeaderName) -> bool {
    headers
        .get(name)
        .is_some_and(|value| !value.as_bytes().iter().all(u8::is_ascii_whitespace))
}

/// Signs the answer as WeChat Pay does: `Wechatpay-Timestamp\nWechatpay-Nonce\nbody\n`.
async fn sign(response: Response, signer: &TestSigner) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return Reply::system_error(&error).into_response(),
    };
    match signer.sign_body_with_nonce(body, unix_now(), &random_alphanumeric(32)) {
        Ok(signed) => {
            for (name, value) in &signed.headers {
                if name != CONTENT_TYPE {
                    parts.headers.insert(name.clone(), value.clone());
                }
            }
            Response::from_parts(parts, Body::from(signed.body))
        }
        Err(error) => Reply::system_error(&error).into_response(),
    }
}

/// The five fields of a merchant's `Authorization` header.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Authorization {
    /// `mchid`.
    pub(super) mchid: String,
    /// `nonce_str`.
    pub(super) nonce_str: String,
    /// `timestamp`, as sent.
    pub(super) timestamp: String,
    /// `serial_no`.
    pub(super) serial_no: String,
    /// `signature`, base64.
    pub(super) signature: String,
}

impl Authorization {
    /// Parses `WECHATPAY2-SHA256-RSA2048 k="v",…` (the five pairs in any order, each once).
    pub(super) fn parse(header: &str) -> Result<Self, String> {
        let rest = header
            .strip_prefix(SCHEME)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| format!("the scheme must be {SCHEME} followed by a space"))?;
        let mut fields: [Option<String>; 5] = Default::default();
        let mut rest = rest.trim_start();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .ok_or_else(|| format!("expected key=\"value\" at `{}`", excerpt(rest)))?;
            let key = key.trim();
            let after = after
                .strip_prefix('"')
                .ok_or_else(|| format!("the value of {key} must be double-quoted"))?;
            let (value, after) = after
                .split_once('"')
                .ok_or_else(|| format!("the value of {key} has no closing quote"))?;
            let slot = match key {
                "mchid" => 0,
                "nonce_str" => 1,
                "timestamp" => 2,
                "serial_no" => 3,
                "signature" => 4,
                other => return Err(format!("unknown field `{}`", excerpt(other))),
            };
            if fields[slot].replace(value.to_owned()).is_some() {
                return Err(format!("{key} appears twice"));
            }
            let after = after.trim_start();
            rest = match after.strip_prefix(',') {
                Some(next) => next.trim_start(),
                None if after.is_empty() => after,
                None => return Err(format!("expected `,` after the value of {key}")),
            };
        }
        let [
            Some(mchid),
            Some(nonce_str),
            Some(timestamp),
            Some(serial_no),
            Some(signature),
        ] = fields
        else {
            return Err(
                "all five of mchid, nonce_str, timestamp, serial_no, signature are required"
                    .to_owned(),
            );
        };
        Ok(Self {
            mchid,
            nonce_str,
            timestamp,
            serial_no,
            signature,
        })
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(20).collect()
}

/// Checks the merchant's signature; the error is the answer and, for the log, why.
fn verify(
    server: &Server,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), (Reply, String)> {
    let malformed = |issue: String| {
        let reply = Reply::error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》",
        )
        .detail(json!({
            "field": "authorization",
            "location": "header",
            "issue": issue,
        }))
        .unsigned();
        (reply, issue)
    };
    let Some(header) = headers.get(AUTHORIZATION) else {
        return Err(malformed("no Authorization header".to_owned()));
    };
    let header = header
        .to_str()
        .map_err(|_| malformed("the Authorization header is not ASCII".to_owned()))?;
    let authorization = Authorization::parse(header).map_err(malformed)?;

    let mut message = format!(
        "{method}\n{target}\n{}\n{}\n",
        authorization.timestamp, authorization.nonce_str
    )
    .into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    let sign_error = |issue: String| {
        let body_text = String::from_utf8_lossy(body);
        let shown: String = body_text.chars().take(SHOWN_BODY).collect();
        let cut = if shown.len() < body_text.len() {
            "…"
        } else {
            ""
        };
        let truncated = format!(
            "{method}\n{target}\n{}\n{}\n{shown}{cut}\n",
            authorization.timestamp, authorization.nonce_str
        );
        let reply = Reply::error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "错误的签名，验签失败",
        )
        .detail(json!({
            "detail": { "issue": issue },
            "field": "signature",
            "location": "authorization",
            "sign_information": {
                "method": method.as_str(),
                "url": target,
                "sign_message_length": message.len(),
                "truncated_sign_message": truncated,
            }
        }))
        .unsigned();
        (reply, issue)
    };

    if authorization.mchid != server.keys.mchid {
        return Err(sign_error(format!(
            "mchid {} is not this merchant ({}; partners sign as the sp_mchid)",
            authorization.mchid, server.keys.mchid
        )));
    }
    if !authorization
        .serial_no
        .eq_ignore_ascii_case(&server.keys.merchant_serial)
    {
        return Err(sign_error(format!(
            "serial_no {} is not the merchant API certificate's serial",
            authorization.serial_no
        )));
    }
    let timestamp: i64 = authorization
        .timestamp
        .parse()
        .map_err(|_| sign_error("timestamp is not Unix seconds".to_owned()))?;
    if (unix_now() - timestamp).abs() > TIMESTAMP_WINDOW {
        return Err(sign_error(format!(
            "timestamp {timestamp} is more than {TIMESTAMP_WINDOW} s from now ({})",
            unix_now()
        )));
    }
    let signature = STANDARD
        .decode(&authorization.signature)
        .map_err(|_| sign_error("sign not match (the signature is not base64)".to_owned()))?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &server.merchant_key,
    )
    .verify(&message, &signature)
    .map_err(|_| sign_error("sign not match".to_owned()))
}

/// The key the answer is signed with: by mode, and in `both` by `Wechatpay-Serial`.
fn choose_signer(server: &Server, headers: &HeaderMap) -> Result<Arc<TestSigner>, (Reply, String)> {
    let invalid = |why: String| {
        let reply = Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Http头Wechatpay-Serial的值无效，请传入正确的微信支付公钥ID或平台证书序列号",
        )
        .detail(json!({ "field": "Wechatpay-Serial", "location": "header", "issue": why }))
        .unsigned();
        (reply, why)
    };
    let named = match headers.get("wechatpay-serial") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| invalid("Wechatpay-Serial is not ASCII".to_owned()))?
                .trim()
                .to_owned(),
        ),
    };
    let platforms = server.platforms();
    let current = platforms
        .last()
        .map(|platform| Arc::clone(&platform.signer))
        .ok_or_else(|| invalid("no platform certificate held".to_owned()))?;
    let chosen = match named.as_deref() {
        None => None,
        Some(name) if name == server.keys.public_key_id => Some(Arc::clone(&server.public_key)),
        Some(name) => match platforms
            .iter()
            .find(|platform| platform.certificate.serial.eq_ignore_ascii_case(name))
        {
            Some(platform) => Some(Arc::clone(&platform.signer)),
            None => {
                return Err(invalid(format!(
                    "Wechatpay-Serial {} names neither the public key nor a platform certificate",
                    excerpt(name)
                )));
            }
        },
    };
    Ok(match server.mode {
        ServeMode::PublicKey => Arc::clone(&server.public_key),
        ServeMode::Certificate => current,
        ServeMode::Both => chosen.unwrap_or(current),
    })
}

/// Puts a `Request-ID` on every answer; on errors it ends in `-<code>`, as WeChat Pay's do.
pub(super) async fn request_id(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let n = server.next_request();
    let mut id = format!("08{:08X}{}", n, crate::keys::random_serial());
    let status = response.status();
    if !status.is_success() {
        id.push_str(&format!("-{}", 268_435_456 + u32::from(status.as_u16())));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Any other path.
pub(super) async fn not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "请求的资源不存在 (wechatpay-sim does not simulate this API)",
    )
    .unsigned()
}
