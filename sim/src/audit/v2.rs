//! `audit --v2`: the same report card for APIv2 XML notifications. The v2 checks replace
//! the v3 ones (a v2-only receiver has no v3 keys to pass them with; a receiver of both is
//! audited twice, with and without `--v2`):
//!
//! 1. acknowledged, each with a 2xx whose body is XML `return_code` SUCCESS (a JSON
//!    `{"code":"SUCCESS"}` or an empty 204 is a failure, as for WeChat's v2): a genuine MD5
//!    payment (with `sign_type`), the same payment again (the same bytes, as v2 retries), a
//!    genuine HMAC-SHA256 payment without `sign_type`, a genuine refund;
//! 2. never acknowledged (a non-2xx answer whose body is not XML SUCCESS), all at once, each
//!    from fresh fields: a payment signed with another key, one without `sign`, one signed
//!    HMAC-SHA256 with `sign_type` whose `sign_type` was then changed to MD5, one whose
//!    `total_fee` was edited after signing, a refund encrypted with another key;
//! 3. over every answer: each within 5 s, and each failure answered with XML
//!    `return_code` FAIL.

use futures_util::future::join_all;
use tokio::time::Instant;

use super::{ANSWER_WAIT, Check, Evidence, Report, Sent, describe, evidence_of, within_limit};
use crate::error::SimError;
use crate::keys::{Keys, Mode, random_alphanumeric};
use crate::transport::{Answer, Failure, Transport};
use crate::v2::{self, Fields, Reply, SignType};

/// The v2 checks' names, in report order (stable: scripts and tests match on them).
pub mod name {
    /// A genuine payment signed with MD5 (`sign_type` MD5 present) is acknowledged.
    pub const GENUINE_MD5: &str = "genuine MD5 payment acknowledged";
    /// The same payment, the same bytes, again: acknowledged.
    pub const AGAIN: &str = "same payment again acknowledged";
    /// A genuine payment signed with HMAC-SHA256, no `sign_type`: acknowledged.
    pub const GENUINE_HMAC: &str = "genuine HMAC-SHA256 payment acknowledged";
    /// A genuine refund (`req_info` encrypted with the APIv2 key): acknowledged.
    pub const GENUINE_REFUND: &str = "genuine refund acknowledged";
    /// A payment signed with another key.
    pub const FORGED: &str = "forged sign refused";
    /// A payment without `sign`.
    pub const MISSING_SIGN: &str = "missing sign refused";
    /// Signed HMAC-SHA256 with `sign_type`, then `sign_type` changed to MD5.
    pub const SIGN_TYPE_TAMPERED: &str = "sign_type tampered refused";
    /// `total_fee` edited after signing.
    pub const BODY_CHANGED: &str = "body changed after signing refused";
    /// A refund whose `req_info` was encrypted with another key.
    pub const REFUND_OTHER_KEY: &str = "refund encrypted with another key not acknowledged";
    /// Every answer came within 5 s.
    pub const WITHIN_5_S: &str = super::super::name::WITHIN_5_S;
    /// Every failure answer is XML `return_code` FAIL.
    pub const FAIL_XML: &str = "failures answered in XML FAIL";

    /// Every v2 check, in report order.
    pub const ALL: [&str; 11] = [
        GENUINE_MD5,
        AGAIN,
        GENUINE_HMAC,
        GENUINE_REFUND,
        FORGED,
        MISSING_SIGN,
        SIGN_TYPE_TAMPERED,
        BODY_CHANGED,
        REFUND_OTHER_KEY,
        WITHIN_5_S,
        FAIL_XML,
    ];
}

