//! `wechatpay-sim diagnose`: says why a captured notification does (or does not) verify,
//! one line per step, with the likely cause and what to do about it.
//!
//! The verdict is the library's own: the signature, key and decryption steps ask
//! [`WechatPayLayer::verify`] and map its [`RejectionKind`] to a cause. What the library does
//! not say is worked out here: how far off the timestamp is, which keys the receiver holds,
//! and whether a re-serialised body would have verified.

pub mod capture;
pub mod normalise;
pub mod redact;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use serde_json::Value;
use tower_wechatpay::{ConfigError, Event, Notification, RejectionKind, WechatPayLayer};

use crate::cli::DiagnoseArgs;
use crate::error::{SimError, context};
use crate::notify::unix_now;
use capture::{Capture, Format};

const TIMESTAMP: &str = "wechatpay-timestamp";
const NONCE: &str = "wechatpay-nonce";
const SIGNATURE: &str = "wechatpay-signature";
const SERIAL: &str = "wechatpay-serial";
const SIGNATURE_TYPE: &str = "wechatpay-signature-type";
const RSA: &str = "WECHATPAY2-SHA256-RSA2048";
const PROBE_PREFIX: &[u8] = b"WECHATPAY/SIGNTEST/";
const PUBLIC_KEY_PREFIX: &str = "PUB_KEY_ID_";

/// The receiver's side: its APIv3 key and the verification keys it holds.
pub struct Receiver {
    layer: WechatPayLayer,
    public_key_ids: Vec<String>,
    certificate_serials: Vec<String>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("public_key_ids", &self.public_key_ids)
            .field("certificate_serials", &self.certificate_serials)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver with this APIv3 key (surrounding whitespace trimmed) and no keys yet.
    ///
    /// # Errors
    /// If the key is not 32 bytes.
    pub fn new(api_v3_key: impl AsRef<[u8]>) -> Result<Self, SimError> {
        let layer = WechatPayLayer::new(api_v3_key)
            .map_err(|error| SimError(error.to_string()))?
            // A capture is judged whatever its size; real notifications are 1–2 KiB.
            .max_body_size(usize::MAX);
        Ok(Self {
            layer,
            public_key_ids: Vec::new(),
            certificate_serials: Vec::new(),
        })
    }

    /// Adds a WeChat Pay public key under its id.
    ///
    /// # Errors
    /// The library's reason: a bad id, a PEM that is not an RSA public key.
    pub fn add_public_key(&mut self, id: &str, pem: impl AsRef<[u8]>) -> Result<(), SimError> {
        self.layer
            .keys()
            .add_public_key(id, pem)
            .map_err(|error| match error {
                ConfigError::UnexpectedPem { found, .. } if found == "CERTIFICATE" => {
                    SimError::new("a certificate, not a public key: pass it with --certificate")
                }
                error => SimError(error.to_string()),
            })?;
        self.public_key_ids.push(id.trim().to_owned());
        Ok(())
    }

    /// Adds the platform certificates in a PEM file.
    ///
    /// # Errors
    /// The library's reason: not a certificate, expired, the merchant's own certificate.
    pub fn add_certificates(&mut self, pem: impl AsRef<[u8]>) -> Result<(), SimError> {
        let serials = self
            .layer
            .keys()
            .add_certificates(pem)
            .map_err(|error| match error {
                ConfigError::UnexpectedPem { found, .. } if found.contains("PUBLIC KEY") => {
                    SimError::new(
                        "a public key, not a certificate: pass it with --public-key \
                         PUB_KEY_ID_…=FILE.pem",
                    )
                }
                error => SimError(error.to_string()),
            })?;
        self.certificate_serials.extend(serials);
        Ok(())
    }

