//! The fuzz targets' bodies, shared with the regression tests that replay the committed
//! seeds and crash reproducers (`tests/fuzz_corpus.rs`). Not a stable API.
//!
//! Every function takes arbitrary bytes and panics only when an invariant breaks: that is
//! the finding. Request data itself must never make the crate panic.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use serde_json::json;
use tower::Service;

use crate::backend::ResourceCipher;
use crate::body::BufferedBody;
use crate::decrypt::{decrypt_resource, parse_envelope};
use crate::error::ConfigError;
use crate::key_ring::KeyRing;
use crate::layer::WechatPayLayer;
use crate::models::EventKind;
use crate::notification::Notification;
use crate::test_util::{TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner};

/// The keys a fuzz target runs with: the shared vectors' keys and clock, so the vectors are
/// good seeds, plus the test signer's public key, so a case can ask for its body to be
/// signed and reach everything after the signature check.
pub struct FuzzKeys<'a> {
    /// The vectors' APIv3 key.
    pub api_v3_key: &'a str,
    /// The vectors' WeChat Pay public key id.
    pub public_key_id: &'a str,
    /// The vectors' WeChat Pay public key (PEM).
    pub public_key_pem: &'a str,
    /// The vectors' platform certificates (PEM).
    pub certificates: &'a [&'a str],
    /// The vectors' "now", in Unix seconds.
    pub now: i64,
}

/// A layer, its signer and its cipher, built once per fuzzing process.
pub struct Harness {
    layer: WechatPayLayer,
    signer: TestSigner,
    cipher: Arc<ResourceCipher>,
    now: i64,
    /// A genuine request's headers and body, for the key-loading target.
    sample: (HeaderMap, Bytes),
}

impl Harness {
    /// Builds the harness.
    ///
    /// # Errors
    /// If a key does not load.
    pub fn new(keys: &FuzzKeys<'_>) -> Result<Self, ConfigError> {
        let mut layer = WechatPayLayer::new(keys.api_v3_key)?
            .add_public_key(keys.public_key_id, keys.public_key_pem)?
            .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?;
        for certificate in keys.certificates {
            layer = layer.add_certificate(certificate)?;
        }
        let now = keys.now;
        let layer = layer.clock(move || now);
        let cipher = Arc::clone(&layer.pipeline().cipher);
        let signer = TestSigner::public_key_mode();
        let sample = signer.sign_body(&b"{}"[..], now)?;
        Ok(Self {
            layer,
            signer,
            cipher,
            now,
            sample: (sample.headers, sample.body),
        })
    }

