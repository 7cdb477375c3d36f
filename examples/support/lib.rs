//! What the command-line examples share: the key flags and the layer built from them,
//! logging, usage errors and serving; with the `harness` feature, what their tests share
//! (running an example binary and driving it over HTTP, a throwaway Redis; with `redis`
//! too, stores and guards on it).

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tower_wechatpay::WechatPayLayer;

#[cfg(feature = "harness")]
pub mod harness;

/// The key flags every server example takes: `--apiv3-key-file FILE`, repeatable
/// `--public-key PUB_KEY_ID_…=FILE.pem` and `--certificate FILE.pem`, `--tolerance-secs`.
#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// File holding the 32-byte APIv3 key (surrounding whitespace is ignored). Required,
    /// unless a command takes an APIv2 key instead.
    #[arg(long, value_name = "FILE")]
    pub apiv3_key_file: Option<PathBuf>,
    /// A WeChat Pay public key: its id and its PEM file (repeatable).
    #[arg(
        long = "public-key",
        value_name = "PUB_KEY_ID_…=FILE.pem",
        value_parser = public_key_flag
    )]
    pub public_keys: Vec<(String, PathBuf)>,
    /// A platform certificate's PEM file (repeatable).
    #[arg(long = "certificate", value_name = "FILE.pem")]
    pub certificates: Vec<PathBuf>,
    /// How far `Wechatpay-Timestamp` may be from now, both ways.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub tolerance_secs: u64,
}

fn public_key_flag(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((id, file)) if !id.is_empty() && !file.is_empty() => {
            Ok((id.to_owned(), PathBuf::from(file)))
        }
        _ => Err("expected PUB_KEY_ID_…=FILE.pem".to_owned()),
    }
}

impl KeyArgs {
    /// The layer from the key files, plus an APIv2 key file (feature `v2`): with it, XML
    /// notifications are accepted too, and the v3 keys become optional (a v2-only
    /// merchant). The error names the file and what is wrong with it.
    #[cfg(feature = "v2")]
    pub fn layer_with_v2(&self, v2_key_file: Option<&Path>) -> Result<WechatPayLayer, String> {
        let Some(v2_file) = v2_key_file else {
            return self.layer();
        };
        let v2_key =
            std::fs::read_to_string(v2_file).map_err(|e| format!("{}: {e}", v2_file.display()))?;
        let v3_given = self.apiv3_key_file.is_some()
            || !self.public_keys.is_empty()
            || !self.certificates.is_empty();
        let layer = if v3_given {
            self.layer_unchecked()?
        } else {
            WechatPayLayer::v2_only(v2_key.trim())
                .map_err(|e| format!("{}: {e}", v2_file.display()))?
                .timestamp_tolerance(Duration::from_secs(self.tolerance_secs))
                .map_err(|e| format!("--tolerance-secs: {e}"))?
        };
        layer
            .v2_key(v2_key.trim())
            .map_err(|e| format!("{}: {e}", v2_file.display()))
    }

    /// The layer from the key files. The error names the file and what is wrong with it.
    pub fn layer(&self) -> Result<WechatPayLayer, String> {
        let layer = self.layer_unchecked()?;
        if layer.keys().is_empty() {
            return Err("give at least one --public-key or --certificate".to_owned());
        }
        Ok(layer)
    }

    fn layer_unchecked(&self) -> Result<WechatPayLayer, String> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let Some(key_file) = &self.apiv3_key_file else {
            return Err("--apiv3-key-file is required".to_owned());
        };
        let mut layer = WechatPayLayer::new(read(key_file)?.trim())
            .map_err(|e| format!("{}: {e}", key_file.display()))?
            .timestamp_tolerance(Duration::from_secs(self.tolerance_secs))
            .map_err(|e| format!("--tolerance-secs: {e}"))?;
        for (id, file) in &self.public_keys {
            layer = layer
                .add_public_key(id, read(file)?)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        for file in &self.certificates {
            layer = layer
                .add_certificate(read(file)?)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        Ok(layer)
    }
}

/// A bad command line found after parsing (a key file that cannot be read, …): clap's
/// `error: …` and usage on stderr, exit code 2, like the errors clap finds itself.
pub fn usage_error<C: clap::CommandFactory>(message: impl Display) -> ExitCode {
    let _ = C::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .print();
    ExitCode::from(2)
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

/// Binds, prints `listening on ADDR` to stderr, and serves HTTP/1.1 until the process ends.
///
/// Not `axum::serve`: its HTTP/1-or-2 connection builder (hyper-util 0.1.21's `auto`)
/// keeps about 8 KiB for good of every connection a client abandons in the middle of a
/// body (measured with the `inflight` bench example; hyper's HTTP/1 builder, used here,
/// keeps none). WeChat Pay notifies over HTTP/1.1.
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
