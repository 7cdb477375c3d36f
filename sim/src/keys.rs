//! The test keys: made fresh by `wechatpay-sim keys`, read back by every other command.
//!
//! One directory holds both sides, as a developer needs them: what the receiver configures
//! (the APIv3 key, the WeChat Pay public key and its id, the platform certificate), what the
//! merchant API client signs with (the merchant key and its certificate serial), and what
//! only the simulator holds (the platform key and the public key's private half).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::RngExt;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use tower_wechatpay::test_util::TestSigner;
use tower_wechatpay::{KeyRing, WechatPayLayer};

use crate::error::{SimError, context};

/// The files of a key directory, by role.
pub mod file {
    /// The APIv3 key: 32 ASCII characters.
    pub const APIV3_KEY: &str = "apiv3_key.txt";
    /// The WeChat Pay public key (SPKI PEM), what a public-key-mode receiver configures.
    pub const PUBLIC_KEY: &str = "wechatpay_public_key.pem";
    /// Its id, `PUB_KEY_ID_` + digits.
    pub const PUBLIC_KEY_ID: &str = "wechatpay_public_key_id.txt";
    /// The private half of the WeChat Pay public key: the simulator signs with it. WeChat
    /// Pay never hands this out; it exists only because this is a simulator.
    pub const PUBLIC_KEY_PRIVATE: &str = "wechatpay_private_key.pem";
    /// The platform certificate (X.509 PEM), what a certificate-mode receiver configures.
    pub const PLATFORM_CERT: &str = "platform_cert.pem";
    /// The platform certificate's private key (PKCS#8): the simulator signs with it.
    pub const PLATFORM_KEY: &str = "platform_key.pem";
    /// The merchant API private key (PKCS#8), `apiclient_key.pem` in real life.
    pub const MERCHANT_KEY: &str = "merchant_key.pem";
    /// The merchant API certificate's serial (40 upper-case hex digits).
    pub const MERCHANT_SERIAL: &str = "merchant_cert_serial.txt";
    /// The merchant API public key (SPKI PEM): the simulated API verifies requests with it.
    pub const MERCHANT_PUBLIC_KEY: &str = "merchant_public_key.pem";
    /// The merchant id (商户号).
    pub const MCHID: &str = "mchid.txt";
    /// The APIv2 key (32 alphanumerics), for APIv2 XML notifications (`send --v2`,
    /// `audit --v2`). Key directories made before it existed lack it.
    pub const APIV2_KEY: &str = "apiv2_key.txt";

    /// Every file `wechatpay-sim keys` writes.
    pub const ALL: [&str; 12] = [
        APIV3_KEY,
        PUBLIC_KEY,
        PUBLIC_KEY_ID,
        PUBLIC_KEY_PRIVATE,
        PLATFORM_CERT,
        PLATFORM_KEY,
        MERCHANT_KEY,
        MERCHANT_SERIAL,
        MERCHANT_PUBLIC_KEY,
        MCHID,
        APIV2_KEY,
        super::README_FILE,
    ];
}

const README_FILE: &str = "README.txt";

/// Which WeChat Pay key signs: the public key (`PUB_KEY_ID_…`) or the platform certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The WeChat Pay public key (微信支付公钥), the default since 2024.
    PublicKey,
    /// The platform certificate (平台证书).
    Certificate,
}

/// A platform certificate and its key, as WeChat Pay holds them.
#[derive(Clone)]
pub struct PlatformCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Its serial, 40 upper-case hex digits, as `Wechatpay-Serial` names it.
    pub serial: String,
}

