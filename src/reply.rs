//! The answers WeChat Pay requires: success (200/204) or 4xx/5xx with a FAIL body.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};

use crate::body::BufferedBody;
use crate::error::Rejection;

/// How the layer acknowledges a notification the handler accepted.
///
/// WeChat Pay decides by the status code alone: 200 or 204 means done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SuccessReply {
    /// `204 No Content`, empty body: the current documented answer (the default).
    #[default]
    NoContent,
    /// `200 OK`, empty body.
    OkEmpty,
    /// `200 OK` with the legacy `{"code":"SUCCESS","message":"成功"}`.
    OkLegacyJson,
}

const LEGACY_SUCCESS: &str = r#"{"code":"SUCCESS","message":"成功"}"#;
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The acknowledgement.
pub(crate) fn success(reply: SuccessReply) -> Response<BufferedBody> {
    let (status, body) = match reply {
        SuccessReply::NoContent => (StatusCode::NO_CONTENT, None),
        SuccessReply::OkEmpty => (StatusCode::OK, None),
        SuccessReply::OkLegacyJson => (StatusCode::OK, Some(LEGACY_SUCCESS)),
    };
    let mut response = Response::new(
        body.map(|text| BufferedBody::new(Bytes::from_static(text.as_bytes())))
            .unwrap_or_default(),
    );
    *response.status_mut() = status;
    if body.is_some() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, APPLICATION_JSON);
    }
    response
}

/// A failure: the rejection's status, `{"code":"FAIL","message":…}`, and the rejection
/// itself in the extensions for outer layers.
pub(crate) fn failure(rejection: Rejection) -> Response<BufferedBody> {
    let mut response = Response::new(BufferedBody::new(fail_body(rejection.message())));
    *response.status_mut() = rejection.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response.extensions_mut().insert(rejection);
    response
}

/// The same answer in APIv2's language: a 2xx becomes 200 with the XML SUCCESS body (the
/// only answer that stops v2 retries); a failure keeps a 413 or 408 and is otherwise a
/// 5xx, with an XML FAIL body carrying the rejection's fixed message. Extensions (the
/// [`Rejection`] for outer layers) are kept.
#[cfg(feature = "v2")]
pub(crate) fn into_v2(response: Response<BufferedBody>) -> Response<BufferedBody> {
    let (mut parts, _) = response.into_parts();
    let (status, body) = if parts.status.is_success() {
        (StatusCode::OK, v2_body("SUCCESS", "OK"))
    } else {
        let message = parts
            .extensions
            .get::<Rejection>()
            .map_or("handler failed", Rejection::message);
        let status = match parts.status {
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => parts.status,
            status if status.is_server_error() => status,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, v2_body("FAIL", message))
    };
    parts.status = status;
    parts.headers.clear();
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    Response::from_parts(parts, BufferedBody::new(body))
}

/// `<xml><return_code><![CDATA[…]]></return_code><return_msg><![CDATA[…]]></return_msg></xml>`;
/// `message` is one of the crate's fixed texts, never request data (and never holds `]]>`).
#[cfg(feature = "v2")]
fn v2_body(code: &str, message: &str) -> Bytes {
    let message = message.replace("]]>", "]] >");
    Bytes::from(format!(
        "<xml><return_code><![CDATA[{code}]]></return_code><return_msg><![CDATA[{message}]]></return_msg></xml>"
    ))
}

fn fail_body(message: &str) -> Bytes {
    let body = serde_json::json!({ "code": "FAIL", "message": message });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RejectionKind;

    #[test]
    fn fail_body_is_the_documented_shape() {
        let body = fail_body("signature verification failed");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "FAIL");
        assert_eq!(value["message"], "signature verification failed");
    }

    #[test]
    fn failure_carries_status_content_type_and_rejection() {
        let rejection = Rejection::new(RejectionKind::UnknownSerial, "unknown wechatpay-serial");
        let response = failure(rejection.clone());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.extensions().get::<Rejection>(), Some(&rejection));
    }

    #[test]
    fn success_variants() {
        assert_eq!(
            success(SuccessReply::NoContent).status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(success(SuccessReply::OkEmpty).status(), StatusCode::OK);
        let legacy = success(SuccessReply::OkLegacyJson);
        assert_eq!(legacy.status(), StatusCode::OK);
        assert_eq!(legacy.headers()[CONTENT_TYPE], "application/json");
    }
}
