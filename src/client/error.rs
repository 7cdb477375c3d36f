//! What can go wrong with a merchant API call, typed so a caller can tell a retry from a
//! refusal: transport and timeouts, an answer that could not be verified, and WeChat Pay's
//! own `{code, message, detail}` errors with their status and `Request-ID`.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tower::BoxError;

/// A failed merchant API call.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The request did not get an HTTP answer: connection refused or reset, DNS, TLS.
    Transport(BoxError),
    /// No verified answer within the client's total timeout (retries included).
    Timeout(Duration),
    /// A 2xx answer whose signature or timestamp did not verify (including WeChat Pay's
    /// deliberate `WECHATPAY/SIGNTEST/` probes): nothing in it was trusted.
    NotVerified(NotVerified),
    /// WeChat Pay refused the request: its status, code, message, detail and `Request-ID`.
    Api(ApiError),
    /// A verified answer that does not have the expected shape.
    UnexpectedAnswer {
        /// What was expected and what was wrong.
        reason: String,
        /// The answer's `Request-ID`, for WeChat Pay support.
        request_id: Option<String>,
    },
    /// An argument the request cannot carry (an empty order number, …).
    InvalidArgument {
        /// Which argument.
        name: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// The request could not be signed (the random nonce or the RSA signature failed).
    Signing,
    /// The client was asked for something its configuration does not allow (e.g. a
    /// certificate download without the APIv3 key).
    Misconfigured(&'static str),
}

impl ClientError {
    /// Whether repeating the same request later may succeed: transport errors, timeouts,
    /// unverified answers and WeChat Pay's 5xx, 429 and 202 answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Timeout(_) | Self::NotVerified(_) => true,
            Self::Api(api) => {
                api.status.is_server_error()
                    || api.status == StatusCode::TOO_MANY_REQUESTS
                    || api.status == StatusCode::ACCEPTED
            }
            _ => false,
        }
    }

    /// WeChat Pay's error, if it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(api) => Some(api),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(error) => {
                write!(
                    f,
                    "wechat pay api unreachable: {}",
                    error_chain(error.as_ref())
                )
            }
            Self::Timeout(limit) => write!(
                f,
                "no verified answer from the wechat pay api within {} ms",
                limit.as_millis()
            ),
            Self::NotVerified(not_verified) => not_verified.fmt(f),
            Self::Api(api) => api.fmt(f),
            Self::UnexpectedAnswer { reason, request_id } => {
                write!(f, "unexpected answer from the wechat pay api: {reason}")?;
                write_request_id(f, request_id.as_deref())
            }
            Self::InvalidArgument { name, reason } => write!(f, "{name} {reason}"),
            Self::Signing => f.write_str("could not sign the request"),
            Self::Misconfigured(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(error) => Some(error.as_ref()),
            _ => None,
        }
    }
}

/// Why an answer was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotVerified {
    /// What failed: a missing header, a stale timestamp, an unknown serial, a bad signature.
    pub reason: String,
    /// The `Wechatpay-Serial` the answer named, if any.
    pub serial: Option<String>,
    /// The answer's `Request-ID`.
    pub request_id: Option<String>,
}

impl fmt::Display for NotVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the wechat pay api's answer did not verify ({}), so none of it was trusted",
            self.reason
        )?;
        if let Some(serial) = &self.serial {
            write!(f, "; Wechatpay-Serial {serial}")?;
        }
        write_request_id(f, self.request_id.as_deref())
    }
}

/// WeChat Pay's error answer: `{"code": …, "message": …, "detail": …}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// WeChat Pay's code, e.g. `SIGN_ERROR`, `ORDER_NOT_EXIST`, `SYSTEM_ERROR`; empty if
    /// the body was not WeChat Pay's JSON.
    pub code: String,
    /// WeChat Pay's message.
    pub message: String,
    /// `detail`, free-form JSON, when present.
    pub detail: Option<Value>,
    /// The `Request-ID` header: quote it to WeChat Pay support.
    pub request_id: Option<String>,
}

impl ApiError {
    /// For a `SIGN_ERROR`: the message WeChat Pay rebuilt and checked the signature
    /// against (`detail.sign_information.truncated_sign_message`), the quickest way to
    /// find a signing mismatch.
    pub fn sign_information(&self) -> Option<&Value> {
        fn find(value: &Value) -> Option<&Value> {
            let object = value.as_object()?;
            object
                .get("sign_information")
                .or_else(|| object.get("detail").and_then(find))
        }
        self.detail.as_ref().and_then(find)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wechat pay answered {}", self.status.as_u16())?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(info) = self.sign_information() {
            let method = info.get("method").and_then(Value::as_str).unwrap_or("?");
            let url = info.get("url").and_then(Value::as_str).unwrap_or("?");
            write!(f, "; wechat pay checked the signature of {method} {url}")?;
            if let Some(message) = info.get("truncated_sign_message").and_then(Value::as_str) {
                write!(f, " over {message:?}")?;
            }
        }
        write_request_id(f, self.request_id.as_deref())
    }
}

fn write_request_id(f: &mut fmt::Formatter<'_>, request_id: Option<&str>) -> fmt::Result {
    match request_id {
        Some(id) => write!(f, " (Request-ID {id})"),
        None => Ok(()),
    }
}

/// An error and its causes on one line (hyper's top-level message alone says little).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sign_error_shows_what_wechat_pay_signed() {
        let error = ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "SIGN_ERROR".into(),
            message: "错误的签名，验签失败".into(),
            detail: Some(
                json!({"detail": {"issue": "sign not match"}, "field": "signature",
                "sign_information": {"method": "GET", "url": "/v3/certificates",
                    "truncated_sign_message": "GET\n/v3/certificates\n1\nN\n\n"}}),
            ),
            request_id: Some("0801-2".into()),
        };
        let text = error.to_string();
        assert!(text.contains("401 SIGN_ERROR"), "{text}");
        assert!(
            text.contains(r#"GET /v3/certificates over "GET\n/v3/certificates\n1\nN\n\n""#),
            "{text}"
        );
        assert!(text.ends_with("(Request-ID 0801-2)"), "{text}");
    }

    #[test]
    fn server_errors_and_rate_limits_are_retryable_refusals_are_not() {
        let api = |status: u16| {
            ClientError::Api(ApiError {
                status: StatusCode::from_u16(status).unwrap(),
                code: String::new(),
                message: String::new(),
                detail: None,
                request_id: None,
            })
        };
        assert!(api(500).is_retryable());
        assert!(api(429).is_retryable());
        assert!(!api(404).is_retryable());
        assert!(!api(401).is_retryable());
        assert!(ClientError::Timeout(Duration::from_secs(1)).is_retryable());
    }
}