impl std::fmt::Debug for PlatformCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformCertificate")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A key directory, read.
#[derive(Clone)]
pub struct Keys {
    /// Where the files are.
    pub dir: PathBuf,
    /// The merchant id.
    pub mchid: String,
    /// The APIv3 key.
    pub api_v3_key: String,
    /// The WeChat Pay public key id.
    pub public_key_id: String,
    /// The WeChat Pay public key, SPKI PEM.
    pub public_key_pem: String,
    /// Its private half, PKCS#8 PEM.
    pub public_key_private_pem: String,
    /// The platform certificate.
    pub platform: PlatformCertificate,
    /// The merchant API private key, PKCS#8 PEM.
    pub merchant_key_pem: String,
    /// The merchant API certificate serial.
    pub merchant_serial: String,
    /// The merchant API public key, SPKI PEM.
    pub merchant_public_key_pem: String,
    /// The APIv2 key, when the directory has one ([`file::APIV2_KEY`]).
    pub api_v2_key: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("dir", &self.dir)
            .field("mchid", &self.mchid)
            .field("public_key_id", &self.public_key_id)
            .field("platform_serial", &self.platform.serial)
            .field("merchant_serial", &self.merchant_serial)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Makes a fresh set (RSA 2048 keys, a certificate valid from yesterday for five years).
    pub fn generate(dir: &Path) -> Result<Self, SimError> {
        let (public_key_private_pem, public_key_pem) = rsa_key_pair()?;
        let (merchant_key_pem, merchant_public_key_pem) = rsa_key_pair()?;
        let mut rng = rand::rng();
        Ok(Self {
            dir: dir.to_owned(),
            mchid: format!("19{:08}", rng.random_range(0..100_000_000u32)),
            api_v3_key: random_alphanumeric(32),
            public_key_id: format!("PUB_KEY_ID_0114{}", random_digits(30)),
            public_key_pem,
            public_key_private_pem,
            platform: PlatformCertificate::generate()?,
            merchant_key_pem,
            merchant_serial: random_serial(),
            merchant_public_key_pem,
            api_v2_key: Some(random_alphanumeric(32)),
        })
    }

