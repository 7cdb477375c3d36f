//! Delivering one notification on WeChat Pay's retry schedule.
//!
//! What counts as an acknowledgement is a property of the delivery
//! ([`Deliverable::acknowledgement`]): any 2xx for APIv3, a 2xx whose body is XML with
//! `return_code` SUCCESS for APIv2.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};

use crate::error::SimError;
use crate::notify::Notification;
use crate::transport::{Answer, Failure, Transport};

/// WeChat Pay's gaps between attempts after the first (15 s, 15 s, 30 s, 3 min, 10 min,
/// 20 min, 30 min, 30 min, 30 min, 60 min, 3 h, 3 h, 3 h, 6 h, 6 h): 16 attempts in all,
/// the last one about 24 h 4 min after the first.
pub const WECHAT_GAPS: [Duration; 15] = {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    let secs = [
        15,
        15,
        30,
        3 * MIN,
        10 * MIN,
        20 * MIN,
        30 * MIN,
        30 * MIN,
        30 * MIN,
        60 * MIN,
        3 * HOUR,
        3 * HOUR,
        3 * HOUR,
        6 * HOUR,
        6 * HOUR,
    ];
    let mut gaps = [Duration::ZERO; 15];
    let mut i = 0;
    while i < secs.len() {
        gaps[i] = Duration::from_secs(secs[i]);
        i += 1;
    }
    gaps
};

/// WeChat Pay's time limit for an answer.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// When to try again after an attempt that was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// WeChat Pay's own gaps, about 24 hours in all.
    Wechat,
    /// The same gaps divided by 1000 (15 ms, 15 ms, 30 ms, 180 ms, …): the whole schedule
    /// in about 87 s.
    Fast,
    /// One attempt, no retry.
    Once,
}

impl Schedule {
    /// The gaps before the second, third, … attempt.
    pub fn gaps(self) -> Vec<Duration> {
        match self {
            Schedule::Wechat => WECHAT_GAPS.to_vec(),
            Schedule::Fast => WECHAT_GAPS.iter().map(|gap| *gap / 1000).collect(),
            Schedule::Once => Vec::new(),
        }
    }
}

/// What WeChat Pay takes as an acknowledgement (it stops retrying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledgement {
    /// APIv3: any 2xx answer, whatever its body.
    AnySuccessStatus,
    /// APIv2: a 2xx answer whose body is XML with `return_code` SUCCESS. A JSON
    /// `{"code":"SUCCESS"}` or an empty 204 is not one: WeChat's v2 reads only the XML.
    XmlSuccess,
}

impl Acknowledgement {
    /// Whether `answer` acknowledges under this rule.
    pub fn acknowledges(self, answer: &Answer) -> bool {
        match self {
            Acknowledgement::AnySuccessStatus => answer.acknowledged(),
            Acknowledgement::XmlSuccess => {
                answer.acknowledged() && crate::v2::Reply::of(&answer.body).is_success()
            }
        }
    }

    /// Why a 2xx `answer` does not count (`None` when it does, or is not a 2xx).
    pub fn note(self, answer: &Answer) -> Option<String> {
        match self {
            Acknowledgement::AnySuccessStatus => None,
            Acknowledgement::XmlSuccess if answer.acknowledged() => {
                let reply = crate::v2::Reply::of(&answer.body);
                (!reply.is_success()).then(|| reply.not_success_note())
            }
            Acknowledgement::XmlSuccess => None,
        }
    }
}

/// Something `deliver` can send again and again: each call makes one attempt's request.
pub trait Deliverable: Sync {
    /// One attempt (APIv3: freshly signed; APIv2: the same XML every time).
    fn request(&self) -> Result<Request<Bytes>, SimError>;

    /// What WeChat Pay takes as an acknowledgement of it.
    fn acknowledgement(&self) -> Acknowledgement;
}

impl Deliverable for Notification {
    fn request(&self) -> Result<Request<Bytes>, SimError> {
        post(self)
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::AnySuccessStatus
    }
}

/// One request of a delivery and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: usize,
    /// With `--copies N` on the first attempt: which copy, of how many.
    pub copy: Option<(usize, usize)>,
    /// The answer, or why there was none.
    pub result: Result<Answer, Failure>,
    /// Whether the answer acknowledged, under the delivery's [`Acknowledgement`].
    pub acknowledged: bool,
    /// Why a 2xx answer did not count (APIv2: not an XML SUCCESS body).
    pub note: Option<String>,
}

impl Attempt {
    /// The line `send` prints for it.
    pub fn line(&self) -> String {
        let copy = match self.copy {
            Some((n, of)) => format!(" copy {n}/{of}"),
            None => String::new(),
        };
        let note = match &self.note {
            Some(note) => format!(" ({note}: not acknowledged)"),
            None => String::new(),
        };
        match &self.result {
            Ok(answer) => format!(
                "attempt {}{copy}: {} in {} ms: {}{note}",
                self.number,
                answer.status,
                answer.millis(),
                answer.body_excerpt(200)
            ),
            Err(failure) => format!("attempt {}{copy}: {failure}", self.number),
        }
    }

