//! `wechatpay-sim audit`: a report card for any notification receiver (ours, or a PHP,
//! Go or Java one). It sends what WeChat Pay sends and what an attacker sends, and grades
//! the answers:
//!
//! 1. a genuine payment, then the same notification again (freshly signed, as WeChat Pay
//!    retries), then 5 concurrent copies of another one: each must end acknowledged (2xx);
//! 2. twelve requests that must never be acknowledged (4xx/5xx), sent concurrently, each
//!    made from its own fresh genuine notification so a receiver's dedupe cannot hide a
//!    result: a forged signature, a body changed by one byte, a re-serialised body,
//!    timestamps 10 min old and 10 min ahead, WeChat Pay's `WECHATPAY/SIGNTEST/` probe, an
//!    unknown serial, each `Wechatpay-*` header missing, and a genuine signature over a
//!    resource encrypted with another APIv3 key;
//! 3. over every answer: each came within WeChat Pay's 5 s, and each failure answer is
//!    WeChat Pay's `{"code":"FAIL","message":…}`.
//!
//! [`audit`] runs the checks through any [`Transport`] and returns a typed [`Report`];
//! [`run`] is the command: HTTP, then the report as text or JSON. `audit --v2` runs the
//! APIv2 checks instead ([`v2::audit_v2`]), in the same report format.

mod render;
mod tamper;
pub mod v2;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::time::Instant;
use tower_wechatpay::test_util::SignedNotification;

use crate::cli::AuditArgs;
use crate::deliver::{ANSWER_LIMIT, Outcome, Plan, Progress, Schedule, deliver};
use crate::error::SimError;
use crate::keys::{Keys, Mode};
use crate::transport::{Answer, Failure, HttpTransport, Transport};

pub use tamper::{change_one_byte, reserialise};

/// How long the audit waits for each answer: longer than WeChat Pay's 5 s, so a late
/// answer is told from none and its lateness measured.
pub const ANSWER_WAIT: Duration = Duration::from_secs(8);

/// Concurrent copies in the duplicate-delivery check.
pub const COPIES: usize = 5;

/// Retries per copy that was not acknowledged: the first gaps of [`Schedule::Fast`]
/// (15 ms, 15 ms, 30 ms, 180 ms, 600 ms, 1.2 s: about 2 s in all).
pub const COPY_RETRIES: usize = 6;

/// The checks' names, in report order (stable: scripts and tests match on them).
pub mod name {
    /// A genuine payment notification is acknowledged.
    pub const GENUINE: &str = "genuine payment acknowledged";
    /// The same notification, delivered again with a fresh signature, is acknowledged.
    pub const AGAIN: &str = "same notification again acknowledged";
    /// Five concurrent copies of one notification all end acknowledged.
    pub const CONCURRENT: &str = "5 concurrent copies acknowledged";
    /// A signature by a key nobody configured, under the real serial.
    pub const FORGED: &str = "forged signature refused";
    /// One byte of the body changed after signing.
    pub const ONE_BYTE: &str = "body changed by one byte refused";
    /// The body parsed and written again (other whitespace, sorted keys).
    pub const RESERIALISED: &str = "body re-serialised refused";
    /// `Wechatpay-Timestamp` 10 minutes in the past.
    pub const STALE: &str = "timestamp 10 min old refused";
    /// `Wechatpay-Timestamp` 10 minutes in the future.
    pub const AHEAD: &str = "timestamp 10 min ahead refused";
    /// WeChat Pay's signature probe.
    pub const PROBE: &str = "WECHATPAY/SIGNTEST/ probe refused";
    /// A serial the receiver does not hold.
    pub const UNKNOWN_SERIAL: &str = "unknown serial refused";
    /// No `Wechatpay-Timestamp`.
    pub const NO_TIMESTAMP: &str = "missing Wechatpay-Timestamp refused";
    /// No `Wechatpay-Nonce`.
    pub const NO_NONCE: &str = "missing Wechatpay-Nonce refused";
    /// No `Wechatpay-Signature`.
    pub const NO_SIGNATURE: &str = "missing Wechatpay-Signature refused";
    /// No `Wechatpay-Serial`.
    pub const NO_SERIAL: &str = "missing Wechatpay-Serial refused";
    /// A genuine signature over a resource encrypted with another APIv3 key.
    pub const OTHER_APIV3_KEY: &str = "other APIv3 key not acknowledged";
    /// Every answer came within 5 s.
    pub const WITHIN_5_S: &str = "every answer within 5 s";
    /// Every failure answer is `{"code":"FAIL","message":…}`.
    pub const FAIL_JSON: &str = "failures answered in FAIL JSON";