    /// Writes every file into `dir` (created if missing). Refuses to overwrite: if any of
    /// the files exists, nothing is written.
    pub fn write(&self) -> Result<(), SimError> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(context(dir.display()))?;
        let existing: Vec<_> = file::ALL
            .iter()
            .filter(|name| dir.join(name).exists())
            .copied()
            .collect();
        if !existing.is_empty() {
            return Err(SimError(format!(
                "{} already holds {}: refusing to overwrite keys (choose an empty directory)",
                dir.display(),
                existing.join(", ")
            )));
        }
        let contents = [
            (file::APIV3_KEY, format!("{}\n", self.api_v3_key)),
            (file::PUBLIC_KEY, self.public_key_pem.clone()),
            (file::PUBLIC_KEY_ID, format!("{}\n", self.public_key_id)),
            (
                file::PUBLIC_KEY_PRIVATE,
                self.public_key_private_pem.clone(),
            ),
            (file::PLATFORM_CERT, self.platform.cert_pem.clone()),
            (file::PLATFORM_KEY, self.platform.key_pem.clone()),
            (file::MERCHANT_KEY, self.merchant_key_pem.clone()),
            (file::MERCHANT_SERIAL, format!("{}\n", self.merchant_serial)),
            (
                file::MERCHANT_PUBLIC_KEY,
                self.merchant_public_key_pem.clone(),
            ),
            (file::MCHID, format!("{}\n", self.mchid)),
            (README_FILE, readme()),
        ];
        let v2 = self
            .api_v2_key
            .as_ref()
            .map(|key| (file::APIV2_KEY, format!("{key}\n")));
        for (name, text) in contents.into_iter().chain(v2) {
            let path = dir.join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(context(path.display()))?;
            std::io::Write::write_all(&mut file, text.as_bytes())
                .map_err(context(path.display()))?;
        }
        Ok(())
    }

    /// Reads a key directory written by [`Keys::write`]. The error names the file.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        if !dir.is_dir() {
            return Err(SimError(format!(
                "--keys {}: not a readable directory (make one with `wechatpay-sim keys --out DIR`)",
                dir.display()
            )));
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(context(format!(
                "{} (made by `wechatpay-sim keys --out DIR`)",
                path.display()
            )))
        };
        let platform_cert_pem = read(file::PLATFORM_CERT)?;
        let platform_serial = KeyRing::new()
            .add_certificate(&platform_cert_pem)
            .map_err(context(dir.join(file::PLATFORM_CERT).display()))?;
        let keys = Self {
            dir: dir.to_owned(),
            mchid: read(file::MCHID)?.trim().to_owned(),
            api_v3_key: read(file::APIV3_KEY)?.trim().to_owned(),
            public_key_id: read(file::PUBLIC_KEY_ID)?.trim().to_owned(),
            public_key_pem: read(file::PUBLIC_KEY)?,
            public_key_private_pem: read(file::PUBLIC_KEY_PRIVATE)?,
            platform: PlatformCertificate {
                cert_pem: platform_cert_pem,
                key_pem: read(file::PLATFORM_KEY)?,
                serial: platform_serial,
            },
            merchant_key_pem: read(file::MERCHANT_KEY)?,
            merchant_serial: read(file::MERCHANT_SERIAL)?.trim().to_owned(),
            merchant_public_key_pem: read(file::MERCHANT_PUBLIC_KEY)?,
            api_v2_key: if dir.join(file::APIV2_KEY).exists() {
                Some(read(file::APIV2_KEY)?.trim().to_owned())
            } else {
                None
            },
        };
        // Fail here, with the file named, rather than halfway through a command.
        keys.signer(Mode::PublicKey)?;
        keys.signer(Mode::Certificate)?;
        let _ = keys.receiver_layer()?;
        Ok(keys)
    }

    /// Signs and encrypts as WeChat Pay does in `mode`.
    pub fn signer(&self, mode: Mode) -> Result<TestSigner, SimError> {
        match mode {
            Mode::PublicKey => TestSigner::new(
                &self.public_key_private_pem,
                &self.public_key_id,
                &self.api_v3_key,
            )
            .map_err(context(self.dir.join(file::PUBLIC_KEY_PRIVATE).display())),
            Mode::Certificate => self.platform.signer(&self.api_v3_key),
        }
    }

    /// The APIv2 key, or the error `--v2` reports for a directory made before
    /// `wechatpay-sim keys` wrote one.
    pub fn v2_key(&self) -> Result<&str, SimError> {
        self.api_v2_key.as_deref().ok_or_else(|| {
            SimError(format!(
                "--v2: {} has no {}: make fresh keys with `wechatpay-sim keys --out NEWDIR` \
                 (or write a 32-character APIv2 key into {})",
                self.dir.display(),
                file::APIV2_KEY,
                self.dir.join(file::APIV2_KEY).display()
            ))
        })
    }

    /// A layer configured as a correct receiver of these keys is (both key kinds, and
    /// APIv2 XML notifications when the directory has an APIv2 key).
    pub fn receiver_layer(&self) -> Result<WechatPayLayer, SimError> {
        let layer = WechatPayLayer::new(&self.api_v3_key)
            .map_err(context(self.dir.join(file::APIV3_KEY).display()))?
            .add_public_key(&self.public_key_id, &self.public_key_pem)
            .map_err(context(self.dir.join(file::PUBLIC_KEY).display()))?
            .add_certificate(&self.platform.cert_pem)
            .map_err(context(self.dir.join(file::PLATFORM_CERT).display()))?;
        match &self.api_v2_key {
            Some(key) => layer
                .v2_key(key)
                .map_err(context(self.dir.join(file::APIV2_KEY).display())),
            None => Ok(layer),
        }
    }

    /// What `wechatpay-sim keys` prints: how to configure a receiver with these keys.
    pub fn receiver_configuration(&self) -> String {
        let dir = self.dir.display();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Test keys written to {dir} (merchant id {}).",
            self.mchid
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Receiver (tower-wechatpay):");
        let _ = writeln!(
            out,
            "    let layer = WechatPayLayer::new(std::fs::read_to_string(\"{dir}/{}\")?.trim())?",
            file::APIV3_KEY
        );
        let _ = writeln!(
            out,
            "        .add_public_key(\"{}\", std::fs::read(\"{dir}/{}\")?)?",
            self.public_key_id,
            file::PUBLIC_KEY
        );
        let _ = writeln!(
            out,
            "        .add_certificate(std::fs::read(\"{dir}/{}\")?)?; // serial {}",
            file::PLATFORM_CERT,
            self.platform.serial
        );
        if self.api_v2_key.is_some() {
            let _ = writeln!(
                out,
                "    let layer = layer.v2_key(std::fs::read_to_string(\"{dir}/{}\")?)?; // APIv2 XML notifications (feature \"v2\")",
                file::APIV2_KEY
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "inspect flags:");
        let _ = writeln!(
            out,
            "    --apiv3-key-file {dir}/{} --public-key {}={dir}/{} --certificate {dir}/{}",
            file::APIV3_KEY,
            self.public_key_id,
            file::PUBLIC_KEY,
            file::PLATFORM_CERT
        );
        if self.api_v2_key.is_some() {
            let _ = writeln!(out, "    --v2-key-file {dir}/{}", file::APIV2_KEY);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Then: wechatpay-sim send --keys {dir} --to URL");
        let _ = writeln!(out, "      wechatpay-sim audit --keys {dir} --to URL");
        if self.api_v2_key.is_some() {
            let _ = writeln!(
                out,
                "      wechatpay-sim send --v2 --keys {dir} --to URL   (APIv2 XML)"
            );
            let _ = writeln!(out, "      wechatpay-sim audit --v2 --keys {dir} --to URL");
        }
        out
    }
}

impl PlatformCertificate {
    /// A fresh platform certificate: RSA 2048, a random 40-hex-digit serial, valid from
    /// yesterday for five years.
    pub fn generate() -> Result<Self, SimError> {
        let now = time::OffsetDateTime::now_utc();
        Self::generate_valid_between(
            now - time::Duration::days(1),
            now + time::Duration::days(5 * 365),
        )
    }

    /// A fresh platform certificate valid from `not_before` to `not_after` (whole seconds):
    /// for certificates not valid yet, or about to expire.
    pub fn generate_valid_between(
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Self, SimError> {
        let key_pair = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .map_err(context("generating an RSA key"))?;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            "Tenpay.com sign (wechatpay-sim, test only)",
        );
        name.push(DnType::OrganizationName, "wechatpay-sim");
        params.distinguished_name = name;
        let serial_bytes = hex_bytes(&serial)?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial_bytes));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key_pair)
            .map_err(context("making the platform certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
            serial,
        })
    }

    /// Signs and encrypts as WeChat Pay does under this certificate.
    pub fn signer(&self, api_v3_key: &str) -> Result<TestSigner, SimError> {
        TestSigner::new(&self.key_pem, &self.serial, api_v3_key)
            .map_err(context("the platform certificate's key"))
    }
}

