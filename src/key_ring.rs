//! The WeChat Pay keys that notifications may be signed with, chosen by `Wechatpay-Serial`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_cert::Certificate;
use x509_cert::der::{DateTime, Decode, Encode};
use x509_cert::name::Name;

use crate::alert::Alerts;
use crate::backend::{KeyProblem, VerifyingKey, parse_public_key};
use crate::error::ConfigError;
use crate::pem;
use crate::refresh::{KeyRefresher, RefreshState, RefreshWait};

/// The prefix of a WeChat Pay public key id, as sent in `Wechatpay-Serial`.
pub(crate) const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// A set of WeChat Pay verification keys, shared and updatable while the server runs.
///
/// It holds, at the same time, any number of WeChat Pay public keys (`PUB_KEY_ID_…`,
/// matched exactly) and platform certificates (matched by their serial number as hex,
/// ignoring case and leading zeros). Both modes at once is what a merchant needs during a
/// certificate rotation or the move from certificates to the public key.
///
/// Cloning is cheap and every clone sees the same keys, so a clone kept outside the router
/// can add or remove keys without rebuilding it:
///
/// ```
/// use tower_wechatpay::{KeyRing, WechatPayLayer};
/// # use tower_wechatpay::test_util::{TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM};
///
/// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
/// let keys = KeyRing::new();
/// keys.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?;
/// let layer = WechatPayLayer::new(TEST_APIV3_KEY)?.key_ring(keys.clone());
///
/// // Later, while the server runs: a rotated platform certificate arrives.
/// let serial = keys.add_certificate(TEST_CERTIFICATE_PEM)?;
/// assert!(layer.keys().contains(&serial));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct KeyRing {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    keys: RwLock<HashMap<String, Arc<PlatformKey>>>,
    refresh: Mutex<Option<RefreshState>>,
    /// Where the refresher's failures are reported: the alerts of the layer using the ring.
    alerts: Mutex<Alerts>,
}

/// One verification key and how it was named.
pub(crate) struct PlatformKey {
    /// The serial as configured (public key id) or read from the certificate (hex).
    pub(crate) serial: Arc<str>,
    pub(crate) verifying_key: VerifyingKey,
    /// A certificate's `(notBefore, notAfter)` as Unix seconds, both inclusive; `None` for a
    /// public key, which has no expiry.
    pub(crate) validity: Option<(i64, i64)>,
}

/// Why a key may not be used at a given time: a certificate outside its validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyValidity {
    /// `now` is before the certificate's `notBefore` (Unix seconds).
    NotYetValid { not_before: i64 },
    /// `now` is after the certificate's `notAfter` (Unix seconds).
    Expired { not_after: i64 },
}

impl PlatformKey {
    /// What is wrong with using this key at `now` (Unix seconds), or `None` if it may be
    /// used: always for a public key, and for a certificate from its `notBefore` to its
    /// `notAfter`, both included (RFC 5280 §4.1.2.5).
    pub(crate) fn validity_problem(&self, now: i64) -> Option<KeyValidity> {
        let (not_before, not_after) = self.validity?;
        if now < not_before {
            Some(KeyValidity::NotYetValid { not_before })
        } else if now > not_after {
            Some(KeyValidity::Expired { not_after })
        } else {
            None
        }
    }
}

/// Where a serial came from: a public key id or a certificate serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SerialKind {
    PublicKeyId,
    Certificate,
}

impl SerialKind {
    pub(crate) fn of(serial: &str) -> Self {
        if serial.starts_with(PUBLIC_KEY_ID_PREFIX) {
            Self::PublicKeyId
        } else {
            Self::Certificate
        }
    }
}

