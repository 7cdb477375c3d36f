//! Platform certificates that refresh themselves.
//!
//! [`Client::refresh_certificates`] runs one refresh: download the platform certificates
//! ([`Client::download_certificates`]: the first download is authenticated by the APIv3-key
//! decryption, later ones are verified against the key ring together with what they carry),
//! add the ones currently valid to the key ring, hold back the ones whose validity has not
//! started yet (they are added when it does), and drop expired certificates from the ring.
//! A refresh that fails removes nothing.
//!
//! Two ways to run it: when a notification or an answer names a serial the ring does not
//! know ([`Client::key_refresher`], for
//! [`WechatPayLayer::key_refresher`](crate::WechatPayLayer::key_refresher)), and on a timer
//! ([`Client::spawn_periodic_refresh`], every 12 hours by default, with jitter). Use both:
//! the timer picks up a new certificate while the old one still verifies (WeChat Pay lists
//! it at least a day before signing with it), the refresher covers a missed window.

use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{BoxError, Service};

use crate::client::certificates::PlatformCertificate;
use crate::client::{Client, ClientError};
use crate::error::ConfigError;
use crate::key_ring::{KeyRing, certificate_validity, utc};
use crate::refresh::KeyRefresher;

/// What one refresh did ([`Client::refresh_certificates`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateRefresh {
    /// Serials of the certificates added to the key ring (new ones only: a certificate
    /// the ring already holds is not listed).
    pub added: Vec<String>,
    /// Serials of the certificates held back because their validity has not started yet;
    /// they are added on the first refresh at or after their `notBefore` (the periodic
    /// refresh wakes up for it).
    pub held: Vec<String>,
    /// Serials of the expired certificates removed from the key ring.
    pub removed: Vec<String>,
    /// WeChat Pay has no platform certificate for this merchant (a 404
    /// `RESOURCE_NOT_EXISTS`, a 500 `SYSTEM_ERROR` or an empty list): it uses the WeChat
    /// Pay public key, which is to be configured with
    /// [`KeyRing::add_public_key`](crate::KeyRing::add_public_key). Not an error.
    pub public_key_only: bool,
}

/// A downloaded certificate whose validity has not started yet.
#[derive(Debug)]
pub(crate) struct Held {
    certificate: PlatformCertificate,
    serial: String,
    not_before: i64,
    not_after: i64,
}

/// The periodic refresh task started by [`Client::spawn_periodic_refresh`]. The task stops
/// when this is dropped (or [`stop`](Self::stop)ped): keep it for as long as the refresh
/// should run, e.g. next to the server in `main`.
#[derive(Debug)]
#[must_use = "the periodic refresh stops when this is dropped"]
pub struct PeriodicRefresh {
    task: tokio::task::JoinHandle<()>,
}

impl PeriodicRefresh {
    /// Stops the task (what dropping it does).
    pub fn stop(self) {
        drop(self);
    }

    /// Whether the task is still running. It only ends when stopped, or if its runtime
    /// shuts down.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for PeriodicRefresh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// How often [`Client::spawn_periodic_refresh`] is advised to run: 12 hours (WeChat
    /// Pay's guidance is to poll at intervals under 12 h; a new certificate is listed at
    /// least 24 h before it is used).
    pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(12 * 3600);
    /// The shortest periodic refresh interval accepted: 1 hour.
    pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
    /// The longest periodic refresh interval accepted: 2 days (longer could miss the window
    /// in which the old and the new certificate are both listed).
    pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(2 * 24 * 3600);
}

/// After a failed periodic refresh, the next try comes this soon (or at the interval, if
/// shorter), with jitter.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);
/// How much the periodic interval varies, either way, so instances do not run in step.
const JITTER: f64 = 0.1;