    /// Every check, in report order.
    pub const ALL: [&str; 17] = [
        GENUINE,
        AGAIN,
        CONCURRENT,
        FORGED,
        ONE_BYTE,
        RESERIALISED,
        STALE,
        AHEAD,
        PROBE,
        UNKNOWN_SERIAL,
        NO_TIMESTAMP,
        NO_NONCE,
        NO_SIGNATURE,
        NO_SERIAL,
        OTHER_APIV3_KEY,
        WITHIN_5_S,
        FAIL_JSON,
    ];
}

/// Why each check matters, in one sentence a developer understands.
mod why {
    pub(super) const GENUINE: &str =
        "an unacknowledged payment is resent for 24 h and the order may never be marked paid";
    pub(super) const AGAIN: &str = "WeChat Pay resends notifications it already delivered; refusing a repeat means retries for 24 h";
    pub(super) const CONCURRENT: &str =
        "copies arrive at the same moment from several WeChat servers; each must end acknowledged";
    pub(super) const FORGED: &str =
        "anyone can POST a 'paid' notice: acknowledging a forged one ships goods nobody paid for";
    pub(super) const ONE_BYTE: &str =
        "if a changed body still passes, an attacker can edit a genuine notice (order, amount)";
    pub(super) const RESERIALISED: &str = "the signature covers the raw bytes; accepting other bytes means it checks a re-parsed copy, not what was sent";
    pub(super) const STALE: &str =
        "without the 5-minute window a captured genuine notice can be replayed forever";
    pub(super) const AHEAD: &str =
        "future timestamps must be bounded too, or a replay window stays open";
    pub(super) const PROBE: &str =
        "WeChat Pay sends bad signatures on purpose to catch merchants who do not verify";
    pub(super) const UNKNOWN_SERIAL: &str =
        "a key you do not hold cannot vouch for anything; trusting it trusts any signer";
    pub(super) const NO_TIMESTAMP: &str = "the timestamp is part of the signed message; skipping checks when it is absent is fail-open";
    pub(super) const NO_NONCE: &str =
        "the nonce is part of the signed message; without it nothing can be verified";
    pub(super) const NO_SIGNATURE: &str =
        "no signature means nothing was verified; acknowledging it lets anyone mark orders paid";
    pub(super) const NO_SERIAL: &str =
        "without the serial the receiver cannot know which key to check; guessing is fail-open";
    pub(super) const OTHER_APIV3_KEY: &str = "a resource that does not decrypt (wrong or reset APIv3 key) must get 4xx/5xx, or WeChat stops retrying and the payment is lost";
    pub(super) const WITHIN_5_S: &str = "WeChat Pay gives up after 5 s and resends, so a slow receiver handles every payment several times";
    pub(super) const FAIL_JSON: &str = "WeChat Pay's protocol answers failures with {\"code\":\"FAIL\",\"message\":…}; other bodies are off-protocol and hide the cause";
}

/// What a check's verdict rests on.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// The answer judged (for a check over many answers: the slowest, or the first
    /// offending one).
    Answer(Answer),
    /// The request got no answer.
    NoAnswer(Failure),
    /// No answer to show (a check over answers that never came).
    Nothing,
}

/// One line of the report card.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its name, one of [`name::ALL`].
    pub name: &'static str,
    /// Whether the receiver passed.
    pub passed: bool,
    /// The answer the verdict rests on.
    pub evidence: Evidence,
    /// What was answered, on one line.
    pub detail: String,
    /// Why the check matters.
    pub why: &'static str,
}