    /// The receiver the flags describe; errors name the flag and file.
    ///
    /// # Errors
    /// An unreadable file, an APIv3 key that is not 32 characters, a bad PEM.
    pub fn load(args: &DiagnoseArgs) -> Result<Self, SimError> {
        let flag = format!("--apiv3-key-file {}", args.apiv3_key_file.display());
        let key = std::fs::read(&args.apiv3_key_file).map_err(context(&flag))?;
        let mut receiver = Self::new(key).map_err(context(&flag))?;
        for (id, path) in &args.public_keys {
            let flag = format!("--public-key {id}={}", path.display());
            let pem = std::fs::read(path).map_err(context(&flag))?;
            receiver.add_public_key(id, pem).map_err(context(&flag))?;
        }
        for path in &args.certificates {
            let flag = format!("--certificate {}", path.display());
            let pem = std::fs::read(path).map_err(context(&flag))?;
            receiver.add_certificates(pem).map_err(context(&flag))?;
        }
        Ok(receiver)
    }

    /// What the receiver holds, for a sentence.
    fn holdings(&self) -> String {
        let mut held = Vec::new();
        if !self.public_key_ids.is_empty() {
            held.push(format!("public key {}", self.public_key_ids.join(", ")));
        }
        if !self.certificate_serials.is_empty() {
            held.push(format!(
                "platform certificate {}",
                self.certificate_serials.join(", ")
            ));
        }
        if held.is_empty() {
            "no keys".to_owned()
        } else {
            held.join("; ")
        }
    }
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Ok,
    /// Failed: the line says the likely cause and what to do.
    Fail,
    /// Not judged (`--ignore-time`).
    Skip,
    /// A remark that changes no verdict.
    Note,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
            Self::Note => "note",
        }
    }
}

/// One line of the diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How it went.
    pub status: Status,
    /// The step, e.g. `timestamp`.
    pub name: &'static str,
    /// What was found and, on failure, the likely cause and what to do.
    pub text: String,
}

/// A diagnosis: the steps in order, the verdict, and the resource when it verifies.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// One per step reached (and notes).
    pub steps: Vec<Step>,
    /// Whether a receiver holding these keys accepts the capture.
    pub verified: bool,
    /// The decrypted resource with payer identifiers redacted (only when it verifies).
    pub resource: Option<Value>,
    /// Judged at the capture's own time (`--ignore-time`), not now.
    pub at_capture_time: bool,
}

impl Diagnosis {
    fn push(&mut self, status: Status, name: &'static str, text: impl Into<String>) {
        self.steps.push(Step {
            status,
            name,
            text: text.into(),
        });
    }

    fn ok(&mut self, name: &'static str, text: impl Into<String>) {
        self.push(Status::Ok, name, text);
    }

    fn fail(&mut self, name: &'static str, text: impl Into<String>) {
        self.push(Status::Fail, name, text);
    }

    /// The steps that failed, in order.
    pub fn failures(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|step| step.status == Status::Fail)
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{:<6}{}: {}", step.status.label(), step.name, step.text)?;
        }
        writeln!(f)?;
        if self.verified {
            let when = if self.at_capture_time {
                " at the time it was signed (--ignore-time)"
            } else {
                ""
            };
            writeln!(
                f,
                "verdict: verifies: a receiver holding these keys accepts this notification{when}"
            )?;
            if let Some(resource) = &self.resource {
                writeln!(f)?;
                writeln!(f, "resource (payer identifiers redacted):")?;
                let pretty = serde_json::to_string_pretty(resource).map_err(|_| fmt::Error)?;
                writeln!(f, "{pretty}")?;
            }
            return Ok(());
        }
        let failed: Vec<&str> = self.failures().map(|step| step.name).collect();
        let only_time = failed == ["timestamp"];
        match failed.as_slice() {
            [] => writeln!(f, "verdict: does not verify"),
            [one] => write!(f, "verdict: does not verify: the {one} step fails"),
            many => write!(
                f,
                "verdict: does not verify: the {} steps fail",
                many.join(", ")
            ),
        }?;
        if only_time {
            write!(
                f,
                " (every other step passes at the capture's own time: with --ignore-time it \
                 verifies)"
            )?;
        }
        writeln!(f)
    }
}