    fn new(
        number: usize,
        copy: Option<(usize, usize)>,
        result: Result<Answer, Failure>,
        rule: Acknowledgement,
    ) -> Self {
        let acknowledged = result.as_ref().is_ok_and(|a| rule.acknowledges(a));
        let note = result.as_ref().ok().and_then(|a| rule.note(a));
        Self {
            number,
            copy,
            result,
            acknowledged,
            note,
        }
    }
}

/// What a delivery reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A request completed (or timed out).
    Attempt(&'a Attempt),
    /// Not acknowledged: the next attempt comes after this gap.
    Waiting(Duration),
}

impl Progress<'_> {
    /// The line `send` prints.
    pub fn line(&self) -> String {
        match self {
            Progress::Attempt(attempt) => attempt.line(),
            Progress::Waiting(gap) => format!("next attempt in {}", gap_words(*gap)),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An attempt was acknowledged (every copy, on a first attempt with copies): a 2xx,
    /// and for APIv2 an XML SUCCESS body.
    Acknowledged {
        /// Attempts made, the acknowledged one included.
        attempts: usize,
    },
    /// The schedule ran out.
    NotAcknowledged {
        /// Attempts made.
        attempts: usize,
    },
    /// The very first attempt got no answer at all: the URL is wrong, down or hangs.
    Unreachable(Failure),
}

impl Outcome {
    /// The last line `send` prints.
    pub fn line(&self) -> String {
        match self {
            Outcome::Acknowledged { attempts } => {
                format!("acknowledged after {attempts} attempt(s)")
            }
            Outcome::NotAcknowledged { attempts } => {
                format!("not acknowledged after {attempts} attempt(s)")
            }
            Outcome::Unreachable(failure) => format!("the endpoint did not answer: {failure}"),
        }
    }
}

/// What to deliver and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Gaps before each retry.
    pub gaps: Vec<Duration>,
    /// Concurrent copies of the first attempt (at least 1).
    pub copies: usize,
    /// Limit for each answer.
    pub timeout: Duration,
}

/// Delivers `notification` through `transport` as WeChat Pay would, reporting every request
/// to `report` as it completes. An attempt counts as acknowledged by the notification's
/// [`Acknowledgement`] rule.
pub async fn deliver<T: Transport, N: Deliverable>(
    transport: &T,
    notification: &N,
    plan: &Plan,
    mut report: impl FnMut(Progress<'_>),
) -> Result<Outcome, SimError> {
    let rule = notification.acknowledgement();
    let copies = plan.copies.max(1);
    let mut attempts = 0;
    let mut gaps = plan.gaps.iter();
    loop {
        attempts += 1;
        let sent = if attempts == 1 && copies > 1 {
            let requests = (1..=copies)
                .map(|copy| {
                    let request = notification.request()?;
                    Ok(async move {
                        Attempt::new(
                            1,
                            Some((copy, copies)),
                            transport.send(request, plan.timeout).await,
                            rule,
                        )
                    })
                })
                .collect::<Result<Vec<_>, SimError>>()?;
            futures_util::future::join_all(requests).await
        } else {
            let request = notification.request()?;
            vec![Attempt::new(
                attempts,
                None,
                transport.send(request, plan.timeout).await,
                rule,
            )]
        };
        for attempt in &sent {
            report(Progress::Attempt(attempt));
        }
        if sent.iter().all(|attempt| attempt.acknowledged) {
            return Ok(Outcome::Acknowledged { attempts });
        }
        if attempts == 1
            && sent.iter().all(|attempt| attempt.result.is_err())
            && let Some(Err(failure)) = sent.into_iter().next().map(|attempt| attempt.result)
        {
            return Ok(Outcome::Unreachable(failure));
        }
        match gaps.next() {
            Some(gap) => {
                report(Progress::Waiting(*gap));
                tokio::time::sleep(*gap).await;
            }
            None => return Ok(Outcome::NotAcknowledged { attempts }),
        }
    }
}

/// A fresh attempt as a `POST` request.
pub fn post(notification: &Notification) -> Result<Request<Bytes>, SimError> {
    let signed = notification.attempt()?;
    let mut request = Request::new(signed.body);
    *request.method_mut() = Method::POST;
    *request.headers_mut() = signed.headers;
    request.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("Mozilla/4.0 (wechatpay-sim)"),
    );
    Ok(request)
}

/// A gap in words: `15 s`, `3 min`, `6 h`, `15 ms`.
pub fn gap_words(gap: Duration) -> String {
    let secs = gap.as_secs();
    if gap < Duration::from_secs(1) {
        format!("{} ms", gap.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}