/// The whole audit.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was audited.
    pub target: String,
    /// Which WeChat Pay key signed the genuine notifications (v3 audits).
    pub mode: Mode,
    /// An APIv2 audit (`--v2`): the checks are [`v2::name::ALL`] and `mode` means nothing.
    pub v2: bool,
    /// How long the audit took.
    pub duration: Duration,
    /// Every check, in [`name::ALL`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// True if every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.passed)
    }

    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.name == name)
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| !check.passed)
    }

    /// `17/17 checks passed in 0.4 s`.
    pub fn summary(&self) -> String {
        let passed = self.checks.iter().filter(|check| check.passed).count();
        format!(
            "{passed}/{} checks passed in {:.1} s",
            self.checks.len(),
            self.duration.as_secs_f64()
        )
    }
}

/// Runs `audit`: `Ok(true)` if every check passed, `Ok(false)` if any failed, an error for
/// bad keys, a bad URL, or an endpoint that never answered the first request.
pub async fn run(args: &AuditArgs) -> Result<bool, SimError> {
    let keys = Keys::load(&args.keys)?;
    let transport = HttpTransport::new(&args.to)?;
    let report = if args.v2 {
        v2::audit_v2(&transport, &keys).await?
    } else {
        audit(&transport, &keys, args.mode).await?
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report.json())
            .map_err(|e| SimError(format!("writing the JSON report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(report.passed())
}

/// One request the audit sent, and what came of it.
struct Sent {
    check: &'static str,
    result: Result<Answer, Failure>,
}

/// A check that sends one request that must be refused.
struct Refusal {
    name: &'static str,
    why: &'static str,
    make: fn(&tamper::Material<'_>) -> Result<SignedNotification, SimError>,
}

const REFUSALS: [Refusal; 12] = [
    Refusal {
        name: name::FORGED,
        why: why::FORGED,
        make: |m| m.forged(),
    },
    Refusal {
        name: name::ONE_BYTE,
        why: why::ONE_BYTE,
        make: |m| m.one_byte_changed(),
    },
    Refusal {
        name: name::RESERIALISED,
        why: why::RESERIALISED,
        make: |m| m.reserialised(),
    },
    Refusal {
        name: name::STALE,
        why: why::STALE,
        make: |m| m.stale(),
    },
    Refusal {
        name: name::AHEAD,
        why: why::AHEAD,
        make: |m| m.ahead(),
    },
    Refusal {
        name: name::PROBE,
        why: why::PROBE,
        make: |m| m.probe(),
    },
    Refusal {
        name: name::UNKNOWN_SERIAL,
        why: why::UNKNOWN_SERIAL,
        make: |m| m.unknown_serial(),
    },
    Refusal {
        name: name::NO_TIMESTAMP,
        why: why::NO_TIMESTAMP,
        make: |m| m.without("wechatpay-timestamp"),
    },
    Refusal {
        name: name::NO_NONCE,
        why: why::NO_NONCE,
        make: |m| m.without("wechatpay-nonce"),
    },
    Refusal {
        name: name::NO_SIGNATURE,
        why: why::NO_SIGNATURE,
        make: |m| m.without("wechatpay-signature"),
    },
    Refusal {
        name: name::NO_SERIAL,
        why: why::NO_SERIAL,
        make: |m| m.without("wechatpay-serial"),
    },
    Refusal {
        name: name::OTHER_APIV3_KEY,
        why: why::OTHER_APIV3_KEY,
        make: |m| m.other_api_v3_key(),
    },
];

/// Audits the receiver behind `transport`, configured with `keys`; the genuine
/// notifications are signed as `mode` signs.
///
/// An error means there was nothing to grade: a key that does not sign, or no answer at
/// all to the first request (refused, broken, or nothing within [`ANSWER_WAIT`]).
pub async fn audit<T: Transport>(
    transport: &T,
    keys: &Keys,
    mode: Mode,
) -> Result<Report, SimError> {
    let started = Instant::now();
    let material = tamper::Material::new(keys, mode)?;
    let mut log = Vec::new();
    let mut checks = Vec::with_capacity(name::ALL.len());

    let genuine = material.fresh()?;
    let first = transport
        .send(tamper::post(genuine.attempt()?), ANSWER_WAIT)
        .await;
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
    checks.push(acknowledged(name::GENUINE, why::GENUINE, &first));
    log.push(Sent {
        check: name::GENUINE,
        result: first,
    });

    let again = transport
        .send(tamper::post(genuine.attempt()?), ANSWER_WAIT)
        .await;
    checks.push(acknowledged(name::AGAIN, why::AGAIN, &again));
    log.push(Sent {
        check: name::AGAIN,
        result: again,
    });

    checks.push(concurrent_copies(transport, &material, &mut log).await?);

    let requests = REFUSALS
        .iter()
        .map(|refusal| Ok((refusal, tamper::post((refusal.make)(&material)?))))
        .collect::<Result<Vec<_>, SimError>>()?;
    let answers = join_all(requests.into_iter().map(|(refusal, request)| async move {
        (refusal, transport.send(request, ANSWER_WAIT).await)
    }))
    .await;
    for (refusal, result) in answers {
        checks.push(refused(refusal.name, refusal.why, &result));
        log.push(Sent {
            check: refusal.name,
            result,
        });
    }

    checks.push(within_limit(&log));
    checks.push(fail_json(&log));
    Ok(Report {
        target: transport.target(),
        mode,
        v2: false,
        duration: started.elapsed(),
        checks,
    })
}

/// Five copies of a fresh notification at once; each copy not acknowledged is retried on
/// the first [`COPY_RETRIES`] gaps of [`Schedule::Fast`], freshly signed each time.
async fn concurrent_copies<T: Transport>(
    transport: &T,
    material: &tamper::Material<'_>,
    log: &mut Vec<Sent>,
) -> Result<Check, SimError> {
    let notification = material.fresh()?;
    let plan = Plan {
        gaps: Schedule::Fast
            .gaps()
            .into_iter()
            .take(COPY_RETRIES)
            .collect(),
        copies: 1,
        timeout: ANSWER_WAIT,
    };
    let copies = join_all((0..COPIES).map(|_| async {
        let mut results = Vec::new();
        let outcome = deliver(transport, &notification, &plan, |progress| {
            if let Progress::Attempt(attempt) = progress {
                results.push(attempt.result.clone());
            }
        })
        .await;
        outcome.map(|outcome| (outcome, results))
    }))
    .await;
    let mut acknowledged = 0;
    let mut requests = 0;
    // The last answer of the first copy that failed speaks for the check; else the first's.
    let mut last = None;
    let mut failing_found = false;
    for copy in copies {
        let (outcome, results) = copy?;
        requests += results.len();
        let ok = matches!(outcome, Outcome::Acknowledged { .. });
        acknowledged += usize::from(ok);
        if let Some(result) = results.last()
            && (last.is_none() || (!ok && !failing_found))
        {
            last = Some(result.clone());
            failing_found = !ok;
        }
        log.extend(results.into_iter().map(|result| Sent {
            check: name::CONCURRENT,
            result,
        }));
    }
    let passed = acknowledged == COPIES;
    let detail = if passed {
        format!(
            "{acknowledged}/{COPIES} acknowledged after {requests} requests ({} retries)",
            requests.saturating_sub(COPIES)
        )
    } else {
        let answer = last
            .as_ref()
            .map_or_else(|| "no request".to_owned(), describe);
        format!(
            "{acknowledged}/{COPIES} acknowledged after up to {} attempts each; a copy's last answer: {answer}",
            COPY_RETRIES + 1
        )
    };
    Ok(Check {
        name: name::CONCURRENT,
        passed,
        evidence: last.map_or(Evidence::Nothing, evidence_of),
        detail,
        why: why::CONCURRENT,
    })
}

/// Passes on a 2xx answer.
fn acknowledged(name: &'static str, why: &'static str, result: &Result<Answer, Failure>) -> Check {
    Check {
        name,
        passed: result.as_ref().is_ok_and(Answer::acknowledged),
        evidence: evidence_of(result.clone()),
        detail: describe(result),
        why,
    }
}

/// Passes on a 4xx or 5xx answer (WeChat Pay retries; no answer at all proves nothing).
fn refused(name: &'static str, why: &'static str, result: &Result<Answer, Failure>) -> Check {
    let passed = result
        .as_ref()
        .is_ok_and(|answer| answer.status.is_client_error() || answer.status.is_server_error());
    Check {
        name,
        passed,
        evidence: evidence_of(result.clone()),
        detail: describe(result),
        why,
    }
}

/// Passes if every answer came within [`ANSWER_LIMIT`] (and none was waited for in vain).
fn within_limit(log: &[Sent]) -> Check {
    let late: Vec<&Sent> = log
        .iter()
        .filter(|sent| match &sent.result {
            Ok(answer) => answer.latency > ANSWER_LIMIT,
            Err(Failure::Timeout(_)) => true,
            Err(Failure::Connection(_)) => false,
        })
        .collect();
    let answered = log.iter().filter(|sent| sent.result.is_ok()).count();
    if let Some(first) = late.first() {
        let mut listed: Vec<String> = late
            .iter()
            .take(3)
            .map(|sent| match &sent.result {
                Ok(answer) => format!("{} took {} ms", sent.check, answer.millis()),
                Err(failure) => format!("{}: {failure}", sent.check),
            })
            .collect();
        if late.len() > 3 {
            listed.push(format!("{} more", late.len() - 3));
        }
        return Check {
            name: name::WITHIN_5_S,
            passed: false,
            evidence: evidence_of(first.result.clone()),
            detail: format!(
                "{} of {} requests over {} s: {}",
                late.len(),
                log.len(),
                ANSWER_LIMIT.as_secs(),
                listed.join("; ")
            ),
            why: why::WITHIN_5_S,
        };
    }
    let slowest = log
        .iter()
        .filter_map(|sent| sent.result.as_ref().ok().map(|answer| (sent.check, answer)))
        .max_by_key(|(_, answer)| answer.latency);
    match slowest {
        Some((check, answer)) => Check {
            name: name::WITHIN_5_S,
            passed: true,
            evidence: Evidence::Answer(answer.clone()),
            detail: format!(
                "{answered} answers, the slowest {} ms ({check})",
                answer.millis()
            ),
            why: why::WITHIN_5_S,
        },
        None => Check {
            name: name::WITHIN_5_S,
            passed: false,
            evidence: Evidence::Nothing,
            detail: "no answer to time".to_owned(),
            why: why::WITHIN_5_S,
        },
    }
}

/// Passes if there was at least one failure answer and each is FAIL JSON.
fn fail_json(log: &[Sent]) -> Check {
    let failures: Vec<(&str, &Answer)> = log
        .iter()
        .filter_map(|sent| match &sent.result {
            Ok(answer) if !answer.acknowledged() => Some((sent.check, answer)),
            _ => None,
        })
        .collect();
    let offending: Vec<&(&str, &Answer)> = failures
        .iter()
        .filter(|(_, answer)| !is_fail_json(&answer.body))
        .collect();
    let (passed, evidence, detail) = match (offending.first(), failures.first()) {
        (Some((check, answer)), _) => (
            false,
            Evidence::Answer((*answer).clone()),
            format!(
                "{} of {} failure answers are not FAIL JSON, e.g. {check}: {}",
                offending.len(),
                failures.len(),
                describe_answer(answer)
            ),
        ),
        (None, Some((_, answer))) => (
            true,
            Evidence::Answer((*answer).clone()),
            format!(
                "{n}/{n} failure answers are FAIL JSON, e.g. {}",
                describe_answer(answer),
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
        name: name::FAIL_JSON,
        passed,
        evidence,
        detail,
        why: why::FAIL_JSON,
    }
}

/// `{"code":"…","message":"…"}`: a JSON object whose `code` and `message` are strings.
pub fn is_fail_json(body: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => {
            fields.get("code").is_some_and(Value::is_string)
                && fields.get("message").is_some_and(Value::is_string)
        }
        _ => false,
    }
}

fn evidence_of(result: Result<Answer, Failure>) -> Evidence {
    match result {
        Ok(answer) => Evidence::Answer(answer),
        Err(failure) => Evidence::NoAnswer(failure),
    }
}

/// `401 Unauthorized in 2 ms: {"code":"FAIL",…}`, or why there was no answer.
fn describe(result: &Result<Answer, Failure>) -> String {
    match result {
        Ok(answer) => describe_answer(answer),
        Err(failure) => failure.to_string(),
    }
}

fn describe_answer(answer: &Answer) -> String {
    let body = if answer.body.is_empty() {
        "(empty body)".to_owned()
    } else {
        answer.body_excerpt(100)
    };
    format!("{} in {} ms: {body}", answer.status, answer.millis())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    fn answer(status: u16, body: &'static str, millis: u64) -> Result<Answer, Failure> {
        Ok(Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            latency: Duration::from_millis(millis),
        })
    }

    fn sent(check: &'static str, result: Result<Answer, Failure>) -> Sent {
        Sent { check, result }
    }

    #[test]
    fn fail_json_is_an_object_with_string_code_and_message() {
        assert!(is_fail_json(
            br#"{"code":"FAIL","message":"bad signature"}"#
        ));
        assert!(is_fail_json(br#"{"code":"ERROR","message":"x","extra":1}"#));
        assert!(!is_fail_json(b"signature error"));
        assert!(!is_fail_json(br#"{"code":"FAIL"}"#));
        assert!(!is_fail_json(br#"{"code":401,"message":"x"}"#));
        assert!(!is_fail_json(br#"["FAIL"]"#));
    }

    #[test]
    fn a_plain_text_failure_fails_the_fail_json_check_and_is_named() {
        let log = [
            sent(name::GENUINE, answer(204, "", 1)),
            sent(
                name::FORGED,
                answer(401, r#"{"code":"FAIL","message":"x"}"#, 1),
            ),
            sent(name::PROBE, answer(401, "signature error", 1)),
        ];
        let check = fail_json(&log);
        assert!(!check.passed);
        assert!(check.detail.contains("1 of 2"), "{}", check.detail);
        assert!(check.detail.contains(name::PROBE), "{}", check.detail);
    }

    #[test]
    fn no_failure_answer_at_all_is_not_a_pass_for_fail_json() {
        let log = [sent(name::FORGED, answer(200, "", 1))];
        assert!(!fail_json(&log).passed);
    }

    #[test]
    fn an_answer_after_5_s_or_none_within_the_wait_fails_the_time_limit_and_is_named() {
        let on_time = [sent(name::GENUINE, answer(204, "", 5000))];
        assert!(within_limit(&on_time).passed);
        let late = [
            sent(name::GENUINE, answer(204, "", 5001)),
            sent(name::FORGED, Err(Failure::Timeout(ANSWER_WAIT))),
            sent(name::PROBE, Err(Failure::Connection("reset".to_owned()))),
        ];
        let check = within_limit(&late);
        assert!(!check.passed);
        assert!(
            check
                .detail
                .contains("genuine payment acknowledged took 5001 ms"),
            "{}",
            check.detail
        );
        assert!(check.detail.contains("2 of 3"), "{}", check.detail);
    }

    #[test]
    fn a_refusal_needs_a_4xx_or_5xx_answer() {
        assert!(refused(name::FORGED, "", &answer(401, "", 1)).passed);
        assert!(refused(name::FORGED, "", &answer(503, "", 1)).passed);
        assert!(!refused(name::FORGED, "", &answer(200, "", 1)).passed);
        assert!(!refused(name::FORGED, "", &answer(302, "", 1)).passed);
        assert!(!refused(name::FORGED, "", &Err(Failure::Timeout(ANSWER_WAIT))).passed);
    }
}