mod why {
    pub(super) const GENUINE_MD5: &str = "an unacknowledged payment is resent for 24 h; v2 stops only on an XML return_code SUCCESS, so a JSON reply instead of XML or an empty 204 counts as a failure";
    pub(super) const AGAIN: &str = "WeChat Pay resends the same XML until it reads XML SUCCESS; refusing a repeat means retries for 24 h";
    pub(super) const GENUINE_HMAC: &str = "orders placed with HMAC-SHA256 are notified without sign_type and a 64-digit sign; only its length tells the algorithm";
    pub(super) const GENUINE_REFUND: &str = "refunds made by hand in the merchant platform arrive as v2 XML even on v3 integrations; an unacknowledged one is resent for 24 h";
    /// Replaces an acknowledgement check's why when the receiver answered JSON.
    pub(super) const JSON_REPLY: &str = "JSON reply instead of XML flagged as a failure: WeChat's v2 reads only <return_code>SUCCESS</return_code> in XML, so {\"code\":\"SUCCESS\"} (EasyWeChat's default) means the notification is resent for 24 h";
    pub(super) const FORGED: &str =
        "anyone can POST a 'paid' XML notice: a sign made with another key must not verify";
    pub(super) const MISSING_SIGN: &str = "skipping the check when sign is absent is fail-open (WxJava #1890): anyone can mark orders paid";
    pub(super) const SIGN_TYPE_TAMPERED: &str = "sign_type is signed; a receiver that trusts an edited sign_type (or ignores the sign's length) checks the wrong algorithm";
    pub(super) const BODY_CHANGED: &str =
        "if an edited total_fee still passes, an attacker pays 1 fen for a 100-yuan order";
    pub(super) const REFUND_OTHER_KEY: &str = "req_info has no MAC: only a decryption that fails (wrong or reset APIv2 key) tells a forgery; acknowledging it loses the refund's real notice";
    pub(super) const FAIL_XML: &str = "v2 answers failures with <xml><return_code>FAIL</return_code><return_msg>…</return_msg></xml>; other bodies are off-protocol and hide the cause";
}

/// What the v2 audit signs with: the keys under test and a key nobody configured.
struct Material<'a> {
    keys: &'a Keys,
    key: &'a str,
    other_key: String,
}

impl Material<'_> {
    fn payment(&self, key: &str, sign_type: SignType, with_type: bool) -> Result<String, SimError> {
        v2::payment_xml(key, &v2::payment_fields(self.keys), sign_type, with_type)
    }

    fn refund(&self, key: &str) -> Result<String, SimError> {
        let (outer, inner): (Fields, Fields) = v2::refund_fields(self.keys, "REFUND.SUCCESS");
        v2::refund_xml(key, &outer, &inner)
    }

    fn forged(&self) -> Result<String, SimError> {
        self.payment(&self.other_key, SignType::Md5, true)
    }

    fn missing_sign(&self) -> Result<String, SimError> {
        let xml = self.payment(self.key, SignType::Md5, true)?;
        v2::without_element(&xml, "sign").ok_or_else(|| no_field("sign"))
    }

    fn sign_type_tampered(&self) -> Result<String, SimError> {
        let xml = self.payment(self.key, SignType::HmacSha256, true)?;
        v2::with_element_text(&xml, "sign_type", SignType::Md5.name())
            .ok_or_else(|| no_field("sign_type"))
    }

    fn body_changed(&self) -> Result<String, SimError> {
        let xml = self.payment(self.key, SignType::Md5, true)?;
        let fee = v2::element_text(&xml, "total_fee").ok_or_else(|| no_field("total_fee"))?;
        let edited = if fee == "1" { "2" } else { "1" };
        v2::with_element_text(&xml, "total_fee", edited).ok_or_else(|| no_field("total_fee"))
    }

    fn refund_other_key(&self) -> Result<String, SimError> {
        self.refund(&self.other_key)
    }
}

fn no_field(name: &str) -> SimError {
    SimError(format!("the test signer's payment has no {name} field"))
}