impl KeyRing {
    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a WeChat Pay public key (微信支付公钥) under its id, e.g.
    /// `PUB_KEY_ID_0114232134912410000000000000`. `pem` is the `-----BEGIN PUBLIC KEY-----`
    /// file downloaded from the merchant platform (PKCS#1 `RSA PUBLIC KEY` is accepted too).
    /// A key already present under the same id is replaced.
    ///
    /// The PEM is read leniently: any line length, CRLF line endings, the base64 on one
    /// line and text around the block are all fine.
    ///
    /// # Errors
    /// [`ConfigError::PublicKeyIdFormat`] if `id` lacks the `PUB_KEY_ID_` prefix,
    /// [`ConfigError::InvalidPem`] if `pem` cannot be read as one PEM block (the error says
    /// why), [`ConfigError::UnexpectedPem`] if it holds something else than a public key,
    /// [`ConfigError::InvalidPublicKey`] if it is not an RSA key and
    /// [`ConfigError::PublicKeyTooSmall`] if the key has fewer than 2048 bits.
    pub fn add_public_key(&self, id: &str, pem: impl AsRef<[u8]>) -> Result<(), ConfigError> {
        let id = id.trim();
        if !id.starts_with(PUBLIC_KEY_ID_PREFIX) || id.len() == PUBLIC_KEY_ID_PREFIX.len() {
            return Err(ConfigError::PublicKeyIdFormat);
        }
        let der = decode_single_pem(
            pem.as_ref(),
            &["PUBLIC KEY", "RSA PUBLIC KEY"],
            "public key",
        )?;
        let verifying_key = parse_public_key(&der).map_err(key_error)?;
        self.insert_all(vec![PlatformKey {
            serial: Arc::from(id),
            verifying_key,
            validity: None,
        }]);
        Ok(())
    }

    /// Adds a WeChat Pay platform certificate (平台证书, X.509 PEM) and returns its serial
    /// number as upper-case hex, the form WeChat Pay sends in `Wechatpay-Serial`.
    ///
    /// The serial is read from the certificate itself, so it cannot be mistyped. The PEM is
    /// read leniently (any line length, CRLF, the base64 on one line, text around the
    /// block). A file holding several certificates, such as the list `/v3/certificates`
    /// returns during a rotation, adds all of them, as [`add_certificates`](Self::add_certificates)
    /// does, and this returns the serial of the first.
    ///
    /// **Validity.** A certificate whose `notAfter` has passed (by the system clock) is
    /// refused: WeChat Pay no longer signs with it. One whose `notBefore` is still to come
    /// is accepted, with a warning in the log, because WeChat Pay publishes the next
    /// certificate before it switches to it. Either way a notification signed under a
    /// certificate outside its validity at the time it arrives (by the layer's clock) is
    /// refused.
    ///
    /// **Which certificate.** Add the WeChat Pay *platform* certificate, never the
    /// merchant's own `apiclient_cert.pem`. That one is recognized and refused by its
    /// subject: a merchant API certificate is issued to the merchant id (its common name
    /// is only digits) and its organization is `微信商户系统`, while platform certificates
    /// are issued to WeChat Pay (Tenpay) itself.
    ///
    /// ```
    /// use tower_wechatpay::KeyRing;
    /// # use tower_wechatpay::test_util::{TEST_CERTIFICATE_PEM, TEST_CERTIFICATE_SERIAL};
    ///
    /// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
    /// let keys = KeyRing::new();
    /// // CRLF line endings, as a file edited on Windows has them, are fine.
    /// let serial = keys.add_certificate(TEST_CERTIFICATE_PEM.replace('\n', "\r\n"))?;
    /// assert_eq!(serial, TEST_CERTIFICATE_SERIAL);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`add_certificates`](Self::add_certificates); nothing is added on error.
    pub fn add_certificate(&self, pem: impl AsRef<[u8]>) -> Result<String, ConfigError> {
        self.add_certificate_at(pem.as_ref(), unix_now())
    }

