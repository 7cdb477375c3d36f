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

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::{Extension, Router};
use http::StatusCode;
use tower_wechatpay::{Notification, WechatPayLayer};

const USAGE: &str = "usage: inspect --listen ADDR --apiv3-key-file FILE \
[--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… [--tolerance-secs 300]";

struct Options {
    listen: SocketAddr,
    apiv3_key_file: String,
    public_keys: Vec<(String, String)>,
    certificates: Vec<String>,
    tolerance_secs: u64,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut listen = None;
    let mut apiv3_key_file = None;
    let mut public_keys = Vec::new();
    let mut certificates = Vec::new();
    let mut tolerance_secs = 300;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (flag, None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let text = value()?;
                listen = Some(text.parse().map_err(|_| {
                    format!("--listen: {text:?} is not an address like 127.0.0.1:8080")
                })?);
            }
            "--apiv3-key-file" => apiv3_key_file = Some(value()?),
            "--public-key" => {
                let text = value()?;
                let (id, file) = text.split_once('=').ok_or_else(|| {
                    format!("--public-key takes PUB_KEY_ID_…=FILE.pem, got {text:?}")
                })?;
                public_keys.push((id.to_owned(), file.to_owned()));
            }
            "--certificate" => certificates.push(value()?),
            "--tolerance-secs" => {
                let text = value()?;
                tolerance_secs = text.parse().map_err(|_| {
                    format!("--tolerance-secs: {text:?} is not a number of seconds")
                })?;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    let apiv3_key_file = apiv3_key_file.ok_or("--apiv3-key-file is required")?;
    if public_keys.is_empty() && certificates.is_empty() {
        return Err("give at least one --public-key or --certificate".to_owned());
    }
    Ok(Options {
        listen,
        apiv3_key_file,
        public_keys,
        certificates,
        tolerance_secs,
    })
}

fn layer(options: &Options) -> Result<WechatPayLayer, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let apiv3_key = read(&options.apiv3_key_file)?;
    let mut layer = WechatPayLayer::new(apiv3_key.trim())
        .map_err(|e| format!("{}: {e}", options.apiv3_key_file))?
        .timestamp_tolerance(Duration::from_secs(options.tolerance_secs));
    for (id, file) in &options.public_keys {
        layer = layer
            .add_public_key(id, read(file)?)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    for file in &options.certificates {
        layer = layer
            .add_certificate(read(file)?)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    Ok(layer)
}

async fn print(Extension(notification): Extension<Notification>) -> StatusCode {
    let Ok(resource) = notification.resource_value() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let line = serde_json::json!({
        "id": notification.id(),
        "event_type": notification.event_type(),
        "resource": resource,
    });
    let mut stdout = std::io::stdout().lock();
    // Acknowledge only what was really printed: a failed write makes WeChat Pay retry.
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("inspect: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let layer = match layer(&options) {
        Ok(layer) => layer,
        Err(message) => {
            eprintln!("inspect: {message}");
            return ExitCode::from(2);
        }
    };
    let app = Router::new().fallback(print).layer(layer);
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("inspect: cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("listening on {addr}"),
        Err(_) => eprintln!("listening on {}", options.listen),
    }
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("inspect: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
