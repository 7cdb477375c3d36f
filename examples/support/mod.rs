//! What the runnable examples share: flags, the layer built from key files, logging and
//! serving. Not an example itself (cargo only runs `examples/*.rs`).

#![allow(unreachable_pub, dead_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tower_wechatpay::WechatPayLayer;

/// `--flag value` or `--flag=value` pairs; every flag takes a value and may repeat.
pub struct Flags {
    values: Vec<(String, String)>,
}

impl Flags {
    /// Parses `args`, accepting only `known` flags.
    pub fn parse(args: impl IntoIterator<Item = String>, known: &[&str]) -> Result<Self, String> {
        let mut values = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err("help".to_owned());
            }
            let (flag, value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg, None),
            };
            if !known.contains(&flag.as_str()) {
                return Err(format!("unknown flag {flag:?}"));
            }
            let value = match value.or_else(|| args.next()) {
                Some(value) => value,
                None => return Err(format!("{flag} needs a value")),
            };
            values.push((flag, value));
        }
        Ok(Self { values })
    }

    /// The last value of `flag`.
    pub fn one(&self, flag: &str) -> Option<&str> {
        self.all(flag).last()
    }

    /// Every value of a repeatable `flag`.
    pub fn all<'a>(&'a self, flag: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let flag = flag.to_owned();
        self.values
            .iter()
            .filter(move |(name, _)| *name == flag)
            .map(|(_, value)| value.as_str())
    }

    /// The value of a flag that must be given.
    pub fn required(&self, flag: &str) -> Result<&str, String> {
        self.one(flag).ok_or_else(|| format!("{flag} is required"))
    }

    /// `--listen ADDR`.
    pub fn listen(&self) -> Result<SocketAddr, String> {
        let text = self.required("--listen")?;
        text.parse()
            .map_err(|_| format!("--listen: {text:?} is not an address like 127.0.0.1:8080"))
    }
}

/// The key flags every example takes.
pub const KEY_FLAGS: [&str; 4] = [
    "--apiv3-key-file",
    "--public-key",
    "--certificate",
    "--tolerance-secs",
];

/// The layer from `--apiv3-key-file`, `--public-key ID=FILE`…, `--certificate FILE`… and
/// `--tolerance-secs`.
pub fn layer(flags: &Flags) -> Result<WechatPayLayer, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let key_file = flags.required("--apiv3-key-file")?;
    let tolerance = match flags.one("--tolerance-secs") {
        Some(text) => text
            .parse()
            .map_err(|_| format!("--tolerance-secs: {text:?} is not a number of seconds"))?,
        None => 300,
    };
    let mut layer = WechatPayLayer::new(read(key_file)?.trim())
        .map_err(|e| format!("{key_file}: {e}"))?
        .timestamp_tolerance(Duration::from_secs(tolerance))
        .map_err(|e| format!("--tolerance-secs: {e}"))?;
    for pair in flags.all("--public-key") {
        let (id, file) = pair
            .split_once('=')
            .ok_or_else(|| format!("--public-key takes PUB_KEY_ID_…=FILE.pem, got {pair:?}"))?;
        layer = layer
            .add_public_key(id, read(file)?)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    for file in flags.all("--certificate") {
        layer = layer
            .add_certificate(read(file)?)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    if layer.keys().is_empty() {
        return Err("give at least one --public-key or --certificate".to_owned());
    }
    Ok(layer)
}

/// Logs to stderr, `RUST_LOG` or info.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// A bad command line: the message and usage on stderr, exit code 2.
pub fn usage_error(program: &str, message: &str, usage: &str) -> ExitCode {
    if message != "help" {
        eprintln!("{program}: {message}");
    }
    eprintln!("{usage}");
    ExitCode::from(2)
}

/// Binds, prints `listening on ADDR` to stderr, and serves HTTP/1.1 until the process ends.
///
/// Not `axum::serve`: its HTTP/1-or-2 connection builder (hyper-util 0.1.21's `auto`)
/// keeps about 8 KiB for good of every connection a client abandons in the middle of a
/// body (measured with examples/inflight; hyper's HTTP/1 builder, used here, keeps none).
/// WeChat Pay notifies over HTTP/1.1.
pub async fn serve(program: &str, listen: SocketAddr, app: axum::Router) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{program}: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("listening on {addr}"),
        Err(_) => eprintln!("listening on {listen}"),
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or a connection reset before accept: keep serving.
            Err(error) => {
                eprintln!("{program}: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            // A connection that fails (a client gone mid-request) ends only itself.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
