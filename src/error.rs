//! Errors: [`ConfigError`] from the builder, [`Rejection`] for requests we refuse.

use std::fmt;

use http::StatusCode;

/// A configuration mistake found while building the layer or adding a key.
///
/// Returned by [`WechatPayLayer::new`](crate::WechatPayLayer::new) and the key-adding
/// methods of [`KeyRing`](crate::KeyRing). Messages name what is wrong, never a key's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The APIv3 key is not 32 bytes once surrounding whitespace (such as the trailing
    /// newline of a file) is trimmed.
    ApiV3KeyLength {
        /// The length that was given.
        len: usize,
    },
    /// The text is not a PEM document that can be read. Line length, CRLF line endings,
    /// base64 on one line and text around the block are all accepted; this is for what is
    /// left, e.g. a missing `-----END` line.
    InvalidPem {
        /// What is wrong, e.g. `the -----END label does not match the -----BEGIN label`.
        reason: &'static str,
    },
    /// The PEM holds something else than was asked for, e.g. a certificate given as a
    /// public key, or a private key.
    UnexpectedPem {
        /// The PEM label that was found, e.g. `CERTIFICATE`.
        found: String,
        /// What this method takes.
        expected: &'static str,
    },
    /// A public key id that does not start with `PUB_KEY_ID_`: WeChat Pay sends the whole
    /// id, prefix included, in `Wechatpay-Serial`.
    PublicKeyIdFormat,
    /// The DER inside the PEM is not an RSA public key.
    InvalidPublicKey,
    /// An RSA key of fewer than 2048 bits. WeChat Pay signs with RSA-2048
    /// (`WECHATPAY2-SHA256-RSA2048`), so a smaller key is not one of its keys, and would
    /// be too weak to trust anyway. Both crypto backends refuse it.
    PublicKeyTooSmall {
        /// The key's modulus size in bits.
        bits: usize,
    },
    /// The certificate could not be parsed as X.509.
    InvalidCertificate,
    /// The platform certificate's validity ended before now: WeChat Pay no longer signs
    /// with it.
    CertificateExpired {
        /// The certificate's serial, upper-case hex.
        serial: String,
        /// Its `notAfter`, as Unix seconds.
        not_after: i64,
    },
    /// The certificate is the merchant's own API certificate (`apiclient_cert.pem`, 商户API证书),
    /// issued to the merchant id, not a WeChat Pay platform certificate. Notifications are
    /// never signed with it.
    MerchantCertificate {
        /// The certificate's serial, upper-case hex.
        serial: String,
        /// The subject's common name (the merchant id, for a merchant API certificate).
        subject: String,
    },
    /// A private key (the test signer's, or the merchant API key) could not be parsed.
    #[cfg(any(feature = "test-util", feature = "client"))]
    InvalidPrivateKey,
    /// The test signer could not build the notification it was asked for.
    #[cfg(feature = "test-util")]
    TestNotification {
        /// What is wrong, e.g. a resource nonce that is not 12 bytes.
        reason: &'static str,
    },
    /// A setting out of its range, or at odds with another setting.
    InvalidSetting {
        /// Which setting, e.g. `"dedupe lease"`.
        setting: &'static str,
        /// What it must be.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiV3KeyLength { len } => write!(
                f,
                "the apiv3 key must be exactly 32 bytes (surrounding whitespace is ignored), \
                 got {len}"
            ),
            Self::InvalidPem { reason } => write!(f, "not a usable pem document: {reason}"),
            Self::UnexpectedPem { found, expected } => {
                write!(f, "expected a pem {expected}, found a {found}")?;
                match found.as_str() {
                    "CERTIFICATE" => f.write_str(" (add certificates with add_certificate)"),
                    "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                        f.write_str(" (add public keys with add_public_key)")
                    }
                    label if label.contains("PRIVATE") => f.write_str(
                        " (never configure a private key here: notifications are verified \
                         with wechat pay's public key or platform certificate)",
                    ),
                    _ => Ok(()),
                }
            }
            Self::PublicKeyIdFormat => f.write_str(
                "a wechat pay public key id starts with PUB_KEY_ID_ (configure the whole id)",
            ),
            Self::InvalidPublicKey => f.write_str("not an rsa public key"),
            Self::PublicKeyTooSmall { bits } => write!(
                f,
                "the rsa key has {bits} bits; wechat pay signs with rsa-2048, so keys under \
                 2048 bits are refused (is this the right file?)"
            ),
            Self::InvalidCertificate => f.write_str("not a valid x.509 certificate"),
            Self::CertificateExpired { serial, not_after } => write!(
                f,
                "platform certificate {serial} expired at {}: download the current platform \
                 certificate, or use wechat pay public key mode",
                crate::key_ring::utc(*not_after)
            ),
            Self::MerchantCertificate { serial, subject } => write!(
                f,
                "certificate {serial} (subject CN={subject}) looks like the merchant's own api \
                 certificate (apiclient_cert.pem), not wechat pay's platform certificate: add \
                 the platform certificate (from GET /v3/certificates) or the wechat pay public \
                 key (PUB_KEY_ID_…) instead"
            ),
            #[cfg(any(feature = "test-util", feature = "client"))]
            Self::InvalidPrivateKey => f.write_str(
                "not an rsa private key (expected apiclient_key.pem: pkcs#8 \
                 `-----BEGIN PRIVATE KEY-----` or pkcs#1 `-----BEGIN RSA PRIVATE KEY-----`)",
            ),
            #[cfg(feature = "test-util")]
            Self::TestNotification { reason } => {
                write!(f, "cannot build the test notification: {reason}")
            }
            Self::InvalidSetting { setting, reason } => write!(f, "{setting}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why the layer refused a request, or why the handler's answer became a failure.
///
/// Every such response carries a [`Rejection`] in its extensions, so trace and metrics
/// layers outside this one can see the reason without parsing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The body is larger than the configured limit (413).
    BodyTooLarge,
    /// The body could not be read, e.g. the client went away (400).
    BodyUnreadable,
    /// The body did not arrive within the body timeout: a slow or stalled client (408).
    BodyTimeout,
    /// A required `Wechatpay-*` header is missing (400).
    MissingHeader,
    /// A `Wechatpay-*` header is present but malformed, e.g. a non-numeric timestamp (400).
    InvalidHeader,
    /// `Wechatpay-Signature-Type` names an algorithm other than `WECHATPAY2-SHA256-RSA2048` (400).
    UnsupportedSignatureType,
    /// `Wechatpay-Timestamp` is outside the tolerance window: stale or replayed (401).
    TimestampOutOfWindow,
    /// No configured key has the `Wechatpay-Serial` (401).
    UnknownSerial,
    /// The platform certificate named by `Wechatpay-Serial` is expired or not yet valid
    /// by the layer's clock (401): WeChat Pay does not sign with it.
    CertificateNotValid,
    /// The signature does not verify (401).
    InvalidSignature,
    /// WeChat Pay's deliberate `WECHATPAY/SIGNTEST/` probe (401), refused like any bad signature.
    SignatureProbe,
    /// Genuine (signature valid) but the envelope could not be parsed (500: ours to fix).
    MalformedEnvelope,
    /// Genuine but `resource.algorithm` is not `AEAD_AES_256_GCM` (500).
    UnsupportedAlgorithm,
    /// Genuine but the resource did not decrypt: usually a wrong APIv3 key (500).
    DecryptionFailed,
    /// Genuine and decrypted, but the resource is not the JSON its model expects (500).
    MalformedResource,
    /// The handler asked for a retry: it answered 4xx or 5xx (e.g. [`Retry`](crate::Retry)).
    HandlerRetry,
    /// The handler answered neither 2xx nor 4xx/5xx (500).
    UnexpectedHandlerStatus,
    /// The inner service returned an error (500).
    ServiceError,
    /// The inner service did not become ready (e.g. a concurrency limit stayed full)
    /// within the answer deadline, or failed to (500).
    ServiceNotReady,
    /// The handler did not answer within what was left of the answer deadline (500).
    HandlerTimeout,
    /// The handler panicked (500); the server keeps serving.
    HandlerPanicked,
    /// The application is wired wrong, e.g. a handler that needs the notification runs
    /// without the layer (500).
    Misconfigured,
    /// Another copy of this notification is being handled right now (500: WeChat Pay
    /// retries, and the retry finds it done).
    InProgress,
    /// The dedupe store could not answer (500: nothing is lost).
    DedupeUnavailable,
}

