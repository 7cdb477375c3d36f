//! A bounded load test on loopback with hostile traffic: starts a receiver (the `inspect`
//! example, or any binary taking the same flags), then for `--rounds` rounds of `--seconds`
//! keeps `--connections` keep-alive connections busy with a mix of genuine, forged,
//! oversized (declared and streamed), probe and header-less requests, while `--stalled`
//! connections send half a body and stop (the layer must answer 408) and `--aborting`
//! connections send half a body and hang up. It reports throughput, every answer by kind,
//! and the server's RSS before, after each round and at the end.
//!
//! ```text
//! cargo build --release -p tower-wechatpay-inspect --example inspect --example hostile
//! target/release/examples/hostile --server target/release/examples/inspect [--seconds 10] \
//!     [--rounds 3] [--connections 48] [--stalled 16] [--aborting 4] [--max-rss-growth-mib 16]
//! ```
//!
//! Exits 1 if any answer was not the one WeChat Pay's rules require, or if the server's RSS
//! after the last round exceeds that after the first by more than `--max-rss-growth-mib`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_PUBLIC_KEY_ID,
    TEST_PUBLIC_KEY_PEM, TestSigner, sample_payment,
};

/// The layer's default body limit; "oversized" goes one byte past it.
const LIMIT: usize = 64 * 1024;
/// How long any answer may take: the stalled ones take the 3 s body timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Genuine,
    Forged,
    DeclaredTooLarge,
    StreamedTooLarge,
    Probe,
    NoHeaders,
    Stalled,
    Aborted,
}