    /// Whole layer: `flags ‖ head ‖ "\n\n" ‖ body`, where the head is `Name: value` lines.
    ///
    /// Flag bit 0 signs the body with the test key: the signature's headers replace the
    /// head's, unless bit 1 lets the head's win where both set one. Bits 2–4 choose the
    /// handler's answer. Invariants: the layer answers at once (the body is in memory); the handler
    /// runs exactly when [`WechatPayLayer::verify`] accepts the same bytes; only a request
    /// the handler saw and acknowledged gets a 2xx; every other answer is 4xx/5xx with a
    /// `{"code":"FAIL","message":…}` body.
    pub fn layer_case(&self, data: &[u8]) -> Option<LayerOutcome> {
        let (&flags, rest) = data.split_first()?;
        let (head, body) = split_head(rest);
        let body = Bytes::copy_from_slice(body);
        let mut headers = parse_head(head);
        if flags & 1 != 0 {
            let signed = self.signer.sign_body(body.clone(), self.now).ok()?;
            let overrides = flags & 2 != 0;
            for (name, value) in signed.headers {
                if let Some(name) = name
                    && (!overrides || !headers.contains_key(&name))
                {
                    headers.insert(name, value);
                }
            }
        }
        let handler = Handler {
            answer: flags >> 2 & 0b111,
            called: Arc::new(AtomicBool::new(false)),
        };
        let called = Arc::clone(&handler.called);
        let mut request = Request::new(BufferedBody::new(body.clone()));
        *request.method_mut() = http::Method::POST;
        *request.headers_mut() = headers.clone();

        // What `oneshot` does: ready, then call; both must finish at once here.
        let mut service = tower::Layer::layer(&self.layer, handler);
        let ready = poll_once(std::future::poll_fn(|cx| {
            Service::<Request<BufferedBody>>::poll_ready(&mut service, cx)
        }));
        assert!(
            matches!(ready, Some(Ok(()))),
            "the layer is not ready though its handler is"
        );
        let response = match poll_once(service.call(request)) {
            Some(Ok(response)) => response,
            Some(Err(error)) => panic!("the layer failed instead of answering: {error}"),
            None => panic!("the layer did not answer at once although the body was in memory"),
        };

        let verified = self.layer.verify(&headers, &body).is_ok();
        let called = called.load(Ordering::SeqCst);
        assert_eq!(
            called, verified,
            "the handler ran for a request `verify` refused, or did not run for one it accepted"
        );
        let status = response.status();
        let reply = read_body(response.into_body());
        if status.is_success() {
            assert!(called, "acknowledged a request the handler never saw");
            assert!(
                handler_acknowledges(flags >> 2 & 0b111),
                "acknowledged although the handler asked for a retry"
            );
        } else {
            assert!(
                status.is_client_error() || status.is_server_error(),
                "answered {status}, neither an acknowledgement nor a failure"
            );
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&reply) else {
                panic!("a failure body is not JSON");
            };
            assert_eq!(value["code"], "FAIL", "a failure body without code FAIL");
            assert!(
                value["message"].as_str().is_some_and(|m| !m.is_empty()),
                "a failure body without a message"
            );
        }
        Some(LayerOutcome {
            status,
            handler_ran: called,
        })
    }

    /// Envelope and resource: arbitrary bytes as a body already known to be genuine:
    /// parse, decrypt, classify and model it. Invariant: decryption succeeds only for an
    /// envelope that parses.
    pub fn envelope_case(&self, data: &[u8]) {
        let parsed = parse_envelope(data).is_ok();
        let opened = self.open(data);
        assert!(
            parsed || opened.is_none(),
            "opened an envelope that did not parse"
        );
    }

    /// Decryption: `flags ‖ nonce_len ‖ ad_len ‖ nonce ‖ ad ‖ text`. Bit 0 seals `text`
    /// with the APIv3 key (otherwise `text` is the ciphertext, base64-encoded by bit 1 or
    /// taken as it is); bit 2 names another algorithm; bits 4–5 choose the resource type.
    /// Invariant: whatever was sealed with the right key, nonce and associated data under
    /// `AEAD_AES_256_GCM` decrypts to exactly the text sealed, if that text is UTF-8.
    pub fn decrypt_case(&self, data: &[u8]) {
        let [flags, nonce_len, ad_len, rest @ ..] = data else {
            return;
        };
        let (nonce, rest) = rest.split_at(usize::from(nonce_len % 16).min(rest.len()));
        let (ad, text) = rest.split_at(usize::from(ad_len % 64).min(rest.len()));
        let nonce = String::from_utf8_lossy(nonce);
        let ad = String::from_utf8_lossy(ad);

        let sealed = flags & 1 != 0;
        let ciphertext = if sealed {
            let mut buffer = text.to_vec();
            if self
                .cipher
                .seal(nonce.as_bytes(), ad.as_bytes(), &mut buffer)
                .is_err()
            {
                // Only a nonce that is not 12 bytes fails to seal; opening must fail too.
                assert_ne!(nonce.len(), 12, "sealing failed with a 12-byte nonce");
            }
            STANDARD.encode(buffer)
        } else if flags & 2 != 0 {
            STANDARD.encode(text)
        } else {
            String::from_utf8_lossy(text).into_owned()
        };
        let algorithm = if flags & 4 != 0 {
            "AEAD_AES_128_GCM"
        } else {
            "AEAD_AES_256_GCM"
        };
        let (original_type, event_type) = match flags >> 4 & 0b11 {
            0 => ("transaction", "TRANSACTION.SUCCESS"),
            1 => ("refund", "REFUND.SUCCESS"),
            2 => ("transaction", "TRANSACTION.FUTURE"),
            _ => ("payscore", "PAYSCORE.USER_CONFIRM"),
        };
        let body = json!({
            "id": "fuzz",
            "event_type": event_type,
            "resource_type": "encrypt-resource",
            "resource": {
                "algorithm": algorithm,
                "ciphertext": ciphertext,
                "nonce": nonce,
                "associated_data": ad,
                "original_type": original_type,
            },
        })
        .to_string();

        let envelope = parse_envelope(body.as_bytes());
        let Ok(envelope) = envelope else {
            panic!("an envelope serde_json wrote does not parse");
        };
        let decrypted = decrypt_resource(&self.cipher, &envelope.resource).ok();
        if sealed && algorithm == "AEAD_AES_256_GCM" && nonce.len() == 12 {
            if let Ok(text) = std::str::from_utf8(text) {
                assert_eq!(
                    decrypted.as_deref(),
                    Some(text),
                    "a sealed resource did not decrypt to what was sealed"
                );
            } else {
                assert!(decrypted.is_none(), "decrypted bytes that are not UTF-8");
            }
        }
        let _ = self.open(body.as_bytes());
    }

    /// Key loading: `selector ‖ bytes`. Selector 0 passes the bytes as they are; 1–3 wrap
    /// them as base64 in a `CERTIFICATE`, `PUBLIC KEY` or `RSA PUBLIC KEY` PEM, which
    /// reaches the DER and X.509 parsers. A key that loads is then used to verify a
    /// request. Invariant: a certificate that loads is found under the serial returned.
    pub fn key_case(&self, data: &[u8]) {
        let Some((&selector, bytes)) = data.split_first() else {
            return;
        };
        let pem = match selector % 4 {
            0 => bytes.to_vec(),
            n => armor(
                ["CERTIFICATE", "PUBLIC KEY", "RSA PUBLIC KEY"][usize::from(n - 1)],
                bytes,
            )
            .into_bytes(),
        };
        let keys = KeyRing::new();
        if keys.add_public_key(TEST_PUBLIC_KEY_ID, &pem).is_ok() {
            assert!(
                keys.contains(TEST_PUBLIC_KEY_ID),
                "an added public key is missing"
            );
        }
        if let Ok(serial) = keys.add_certificate(&pem) {
            assert!(keys.contains(&serial), "an added certificate is missing");
            assert!(
                keys.serials().contains(&serial),
                "an added certificate's serial is not listed"
            );
        }
        if keys.is_empty() {
            return;
        }
        let Ok(layer) = WechatPayLayer::new(crate::test_util::TEST_APIV3_KEY) else {
            return;
        };
        let now = self.now;
        let layer = layer.key_ring(keys).clock(move || now);
        let (headers, body) = &self.sample;
        let _ = layer.verify(headers, body);
    }

    /// Decrypts and models a body as the layer does after the signature check.
    fn open(&self, body: &[u8]) -> Option<usize> {
        let envelope = parse_envelope(body).ok()?;
        let plaintext = decrypt_resource(&self.cipher, &envelope.resource).ok()?;
        let kind = EventKind::of(
            envelope.resource.original_type.as_deref(),
            envelope.event_type.as_deref().unwrap_or_default(),
        );
        let _ = kind.parse(&plaintext);
        Some(plaintext.len())
    }
}