impl RejectionKind {
    /// The kind in snake case, e.g. `invalid_signature`: a bounded label value for
    /// metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BodyTooLarge => "body_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::BodyTimeout => "body_timeout",
            Self::MissingHeader => "missing_header",
            Self::InvalidHeader => "invalid_header",
            Self::UnsupportedSignatureType => "unsupported_signature_type",
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::UnknownSerial => "unknown_serial",
            Self::CertificateNotValid => "certificate_not_valid",
            Self::InvalidSignature => "invalid_signature",
            Self::SignatureProbe => "signature_probe",
            Self::MalformedEnvelope => "malformed_envelope",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::DecryptionFailed => "decryption_failed",
            Self::MalformedResource => "malformed_resource",
            Self::HandlerRetry => "handler_retry",
            Self::UnexpectedHandlerStatus => "unexpected_handler_status",
            Self::ServiceError => "service_error",
            Self::ServiceNotReady => "service_not_ready",
            Self::HandlerTimeout => "handler_timeout",
            Self::HandlerPanicked => "handler_panicked",
            Self::Misconfigured => "misconfigured",
            Self::InProgress => "in_progress",
            Self::DedupeUnavailable => "dedupe_unavailable",
        }
    }

    /// The HTTP status this kind is answered with (handler failures keep the handler's
    /// own 4xx/5xx; this returns 500 for them).
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable
            | Self::MissingHeader
            | Self::InvalidHeader
            | Self::UnsupportedSignatureType => StatusCode::BAD_REQUEST,
            Self::TimestampOutOfWindow
            | Self::UnknownSerial
            | Self::CertificateNotValid
            | Self::InvalidSignature
            | Self::SignatureProbe => StatusCode::UNAUTHORIZED,
            Self::MalformedEnvelope
            | Self::UnsupportedAlgorithm
            | Self::DecryptionFailed
            | Self::MalformedResource
            | Self::HandlerRetry
            | Self::UnexpectedHandlerStatus
            | Self::ServiceError
            | Self::ServiceNotReady
            | Self::HandlerTimeout
            | Self::HandlerPanicked
            | Self::Misconfigured
            | Self::InProgress
            | Self::DedupeUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the request was proven to come from WeChat Pay (the signature verified).
    pub fn is_genuine(self) -> bool {
        matches!(
            self,
            Self::MalformedEnvelope
                | Self::UnsupportedAlgorithm
                | Self::DecryptionFailed
                | Self::MalformedResource
                | Self::HandlerRetry
                | Self::UnexpectedHandlerStatus
                | Self::ServiceError
                | Self::ServiceNotReady
                | Self::HandlerTimeout
                | Self::HandlerPanicked
                | Self::InProgress
                | Self::DedupeUnavailable
        )
    }
}

/// A refused request: what went wrong, with a short message safe to send and to log.
///
/// Found in the extensions of every failure response the layer produces; see
/// [the crate docs](crate) for the table of answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    status: StatusCode,
    message: &'static str,
}

impl Rejection {
    pub(crate) const fn new(kind: RejectionKind, message: &'static str) -> Self {
        Self {
            kind,
            status: kind.status(),
            message,
        }
    }

    /// A handler's retry, answered with the handler's own 4xx/5xx status.
    pub(crate) fn handler_retry(status: StatusCode) -> Self {
        Self {
            kind: RejectionKind::HandlerRetry,
            status,
            message: "handler failed",
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The status the response carries.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The short message sent in the FAIL body. It never contains request data or secrets.
    pub fn message(&self) -> &'static str {
        self.message
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Rejection {}