    /// [`add_certificate`](Self::add_certificate) with an explicit `now` (Unix seconds).
    pub(crate) fn add_certificate_at(&self, pem: &[u8], now: i64) -> Result<String, ConfigError> {
        // `add_certificates_at` never succeeds with no certificate; no panic if it did.
        self.add_certificates_at(pem, now)?
            .into_iter()
            .next()
            .ok_or(ConfigError::InvalidPem {
                reason: "no -----BEGIN line found",
            })
    }

    /// Adds every platform certificate in a PEM file (one or more `CERTIFICATE` blocks)
    /// and returns their serials, in file order. All or none: every certificate is checked
    /// before any is added. The rules of [`add_certificate`](Self::add_certificate) apply to
    /// each.
    ///
    /// ```
    /// use tower_wechatpay::KeyRing;
    /// # use tower_wechatpay::test_util::{TEST_CERTIFICATE_PEM, TEST_CERTIFICATE_SERIAL};
    ///
    /// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
    /// let keys = KeyRing::new();
    /// // e.g. the old and the new certificate during a rotation, in one file
    /// let bundle = format!("{TEST_CERTIFICATE_PEM}\n{TEST_CERTIFICATE_PEM}");
    /// let serials = keys.add_certificates(bundle)?;
    /// assert_eq!(serials, [TEST_CERTIFICATE_SERIAL, TEST_CERTIFICATE_SERIAL]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::InvalidPem`] if `pem` cannot be read (the error says why),
    /// [`ConfigError::UnexpectedPem`] if a block is not a certificate (e.g. a public or
    /// private key), [`ConfigError::InvalidCertificate`] if one does not parse,
    /// [`ConfigError::MerchantCertificate`] for the merchant's own API certificate,
    /// [`ConfigError::InvalidPublicKey`] / [`ConfigError::PublicKeyTooSmall`] if its key is
    /// not RSA of at least 2048 bits, [`ConfigError::CertificateExpired`] if it has expired.
    pub fn add_certificates(&self, pem: impl AsRef<[u8]>) -> Result<Vec<String>, ConfigError> {
        self.add_certificates_at(pem.as_ref(), unix_now())
    }

    /// [`add_certificates`](Self::add_certificates) with an explicit `now` (Unix seconds).
    pub(crate) fn add_certificates_at(
        &self,
        pem: &[u8],
        now: i64,
    ) -> Result<Vec<String>, ConfigError> {
        let blocks = pem::parse_all(pem)?;
        let mut keys = Vec::with_capacity(blocks.len());
        for block in &blocks {
            if block.label != "CERTIFICATE" {
                return Err(ConfigError::UnexpectedPem {
                    found: block.label.clone(),
                    expected: "certificate",
                });
            }
            let key = parse_certificate(&block.der)?;
            if let Some((_, not_after)) = key.validity
                && now > not_after
            {
                return Err(ConfigError::CertificateExpired {
                    serial: key.serial.to_string(),
                    not_after,
                });
            }
            keys.push(key);
        }
        for key in &keys {
            if let Some((not_before, _)) = key.validity
                && now < not_before
            {
                tracing::warn!(
                    serial = %key.serial,
                    not_before = %utc(not_before),
                    "platform certificate added before its validity starts; notifications \
                     signed with it are refused until then"
                );
            }
        }
        let serials = keys.iter().map(|key| key.serial.to_string()).collect();
        self.insert_all(keys);
        Ok(serials)
    }

    /// Adds one platform certificate whatever its validity, silently: for candidate sets
    /// that only verify an answer (verification still refuses a key outside its validity).
    #[cfg(feature = "client")]
    pub(crate) fn insert_certificate(&self, pem: &[u8]) -> Result<String, ConfigError> {
        let key = parse_certificate(&decode_single_pem(pem, &["CERTIFICATE"], "certificate")?)?;
        let serial = key.serial.to_string();
        self.insert_all(vec![key]);
        Ok(serial)
    }

