//! The merchant API client from the command line: download the platform certificates,
//! query an order or a refund, and print WeChat Pay's verified answer.
//!
//! ```text
//! cargo run --example query -- --api-base URL --mchid ID --merchant-key PEM \
//!     --merchant-serial HEX --apiv3-key-file F [--public-key ID=PEM]… [--certificate PEM]… \
//!     [--timeout-ms 10000] COMMAND
//!
//! COMMAND:
//!   certificates                 one JSON line per platform certificate:
//!                                {"serial_no","effective_time","expire_time"}
//!   order --out-trade-no X       the order's verified answer, one JSON line
//!   order --transaction-id X     the same, by WeChat Pay's transaction id
//!   refund --out-refund-no X     the refund's verified answer, one JSON line
//! ```
//!
//! The key ring that verifies answers holds each `--public-key PUB_KEY_ID_…=FILE.pem` and
//! `--certificate FILE.pem`; with a public key, every request carries
//! `Wechatpay-Serial: PUB_KEY_ID_…` (the first one) so WeChat Pay signs its answers with
//! it. `certificates` works with an empty ring: the first download is trusted because it
//! decrypts with the APIv3 key, then verified with the certificates it carries.
//! `--api-base` is `https://api.mch.weixin.qq.com` in production, or a local
//! `wechatpay-sim serve` (`http://127.0.0.1:PORT`). `--timeout-ms` is the total time for
//! one command, retries included (default 10 000).
//!
//! Exit status: 0 on success; 1 when WeChat Pay refuses (stderr: HTTP status, `code`,
//! `message`, `Request-ID`, and for `SIGN_ERROR` what WeChat Pay signed), when an answer
//! could not be verified (nothing in it is printed), or when the API cannot be reached in
//! time; 2 for bad flags, unreadable files and bad keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, CommandFactory, Parser, Subcommand};
use tower_wechatpay::KeyRing;
use tower_wechatpay::client::{Client, ClientError, OrderQuery, RefundQuery};

/// Query the WeChat Pay merchant API and print its verified answers.
#[derive(Parser, Debug)]
#[command(name = "query", version)]
struct Cli {
    /// The API's base URL: https://api.mch.weixin.qq.com, or a local `wechatpay-sim serve`.
    #[arg(long, value_name = "URL")]
    api_base: String,
    /// The merchant id (商户号).
    #[arg(long, value_name = "ID")]
    mchid: String,
    /// The merchant API private key (apiclient_key.pem).
    #[arg(long, value_name = "PEM")]
    merchant_key: PathBuf,
    /// The merchant API certificate's serial (hex).
    #[arg(long, value_name = "HEX")]
    merchant_serial: String,
    /// File holding the 32-byte APIv3 key (surrounding whitespace is ignored).
    #[arg(long, value_name = "F")]
    apiv3_key_file: PathBuf,
    /// A WeChat Pay public key: its id and its PEM file (repeatable).
    #[arg(long = "public-key", value_name = "ID=PEM", value_parser = public_key_flag)]
    public_keys: Vec<(String, PathBuf)>,
    /// A platform certificate's PEM file (repeatable).
    #[arg(long = "certificate", value_name = "PEM")]
    certificates: Vec<PathBuf>,
    /// The total time for the command, retries included, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download and decrypt the platform certificates: one JSON line each.
    Certificates,
    /// Query a direct order by one of its numbers.
    #[command(group(ArgGroup::new("number").required(true).args(["out_trade_no", "transaction_id"])))]
    Order {
        /// Your order number.
        #[arg(long, value_name = "X")]
        out_trade_no: Option<String>,
        /// WeChat Pay's transaction id.
        #[arg(long, value_name = "X")]
        transaction_id: Option<String>,
    },
    /// Query a refund by your refund number.
    Refund {
        /// Your refund number.
        #[arg(long, value_name = "X")]
        out_refund_no: String,
    },
}