impl Kind {
    /// Whether `status` is what WeChat Pay's rules require for this kind.
    fn expects(self, status: u16) -> bool {
        match self {
            Self::Genuine => (200..300).contains(&status),
            Self::Forged | Self::Probe => status == 401,
            Self::DeclaredTooLarge | Self::StreamedTooLarge => status == 413,
            Self::NoHeaders => status == 400,
            Self::Stalled => status == 408,
            Self::Aborted => false,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    sent: u64,
    expected: u64,
    unexpected: u64,
}

type Tallies = Arc<Mutex<BTreeMap<Kind, Tally>>>;

fn record(tallies: &Tallies, kind: Kind, outcome: Result<u16, String>) {
    let mut tallies = tallies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tally = tallies.entry(kind).or_default();
    tally.sent += 1;
    match outcome {
        Ok(status) if kind.expects(status) => tally.expected += 1,
        Ok(_) if kind == Kind::Aborted => tally.expected += 1,
        Err(_) if kind == Kind::Aborted => tally.expected += 1,
        other => {
            tally.unexpected += 1;
            if tally.unexpected <= 3 {
                eprintln!("unexpected answer to a {kind:?} request: {other:?}");
            }
        }
    }
}

/// Pre-signed requests (RSA signing on the client would otherwise compete with the server
/// for the two cores), reused round-robin: duplicates are what WeChat Pay sends anyway.
struct Requests {
    genuine: Vec<Bytes>,
    forged: Vec<Bytes>,
    probe: Bytes,
    no_headers: Bytes,
    declared_too_large: Bytes,
    streamed_head: Bytes,
    stalled: Bytes,
    aborted: Bytes,
}

fn http_request(signed: &SignedNotification, declared_len: Option<usize>) -> Vec<u8> {
    let mut head = String::from("POST /notify HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (name, value) in &signed.headers {
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    head.push_str(&format!(
        "content-length: {}\r\n\r\n",
        declared_len.unwrap_or(signed.body.len())
    ));
    head.into_bytes()
}

fn whole(signed: &SignedNotification) -> Bytes {
    let mut bytes = http_request(signed, None);
    bytes.extend_from_slice(&signed.body);
    Bytes::from(bytes)
}

fn half(signed: &SignedNotification) -> Bytes {
    let mut bytes = http_request(signed, None);
    bytes.extend_from_slice(&signed.body[..signed.body.len() / 2]);
    Bytes::from(bytes)
}

impl Requests {
    fn new() -> Result<Self, String> {
        let now = now();
        let sign = |signer: &TestSigner| {
            signer
                .notification("TRANSACTION.SUCCESS", &sample_payment())
                .timestamp(now)
                .build()
                .map_err(|error| error.to_string())
        };
        let genuine_signer = TestSigner::public_key_mode();
        let stranger = TestSigner::stranger();
        let genuine = (0..512)
            .map(|_| sign(&genuine_signer).map(|signed| whole(&signed)))
            .collect::<Result<Vec<_>, _>>()?;
        let forged = (0..64)
            .map(|_| sign(&stranger).map(|signed| whole(&signed)))
            .collect::<Result<Vec<_>, _>>()?;
        let one = sign(&genuine_signer)?;
        let mut streamed = String::from("POST /notify HTTP/1.1\r\nhost: 127.0.0.1\r\n");
        for (name, value) in &one.headers {
            streamed.push_str(&format!(
                "{name}: {}\r\n",
                value.to_str().unwrap_or_default()
            ));
        }
        streamed.push_str("transfer-encoding: chunked\r\n\r\n");
        Ok(Self {
            genuine,
            forged,
            probe: whole(&one.clone().into_probe()),
            no_headers: whole(&one.clone().without_header("wechatpay-signature")),
            declared_too_large: Bytes::from(http_request(&one, Some(LIMIT + 1))),
            streamed_head: Bytes::from(streamed),
            stalled: half(&one),
            aborted: half(&one),
        })
    }
}

/// Reads one HTTP/1.1 response: its status, and whether the server will close.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(u16, bool), String> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed without an answer".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("no status line")?;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let closes = head.contains("connection: close");
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed inside an answer".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok((status, closes))
}

async fn timed<T>(
    future: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(ANSWER_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// One keep-alive connection sending the mix until `stop`.
async fn mixed_worker(
    addr: String,
    requests: Arc<Requests>,
    tallies: Tallies,
    stop: Arc<AtomicBool>,
    seed: usize,
) {
    let mut buffer = Vec::with_capacity(8192);
    let mut stream: Option<TcpStream> = None;
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        let kind = match n % 20 {
            0..=10 => Kind::Genuine,
            11..=14 => Kind::Forged,
            15 => Kind::DeclaredTooLarge,
            16 => Kind::StreamedTooLarge,
            17 => Kind::Probe,
            _ => Kind::NoHeaders,
        };
        let conn = match stream.take() {
            Some(conn) => conn,
            None => match TcpStream::connect(&addr).await {
                Ok(conn) => conn,
                Err(error) => {
                    record(&tallies, kind, Err(format!("connect: {error}")));
                    continue;
                }
            },
        };
        let mut conn = conn;
        let outcome = timed(async {
            match kind {
                Kind::Genuine => {
                    let r = &requests.genuine[n % requests.genuine.len()];
                    conn.write_all(r).await.map_err(|e| e.to_string())?;
                }
                Kind::Forged => {
                    let r = &requests.forged[n % requests.forged.len()];
                    conn.write_all(r).await.map_err(|e| e.to_string())?;
                }
                Kind::Probe => conn
                    .write_all(&requests.probe)
                    .await
                    .map_err(|e| e.to_string())?,
                Kind::NoHeaders => conn
                    .write_all(&requests.no_headers)
                    .await
                    .map_err(|e| e.to_string())?,
                // Only the head: the limit is known from it, and an unread body would
                // make the server's close reset the connection before we read the answer.
                Kind::DeclaredTooLarge => conn
                    .write_all(&requests.declared_too_large)
                    .await
                    .map_err(|e| e.to_string())?,
                Kind::StreamedTooLarge => {
                    conn.write_all(&requests.streamed_head)
                        .await
                        .map_err(|e| e.to_string())?;
                    let chunk = vec![b' '; 8192];
                    for _ in 0..=LIMIT / chunk.len() {
                        conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await
                            .map_err(|e| e.to_string())?;
                        conn.write_all(&chunk).await.map_err(|e| e.to_string())?;
                        conn.write_all(b"\r\n").await.map_err(|e| e.to_string())?;
                    }
                }
                _ => unreachable!("only the mixed kinds are chosen here"),
            }
            read_answer(&mut conn, &mut buffer).await
        })
        .await;
        let keep = matches!(outcome, Ok((_, false)))
            && !matches!(kind, Kind::DeclaredTooLarge | Kind::StreamedTooLarge);
        record(&tallies, kind, outcome.map(|(status, _)| status));
        if keep {
            stream = Some(conn);
        }
    }
}

/// Sends a head and half a body, then stalls (expects 408) or hangs up.
async fn half_body_worker(
    addr: String,
    requests: Arc<Requests>,
    tallies: Tallies,
    stop: Arc<AtomicBool>,
    kind: Kind,
) {
    let mut buffer = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let outcome = timed(async {
            let mut conn = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            if kind == Kind::Aborted {
                conn.write_all(&requests.aborted)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Ok(0); // dropped: the client hangs up mid-body
            }
            conn.write_all(&requests.stalled)
                .await
                .map_err(|e| e.to_string())?;
            read_answer(&mut conn, &mut buffer)
                .await
                .map(|(status, _)| status)
        })
        .await;
        record(&tallies, kind, outcome);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server with the test keys on a free port; its address.
fn start_server(path: &str, dir: &std::path::Path) -> Result<(Server, String), String> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write("apiv3.txt", TEST_APIV3_KEY)?;
    write("pub.pem", TEST_PUBLIC_KEY_PEM)?;
    write("cert.pem", TEST_CERTIFICATE_PEM)?;
    let mut child = Command::new(path)
        .args(["--listen", "127.0.0.1:0", "--apiv3-key-file"])
        .arg(dir.join("apiv3.txt"))
        .arg("--public-key")
        .arg(format!(
            "{TEST_PUBLIC_KEY_ID}={}",
            dir.join("pub.pem").display()
        ))
        .arg("--certificate")
        .arg(dir.join("cert.pem"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {path}: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    break addr.trim().to_owned();
                }
            }
            _ => return Err(format!("{path} exited before `listening on ADDR`")),
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    Ok((server, addr))
}

/// Hostile traffic on loopback against a receiver; every answer checked, the server's RSS
/// reported per round.
#[derive(Parser, Debug)]
#[command(name = "hostile", args_override_self = true)]
struct Cli {
    /// The receiver binary (the `inspect` example, or any taking its flags).
    #[arg(long, value_name = "PATH")]
    server: String,
    /// Length of each round.
    #[arg(long, value_name = "S", default_value_t = 10)]
    seconds: u64,
    /// How many rounds (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: u64,
    /// Keep-alive connections sending the mix of requests.
    #[arg(long, value_name = "N", default_value_t = 48)]
    connections: u64,
    /// Connections that send half a body and stop (the layer must answer 408).
    #[arg(long, value_name = "N", default_value_t = 16)]
    stalled: u64,
    /// Connections that send half a body and hang up.
    #[arg(long, value_name = "N", default_value_t = 4)]
    aborting: u64,
    /// Fail if the server's RSS after the last round exceeds that after the first by more.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    max_rss_growth_mib: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(
        &cli.server,
        cli.seconds,
        cli.rounds.max(1),
        cli.connections,
        cli.stalled,
        cli.aborting,
        cli.max_rss_growth_mib,
    )
    .await
    {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("hostile: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    server_path: &str,
    seconds: u64,
    rounds: u64,
    connections: u64,
    stalled: u64,
    aborting: u64,
    max_growth_mib: u64,
) -> Result<bool, String> {
    let dir = std::env::temp_dir().join(format!("tower-wechatpay-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let started = start_server(server_path, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (server, addr) = started?;
    let pid = server.0.id();
    let requests = Arc::new(Requests::new()?);
    let rss_start = rss_kib(pid);
    println!(
        "server pid {pid} on {addr}; {connections} mixed keep-alive connections, {stalled} stalled, \
         {aborting} aborting; {rounds} rounds of {seconds} s"
    );
    println!("server RSS at start: {:.1} MiB", rss_start as f64 / 1024.0);

    let mut rss_after = Vec::new();
    let mut all_ok = true;
    for round in 1..=rounds {
        let tallies: Tallies = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for n in 0..connections {
            tasks.push(tokio::spawn(mixed_worker(
                addr.clone(),
                Arc::clone(&requests),
                Arc::clone(&tallies),
                Arc::clone(&stop),
                usize::try_from(n * 7).unwrap_or(0),
            )));
        }
        for (count, kind) in [(stalled, Kind::Stalled), (aborting, Kind::Aborted)] {
            for _ in 0..count {
                tasks.push(tokio::spawn(half_body_worker(
                    addr.clone(),
                    Arc::clone(&requests),
                    Arc::clone(&tallies),
                    Arc::clone(&stop),
                    kind,
                )));
            }
        }
        let began = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        let elapsed = began.elapsed().as_secs_f64();
        // Let the server settle (closed connections dropped) before reading its RSS.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        rss_after.push(rss);

        let tallies = tallies.lock().map_err(|_| "poisoned")?.clone();
        let answered: u64 = tallies
            .iter()
            .filter(|(kind, _)| **kind != Kind::Aborted)
            .map(|(_, t)| t.sent)
            .sum();
        let unexpected: u64 = tallies.values().map(|t| t.unexpected).sum();
        println!(
            "round {round}: {answered} answered in {elapsed:.1} s = {:.0} requests/s, {unexpected} unexpected; \
             server RSS {:.1} MiB",
            answered as f64 / elapsed,
            rss as f64 / 1024.0
        );
        for (kind, tally) in &tallies {
            println!(
                "  {:<17} {:>8} sent {:>8} as required {:>4} unexpected",
                format!("{kind:?}"),
                tally.sent,
                tally.expected,
                tally.unexpected
            );
        }
        all_ok &= unexpected == 0;
    }
    let first = rss_after.first().copied().unwrap_or(0);
    let last = rss_after.last().copied().unwrap_or(0);
    let growth_kib = last.saturating_sub(first);
    println!(
        "server RSS: start {:.1} MiB, after round 1 {:.1} MiB, after round {rounds} {:.1} MiB \
         (growth after round 1: {:.1} MiB, allowed {max_growth_mib} MiB)",
        rss_start as f64 / 1024.0,
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        growth_kib as f64 / 1024.0
    );
    if growth_kib > max_growth_mib * 1024 {
        println!("FAIL: the server's RSS kept growing");
        all_ok = false;
    }
    if all_ok {
        println!("OK: every answer as required");
    }
    drop(server);
    Ok(all_ok)
}