/// A fresh RSA 2048 key: (PKCS#8 PEM, SPKI PEM).
fn rsa_key_pair() -> Result<(String, String), SimError> {
    let key_pair = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(context("generating an RSA key"))?;
    Ok((key_pair.serialize_pem(), key_pair.public_key_pem()))
}

/// 40 upper-case hex digits whose first byte is below 0x80, so the DER integer needs no
/// sign byte and the serial reads back as exactly these 40 digits.
pub fn random_serial() -> String {
    let mut rng = rand::rng();
    let first: u8 = rng.random_range(0x10..0x80);
    let rest: [u8; 19] = rng.random();
    std::iter::once(first)
        .chain(rest)
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

fn hex_bytes(hex: &str) -> Result<Vec<u8>, SimError> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| SimError(format!("not hex: {hex}")))
        })
        .collect()
}

/// `len` random characters of `[0-9A-Za-z]`.
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `len` random decimal digits.
pub fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn readme() -> String {
    format!(
        "Test keys made by wechatpay-sim. Never use them with real money.\n\n\
         Receiver side (configure these): {}, {} + {}, {}.\n\
         Merchant API client side: {} (PKCS#8), {}, {}.\n\
         Simulator only (WeChat Pay's private keys): {}, {}.\n\
         APIv2 (XML notifications, `send --v2`, `audit --v2`): {} (receiver and simulator).\n",
        file::APIV3_KEY,
        file::PUBLIC_KEY,
        file::PUBLIC_KEY_ID,
        file::PLATFORM_CERT,
        file::MERCHANT_KEY,
        file::MERCHANT_SERIAL,
        file::MCHID,
        file::PLATFORM_KEY,
        file::PUBLIC_KEY_PRIVATE,
        file::APIV2_KEY,
    )
}