/// Runs `diagnose`: `Ok(true)` when the capture verifies and decrypts, `Ok(false)` when a
/// step fails (the diagnosis is printed either way), an error for bad input.
///
/// # Errors
/// An unreadable capture or key file, a capture that is neither raw HTTP nor the JSON
/// shape, an APIv3 key that is not 32 characters, a bad PEM.
pub fn run(args: &DiagnoseArgs) -> Result<bool, SimError> {
    let flag = format!("--capture {}", args.capture.display());
    let bytes = std::fs::read(&args.capture).map_err(context(&flag))?;
    let capture = capture::parse(&bytes).map_err(context(&flag))?;
    let receiver = Receiver::load(args)?;
    let diagnosis = diagnose(&capture, &receiver, unix_now(), args.ignore_time);
    println!(
        "capture: {} ({}, {}-byte body)",
        args.capture.display(),
        match capture.format {
            Format::RawHttp => "raw HTTP",
            Format::Json => "JSON",
        },
        capture.body.len()
    );
    print!("{diagnosis}");
    Ok(diagnosis.verified)
}

/// Diagnoses `capture` as `receiver` would receive it at `now` (Unix seconds); with
/// `ignore_time`, at the capture's own timestamp instead.
pub fn diagnose(capture: &Capture, receiver: &Receiver, now: i64, ignore_time: bool) -> Diagnosis {
    let mut diagnosis = Diagnosis {
        at_capture_time: ignore_time,
        ..Diagnosis::default()
    };
    for note in &capture.notes {
        diagnosis.push(Status::Note, "capture", note.clone());
    }
    let headers = &capture.headers;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.trim().parse::<usize>().ok());
    if capture.format == Format::Json
        && let Some(declared) = declared
        && declared != capture.body.len()
    {
        diagnosis.push(
            Status::Note,
            "capture",
            format!(
                "Content-Length says {declared} bytes but the body holds {}: the body was \
                 changed after it arrived (re-serialised?), or it is not the body received",
                capture.body.len()
            ),
        );
    }
    if !headers_present(&mut diagnosis, headers, &capture.body)
        || !signature_type(&mut diagnosis, headers)
    {
        return diagnosis;
    }
    let Some(signed_at) = timestamp(&mut diagnosis, headers, now, ignore_time) else {
        return diagnosis;
    };
    if probe(&mut diagnosis, headers) {
        return diagnosis;
    }
    let Some(serial) = serial(&mut diagnosis, headers, receiver) else {
        return diagnosis;
    };
    if !signature_encoding(&mut diagnosis, headers) {
        return diagnosis;
    }
    // Every later step is judged at the signing time: the timestamp has had its say.
    let judge = receiver.layer.clone().clock(move || signed_at);
    let mut verify_headers = headers.clone();
    verify_headers.remove(CONTENT_LENGTH);
    verify_headers.remove(TRANSFER_ENCODING);
    let Some((judged, body)) = signature(
        &mut diagnosis,
        &judge,
        &verify_headers,
        capture,
        &serial,
        signed_at,
    ) else {
        return diagnosis;
    };
    let Some(notification) = open(&mut diagnosis, judged, &body) else {
        return diagnosis;
    };
    if diagnosis.failures().next().is_some() {
        return diagnosis;
    }
    if !ignore_time {
        // What a receiver would answer now (a certificate may have expired since).
        let live = receiver.layer.clone().clock(move || now);
        if let Err(rejection) = live.verify(&verify_headers, &body) {
            diagnosis.fail(
                "receiver",
                format!(
                    "refused now ({:?}: {}) although every step passes at the signing time",
                    rejection.kind(),
                    rejection.message()
                ),
            );
            return diagnosis;
        }
    }
    let mut resource = notification.resource_value().ok();
    if let Some(resource) = resource.as_mut() {
        redact::redact(resource);
    }
    diagnosis.resource = resource;
    diagnosis.verified = true;
    diagnosis
}