impl<S, B> Client<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Runs one certificate refresh on the client's key ring ([`Client::keys`]):
    ///
    /// - certificates held back by an earlier refresh whose validity has now started are
    ///   added;
    /// - the platform certificates are downloaded ([`Client::download_certificates`]); the
    ///   ones currently valid are added to the ring (one that is already there is left as
    ///   it is), the ones not yet valid are held by the client until their `notBefore`,
    ///   expired ones are skipped;
    /// - expired certificates are removed from the ring (public keys never expire).
    ///
    /// A public-key-only merchant gets nothing to download: not an error
    /// ([`CertificateRefresh::public_key_only`], logged once). On any error nothing is
    /// removed and nothing of the download is added (certificates are added all or none).
    ///
    /// ```no_run
    /// # use tower_wechatpay::KeyRing;
    /// # use tower_wechatpay::client::Client;
    /// # async fn run(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let report = client.refresh_certificates().await?;
    /// if report.public_key_only {
    ///     // configure the WeChat Pay public key: KeyRing::add_public_key
    /// }
    /// println!("added {:?}, removed {:?}", report.added, report.removed);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::download_certificates`]; [`ClientError::UnexpectedAnswer`] if a
    /// downloaded certificate cannot be added (e.g. its key is not RSA-2048).
    pub async fn refresh_certificates(&self) -> Result<CertificateRefresh, ClientError> {
        self.refresh_into(self.keys()).await
    }

    /// A [`KeyRefresher`] that runs [`Client::refresh_certificates`] on the ring it is
    /// installed on, when a notification (or an answer) names a serial the ring does not
    /// know: after a rotation, the first notification signed with the new certificate waits
    /// for the download and is accepted. Install it with
    /// [`WechatPayLayer::key_refresher`](crate::WechatPayLayer::key_refresher) or
    /// [`KeyRing::set_refresher`]; build the client with the layer's ring
    /// ([`WechatPayLayer::keys`](crate::WechatPayLayer::keys)) so both see the same keys.
    /// The refresher's own bounds apply (single-flight, at most once a minute by default).
    ///
    /// ```no_run
    /// use tower_wechatpay::WechatPayLayer;
    /// use tower_wechatpay::client::Client;
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let apiv3_key = std::fs::read_to_string("apiv3_key.txt")?;
    /// let layer = WechatPayLayer::new(apiv3_key.trim())?
    ///     .add_certificate(std::fs::read("platform_cert.pem")?)?;
    /// let client = Client::builder(
    ///     "1900000109",
    ///     "3775B6A45ACD588826D15E583A95F5DD0A1A9C5A",
    ///     std::fs::read("apiclient_key.pem")?,
    ///     layer.keys().clone(),
    /// )?
    /// .api_v3_key(apiv3_key.trim())?
    /// .build()?;
    /// let layer = layer.key_refresher(client.key_refresher());
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn key_refresher(&self) -> KeyRefresher {
        let client = self.clone();
        KeyRefresher::new(move |keys: KeyRing| {
            let client = client.clone();
            async move {
                client
                    .refresh_into(&keys)
                    .await
                    .map(drop)
                    .map_err(BoxError::from)
            }
        })
    }

    /// Starts refreshing the certificates on a timer, on the current Tokio runtime: a first
    /// [`refresh_certificates`](Client::refresh_certificates) right away, then one every
    /// `interval` (± 10 % jitter; [`Client::DEFAULT_REFRESH_INTERVAL`] is advised). A failed
    /// refresh is logged (level error, with its cause) and tried again after an hour (or
    /// the interval, if shorter); it never removes keys. A public-key-only merchant is
    /// logged once. When a held certificate's validity starts before the next run, the task
    /// wakes up then to add it.
    ///
    /// The task stops when the returned [`PeriodicRefresh`] is dropped.
    ///
    /// ```no_run
    /// # use tower_wechatpay::client::Client;
    /// # async fn run(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let refresh = client.spawn_periodic_refresh(Client::DEFAULT_REFRESH_INTERVAL)?;
    /// // … serve; the refresh runs until `refresh` is dropped.
    /// # drop(refresh);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] if `interval` is outside
    /// [`Client::MIN_REFRESH_INTERVAL`]`..=`[`Client::MAX_REFRESH_INTERVAL`] (1 hour to 2
    /// days), or if called outside a Tokio runtime.
    pub fn spawn_periodic_refresh(
        &self,
        interval: Duration,
    ) -> Result<PeriodicRefresh, ConfigError> {
        if !(Client::MIN_REFRESH_INTERVAL..=Client::MAX_REFRESH_INTERVAL).contains(&interval) {
            return Err(ConfigError::InvalidSetting {
                setting: "certificate refresh interval",
                reason: format!(
                    "{} s: must be from 1 hour (less wastes requests) to 2 days (more may \
                     miss the window in which the old and the new certificate are both listed)",
                    interval.as_secs()
                ),
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ConfigError::InvalidSetting {
                setting: "certificate refresh interval",
                reason: "the periodic refresh runs on a Tokio runtime: start it from within \
                         one (e.g. in `#[tokio::main] async fn main`)"
                    .into(),
            })?;
        let client = self.clone();
        let task = runtime.spawn(async move { client.refresh_periodically(interval).await });
        Ok(PeriodicRefresh { task })
    }

    /// The periodic task's loop; never ends by itself.
    async fn refresh_periodically(self, interval: Duration) {
        let mut failures: u32 = 0;
        loop {
            let mut next = match self.refresh_certificates().await {
                Ok(_) => {
                    failures = 0;
                    jittered(interval)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let next = jittered(interval.min(RETRY_AFTER_FAILURE));
                    tracing::error!(
                        %error,
                        consecutive_failures = failures,
                        next_try_in_s = next.as_secs(),
                        "the periodic refresh of WeChat Pay platform certificates failed; \
                         the key ring is unchanged"
                    );
                    self.keys()
                        .alerts()
                        .raise(crate::alert::Alert::RefresherFailing {
                            error: format!("periodic certificate refresh: {error}"),
                        });
                    next
                }
            };
            if let Some(not_before) = self.next_held_start() {
                let wait = not_before.saturating_sub(self.now()).max(1);
                next = next.min(Duration::from_secs(wait.unsigned_abs()));
            }
            tokio::time::sleep(next).await;
        }
    }

    /// One refresh adding to and removing from `ring` (see
    /// [`refresh_certificates`](Self::refresh_certificates)).
    async fn refresh_into(&self, ring: &KeyRing) -> Result<CertificateRefresh, ClientError> {
        let mut report = CertificateRefresh {
            added: self.add_held(ring),
            ..CertificateRefresh::default()
        };
        let downloaded = self.download_certificates().await?;
        report.public_key_only = downloaded.is_empty();
        let now = self.now();
        let mut bundle = String::new();
        let mut held = Vec::new();
        for certificate in downloaded {
            let (serial, (not_before, not_after)) =
                certificate_validity(certificate.pem.as_bytes()).map_err(|error| {
                    ClientError::UnexpectedAnswer {
                        reason: format!("platform certificate {}: {error}", certificate.serial_no),
                        request_id: None,
                    }
                })?;
            if now > not_after {
                tracing::debug!(
                    %serial,
                    not_after = %utc(not_after),
                    "downloaded platform certificate has expired: not added"
                );
            } else if now < not_before {
                held.push(Held {
                    certificate,
                    serial,
                    not_before,
                    not_after,
                });
            } else if !ring.contains(&serial) && !report.added.contains(&serial) {
                bundle.push_str(&certificate.pem);
                bundle.push('\n');
                report.added.push(serial);
            }
        }
        if !bundle.is_empty() {
            // All or none: every certificate is checked before any is added.
            ring.add_certificates_at(bundle.as_bytes(), now)
                .map_err(|error| ClientError::UnexpectedAnswer {
                    reason: format!("a downloaded platform certificate: {error}"),
                    request_id: None,
                })?;
        }
        held.sort_by_key(|held| held.not_before);
        report.held = held.iter().map(|held| held.serial.clone()).collect();
        for certificate in &held {
            tracing::info!(
                serial = %certificate.serial,
                not_before = %utc(certificate.not_before),
                "downloaded a platform certificate not valid yet: holding it until then"
            );
        }
        *self.held() = held;
        report.removed = ring.remove_expired(now);
        if !report.added.is_empty() || !report.removed.is_empty() {
            tracing::info!(
                added = ?report.added,
                removed = ?report.removed,
                held = ?report.held,
                "refreshed WeChat Pay platform certificates"
            );
        }
        Ok(report)
    }

    /// Adds the held certificates whose validity has started to `ring`; forgets them and
    /// the expired ones. Returns the serials added.
    fn add_held(&self, ring: &KeyRing) -> Vec<String> {
        let now = self.now();
        let mut added = Vec::new();
        self.held().retain(|held| {
            if now < held.not_before {
                return true;
            }
            if now <= held.not_after && !ring.contains(&held.serial) {
                match ring.add_certificate_at(held.certificate.pem.as_bytes(), now) {
                    Ok(serial) => added.push(serial),
                    Err(error) => tracing::warn!(
                        serial = %held.serial,
                        %error,
                        "a held platform certificate could not be added"
                    ),
                }
            }
            false
        });
        added
    }

    /// The earliest `notBefore` of the held certificates.
    fn next_held_start(&self) -> Option<i64> {
        self.held().iter().map(|held| held.not_before).min()
    }

    fn held(&self) -> MutexGuard<'_, Vec<Held>> {
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `interval` ± [`JITTER`], at random.
fn jittered(interval: Duration) -> Duration {
    let mut random = [0u8; 2];
    if getrandom::fill(&mut random).is_err() {
        return interval;
    }
    let unit = f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX);
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Client::DEFAULT_REFRESH_INTERVAL;
        for _ in 0..1000 {
            let next = jittered(interval);
            assert!(next >= interval.mul_f64(0.9) && next <= interval.mul_f64(1.1));
        }
    }
}