    /// Removes every platform certificate whose validity ended before `now` (Unix
    /// seconds) and returns their serials. Public keys never expire.
    pub fn remove_expired(&self, now: i64) -> Vec<String> {
        let mut keys = self.write();
        let expired: Vec<String> = keys
            .iter()
            .filter(|(_, key)| key.validity.is_some_and(|(_, not_after)| now > not_after))
            .map(|(lookup, _)| lookup.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|lookup| keys.remove(&lookup).map(|key| key.serial.to_string()))
            .collect()
    }

    /// Removes the key with this serial or public key id. Returns whether one was there.
    pub fn remove(&self, serial: &str) -> bool {
        let Some(key) = lookup_key(serial) else {
            return false;
        };
        self.write().remove(&key).is_some()
    }

    /// Whether a key with this serial or public key id is present (same matching rules
    /// as for `Wechatpay-Serial`).
    pub fn contains(&self, serial: &str) -> bool {
        self.get(serial).is_some()
    }

    /// The serials and public key ids present, sorted.
    pub fn serials(&self) -> Vec<String> {
        let mut serials: Vec<String> = self
            .read()
            .values()
            .map(|key| key.serial.to_string())
            .collect();
        serials.sort();
        serials
    }

    /// How many keys are present.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Installs the refresher to run when a notification names an unknown serial,
    /// replacing any earlier one. See [`KeyRefresher`] for the bounds it runs under.
    pub fn set_refresher(&self, refresher: KeyRefresher) {
        *self.refresh_state() = Some(RefreshState::new(refresher));
    }

    /// Whether a refresher is installed.
    pub fn has_refresher(&self) -> bool {
        self.refresh_state().is_some()
    }

    /// Takes in what the layer's builder put in `other` before this ring replaced it: its
    /// keys (ours win on the same serial) and its refresher, if this ring has none.
    pub(crate) fn absorb(&self, other: &KeyRing) {
        if Arc::ptr_eq(&self.shared, &other.shared) {
            return;
        }
        let theirs: Vec<(String, Arc<PlatformKey>)> = other
            .read()
            .iter()
            .map(|(lookup, key)| (lookup.clone(), Arc::clone(key)))
            .collect();
        {
            let mut ours = self.write();
            for (lookup, key) in theirs {
                ours.entry(lookup).or_insert(key);
            }
        }
        let refresher = other
            .refresh_state()
            .as_ref()
            .map(|state| state.refresher().clone());
        if let Some(refresher) = refresher {
            let mut state = self.refresh_state();
            if state.is_none() {
                *state = Some(RefreshState::new(refresher));
            }
        }
    }

    /// A new ring holding the same keys as this one now, without its refresher: for
    /// checking an answer against a candidate set without touching the shared ring.
    #[cfg(feature = "client")]
    pub(crate) fn snapshot(&self) -> KeyRing {
        let copy = KeyRing::new();
        {
            let keys = self.read();
            let mut theirs = copy.write();
            for (lookup, key) in keys.iter() {
                theirs.insert(lookup.clone(), Arc::clone(key));
            }
        }
        copy
    }

    /// Reports the refresher's failures to `alerts` (the layer's, set by its builder).
    pub(crate) fn set_alerts(&self, alerts: Alerts) {
        *self
            .shared
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = alerts;
    }

