//! See the WeChat Pay notifications that reach you: verifies and decrypts each one with your
//! keys, prints it as one JSON line on stdout, and acknowledges it. Logs go to stderr.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-inspect --example inspect -- \
//!     --listen 127.0.0.1:8080 --apiv3-key-file FILE \
//!     [--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… [--tolerance-secs 300] \
//!     [--now UNIX_SECONDS] [--dedupe memory|redis://HOST:PORT/DB]
//! ```
//!
//! Each accepted notification prints `{"id":…,"event_type":…,"resource":{…}}`. Refused ones
//! are answered as WeChat Pay expects and explained in the log.
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
    let line = serde_json::json!({
        "id": notification.id(),
        "event_type": notification.event_type(),
        "resource": notification.resource_value()?,
    });
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
    let mut layer = match cli.keys.layer() {
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
