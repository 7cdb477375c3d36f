//! Queue mode's figures: the answer latency WeChat Pay sees with the durable queue vs a
//! synchronous handler whose work takes 200 ms, and how many jobs per second one worker
//! drains.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-benches --example queue_latency -- \
//!     [--queue sqlite:PATH|postgres://…|redis://…] [--requests 400] [--concurrency 8] \
//!     [--work-ms 200] [--jobs 2000]
//! ```
//!
//! Everything runs in-process through the real layer (verify, decrypt, answer): latency is
//! from the request to its answer, the clients `--concurrency` at a time, each
//! notification a new event. Without `--queue`, a fresh SQLite file in the temp dir.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_wechatpay::queue::Queue;
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{BufferedBody, Handled, Notification, Retry, WechatPayLayer};

#[derive(Parser, Debug)]
#[command(name = "queue_latency")]
struct Cli {
    /// The queue (default: a new SQLite file in the temp dir).
    #[arg(long, value_name = "URL")]
    queue: Option<String>,
    /// Notifications per mode.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long the synchronous handler's work takes.
    #[arg(long, default_value_t = 200)]
    work_ms: u64,
    /// Jobs the worker drains for the jobs/s figure.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// A signed payment notification, a new event for every `n` (and `tag`).
fn notification(tag: &str, n: usize) -> http::Request<BufferedBody> {
    let mut resource = sample_payment();
    resource["out_trade_no"] = format!("{tag}{n:08}").into();
    resource["transaction_id"] = format!("4200{tag}{n:08}").into();
    TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &resource)
        .timestamp(now())
        .build()
        .unwrap_or_else(|error| die(&format!("signing: {error}")))
        .into_request()
}

/// A measurement that cannot go on: say why and stop.
fn die(message: &str) -> ! {
    eprintln!("queue_latency: {message}");
    std::process::exit(1)
}

/// Sends `requests` through `service`, `concurrency` at a time; every answer's latency.
async fn drive<S>(service: S, tag: &str, requests: usize, concurrency: usize) -> Vec<Duration>
where
    S: Service<http::Request<BufferedBody>, Response = http::Response<BufferedBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let latencies = futures_util::stream::iter(0..requests)
        .map(|n| {
            let service = service.clone();
            let request = notification(tag, n);
            async move {
                let started = Instant::now();
                let answer = service
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|error| die(&format!("no answer: {error:?}")));
                assert!(answer.status().is_success(), "{}", answer.status());
                started.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut latencies = latencies;
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(mode: &str, latencies: &[Duration]) {
    println!(
        "{mode:<34} p50 {:>9.2} ms   p99 {:>9.2} ms   ({} answers)",
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let layer: WechatPayLayer = match TestSigner::public_key_mode().layer() {
        Ok(layer) => layer,
        Err(error) => {
            eprintln!("queue_latency: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("queue-latency-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let url = cli
        .queue
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("queue.db").display()));
    let queue = match Queue::connect(&url).await {
        Ok(queue) => queue,
        Err(error) => {
            eprintln!("queue_latency: {url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} notifications per mode, {} in flight, engine {}",
        cli.requests,
        cli.concurrency,
        url.split(':').next().unwrap_or_default()
    );

    // Synchronous: the handler does the work before the answer.
    let work = Duration::from_millis(cli.work_ms);
    let slow = layer.layer(service_fn(
        move |_: http::Request<BufferedBody>| async move {
            tokio::time::sleep(work).await;
            Ok::<_, std::convert::Infallible>(Handled::Done.into_http_response())
        },
    ));
    let sync = drive(slow, "S", cli.requests, cli.concurrency).await;
    report(&format!("synchronous, {} ms of work", cli.work_ms), &sync);

    // Queue mode: the answer once the job is committed.
    let queued = layer.layer(queue.enqueuer());
    let latencies = drive(queued, "Q", cli.requests, cli.concurrency).await;
    report("queue mode (enqueue, then answer)", &latencies);

    // One worker draining jobs whose handler does no work: the queue's own cost.
    for n in 0..cli.jobs {
        let request = notification("J", n);
        let (parts, body) = request.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let verified = layer
            .verify(&parts.headers, &body)
            .unwrap_or_else(|rejection| die(&format!("not verified: {rejection}")));
        if let Err(error) = queue.enqueue(&verified, &body).await {
            die(&format!("enqueue: {error}"));
        }
    }
    let backlog = queue.depth().await.unwrap_or(0);
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let worker = queue.worker(&layer, move |_: Notification| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Retry>(Handled::Done)
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let target = usize::try_from(backlog).unwrap_or(usize::MAX);
    while handled.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!("queue_latency: the worker did not drain the queue in 10 min");
            return ExitCode::FAILURE;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let _ = running.await;
    println!(
        "one worker drained {} jobs in {:.2} s: {:.0} jobs/s",
        target,
        elapsed.as_secs_f64(),
        target as f64 / elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
