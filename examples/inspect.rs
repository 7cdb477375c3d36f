//! See the WeChat Pay notifications that reach you: verifies and decrypts each one with your
//! keys, prints it as one JSON line on stdout, and acknowledges it. Logs go to stderr.
//!
//! ```text
//! cargo run --release --example inspect -- --listen 127.0.0.1:8080 --apiv3-key-file FILE \
//!     [--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… [--tolerance-secs 300]
//! ```
//!
//! Each accepted notification prints `{"id":…,"event_type":…,"resource":{…}}`. Refused ones
//! are answered as WeChat Pay expects and explained in the log.

mod support;

use std::io::Write;
use std::process::ExitCode;

use axum::Router;
use tower_wechatpay::{Handled, Notification, Notified, Retry};

const USAGE: &str = "usage: inspect --listen ADDR --apiv3-key-file FILE \
[--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… [--tolerance-secs 300]";

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
    support::init_logs();
    let mut known = vec!["--listen"];
    known.extend(support::KEY_FLAGS);
    let parsed = support::Flags::parse(std::env::args().skip(1), &known)
        .and_then(|flags| Ok((flags.listen()?, support::layer(&flags)?)));
    let (listen, layer) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return support::usage_error("inspect", &message, USAGE),
    };
    let app = Router::new().fallback(print).layer(layer);
    support::serve("inspect", listen, app).await
}