fn public_key_flag(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((id, file)) if !id.is_empty() && !file.is_empty() => {
            Ok((id.to_owned(), PathBuf::from(file)))
        }
        _ => Err("expected PUB_KEY_ID_…=FILE.pem".to_owned()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match client(&cli) {
        Ok(client) => client,
        Err(message) => return usage_error(message),
    };
    let result = match &cli.command {
        Command::Certificates => certificates(&client).await,
        Command::Order {
            out_trade_no,
            transaction_id,
        } => {
            let query = match (out_trade_no, transaction_id) {
                (Some(no), _) => OrderQuery::OutTradeNo(no.clone()),
                (None, Some(id)) => OrderQuery::TransactionId(id.clone()),
                (None, None) => return usage_error("give --out-trade-no or --transaction-id"),
            };
            client
                .query_order(&query)
                .await
                .map(|answer| print_line(&answer.body))
        }
        Command::Refund { out_refund_no } => client
            .query_refund_answer(&RefundQuery::new(out_refund_no))
            .await
            .map(|answer| print_line(&answer.body)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failed(&cli, &error),
    }
}

/// The client from the flags; the error names the flag or file and what is wrong.
fn client(cli: &Cli) -> Result<Client, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let keys = KeyRing::new();
    for (id, file) in &cli.public_keys {
        keys.add_public_key(id, read(file)?)
            .map_err(|e| format!("--public-key {}: {e}", file.display()))?;
    }
    for file in &cli.certificates {
        keys.add_certificate(read(file)?)
            .map_err(|e| format!("--certificate {}: {e}", file.display()))?;
    }
    let api_v3_key = read(&cli.apiv3_key_file)?;
    let mut builder = Client::builder(
        &cli.mchid,
        &cli.merchant_serial,
        read(&cli.merchant_key)?,
        keys,
    )
    .map_err(|e| format!("--mchid/--merchant-serial/--merchant-key: {e}"))?
    .base_url(&cli.api_base)
    .map_err(|e| format!("--api-base: {e}"))?
    .api_v3_key(api_v3_key.trim_ascii())
    .map_err(|e| format!("--apiv3-key-file {}: {e}", cli.apiv3_key_file.display()))?
    .timeout(Duration::from_millis(cli.timeout_ms))
    .map_err(|e| format!("--timeout-ms: {e}"))?
    .connect_timeout(Duration::from_millis(cli.timeout_ms));
    if let Some((id, _)) = cli.public_keys.first() {
        builder = builder
            .wechatpay_serial(id)
            .map_err(|e| format!("--public-key {id}: {e}"))?;
    }
    builder.build().map_err(|e| e.to_string())
}

async fn certificates(client: &Client) -> Result<(), ClientError> {
    let certificates = client.download_certificates().await?;
    if certificates.is_empty() {
        eprintln!(
            "no platform certificates: this merchant uses the WeChat Pay public key \
             (configure it with --public-key PUB_KEY_ID_…=FILE.pem)"
        );
    }
    for certificate in certificates {
        // Fields in the listing's order (a `json!` map would sort them).
        let text = |value: &str| serde_json::Value::from(value).to_string();
        println!(
            r#"{{"serial_no":{},"effective_time":{},"expire_time":{}}}"#,
            text(&certificate.serial_no),
            text(&certificate.effective_time),
            text(&certificate.expire_time)
        );
    }
    Ok(())
}

/// The verified body as received, on one line: a CR or LF in JSON can only be whitespace
/// between tokens (inside strings they are escaped), so dropping them changes nothing else.
fn print_line(body: &[u8]) {
    let line: Vec<u8> = body
        .iter()
        .copied()
        .filter(|byte| !matches!(byte, b'\n' | b'\r'))
        .collect();
    println!("{}", String::from_utf8_lossy(&line));
}

/// Says what went wrong on stderr; exit 1, or 2 when the flags themselves are wrong.
fn failed(cli: &Cli, error: &ClientError) -> ExitCode {
    match error {
        ClientError::Api(api) => {
            eprintln!(
                "error: wechat pay refused the request: HTTP status {}, code {}, message {}",
                api.status.as_u16(),
                if api.code.is_empty() {
                    "(none)"
                } else {
                    &api.code
                },
                if api.message.is_empty() {
                    "(none)"
                } else {
                    &api.message
                },
            );
            if let Some(id) = &api.request_id {
                eprintln!("request-id: {id}");
            }
            if let Some(info) = api.sign_information() {
                eprintln!("sign_information: {info}");
            }
        }
        ClientError::NotVerified(not_verified) => {
            eprintln!(
                "error: the response could not be verified, so none of it was trusted or \
                 printed: {}",
                not_verified.reason
            );
            if let Some(serial) = &not_verified.serial {
                eprintln!(
                    "Wechatpay-Serial: {serial} (pass its key with --public-key or --certificate)"
                );
            }
            if let Some(id) = &not_verified.request_id {
                eprintln!("request-id: {id}");
            }
        }
        ClientError::Timeout(_) => eprintln!(
            "error: no answer from {} within {} ms (--timeout-ms)",
            cli.api_base, cli.timeout_ms
        ),
        ClientError::Transport(_) => eprintln!("error: {} ({})", error, cli.api_base),
        ClientError::InvalidArgument { .. } | ClientError::Misconfigured(_) => {
            return usage_error(error);
        }
        _ => eprintln!("error: {error}"),
    }
    ExitCode::FAILURE
}

/// A bad command line found after parsing: clap's `error: …` and usage, exit 2.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    let _ = Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .print();
    ExitCode::from(2)
}
