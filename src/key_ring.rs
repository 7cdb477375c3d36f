//! The WeChat Pay keys that notifications may be signed with, chosen by `Wechatpay-Serial`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode, pem};

use crate::backend::VerifyingKey;
use crate::error::ConfigError;
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
}

/// One verification key and how it was named.
pub(crate) struct PlatformKey {
    /// The serial as configured (public key id) or read from the certificate (hex).
    pub(crate) serial: Arc<str>,
    pub(crate) verifying_key: VerifyingKey,
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
    /// # Errors
    /// [`ConfigError::PublicKeyIdFormat`] if `id` lacks the `PUB_KEY_ID_` prefix,
    /// [`ConfigError::InvalidPem`] / [`ConfigError::UnexpectedPem`] if `pem` is not a public
    /// key PEM, [`ConfigError::InvalidPublicKey`] if it is not an RSA key.
    pub fn add_public_key(&self, id: &str, pem: impl AsRef<[u8]>) -> Result<(), ConfigError> {
        let id = id.trim();
        if !id.starts_with(PUBLIC_KEY_ID_PREFIX) || id.len() == PUBLIC_KEY_ID_PREFIX.len() {
            return Err(ConfigError::PublicKeyIdFormat);
        }
        let der = decode_pem(
            pem.as_ref(),
            &["PUBLIC KEY", "RSA PUBLIC KEY"],
            "public key",
        )?;
        let verifying_key =
            VerifyingKey::from_der(&der).map_err(|_| ConfigError::InvalidPublicKey)?;
        self.insert(id.to_owned(), verifying_key);
        Ok(())
    }

    /// Adds a WeChat Pay platform certificate (平台证书, X.509 PEM) and returns its serial
    /// number as upper-case hex, the form WeChat Pay sends in `Wechatpay-Serial`.
    ///
    /// The serial is read from the certificate itself, so it cannot be mistyped. Add the
    /// *platform* certificate, not the merchant's own `apiclient_cert.pem`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidPem`] / [`ConfigError::UnexpectedPem`] if `pem` is not a
    /// certificate PEM, [`ConfigError::InvalidCertificate`] if it does not parse,
    /// [`ConfigError::InvalidPublicKey`] if its key is not RSA.
    pub fn add_certificate(&self, pem: impl AsRef<[u8]>) -> Result<String, ConfigError> {
        let der = decode_pem(pem.as_ref(), &["CERTIFICATE"], "certificate")?;
        let certificate =
            Certificate::from_der(&der).map_err(|_| ConfigError::InvalidCertificate)?;
        let tbs = certificate.tbs_certificate();
        let serial = normalize_hex_serial(&hex_upper(tbs.serial_number().as_bytes()))
            .ok_or(ConfigError::InvalidCertificate)?;
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|_| ConfigError::InvalidCertificate)?;
        let verifying_key =
            VerifyingKey::from_der(&spki).map_err(|_| ConfigError::InvalidPublicKey)?;
        self.insert(serial.clone(), verifying_key);
        Ok(serial)
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

    fn insert(&self, serial: String, verifying_key: VerifyingKey) {
        let lookup = lookup_key(&serial).unwrap_or_else(|| serial.clone());
        let key = Arc::new(PlatformKey {
            serial: Arc::from(serial),
            verifying_key,
        });
        self.write().insert(lookup, key);
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

/// Decodes one PEM block whose label is one of `labels`.
fn decode_pem(
    input: &[u8],
    labels: &[&'static str],
    expected: &'static str,
) -> Result<Vec<u8>, ConfigError> {
    let input = input.trim_ascii();
    let (label, der) = pem::decode_vec(input).map_err(|_| ConfigError::InvalidPem)?;
    if !labels.contains(&label) {
        return Err(ConfigError::UnexpectedPem {
            found: label.to_owned(),
            expected,
        });
    }
    Ok(der)
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

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(&[0x00, 0x3a, 0xff]), "003AFF");
    }
}
