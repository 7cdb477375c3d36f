//! How many order queries the merchant API client completes per second against
//! `wechatpay-sim serve`, in-process on a free loopback port: N concurrent tasks share one
//! `Client` (one connection pool) and query the same paid order by `transaction_id` for a
//! few seconds. Every request is signed (RSA-2048) and checked by the simulator, every
//! answer signed by the simulator and verified by the client, over real HTTP/1.1; client
//! and simulator share this machine's cores (one tokio runtime, a worker per core).
//!
//! ```text
//! cargo run --release -p tower-wechatpay-benches --example client_throughput
//! cargo run --release -p tower-wechatpay-benches --no-default-features --features rustcrypto --example client_throughput
//! ```
//!
//! Options: `--concurrency N` (default 8), `--seconds S` (default 5, after a 1 s warm-up),
//! `--public-key` (answers signed with the WeChat Pay public key instead of the platform
//! certificate). The last line is `client: N requests/s, p50 X ms, p99 Y ms`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use clap::Parser;
use http::Request;
use tower::ServiceExt;
use tower_wechatpay::client::{Client, TLS_PROVIDER};
use tower_wechatpay::{CRYPTO_BACKEND, KeyRing};
use wechatpay_sim::keys::Keys;
use wechatpay_sim::serve::{CertificatesAnswer, Log, ServeMode, Server, app};

/// Order queries per second against the simulator.
#[derive(Parser, Debug)]
#[command(name = "client_throughput")]
struct Cli {
    /// Concurrent tasks querying (they share one client and its connection pool).
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Measuring time in seconds, after a 1 s warm-up.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    seconds: f64,
    /// Ask for answers signed with the WeChat Pay public key (`Wechatpay-Serial`).
    #[arg(long)]
    public_key: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("client_throughput: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    // Fresh keys in memory (nothing is written).
    let keys = tokio::task::spawn_blocking(|| Keys::generate(&std::env::temp_dir()))
        .await
        .map_err(|e| text(&e))?
        .map_err(|e| text(&e))?;
    let server = Server::new(
        keys.clone(),
        ServeMode::Both,
        CertificatesAnswer::NotFound,
        Log::silent(),
    )
    .map_err(|e| text(&e))?;
    let router = app(Arc::clone(&server));
    let paid = router
        .clone()
        .oneshot(
            Request::post("/sim/pay")
                .body(Body::from(r#"{"out_trade_no":"BENCH-1","amount":100}"#))
                .map_err(|e| text(&e))?,
        )
        .await
        .map_err(|e| text(&e))?;
    let paid = axum::body::to_bytes(paid.into_body(), 1 << 20)
        .await
        .map_err(|e| text(&e))?;
    let paid: serde_json::Value = serde_json::from_slice(&paid).map_err(|e| text(&e))?;
    let transaction_id = paid["transaction_id"]
        .as_str()
        .ok_or("/sim/pay answered no transaction_id")?
        .to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| text(&e))?;
    let addr = listener.local_addr().map_err(|e| text(&e))?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let ring = KeyRing::new();
    ring.add_certificate(&keys.platform.cert_pem)
        .map_err(|e| text(&e))?;
    ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
        .map_err(|e| text(&e))?;
    let mut builder = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        ring,
    )
    .map_err(|e| text(&e))?
    .base_url(&format!("http://{addr}"))
    .map_err(|e| text(&e))?;
    if cli.public_key {
        builder = builder
            .wechatpay_serial(&keys.public_key_id)
            .map_err(|e| text(&e))?;
    }
    let client = builder.build().map_err(|e| text(&e))?;
    let expected = if cli.public_key {
        keys.public_key_id.clone()
    } else {
        keys.platform.serial.clone()
    };

    let concurrency = cli.concurrency.max(1);
    let warm_up = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(cli.seconds.max(0.1));
    let started = Instant::now();
    let (measure_from, measure_to) = (started + warm_up, started + warm_up + measure);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let transaction_id = transaction_id.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= measure_to {
                    return Ok::<_, String>(latencies);
                }
                let order = client
                    .query_order(&tower_wechatpay::client::OrderQuery::TransactionId(
                        transaction_id.clone(),
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                if order.serial != expected {
                    return Err(format!("answer signed by {}", order.serial));
                }
                if sent >= measure_from {
                    latencies.push(sent.elapsed());
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| text(&e))??);
    }
    if latencies.is_empty() {
        return Err("no request completed within the measuring time".into());
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[at].as_secs_f64() * 1e3
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "{} requests in {:.1} s, {concurrency} concurrent, {cores} cores, backend {CRYPTO_BACKEND} \
         (tls {TLS_PROVIDER}), answers signed by {}",
        latencies.len(),
        measure.as_secs_f64(),
        if cli.public_key {
            "the public key"
        } else {
            "the platform certificate"
        },
    );
    println!(
        "client: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len() as f64 / measure.as_secs_f64(),
        percentile(0.50),
        percentile(0.99)
    );
    Ok(())
}