fn headers_present(diagnosis: &mut Diagnosis, headers: &HeaderMap, body: &[u8]) -> bool {
    let required = [
        (TIMESTAMP, "Wechatpay-Timestamp"),
        (NONCE, "Wechatpay-Nonce"),
        (SIGNATURE, "Wechatpay-Signature"),
        (SERIAL, "Wechatpay-Serial"),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(name, _)| !headers.contains_key(*name))
        .map(|(_, shown)| *shown)
        .collect();
    if missing.is_empty() {
        diagnosis.ok(
            "headers",
            "Wechatpay-Timestamp, -Nonce, -Signature, -Serial present",
        );
        return true;
    }
    let text = if missing.len() == required.len() && body.trim_ascii_start().starts_with(b"<xml") {
        "no Wechatpay-* headers and an XML body — an APIv2 notification (refunds started by \
         hand in the merchant platform are still sent in v2 XML): tower-wechatpay verifies \
         APIv3 only; receive v2 on a separate endpoint"
            .to_owned()
    } else if missing.len() == required.len() {
        "no Wechatpay-* headers — not a WeChat Pay APIv3 notification, or the headers were left \
         out: capture the whole request as received (a proxy or gateway must forward every \
         Wechatpay-* header)"
            .to_owned()
    } else {
        format!(
            "{} missing — WeChat Pay sends all four: a proxy or gateway dropped it, or the \
             capture left it out (forward and capture every Wechatpay-* header)",
            missing.join(", ")
        )
    };
    diagnosis.fail("headers", text);
    false
}

fn signature_type(diagnosis: &mut Diagnosis, headers: &HeaderMap) -> bool {
    match headers.get(SIGNATURE_TYPE) {
        None => diagnosis.ok(
            "signature type",
            format!("Wechatpay-Signature-Type absent: {RSA} assumed"),
        ),
        Some(value) if value.is_empty() => diagnosis.ok(
            "signature type",
            format!("Wechatpay-Signature-Type empty: {RSA} assumed"),
        ),
        Some(value) if value.as_bytes() == RSA.as_bytes() => {
            diagnosis.ok("signature type", RSA);
        }
        Some(value) => {
            let shown = shown(value.as_bytes());
            let cause = if shown.contains("SM2") {
                "the national (国密) algorithm, which tower-wechatpay does not verify: use RSA \
                 keys (the merchant platform's default)"
            } else {
                "the header was altered on the way: forward it unchanged"
            };
            diagnosis.fail("signature type", format!("`{shown}`, not {RSA} — {cause}"));
            return false;
        }
    }
    true
}

/// The timestamp step; `None` when it cannot be read (nothing later can be judged).
fn timestamp(
    diagnosis: &mut Diagnosis,
    headers: &HeaderMap,
    now: i64,
    ignore_time: bool,
) -> Option<i64> {
    let raw = headers.get(TIMESTAMP)?.as_bytes();
    let Some(signed_at) = parse_unix_seconds(raw) else {
        diagnosis.fail(
            "timestamp",
            format!(
                "`{}` is not Unix seconds (e.g. 1718466819) — the header was altered on the \
                 way: forward it unchanged",
                shown(raw)
            ),
        );
        return None;
    };
    let window = WechatPayLayer::DEFAULT_TIMESTAMP_TOLERANCE.as_secs();
    let offset = now.saturating_sub(signed_at);
    let when = match offset {
        0 => "signed this second".to_owned(),
        past if past > 0 => format!("{past} s in the past"),
        future => format!("{} s in the future", future.unsigned_abs()),
    };
    let at = utc(signed_at);
    if ignore_time {
        diagnosis.push(
            Status::Skip,
            "timestamp",
            format!(
                "{when} (signed {at}); not judged (--ignore-time): the later steps are judged at the \
                 capture's own time"
            ),
        );
    } else if offset.unsigned_abs() <= window {
        diagnosis.ok("timestamp", format!("{when} (the window is ±{window} s)"));
    } else if offset > 0 {
        diagnosis.fail(
            "timestamp",
            format!(
                "{when} (the window is ±{window} s) — clock skew, or a capture replayed later: \
                 use --ignore-time"
            ),
        );
    } else {
        diagnosis.fail(
            "timestamp",
            format!(
                "{when} (the window is ±{window} s) — clock skew: this machine's clock is \
                 behind the sender's (check NTP), or use --ignore-time"
            ),
        );
    }
    Some(signed_at)
}

