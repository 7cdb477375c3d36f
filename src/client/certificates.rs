//! `GET /v3/certificates`: WeChat Pay's platform certificates, encrypted with the APIv3
//! key, in an answer signed by one of them.
//!
//! The first download cannot be checked against any earlier key: what authenticates it is
//! the AES-GCM tag under the APIv3 key, a secret only WeChat Pay shares, plus TLS. So the
//! certificates are decrypted first, and the answer is then verified against the key
//! ring's keys together with the certificates just decrypted: a client whose only
//! certificate expired before it refreshed still accepts an answer signed by the new one
//! (the trap that left an official SDK unable to refresh until restarted).
//!
//! Merchants that hold only the WeChat Pay public key get no certificates: a 404
//! `RESOURCE_NOT_EXISTS`, a 500 `SYSTEM_ERROR`, or a 200 `{"data":[]}` signed with the
//! `PUB_KEY_ID_…`. All three mean "nothing to download", logged once with what to do.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tower::{BoxError, Service};

use crate::client::error::ClientError;
use crate::client::{Client, Raw};
use crate::decrypt::{EncryptedResource, decrypt_resource};
use crate::key_ring::{certificate_validity, normalized_serial};

/// The download's path. `algorithm_type` is left to its default (RSA), as the Go SDK does.
const PATH: &str = "/v3/certificates";

/// One downloaded, decrypted platform certificate.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlatformCertificate {
    /// Its serial, as WeChat Pay lists it (upper-case hex).
    pub serial_no: String,
    /// `effective_time` as listed (RFC 3339).
    pub effective_time: String,
    /// `expire_time` as listed (RFC 3339).
    pub expire_time: String,
    /// The certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for PlatformCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformCertificate")
            .field("serial_no", &self.serial_no)
            .field("effective_time", &self.effective_time)
            .field("expire_time", &self.expire_time)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow, default)]
    data: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    serial_no: String,
    #[serde(default)]
    effective_time: String,
    #[serde(default)]
    expire_time: String,
    #[serde(borrow)]
    encrypt_certificate: EncryptedResource<'a>,
}

/// Logged once per process: a merchant without platform certificates.
static PUBLIC_KEY_ONLY_LOGGED: AtomicBool = AtomicBool::new(false);

impl<S, B> Client<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Downloads and decrypts WeChat Pay's platform certificates. Each one is checked to
    /// be a certificate whose serial is the one listed; the answer is verified against
    /// the key ring plus the certificates it carries. Nothing is added to the key ring
    /// (see [`Client::refresh_certificates`]).
    ///
    /// An empty list means the merchant has no platform certificates (public-key-only).
    ///
    /// # Errors
    /// [`ClientError::Misconfigured`] without the APIv3 key; [`ClientError::UnexpectedAnswer`]
    /// if a certificate does not decrypt (a wrong APIv3 key) or parse; the usual
    /// transport, timeout, verification and API errors.
    pub async fn download_certificates(&self) -> Result<Vec<PlatformCertificate>, ClientError> {
        let Some(cipher) = self.shared_cipher() else {
            return Err(ClientError::Misconfigured(
                "downloading platform certificates needs the apiv3 key \
                 (ClientBuilder::api_v3_key): they arrive encrypted with it",
            ));
        };
        let result = self
            .call(&Method::GET, PATH, Bytes::new(), |raw| async move {
                let certificates = decrypt_listing(&raw, cipher)?;
                if certificates.is_empty() && signed_by_unknown_public_key(&raw, self.keys()) {
                    // A public-key-only merchant's empty list, signed with the public key
                    // it has not configured yet (what the log below tells it to do). An
                    // empty list carries nothing to trust: taken as "nothing to download".
                    return Ok(certificates);
                }
                // Verify against the ring and what the answer carries, without touching
                // the ring itself or waiting for its refresher (which may be us).
                let candidates = self.keys().snapshot();
                for certificate in &certificates {
                    candidates
                        .insert_certificate(certificate.pem.as_bytes())
                        .map_err(|error| ClientError::UnexpectedAnswer {
                            reason: format!(
                                "platform certificate {}: {error}",
                                certificate.serial_no
                            ),
                            request_id: None,
                        })?;
                }
                self.verified(raw, &candidates, false).await?;
                Ok(certificates)
            })
            .await;
        match result {
            Err(ClientError::Api(api)) if public_key_only(api.status, &api.code) => {
                log_public_key_only(&format!("{} {}", api.status.as_u16(), api.code));
                Ok(Vec::new())
            }
            Ok(certificates) if certificates.is_empty() => {
                log_public_key_only("an empty list");
                Ok(certificates)
            }
            other => other,
        }
    }
}

/// The certificates of a `/v3/certificates` answer, decrypted and checked.
fn decrypt_listing(
    raw: &Raw,
    cipher: &crate::backend::ResourceCipher,
) -> Result<Vec<PlatformCertificate>, ClientError> {
    let unexpected = |reason: String| ClientError::UnexpectedAnswer {
        reason,
        request_id: raw.request_id.clone(),
    };
    let listing: Listing<'_> = serde_json::from_slice(&raw.body)
        .map_err(|error| unexpected(format!("/v3/certificates: {error}")))?;
    let mut certificates = Vec::with_capacity(listing.data.len());
    for entry in listing.data {
        let pem = decrypt_resource(cipher, &entry.encrypt_certificate).map_err(|_| {
            unexpected(format!(
                "platform certificate {} does not decrypt: the apiv3 key is wrong (or was \
                 reset in the merchant platform)",
                entry.serial_no
            ))
        })?;
        let (serial, _) = certificate_validity(pem.as_bytes()).map_err(|error| {
            unexpected(format!("platform certificate {}: {error}", entry.serial_no))
        })?;
        if normalized_serial(&entry.serial_no).as_deref() != Some(serial.as_str()) {
            return Err(unexpected(format!(
                "listed as {} but the certificate's serial is {serial}",
                entry.serial_no
            )));
        }
        certificates.push(PlatformCertificate {
            serial_no: entry.serial_no,
            effective_time: entry.effective_time,
            expire_time: entry.expire_time,
            pem,
        });
    }
    Ok(certificates)
}

/// Whether `raw` names a `PUB_KEY_ID_…` that `keys` does not hold.
fn signed_by_unknown_public_key(raw: &Raw, keys: &crate::key_ring::KeyRing) -> bool {
    raw.headers
        .get(crate::verify::SERIAL)
        .and_then(|serial| serial.to_str().ok())
        .is_some_and(|serial| {
            serial
                .trim()
                .starts_with(crate::key_ring::PUBLIC_KEY_ID_PREFIX)
                && !keys.contains(serial.trim())
        })
}

/// The answers a public-key-only merchant gets (`MERCHANT-API.md` §3.2).
fn public_key_only(status: StatusCode, code: &str) -> bool {
    (status == StatusCode::NOT_FOUND && code == "RESOURCE_NOT_EXISTS")
        || (status == StatusCode::INTERNAL_SERVER_ERROR && code == "SYSTEM_ERROR")
}

fn log_public_key_only(answer: &str) {
    if !PUBLIC_KEY_ONLY_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            answer,
            "GET /v3/certificates: no platform certificates for this merchant (it uses the \
             WeChat Pay public key): configure the public key (PUB_KEY_ID_… from the \
             merchant platform, API安全 → 微信支付公钥) with add_public_key; nothing to download"
        );
    }
}