    /// Where the refresher's failures are reported.
    pub(crate) fn alerts(&self) -> Alerts {
        self.shared
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The refresh a request with an unknown serial should wait for, if one may run.
    pub(crate) fn wait_for_refresh(&self) -> Option<RefreshWait> {
        let (wait, start) = self.refresh_state().as_mut()?.wait_for_refresh()?;
        if let Some(start) = start {
            start.start(self.clone());
        }
        Some(wait)
    }

    /// The key for a `Wechatpay-Serial` header value. WeChat Pay sends serials in the
    /// stored form, so the exact look-up (no allocation) almost always hits.
    pub(crate) fn get(&self, serial: &str) -> Option<Arc<PlatformKey>> {
        let keys = self.read();
        if let Some(key) = keys.get(serial) {
            return Some(Arc::clone(key));
        }
        let normalized = lookup_key(serial)?;
        keys.get(&normalized).cloned()
    }

    /// What to tell the operator when `serial` is unknown: which key to add.
    pub(crate) fn unknown_serial_hint(&self, serial: &str) -> &'static str {
        let keys = self.read();
        let has = |kind| keys.values().any(|key| SerialKind::of(&key.serial) == kind);
        match SerialKind::of(serial) {
            SerialKind::PublicKeyId if !has(SerialKind::PublicKeyId) => {
                "the merchant is moving to WeChat Pay public key mode; add the public key \
                 (PUB_KEY_ID_…) from the merchant platform"
            }
            SerialKind::PublicKeyId => {
                "no public key with this id is configured; check the id (prefix included) \
                 and add the matching public key"
            }
            SerialKind::Certificate if !has(SerialKind::Certificate) => {
                "signed with a platform certificate but only public keys are configured; \
                 add the platform certificate"
            }
            SerialKind::Certificate => {
                "platform certificate not configured; it may have been rotated: add the new \
                 platform certificate (a probe with an unknown serial is possible too)"
            }
        }
    }

    /// Inserts every key under one lock, replacing keys with the same serial.
    fn insert_all(&self, keys: Vec<PlatformKey>) {
        let mut map = self.write();
        for key in keys {
            let lookup = lookup_key(&key.serial).unwrap_or_else(|| key.serial.to_string());
            map.insert(lookup, Arc::new(key));
        }
    }

    // A poisoned lock only means a writer panicked between two whole-map operations;
    // the map itself is still consistent, so keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<PlatformKey>>> {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<PlatformKey>>> {
        self.shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh_state(&self) -> std::sync::MutexGuard<'_, Option<RefreshState>> {
        self.shared
            .refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("serials", &self.serials())
            .field("refresher", &self.has_refresher())
            .finish()
    }
}

/// A platform certificate's serial (normalized hex) and validity `(notBefore, notAfter)`
/// in Unix seconds, without adding it anywhere.
#[cfg(feature = "client")]
pub(crate) fn certificate_validity(pem: &[u8]) -> Result<(String, (i64, i64)), ConfigError> {
    let key = parse_certificate(&decode_single_pem(pem, &["CERTIFICATE"], "certificate")?)?;
    let validity = key.validity.ok_or(ConfigError::InvalidCertificate)?;
    Ok((key.serial.to_string(), validity))
}

/// The form [`KeyRing`] compares certificate serials in (upper-case hex, no leading zeros).
#[cfg(feature = "client")]
pub(crate) fn normalized_serial(serial: &str) -> Option<String> {
    normalize_hex_serial(serial)
}

/// The map key for a serial: public key ids exactly, certificate serials as normalized hex.
fn lookup_key(serial: &str) -> Option<String> {
    match SerialKind::of(serial) {
        SerialKind::PublicKeyId => Some(serial.to_owned()),
        SerialKind::Certificate => normalize_hex_serial(serial),
    }
}

/// Upper-case hex without leading zeros (a DER serial may carry a 0x00 sign byte), so a
/// serial matches whatever case or padding the sender used. `None` if not hex.
fn normalize_hex_serial(serial: &str) -> Option<String> {
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = serial.trim_start_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    Some(trimmed.to_ascii_uppercase())
}

fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The DER of the one PEM block in `input`, whose label must be one of `labels`.
fn decode_single_pem(
    input: &[u8],
    labels: &[&'static str],
    expected: &'static str,
) -> Result<Vec<u8>, ConfigError> {
    let mut blocks = pem::parse_all(input)?.into_iter();
    let (Some(block), None) = (blocks.next(), blocks.next()) else {
        return Err(ConfigError::InvalidPem {
            reason: "more than one pem block where one key was expected",
        });
    };
    if !labels.contains(&block.label.as_str()) {
        return Err(ConfigError::UnexpectedPem {
            found: block.label.clone(),
            expected,
        });
    }
    Ok(block.der.to_vec())
}

/// A platform certificate as a key: its serial, RSA key and validity.
fn parse_certificate(der: &[u8]) -> Result<PlatformKey, ConfigError> {
    let certificate = Certificate::from_der(der).map_err(|_| ConfigError::InvalidCertificate)?;
    let tbs = certificate.tbs_certificate();
    let serial = normalize_hex_serial(&hex_upper(tbs.serial_number().as_bytes()))
        .ok_or(ConfigError::InvalidCertificate)?;
    if let Some(subject) = merchant_id_subject(tbs.subject()) {
        return Err(ConfigError::MerchantCertificate { serial, subject });
    }
    let validity = tbs.validity();
    let not_before = unix_seconds(validity.not_before.to_unix_duration())?;
    let not_after = unix_seconds(validity.not_after.to_unix_duration())?;
    let spki = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|_| ConfigError::InvalidCertificate)?;
    let verifying_key = parse_public_key(&spki).map_err(key_error)?;
    Ok(PlatformKey {
        serial: Arc::from(serial),
        verifying_key,
        validity: Some((not_before, not_after)),
    })
}

/// The organization WeChat Pay names in every merchant API certificate it issues.
const MERCHANT_ORGANIZATION: &str = "微信商户系统";

/// The subject's common name if the certificate looks like a merchant API certificate
/// (`apiclient_cert.pem`): its common name is the merchant id (only ASCII digits) or its
/// organization is `微信商户系统`. Platform certificates are issued to WeChat Pay (Tenpay),
/// whose name is never a number and never that organization.
fn merchant_id_subject(subject: &Name) -> Option<String> {
    let common_name = subject
        .common_name()
        .ok()
        .flatten()
        .map(|name| name.value().trim().to_owned())
        .unwrap_or_default();
    let merchant_id = !common_name.is_empty() && common_name.bytes().all(|b| b.is_ascii_digit());
    let merchant_organization = subject
        .organization()
        .ok()
        .flatten()
        .is_some_and(|organization| organization.value().trim() == MERCHANT_ORGANIZATION);
    (merchant_id || merchant_organization).then_some(common_name)
}

fn key_error(problem: KeyProblem) -> ConfigError {
    match problem {
        KeyProblem::NotRsa => ConfigError::InvalidPublicKey,
        KeyProblem::TooSmall { bits } => ConfigError::PublicKeyTooSmall { bits },
    }
}

fn unix_seconds(since_epoch: Duration) -> Result<i64, ConfigError> {
    i64::try_from(since_epoch.as_secs()).map_err(|_| ConfigError::InvalidCertificate)
}