/// Whether the capture is a signature probe (then nothing later is judged).
fn probe(diagnosis: &mut Diagnosis, headers: &HeaderMap) -> bool {
    let is_probe = headers
        .get(SIGNATURE)
        .is_some_and(|signature| signature.as_bytes().starts_with(PROBE_PREFIX));
    if is_probe {
        diagnosis.fail(
            "probe",
            "Wechatpay-Signature starts with WECHATPAY/SIGNTEST/ — a WeChat Pay signature \
             probe: a receiver must refuse it (answer 4XX/5XX; WeChat Pay then resends the \
             notification correctly signed)",
        );
    } else {
        diagnosis.ok("probe", "not a signature probe");
    }
    is_probe
}

/// The serial step: the serial, when the receiver holds its key.
fn serial(diagnosis: &mut Diagnosis, headers: &HeaderMap, receiver: &Receiver) -> Option<String> {
    let raw = headers.get(SERIAL)?;
    let Ok(serial) = raw.to_str() else {
        diagnosis.fail(
            "serial",
            "Wechatpay-Serial is not ASCII — the header was altered on the way: forward it \
             unchanged",
        );
        return None;
    };
    let is_public_key = serial.starts_with(PUBLIC_KEY_PREFIX);
    if receiver.layer.keys().contains(serial) {
        let which = if is_public_key {
            "the WeChat Pay public key you hold"
        } else {
            "the platform certificate you hold"
        };
        diagnosis.ok("serial", format!("{serial}: {which}"));
        return Some(serial.to_owned());
    }
    let holds_public_keys = !receiver.public_key_ids.is_empty();
    let holds_certificates = !receiver.certificate_serials.is_empty();
    let fix = match (is_public_key, holds_public_keys, holds_certificates) {
        (_, false, false) => {
            "pass the receiver's keys: --public-key PUB_KEY_ID_…=FILE.pem and/or --certificate \
             FILE.pem"
        }
        (true, false, true) => {
            "it is signed with the WeChat Pay public key (public key mode) and you hold only \
             platform certificates: add that public key (merchant platform: API安全 → 微信支付公钥) \
             under this id, to the receiver and here with --public-key"
        }
        (true, true, _) => {
            "no public key you hold has this id: check the id, prefix included (it must match \
             Wechatpay-Serial exactly), and add the matching public key"
        }
        (false, true, false) => {
            "it is signed with a platform certificate (certificate mode) and you hold only \
             WeChat Pay public keys: add the platform certificate with this serial (GET \
             /v3/certificates), to the receiver and here with --certificate"
        }
        (false, _, true) => {
            "the platform certificate was rotated, or the keys are another merchant's: download \
             the current certificates (GET /v3/certificates) and add the one with this serial"
        }
    };
    diagnosis.fail(
        "serial",
        format!(
            "{} is not a key you hold (you hold {}) — {fix}",
            shown(serial.as_bytes()),
            receiver.holdings()
        ),
    );
    None
}

/// Whether `Wechatpay-Signature` is base64 (the signature itself is never shown).
fn signature_encoding(diagnosis: &mut Diagnosis, headers: &HeaderMap) -> bool {
    let Some(signature) = headers.get(SIGNATURE) else {
        return false;
    };
    if STANDARD.decode(signature.as_bytes()).is_ok() {
        return true;
    }
    diagnosis.fail(
        "signature",
        format!(
            "Wechatpay-Signature is not base64 ({} characters; WeChat Pay's are 344, ending in \
             ==) — the header was altered or cut on the way: forward it unchanged",
            signature.len()
        ),
    );
    false
}