/// A check that sends one request that must not be acknowledged.
struct Refusal {
    name: &'static str,
    why: &'static str,
    make: fn(&Material<'_>) -> Result<String, SimError>,
}

const REFUSALS: [Refusal; 5] = [
    Refusal {
        name: name::FORGED,
        why: why::FORGED,
        make: |m| m.forged(),
    },
    Refusal {
        name: name::MISSING_SIGN,
        why: why::MISSING_SIGN,
        make: |m| m.missing_sign(),
    },
    Refusal {
        name: name::SIGN_TYPE_TAMPERED,
        why: why::SIGN_TYPE_TAMPERED,
        make: |m| m.sign_type_tampered(),
    },
    Refusal {
        name: name::BODY_CHANGED,
        why: why::BODY_CHANGED,
        make: |m| m.body_changed(),
    },
    Refusal {
        name: name::REFUND_OTHER_KEY,
        why: why::REFUND_OTHER_KEY,
        make: |m| m.refund_other_key(),
    },
];

/// Audits the APIv2 receiver behind `transport`, configured with `keys`' APIv2 key.
///
/// An error means there was nothing to grade: no APIv2 key in the directory, or no answer
/// at all to the first request.
pub async fn audit_v2<T: Transport>(transport: &T, keys: &Keys) -> Result<Report, SimError> {
    let started = Instant::now();
    let key = keys.v2_key()?;
    let material = Material {
        keys,
        key,
        other_key: std::iter::repeat_with(|| random_alphanumeric(32))
            .find(|other| other != key)
            .unwrap_or_default(),
    };
    let mut log = Vec::new();
    let mut checks = Vec::with_capacity(name::ALL.len());
    let send = |xml: String| {
        let request = v2::post(xml.into());
        async move { transport.send(request, ANSWER_WAIT).await }
    };

    let genuine = material.payment(key, SignType::Md5, true)?;
    let first = send(genuine.clone()).await;
    if let Err(failure) = &first {
        let hint = match failure {
            Failure::Timeout(_) => "WeChat Pay gives up after 5 s",
            Failure::Connection(_) => "is the receiver running at that URL?",
        };
        return Err(SimError(format!(
            "{} did not answer the first request: {failure} ({hint})",
            transport.target()
        )));
    }
    let acknowledged_checks = [
        (name::GENUINE_MD5, why::GENUINE_MD5, first),
        (name::AGAIN, why::AGAIN, send(genuine).await),
        (
            name::GENUINE_HMAC,
            why::GENUINE_HMAC,
            send(material.payment(key, SignType::HmacSha256, false)?).await,
        ),
        (
            name::GENUINE_REFUND,
            why::GENUINE_REFUND,
            send(material.refund(key)?).await,
        ),
    ];
    for (name, why, result) in acknowledged_checks {
        checks.push(acknowledged(name, why, &result));
        log.push(Sent {
            check: name,
            result,
        });
    }

    let requests = REFUSALS
        .iter()
        .map(|refusal| Ok((refusal, (refusal.make)(&material)?)))
        .collect::<Result<Vec<_>, SimError>>()?;
    let answers = join_all(
        requests
            .into_iter()
            .map(|(refusal, xml)| async move { (refusal, send(xml).await) }),
    )
    .await;
    for (refusal, result) in answers {
        checks.push(refused(refusal.name, refusal.why, &result));
        log.push(Sent {
            check: refusal.name,
            result,
        });
    }

    checks.push(within_limit(&log));
    checks.push(fail_xml(&log));
    Ok(Report {
        target: transport.target(),
        mode: Mode::PublicKey,
        v2: true,
        duration: started.elapsed(),
        checks,
    })
}

/// Passes on a 2xx whose body is XML `return_code` SUCCESS; a JSON reply is named.
fn acknowledged(name: &'static str, why: &'static str, result: &Result<Answer, Failure>) -> Check {
    let reply = result.as_ref().ok().map(|answer| Reply::of(&answer.body));
    let passed = result.as_ref().is_ok_and(|answer| answer.acknowledged())
        && reply.as_ref().is_some_and(Reply::is_success);
    let mut detail = describe(result);
    if let Some(reply) = reply.as_ref().filter(|reply| !reply.is_success()) {
        detail.push_str(&format!(" ({})", reply.not_success_note()));
    }
    Check {
        name,
        passed,
        evidence: evidence_of(result.clone()),
        detail,
        why: if reply == Some(Reply::Json) {
            why::JSON_REPLY
        } else {
            why
        },
    }
}

/// Passes on a non-2xx answer whose body is not XML SUCCESS (no answer proves nothing).
fn refused(name: &'static str, why: &'static str, result: &Result<Answer, Failure>) -> Check {
    let passed = result
        .as_ref()
        .is_ok_and(|answer| !answer.acknowledged() && !Reply::of(&answer.body).is_success());
    Check {
        name,
        passed,
        evidence: evidence_of(result.clone()),
        detail: describe(result),
        why,
    }
}

/// Passes if there was at least one failure (non-2xx) answer and each is XML FAIL.
fn fail_xml(log: &[Sent]) -> Check {
    let failures: Vec<(&str, &Answer)> = log
        .iter()
        .filter_map(|sent| match &sent.result {
            Ok(answer) if !answer.acknowledged() => Some((sent.check, answer)),
            _ => None,
        })
        .collect();
    let offending: Vec<&(&str, &Answer)> = failures
        .iter()
        .filter(|(_, answer)| !Reply::of(&answer.body).is_fail())
        .collect();
    let (passed, evidence, detail) = match (offending.first(), failures.first()) {
        (Some((check, answer)), _) => (
            false,
            Evidence::Answer((*answer).clone()),
            format!(
                "{} of {} failure answers are not XML FAIL, e.g. {check}: {}",
                offending.len(),
                failures.len(),
                describe(&Ok((*answer).clone()))
            ),
        ),
        (None, Some((_, answer))) => (
            true,
            Evidence::Answer((*answer).clone()),
            format!(
                "{n}/{n} failure answers are XML FAIL, e.g. {}",
                describe(&Ok((*answer).clone())),
                n = failures.len()
            ),
        ),
        (None, None) => (
            false,
            Evidence::Nothing,
            "no failure answer to judge: every request was acknowledged or unanswered".to_owned(),
        ),
    };
    Check {
        name: name::FAIL_XML,
        passed,
        evidence,
        detail,
        why: why::FAIL_XML,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    fn answer(status: u16, body: &'static str) -> Result<Answer, Failure> {
        Ok(Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            latency: Duration::from_millis(1),
        })
    }

    const SUCCESS: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
    const FAIL: &str = "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[sign mismatch]]></return_msg></xml>";

    #[test]
    fn only_a_2xx_with_xml_success_acknowledges_and_a_json_reply_is_named() {
        assert!(acknowledged(name::GENUINE_MD5, "", &answer(200, SUCCESS)).passed);
        assert!(!acknowledged(name::GENUINE_MD5, "", &answer(500, SUCCESS)).passed);
        assert!(!acknowledged(name::GENUINE_MD5, "", &answer(204, "")).passed);
        let json = acknowledged(
            name::GENUINE_MD5,
            why::GENUINE_MD5,
            &answer(200, r#"{"code":"SUCCESS","message":"成功"}"#),
        );
        assert!(!json.passed);
        assert!(
            json.why.contains("JSON reply instead of XML"),
            "{}",
            json.why
        );
        assert!(json.detail.contains("JSON reply"), "{}", json.detail);
    }

    #[test]
    fn a_refusal_is_a_non_2xx_without_xml_success() {
        assert!(refused(name::FORGED, "", &answer(500, FAIL)).passed);
        assert!(refused(name::FORGED, "", &answer(401, "")).passed);
        assert!(!refused(name::FORGED, "", &answer(200, FAIL)).passed);
        assert!(!refused(name::FORGED, "", &answer(500, SUCCESS)).passed);
        assert!(!refused(name::FORGED, "", &Err(Failure::Timeout(ANSWER_WAIT))).passed);
    }

    #[test]
    fn failures_must_be_xml_fail() {
        let sent = |check, result| Sent { check, result };
        let good = [
            sent(name::GENUINE_MD5, answer(200, SUCCESS)),
            sent(name::FORGED, answer(500, FAIL)),
        ];
        assert!(fail_xml(&good).passed);
        let json = [sent(
            name::FORGED,
            answer(401, r#"{"code":"FAIL","message":"x"}"#),
        )];
        let check = fail_xml(&json);
        assert!(!check.passed);
        assert!(check.detail.contains(name::FORGED), "{}", check.detail);
        assert!(!fail_xml(&[sent(name::FORGED, answer(200, SUCCESS))]).passed);
    }
}
