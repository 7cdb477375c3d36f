//! The command line (an exact contract: independent checks drive it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::deliver::Schedule;
use crate::keys::Mode;

/// A local WeChat Pay for testing notification endpoints without paying.
#[derive(Debug, Parser)]
#[command(name = "wechatpay-sim", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make fresh test keys in DIR and print how to configure a receiver with them.
    Keys(KeysArgs),
    /// Deliver one notification as WeChat Pay does, retrying until it is acknowledged.
    Send(SendArgs),
    /// Grade a receiver: what it must acknowledge, and what it must never acknowledge.
    Audit(AuditArgs),
    /// Run a local merchant API (certificates, order and refund queries, paid orders).
    Serve(ServeArgs),
    /// Explain why a captured notification does (or does not) verify.
    Diagnose(DiagnoseArgs),
}

/// `keys --out DIR`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The directory to write (created if missing; existing key files are never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `send --keys DIR --to URL …`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The key directory made by `wechatpay-sim keys`.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The notification URL (http://…).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The event type.
    #[arg(long, value_name = "TYPE", default_value = "TRANSACTION.SUCCESS")]
    pub event: String,
    /// The decrypted resource as a JSON file (default: a realistic payment, or a refund for
    /// REFUND.* events).
    #[arg(long, value_name = "FILE.json")]
    pub resource: Option<PathBuf>,
    /// Edit a field of the resource: `amount.total=1` (repeatable; values are JSON when
    /// they parse, else strings).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Which WeChat Pay key signs.
    #[arg(long, value_enum, default_value = "public-key")]
    pub mode: Mode,
    /// When to retry: WeChat Pay's schedule, the same 1000 times faster, or not at all.
    #[arg(long, value_enum, default_value = "wechat")]
    pub schedule: Schedule,
    /// Concurrent copies of the first attempt.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub copies: u16,
    /// How long each attempt waits for the answer.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Send an APIv2 XML notification (a payment signed with the key directory's
    /// apiv2_key.txt, or for REFUND.* a refund with an encrypted req_info); `--set` edits
    /// its top-level fields (a refund's decrypted fields). Acknowledged only by a 2xx with
    /// an XML return_code SUCCESS body.
    #[arg(long, conflicts_with_all = ["resource", "mode"])]
    pub v2: bool,
    /// With --v2, how the payment's sign is made.
    #[arg(long, value_enum, default_value = "md5", requires = "v2")]
    pub sign_type: crate::v2::SignType,
    /// With --v2, leave the sign_type field out of the payment (WeChat does for HMAC-SHA256
    /// orders too; the length of sign tells the algorithm).
    #[arg(long, requires = "v2")]
    pub no_sign_type: bool,
}

/// `audit --keys DIR --to URL [--json]`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The key directory made by `wechatpay-sim keys`.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The notification URL (http://…).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Which WeChat Pay key signs the genuine notifications.
    #[arg(long, value_enum, default_value = "public-key")]
    pub mode: Mode,
    /// Audit APIv2 XML notifications instead (the key directory's apiv2_key.txt): the v2
    /// checks replace the v3 ones.
    #[arg(long, conflicts_with = "mode")]
    pub v2: bool,
}

/// Which keys the local merchant API signs its answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeMode {
    /// The WeChat Pay public key; `/v3/certificates` answers as for a public-key-only merchant.
    PublicKey,
    /// The platform certificate.
    Certificate,
    /// Both: the key the request's `Wechatpay-Serial` names, else the platform certificate.
    Both,
}

/// `serve --keys DIR --listen ADDR …`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The key directory made by `wechatpay-sim keys`.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Where to listen, e.g. 127.0.0.1:8900.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Which keys sign the answers.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: ServeMode,
    /// Add a new platform certificate after SECS and sign with it from then on.
    #[arg(long, value_name = "SECS")]
    pub rotate_after: Option<u64>,
    /// In public-key mode, which of WeChat Pay's answers `GET /v3/certificates` gives.
    #[arg(long, value_enum, default_value = "not-found")]
    pub certificates_answer: CertificatesAnswer,
}

/// What `GET /v3/certificates` answers a merchant that only has the WeChat Pay public key
/// (all three are seen in the wild).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertificatesAnswer {
    /// 404 `RESOURCE_NOT_EXISTS` "无可用的平台证书…", signed with the public key.
    NotFound,
    /// 500 `SYSTEM_ERROR` "系统繁忙，请稍后重试", unsigned.
    SystemError,
    /// 200 `{"data":[]}`, signed with the public key.
    Empty,
}

/// `diagnose --capture FILE --apiv3-key-file F …`.
#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// The captured request: raw HTTP, or JSON with `headers` and `body`.
    #[arg(long, value_name = "FILE")]
    pub capture: PathBuf,
    /// The receiver's APIv3 key file.
    #[arg(long, value_name = "FILE")]
    pub apiv3_key_file: PathBuf,
    /// A WeChat Pay public key the receiver holds: its id and PEM file (repeatable).
    #[arg(long = "public-key", value_name = "PUB_KEY_ID_…=FILE.pem", value_parser = public_key_flag)]
    pub public_keys: Vec<(String, PathBuf)>,
    /// A platform certificate the receiver holds (repeatable).
    #[arg(long = "certificate", value_name = "FILE.pem")]
    pub certificates: Vec<PathBuf>,
    /// Skip the timestamp window (a capture replayed later).
    #[arg(long)]
    pub ignore_time: bool,
}

fn public_key_flag(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((id, file)) if !id.is_empty() && !file.is_empty() => {
            Ok((id.to_owned(), PathBuf::from(file)))
        }
        _ => Err("expected PUB_KEY_ID_…=FILE.pem".to_owned()),
    }
}
