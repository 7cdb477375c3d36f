//! Memory with many requests in flight: a server with the layer, and a client that opens
//! N connections and leaves each request one byte short of its body at the body limit, so
//! all N bodies are being buffered at once. The client then reads the server's resident
//! memory from /proc.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-benches --example inflight -- serve --listen 127.0.0.1:0
//! cargo run --release -p tower-wechatpay-benches --example inflight -- hold --connect ADDR --connections 10000 --server-pid PID
//! ```
//! (`benches/load.sh` runs both, with the file-descriptor limit raised.)

use std::alloc::System;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

use axum::Router;
use axum::routing::{get, post};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{Handled, Notified, Retry, WechatPayLayer};

const MAX_BODY_SIZE: usize = WechatPayLayer::DEFAULT_MAX_BODY_SIZE;

// Counts the server's live heap, which RSS cannot show: the allocator keeps freed pages.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

async fn paid(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
    Ok(Handled::Done)
}

/// `GET /heap`: bytes currently allocated by the server, and its live tasks.
async fn heap() -> String {
    let stats = GLOBAL.stats();
    let live = stats.bytes_allocated as i64 + stats.bytes_reallocated as i64
        - stats.bytes_deallocated as i64;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    format!("{live} {tasks}")
}

async fn live_heap(addr: &str) -> Result<i64, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET /heap HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    answer
        .rsplit("\r\n\r\n")
        .next()
        .and_then(|body| body.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("bad /heap answer: {answer:?}"))
}

fn rss_kib(pid: &str) -> Result<(u64, u64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or(format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn hold(addr: &str, path: &str, connections: usize, pid: &str) -> Result<(), String> {
    let (before, _) = rss_kib(pid)?;
    let heap_before = live_heap(addr).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    // Genuine headers, so every request gets past the header checks into buffering.
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now)
        .build()
        .map_err(|e| e.to_string())?;
    let mut head =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {MAX_BODY_SIZE}\r\n");
    for (name, value) in &signed.headers {
        head.push_str(&format!(
            "{}: {}\r\n",
            name,
            value.to_str().map_err(|e| e.to_string())?
        ));
    }
    head.push_str("\r\n");
    let body = vec![b' '; WechatPayLayer::DEFAULT_MAX_BODY_SIZE - 1];

    let mut streams = Vec::with_capacity(connections);
    for chunk in 0..connections.div_ceil(500) {
        let opened = futures_util::future::join_all((0..500.min(connections - chunk * 500)).map(
            |_| async {
                let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                stream
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                stream.write_all(&body).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(stream)
            },
        ))
        .await;
        for stream in opened {
            streams.push(stream?);
        }
    }
    // Let the server read everything that was sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (during, peak) = rss_kib(pid)?;
    let heap_during = live_heap(addr).await?;
    println!("connections in flight to {path}: {}", streams.len());
    println!("server RSS before: {:.1} MiB", before as f64 / 1024.0);
    println!(
        "server RSS with {} bodies of {} KiB buffering: {:.1} MiB (peak {:.1} MiB), {:.1} KiB per request",
        streams.len(),
        WechatPayLayer::DEFAULT_MAX_BODY_SIZE / 1024,
        during as f64 / 1024.0,
        peak as f64 / 1024.0,
        (during.saturating_sub(before)) as f64 / streams.len() as f64
    );
    drop(streams);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = rss_kib(pid)?;
    let heap_after = live_heap(addr).await?;
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "server live heap: before {:.1} MiB, in flight {:.1} MiB, after the clients left {:.1} MiB",
        mib(heap_before),
        mib(heap_during),
        mib(heap_after)
    );
    println!(
        "server RSS after the clients left: {:.1} MiB (freed memory the allocator keeps for reuse)",
        after as f64 / 1024.0
    );
    Ok(())
}

/// Memory with many requests in flight: `serve` a layer, or `hold` connections against one.
#[derive(Parser, Debug)]
#[command(name = "inflight", args_override_self = true)]
enum Cli {
    /// A server with the layer on /notify, the same without it on /raw, and GET /heap.
    Serve {
        /// The address to listen on (port 0: any free port).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Open connections and leave each request one byte short of a full-size body.
    Hold {
        /// The server's address.
        #[arg(long, value_name = "ADDR")]
        connect: String,
        /// How many connections.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        connections: usize,
        /// The server's process id, to read its resident memory from /proc.
        #[arg(long, value_name = "PID")]
        server_pid: String,
        /// `/notify` (with the layer) or `/raw` (without).
        #[arg(long, value_name = "PATH", default_value = "/notify")]
        path: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Serve { listen } => {
            let layer = match TestSigner::public_key_mode().layer() {
                Ok(layer) => layer,
                Err(error) => {
                    eprintln!("inflight: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let app = Router::new()
                .route("/notify", post(paid).route_layer(layer))
                .route("/heap", get(heap))
                // The same server without the layer, for comparison.
                .route(
                    "/raw",
                    post(|body: bytes::Bytes| async move { body.len().to_string() }),
                );
            example_support::serve("inflight", listen, app).await
        }
        Cli::Hold {
            connect,
            connections,
            server_pid,
            path,
        } => match hold(&connect, &path, connections, &server_pid).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("inflight: {message}");
                ExitCode::FAILURE
            }
        },
    }
}