/// What the library made of a body.
enum Judged {
    /// Verified and decrypted.
    Verified(Notification),
    /// The signature verified; a later step failed.
    Genuine(RejectionKind),
    /// Refused before or at the signature.
    Refused(RejectionKind),
}

impl Judged {
    /// Whether the signature verified (whatever came after).
    fn signature_verified(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

fn judge(layer: &WechatPayLayer, headers: &HeaderMap, body: &[u8]) -> Judged {
    match layer.verify(headers, body) {
        Ok(notification) => Judged::Verified(notification),
        Err(rejection) if rejection.kind().is_genuine() => Judged::Genuine(rejection.kind()),
        Err(rejection) => Judged::Refused(rejection.kind()),
    }
}

/// The signature step: what the library made of the body that verified (the exact bytes,
/// or a re-serialisation of them), or `None` when none did.
fn signature(
    diagnosis: &mut Diagnosis,
    layer: &WechatPayLayer,
    headers: &HeaderMap,
    capture: &Capture,
    serial: &str,
    signed_at: i64,
) -> Option<(Judged, Vec<u8>)> {
    let body = &capture.body;
    let kind = match judge(layer, headers, body) {
        Judged::Refused(kind) => kind,
        judged => {
            diagnosis.ok(
                "signature",
                format!("verifies over the exact {} body bytes", body.len()),
            );
            return Some((judged, body.clone()));
        }
    };
    match kind {
        RejectionKind::InvalidSignature => {}
        RejectionKind::CertificateNotValid => {
            diagnosis.fail(
                "certificate",
                format!(
                    "platform certificate {serial} was not valid when the notification was \
                     signed ({}) — expired or not yet valid: download the current platform \
                     certificate (GET /v3/certificates) or move to the WeChat Pay public key; \
                     if it should be valid, check the clocks",
                    utc(signed_at)
                ),
            );
            return None;
        }
        kind => {
            diagnosis.fail("signature", format!("refused by the library ({kind:?})"));
            return None;
        }
    }
    if capture.final_newline_unsure {
        let trimmed = body
            .strip_suffix(b"\r\n")
            .or_else(|| body.strip_suffix(b"\n"))
            .unwrap_or(body);
        let judged = judge(layer, headers, trimmed);
        if judged.signature_verified() {
            diagnosis.ok(
                "signature",
                format!(
                    "verifies over the {} body bytes without the file's final newline (the \
                     capture has no Content-Length: that newline was taken to be the file's, \
                     not the request's)",
                    trimmed.len()
                ),
            );
            return Some((judged, trimmed.to_vec()));
        }
    }
    for candidate in normalise::candidates(body) {
        let judged = judge(layer, headers, &candidate.body);
        if judged.signature_verified() {
            diagnosis.fail(
                "signature",
                format!(
                    "does not verify over the {} body bytes received, but verifies over {} \
                     ({} bytes) — the body was re-serialised by a proxy or framework: verify \
                     the raw bytes received, before any JSON parsing or body middleware",
                    body.len(),
                    candidate.label,
                    candidate.body.len()
                ),
            );
            return Some((judged, candidate.body));
        }
    }
    diagnosis.fail(
        "signature",
        format!(
            "does not verify over the {} body bytes received, nor over any re-serialisation \
             of them — the signature does not match: signed by another key, or the body was \
             changed (check that the key you hold as {serial} is the one in the merchant \
             platform)",
            body.len()
        ),
    );
    None
}

/// The envelope, decryption and resource steps: the notification when all pass.
fn open(diagnosis: &mut Diagnosis, judged: Judged, body: &[u8]) -> Option<Notification> {
    let envelope: Option<Value> = serde_json::from_slice(body).ok();
    let field = |path: &[&str]| -> String {
        let mut value = envelope.as_ref();
        for name in path {
            value = value.and_then(|value| value.get(*name));
        }
        value
            .and_then(Value::as_str)
            .map_or_else(|| "(none)".to_owned(), |text| shown(text.as_bytes()))
    };
    let envelope_line = format!(
        "{}, id {}, created {}",
        field(&["event_type"]),
        field(&["id"]),
        field(&["create_time"])
    );
    let kind = match judged {
        Judged::Verified(notification) => {
            diagnosis.ok("envelope", envelope_line);
            diagnosis.ok("decryption", DECRYPTED);
            let original_type = notification.original_type().unwrap_or("(none)");
            diagnosis.ok(
                "resource",
                format!("JSON, original_type {}", shown(original_type.as_bytes())),
            );
            if let Event::Unparsed(error) = notification.event() {
                diagnosis.push(
                    Status::Note,
                    "resource",
                    format!(
                        "{error}: handlers that take the typed model answer 500 so WeChat Pay \
                         retries (schema drift?)"
                    ),
                );
            }
            return Some(notification);
        }
        Judged::Genuine(kind) => kind,
        Judged::Refused(_) => return None,
    };
    if kind == RejectionKind::MalformedEnvelope {
        diagnosis.fail(
            "envelope",
            "signed, but not a notification envelope (id, resource{algorithm, ciphertext, \
             nonce}) — a format tower-wechatpay does not read: report it with this capture",
        );
        return None;
    }
    diagnosis.ok("envelope", envelope_line);
    match kind {
        RejectionKind::UnsupportedAlgorithm => diagnosis.fail(
            "decryption",
            format!(
                "resource.algorithm is `{}`, not AEAD_AES_256_GCM — a format tower-wechatpay \
                 does not decrypt",
                field(&["resource", "algorithm"])
            ),
        ),
        RejectionKind::DecryptionFailed => {
            diagnosis.fail("decryption", decryption_failure(envelope.as_ref()));
        }
        RejectionKind::MalformedResource => {
            diagnosis.ok("decryption", DECRYPTED);
            diagnosis.fail(
                "resource",
                "decrypted, but not UTF-8 JSON — a format tower-wechatpay does not read: \
                 report it with this capture",
            );
        }
        kind => diagnosis.fail("decryption", format!("refused by the library ({kind:?})")),
    }
    None
}

const DECRYPTED: &str = "AEAD_AES_256_GCM with your APIv3 key";

fn decryption_failure(envelope: Option<&Value>) -> String {
    let resource = envelope.and_then(|envelope| envelope.get("resource"));
    let text = |name: &str| resource.and_then(|r| r.get(name)).and_then(Value::as_str);
    let nonce_len = text("nonce").map_or(0, str::len);
    if nonce_len != 12 {
        return format!(
            "resource.nonce is {nonce_len} bytes, not 12 — the resource is malformed: a \
             format tower-wechatpay does not decrypt"
        );
    }
    let ciphertext_ok = text("ciphertext")
        .and_then(|ciphertext| STANDARD.decode(ciphertext).ok())
        .is_some_and(|bytes| bytes.len() >= 16);
    if !ciphertext_ok {
        return "resource.ciphertext is not base64 of at least the 16-byte tag — the resource \
                is malformed: a format tower-wechatpay does not decrypt"
            .to_owned();
    }
    "the resource does not decrypt with your APIv3 key — wrong APIv3 key: use the 32-character \
     key set in the merchant platform (账户中心 → API安全 → APIv3密钥); if it was reset, every \
     receiver needs the new one"
        .to_owned()
}

/// Unix seconds, as the library reads them: ASCII digits, an optional leading `-`.
fn parse_unix_seconds(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `2026-05-01 10:00:00 UTC`.
fn utc(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        Err(_) => format!("Unix time {unix}"),
    }
}

/// Header text for a sentence: lossy UTF-8, at most 80 characters, no control characters.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}