/// The system clock as Unix seconds (0 if it is before 1970).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Unix seconds as an RFC 3339 UTC time, e.g. `2021-01-01T00:00:00Z`, for messages.
pub(crate) fn utc(unix_seconds: i64) -> String {
    u64::try_from(unix_seconds)
        .ok()
        .and_then(|secs| DateTime::from_unix_duration(Duration::from_secs(secs)).ok())
        .map_or_else(
            || format!("{unix_seconds} (unix seconds)"),
            |date| date.to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_certificate_serials() {
        assert_eq!(normalize_hex_serial("00abCD").as_deref(), Some("ABCD"));
        assert_eq!(normalize_hex_serial("000").as_deref(), Some("0"));
        assert_eq!(normalize_hex_serial("xyz"), None);
        assert_eq!(normalize_hex_serial(""), None);
    }

    #[test]
    fn public_key_ids_match_exactly() {
        assert_eq!(
            lookup_key("PUB_KEY_ID_0123").as_deref(),
            Some("PUB_KEY_ID_0123")
        );
        assert_eq!(lookup_key("pub_key_id_0123"), None);
    }

    const CERTIFICATE: &str = include_str!("test_util/keys/certificate_mode.cert.pem");
    const CERTIFICATE_SERIAL: &str = "3A7F19C0D2E4B6A85F1E0C9B7D3A2F4E6C8B1D05";
    // The test certificate's notBefore (2026-11-28T16:12:19Z) and notAfter (2036-11-25T16:12:19Z).
    const NOT_BEFORE: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
    const NOT_AFTER: i64 = 2_082_758_400; // 2036-01-01T00:00:00Z

    #[test]
    fn a_certificate_keeps_its_validity_and_a_public_key_has_none() {
        let keys = KeyRing::new();
        keys.add_certificate_at(CERTIFICATE.as_bytes(), NOT_BEFORE)
            .unwrap();
        let key = keys.get(CERTIFICATE_SERIAL).unwrap();
        assert_eq!(key.validity, Some((NOT_BEFORE, NOT_AFTER)));

        let id = "PUB_KEY_ID_0123";
        keys.add_public_key(id, include_str!("test_util/keys/public_key_mode.pub.pem"))
            .unwrap();
        let key = keys.get(id).unwrap();
        assert_eq!(key.validity, None);
        assert_eq!(key.validity_problem(i64::MIN), None);
        assert_eq!(key.validity_problem(i64::MAX), None);
    }

    #[test]
    fn a_certificate_may_be_used_from_not_before_to_not_after_inclusive() {
        let keys = KeyRing::new();
        keys.add_certificate_at(CERTIFICATE.as_bytes(), NOT_BEFORE)
            .unwrap();
        let key = keys.get(CERTIFICATE_SERIAL).unwrap();
        assert_eq!(
            key.validity_problem(NOT_BEFORE - 1),
            Some(KeyValidity::NotYetValid {
                not_before: NOT_BEFORE
            })
        );
        assert_eq!(key.validity_problem(NOT_BEFORE), None);
        assert_eq!(key.validity_problem(NOT_AFTER), None);
        assert_eq!(
            key.validity_problem(NOT_AFTER + 1),
            Some(KeyValidity::Expired {
                not_after: NOT_AFTER
            })
        );
    }

    #[test]
    fn an_expired_certificate_is_refused_when_added() {
        let keys = KeyRing::new();
        assert_eq!(
            keys.add_certificate_at(CERTIFICATE.as_bytes(), NOT_AFTER + 1),
            Err(ConfigError::CertificateExpired {
                serial: CERTIFICATE_SERIAL.to_owned(),
                not_after: NOT_AFTER,
            })
        );
        assert!(keys.is_empty());
        // On its last second it is still good.
        assert_eq!(
            keys.add_certificate_at(CERTIFICATE.as_bytes(), NOT_AFTER)
                .unwrap(),
            CERTIFICATE_SERIAL
        );
    }

    #[test]
    fn a_certificate_not_yet_valid_is_accepted_when_added() {
        let keys = KeyRing::new();
        assert_eq!(
            keys.add_certificate_at(CERTIFICATE.as_bytes(), NOT_BEFORE - 86_400)
                .unwrap(),
            CERTIFICATE_SERIAL
        );
        assert!(keys.contains(CERTIFICATE_SERIAL));
    }

    #[test]
    fn the_expiry_message_gives_the_date_and_the_way_out() {
        let message = ConfigError::CertificateExpired {
            serial: "ABC".to_owned(),
            not_after: 1_609_459_200,
        }
        .to_string();
        assert!(message.contains("2021-01-01T00:00:00Z"), "{message}");
        assert!(message.contains("download the current platform certificate"));
        assert!(message.contains("public key mode"));
        assert_eq!(utc(-1), "-1 (unix seconds)");
    }

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(&[0x00, 0x3a, 0xff]), "003AFF");
    }
}
