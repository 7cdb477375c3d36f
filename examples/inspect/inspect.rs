//! See the WeChat Pay notifications that reach you: verifies and decrypts each one with your
//! keys, prints it as one JSON line on stdout, and acknowledges it. Logs go to stderr.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-inspect --example inspect -- \
//!     --listen 127.0.0.1:8080 --apiv3-key-file FILE \
//!     [--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… [--tolerance-secs 300] \
//!     [--now UNIX_SECONDS] [--dedupe memory|redis://HOST:PORT/DB] [--v2-key-file FILE]
//! ```
//!
//! Each accepted notification prints `{"id":…,"event_type":…,"resource":{…}}`. Refused ones
//! are answered as WeChat Pay expects and explained in the log.
//!
//! - `--v2-key-file FILE` (the 32-character APIv2 key) accepts APIv2 XML notifications on
//!   the same port and prints each as `{"version":2,"kind":"payment"|"refund","fields":{…}}`,
//!   `fields` holding every field of the XML (for refunds the outer and the decrypted ones,
//!   decrypted winning); they are acknowledged with v2's XML SUCCESS. With it the v3 key
//!   flags become optional (a merchant that holds only the v2 key).
//!
//! - `--now UNIX_SECONDS` judges `Wechatpay-Timestamp` against that fixed time instead of
//!   the system clock: replay a captured notification hours later.
//! - `--dedupe memory` (this process) or `--dedupe redis://HOST:PORT/DB` (shared by several
//!   instances) puts the dedupe guard in front of the printer: a copy of a notification
//!   already printed (same business event, see `tower_wechatpay::dedupe::default_key`) is
//!   acknowledged (204) without being printed again.
//!
//! Every flag takes `--flag value` or `--flag=value`; `--help` lists them. A bad command
//! line exits with status 2.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Router;
use clap::Parser;
use example_support::KeyArgs;
use tower_wechatpay::dedupe::{Dedupe, InMemoryStore, RedisStore};
use tower_wechatpay::{Handled, Notification, Notified, Retry};

/// Verify, decrypt and print the WeChat Pay notifications that reach you, one JSON line each.
#[derive(Parser, Debug)]
#[command(name = "inspect", args_override_self = true)]
struct Cli {
    /// The address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    #[command(flatten)]
    keys: KeyArgs,
    /// Judge `Wechatpay-Timestamp` against this fixed Unix time instead of the system clock
    /// (replay a captured notification later).
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Acknowledge copies of an already printed notification without printing them again:
    /// `memory` (this process) or a Redis URL `redis://HOST:PORT/DB` (shared).
    #[arg(long, value_name = "memory|redis://HOST:PORT/DB", value_parser = dedupe_flag)]
    dedupe: Option<DedupeFlag>,
    /// Accept APIv2 (XML) notifications too, with the 32-character APIv2 key in FILE.
    #[arg(long, value_name = "FILE")]
    v2_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum DedupeFlag {
    Memory,
    Redis(String),
}

fn dedupe_flag(value: &str) -> Result<DedupeFlag, String> {
    if value == "memory" {
        Ok(DedupeFlag::Memory)
    } else if ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| value.starts_with(scheme))
    {
        Ok(DedupeFlag::Redis(value.to_owned()))
    } else {
        Err("expected `memory` or a Redis URL like redis://127.0.0.1:6379/0".to_owned())
    }
}

async fn print(Notified(notification): Notified<Notification>) -> Result<Handled, Retry> {
    let line = if notification.version() == 2 {
        let kind = match notification.original_type() {
            Some("refund") => "refund",
            _ => "payment",
        };
        serde_json::json!({
            "version": 2,
            "kind": kind,
            "fields": notification.resource_value()?,
        })
    } else {
        serde_json::json!({
            "id": notification.id(),
            "event_type": notification.event_type(),
            "resource": notification.resource_value()?,
        })
    };
    let mut stdout = std::io::stdout().lock();
    // Acknowledge only what was really printed: a failed write makes WeChat Pay retry.
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(Handled::Done)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    example_support::init_logs();
    let mut layer = match cli.keys.layer_with_v2(cli.v2_key_file.as_deref()) {
        Ok(layer) => layer,
        Err(message) => return example_support::usage_error::<Cli>(message),
    };
    if let Some(now) = cli.now {
        layer = layer.clock(move || now);
    }
    let dedupe = match cli.dedupe {
        None => None,
        Some(DedupeFlag::Memory) => Some(Dedupe::new(InMemoryStore::new())),
        Some(DedupeFlag::Redis(url)) => match RedisStore::connect(&url).await {
            Ok(store) => Some(Dedupe::new(store)),
            Err(error) => {
                eprintln!("inspect: --dedupe {url}: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Some(dedupe) = dedupe {
        layer = match layer.dedupe(dedupe) {
            Ok(layer) => layer,
            Err(error) => {
                eprintln!("inspect: --dedupe: {error}");
                return ExitCode::FAILURE;
            }
        };
    }
    let app = Router::new().fallback(print).layer(layer);
    example_support::serve("inspect", cli.listen, app).await
}