/// What the whole layer did with one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOutcome {
    /// The status WeChat Pay would see.
    pub status: StatusCode,
    /// Whether the inner service saw a notification.
    pub handler_ran: bool,
}

/// A handler that answers as the flags say and records that it ran.
#[derive(Clone)]
struct Handler {
    answer: u8,
    called: Arc<AtomicBool>,
}

fn handler_acknowledges(answer: u8) -> bool {
    answer <= 1
}

impl Service<Request<BufferedBody>> for Handler {
    type Response = Response<BufferedBody>;
    type Error = String;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<BufferedBody>) -> Self::Future {
        if let Some(notification) = request.extensions().get::<Notification>() {
            self.called.store(true, Ordering::SeqCst);
            touch(notification);
        }
        let status = match self.answer {
            0 => StatusCode::OK,
            1 => StatusCode::NO_CONTENT,
            2 => StatusCode::BAD_REQUEST,
            3 => StatusCode::INTERNAL_SERVER_ERROR,
            4 => StatusCode::FOUND,
            5 => StatusCode::CONTINUE,
            6 => return std::future::ready(Err("handler failed".to_owned())),
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = Response::new(BufferedBody::empty());
        *response.status_mut() = status;
        std::future::ready(Ok(response))
    }
}

/// Reads everything a handler may read, so a bad notification cannot hide a panic there.
fn touch(notification: &Notification) {
    let _ = (
        notification.id(),
        notification.create_time(),
        notification.event_type(),
        notification.resource_type(),
        notification.summary(),
        notification.original_type(),
        notification.associated_data(),
        notification.serial(),
        notification.resource_json(),
        notification.payment(),
        notification.partner_payment(),
        notification.combine_payment(),
        notification.refund(),
    );
    let _ = notification.resource_value();
    let _ = format!("{notification:?} {:?}", notification.event());
}

/// Splits at the first blank line; no blank line means all head, empty body.
fn split_head(input: &[u8]) -> (&[u8], &[u8]) {
    match input.windows(2).position(|pair| pair == b"\n\n") {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &[]),
    }
}

/// `Name: value` lines; lines that are not a valid header are skipped.
fn parse_head(head: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// A PEM block of `bytes` under `label`.
fn armor(label: &str, bytes: &[u8]) -> String {
    let encoded = STANDARD.encode(bytes);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// Polls a future once; `None` if it is not ready.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The bytes of an in-memory body.
fn read_body(body: BufferedBody) -> Bytes {
    let mut body = pin!(body);
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Bytes::from(out)
}
