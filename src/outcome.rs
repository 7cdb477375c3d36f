//! What a handler answers: [`Handled`] (acknowledge) or [`Retry`] (WeChat Pay resends).
//!
//! The rule from the field, in the types: a *business* failure (unknown order, already paid,
//! amount mismatch) is still acknowledged, so say it with [`Handled::declined`]; a *system*
//! failure (database down, timeout, a bug) must make WeChat Pay retry, and any error that
//! `?` propagates becomes a [`Retry`]. There is no `From` that turns an error into an
//! acknowledgement, so `?` can never acknowledge by accident.
//!
//! ```
//! use tower_wechatpay::{Declined, Handled, Retry};
//! use tower_wechatpay::models::Transaction;
//!
//! # struct Db;
//! # impl Db { async fn mark_paid(&self, _: &str) -> Result<bool, std::io::Error> { Ok(true) } }
//! async fn on_payment(db: &Db, payment: &Transaction) -> Result<Handled, Retry> {
//!     if let Err(rejection) = payment.check_success() {
//!         return Ok(Handled::declined(rejection)); // acknowledged, logged at warn
//!     }
//!     let known = db.mark_paid(&payment.out_trade_no).await?; // an error here: retry
//!     if !known {
//!         return Ok(Handled::declined("unknown order"));
//!     }
//!     Ok(Handled::Done)
//! }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{Response, StatusCode};
use tower::BoxError;

use crate::body::BufferedBody;

/// The handler processed the notification: WeChat Pay gets an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// Applied (or already applied: a duplicate is also done).
    Done,
    /// Not applied for a business reason that no retry can change (unknown order, amount
    /// mismatch, wrong merchant…). Acknowledged so WeChat Pay stops resending; logged at
    /// warn with the reason. Investigate these: they may be fraud or a bug.
    Declined(Declined),
}

impl Handled {
    /// Declined for this business reason: acknowledged, not applied, logged at warn.
    pub fn declined(reason: impl Into<Declined>) -> Self {
        Self::Declined(reason.into())
    }

    /// The response the layer turns into an acknowledgement (200, empty). A decline
    /// travels in the response extensions, for the layer's log. (Named so it never shadows
    /// axum's `IntoResponse::into_response`.)
    pub fn into_http_response(self) -> Response<BufferedBody> {
        let mut response = Response::new(BufferedBody::empty());
        if let Self::Declined(declined) = self {
            response.extensions_mut().insert(declined);
        }
        response
    }
}

/// Why a notification was acknowledged without being applied: a business decision (an
/// acknowledged decline), never a failure answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    reason: Cow<'static, str>,
}

impl Declined {
    /// A decline with this reason (keep payer data out of it: it is logged).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<&'static str> for Declined {
    fn from(reason: &'static str) -> Self {
        Self::new(reason)
    }
}

impl From<String> for Declined {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}

/// A system failure: WeChat Pay must resend the notification later (500 with a FAIL body).
///
/// Any error converts into it with `?`: every `std::error::Error + Send + Sync`, a boxed
/// `Box<dyn Error + Send + Sync>`, an `anyhow::Error`, even a `String`. The error is logged
/// by the layer at error level, with the notification's id, and never sent to WeChat Pay.
#[derive(Clone)]
pub struct Retry {
    error: Arc<BoxError>,
}

impl Retry {
    /// A retry caused by `error`.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self {
            error: Arc::new(error.into()),
        }
    }

    /// The cause.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref().as_ref()
    }

    /// The response the layer turns into a retry (500, FAIL body), with this `Retry` in the
    /// extensions for the layer's log.
    pub fn into_http_response(self) -> Response<BufferedBody> {
        let mut response = Response::new(BufferedBody::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response.extensions_mut().insert(self);
        response
    }
}

// `Retry` is deliberately neither an `Error` nor convertible into a `BoxError`: that keeps
// this blanket `From` coherent, so `?` works on everything that boxes into an error
// (`anyhow::Error` and `Box<dyn Error + Send + Sync>` included).
impl<E> From<E> for Retry
where
    E: Into<BoxError>,
{
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Retry").field(&self.error).finish()
    }
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        let mut source = self.error.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Turns a handler's result into the response the layer expects (for `tower::service_fn`
/// handlers; axum handlers can return `Result<Handled, Retry>` directly with the `axum`
/// feature).
pub fn into_http_response(result: Result<Handled, Retry>) -> Response<BufferedBody> {
    match result {
        Ok(handled) => handled.into_http_response(),
        Err(retry) => retry.into_http_response(),
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum_core::response::{IntoResponse, Response};

    use super::{Handled, Retry};

    impl IntoResponse for Handled {
        fn into_response(self) -> Response {
            self.into_http_response().map(axum_core::body::Body::new)
        }
    }

    impl IntoResponse for Retry {
        fn into_response(self) -> Response {
            self.into_http_response().map(axum_core::body::Body::new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_on_an_error_is_a_retry() {
        fn handler() -> Result<Handled, Retry> {
            let _: u32 = "not a number".parse::<u32>()?;
            Ok(Handled::Done)
        }
        let response = into_http_response(handler());
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let retry = response.extensions().get::<Retry>().unwrap();
        assert!(retry.to_string().contains("invalid digit"));
    }

    #[test]
    fn a_decline_is_an_acknowledgement_with_a_reason() {
        let response = into_http_response(Ok(Handled::declined("amount mismatch")));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.extensions().get::<Declined>().map(|r| r.reason()),
            Some("amount mismatch")
        );
    }

    #[test]
    fn done_is_a_plain_acknowledgement() {
        let response = into_http_response(Ok(Handled::Done));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.extensions().get::<Declined>().is_none());
    }

    #[test]
    fn question_mark_on_boxed_anyhow_and_string_errors_is_a_retry() {
        fn boxed() -> Result<Handled, Retry> {
            let result: Result<(), Box<dyn std::error::Error + Send + Sync>> =
                Err("database unreachable".into());
            result?;
            Ok(Handled::Done)
        }
        fn text() -> Result<Handled, Retry> {
            Err(String::from("queue full"))?;
            Ok(Handled::Done)
        }
        fn with_anyhow() -> Result<Handled, Retry> {
            let result: anyhow::Result<()> = Err(anyhow::anyhow!("redis timed out"));
            result?;
            Ok(Handled::Done)
        }
        let retry = boxed().unwrap_err();
        assert_eq!(retry.to_string(), "database unreachable");
        assert_eq!(with_anyhow().unwrap_err().to_string(), "redis timed out");
        assert_eq!(text().unwrap_err().to_string(), "queue full");
    }

    #[test]
    fn retry_display_includes_the_cause_chain() {
        let inner = std::io::Error::other("disk full");
        let outer = std::io::Error::other(Wrapper(inner));
        let retry = Retry::from(outer);
        assert!(retry.to_string().contains("disk full"));
    }

    #[test]
    fn retry_debug_shows_the_cause() {
        let retry = Retry::new("queue full");
        assert_eq!(format!("{retry:?}"), r#"Retry("queue full")"#);
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("write failed")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
