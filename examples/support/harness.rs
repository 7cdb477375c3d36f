//! For the examples' tests: running an example as users do, a child process on a free
//! port driven over HTTP; and a throwaway Redis server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_PUBLIC_KEY_ID,
    TEST_PUBLIC_KEY_PEM,
};

/// The example binary `cargo test` built next to the test binaries (same features): the
/// test must live in the package that has the example, which cargo builds before its tests.
pub fn binary(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-wechatpay-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test keys as files, and the flags that name them.
pub fn key_flags(dir: &Path) -> Vec<String> {
    std::fs::write(dir.join("apiv3.txt"), format!("{TEST_APIV3_KEY}\n")).unwrap();
    std::fs::write(dir.join("pub.pem"), TEST_PUBLIC_KEY_PEM).unwrap();
    std::fs::write(dir.join("cert.pem"), TEST_CERTIFICATE_PEM).unwrap();
    vec![
        "--apiv3-key-file".into(),
        dir.join("apiv3.txt").display().to_string(),
        "--public-key".into(),
        format!("{TEST_PUBLIC_KEY_ID}={}", dir.join("pub.pem").display()),
        "--certificate".into(),
        dir.join("cert.pem").display().to_string(),
    ]
}

/// A running example; killed on drop.
pub struct Running {
    child: Child,
    pub addr: String,
    pub stdout: BufReader<ChildStdout>,
    /// Its log (stderr) after `listening on ADDR`, line by line.
    log: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The first line of the example's log logged so far (and not read yet) that contains
    /// every one of `parts`, without waiting; the lines before it are skipped.
    pub fn logged(&self, parts: &[&str]) -> Option<String> {
        let log = self.log.lock().unwrap();
        while let Ok(line) = log.try_recv() {
            if parts.iter().all(|part| line.contains(part)) {
                return Some(line);
            }
        }
        None
    }

    /// Waits for the next line of the example's log that contains every one of `parts`,
    /// and returns it; the lines before it are skipped. The wait is bounded by
    /// [`PATIENT`] (a line that never comes is a bug, not a slow machine): a panic then.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        let log = self.log.lock().unwrap();
        loop {
            match log.recv_timeout(PATIENT) {
                Ok(line) if parts.iter().all(|part| line.contains(part)) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the example exited before logging {parts:?}")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the example did not log {parts:?} within {PATIENT:?}")
                }
            }
        }
    }
}

/// Starts `name` with `args` (it must print `listening on ADDR` to stderr).
pub fn start(name: &str, args: &[String]) -> Running {
    let mut child = Command::new(binary(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let log = log_lines(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let line = log
            .recv_timeout(READY_WITHIN)
            .unwrap_or_else(|_| panic!("{name} did not print `listening on ADDR`:\n{seen}"));
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_owned();
        }
        seen.push_str(&line);
        seen.push('\n');
    };
    // The log goes on to `wait_log` (the drain thread never blocks), echoed for the test
    // output when asked.
    let log = if std::env::var_os("EXAMPLE_LOGS").is_some() {
        let (echoed, receiver) = mpsc::channel();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in log {
                eprintln!("[{tag}] {line}");
                let _ = echoed.send(line);
            }
        });
        receiver
    } else {
        log
    };
    Running {
        child,
        addr,
        stdout,
        log: std::sync::Mutex::new(log),
    }
}

/// An HTTP client for the examples.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(addr: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
        let (mut parts, body) = request.into_parts();
        parts.uri = format!("{}{}", self.base, parts.uri.path())
            .parse()
            .unwrap();
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    pub async fn notify(&self, path: &str, signed: SignedNotification) -> StatusCode {
        let mut request = Request::post(path);
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        self.send(request.body(Full::new(signed.body)).unwrap())
            .await
            .0
    }

    /// [`Http::notify`] for a server that may be down (killed, restarting): a connection
    /// error, or no answer within 10 s, is `None`.
    pub async fn try_notify(&self, path: &str, signed: &SignedNotification) -> Option<StatusCode> {
        let mut request = Request::post(format!("{}{path}", self.base));
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(signed.body.clone())).ok()?;
        let answer = tokio::time::timeout(Duration::from_secs(10), self.client.request(request));
        let response = answer.await.ok()?.ok()?;
        let status = response.status();
        // Read the answer to its end, so the connection is reused.
        response.into_body().collect().await.ok()?;
        Some(status)
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = self
            .send(Request::get(path).body(Full::default()).unwrap())
            .await;
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, value)
    }

    pub async fn post_json(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .unwrap();
        let (status, body) = self.send(request).await;
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, value)
    }
}

/// Unix seconds now (the examples use the system clock).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A throwaway Redis server for the tests, on a free loopback port: killed and restarted at
/// will, stopped on drop. Uses Debian's `redis-server`, which `.ci/test` installs.
///
/// Nothing here sleeps: a server is ready when it says so on its log ("Ready to accept
/// connections"), and a server that could not take its port says so by exiting, which ends
/// its log. Waiting on the log is bounded by [`READY_WITHIN`], a limit that only a broken
/// `redis-server` reaches, not a slow machine.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// Append-only file on, fsync on every write: what survives a kill.
    durable: bool,
}

/// How long a starting server (Redis, PostgreSQL) may take to say it is ready: a limit
/// only a broken server reaches, not a slow machine.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Budgets for the tests' Redis connections, and the bound on what a test waits for: far
/// above anything a loaded machine needs, so that only a dead server (refused, reset) fails
/// an operation and only a bug reaches a bound. The library's own 1 s defaults are for
/// production, where slow means unavailable; in a test they turn a CPU-starved
/// `redis-server` into a spurious 500.
pub const PATIENT: Duration = Duration::from_secs(60);

/// The store timeout of the tests' Redis guards: the longest one the default lease (30 s)
/// and the longest answer deadline (5 s) allow with room to spare.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(4);

impl Redis {
    /// A server on a free port. A port that another process takes between our probe and
    /// the server's bind makes the server exit: then another port is tried.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`Redis::start`] with persistence (`appendonly yes`, `appendfsync always`): a kill
    /// and [`restart`](Self::restart) keep every acknowledged write, as a queue needs.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let dir = TempDir::new("redis");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_redis(port, &dir, durable) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                        durable,
                    };
                }
                // It exited before it was ready; its log says why ("Address already in use").
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start on any of 5 free ports; last log:\n{last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A store on this server with [`PATIENT`] connection and response timeouts, its keys
    /// under `prefix`.
    #[cfg(feature = "redis")]
    pub async fn store(&self, prefix: &str) -> tower_wechatpay::dedupe::RedisStore {
        use redis::aio::{ConnectionManager, ConnectionManagerConfig};
        let client = redis::Client::open(self.url()).unwrap();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PATIENT))
            .set_response_timeout(Some(PATIENT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        tower_wechatpay::dedupe::RedisStore::new(connection).prefix(prefix)
    }

    /// [`Redis::store`] as a guard whose store timeout is [`STORE_TIMEOUT`]: as long as the
    /// answer deadline allows, so a loaded machine does not turn a slow round trip into a
    /// store failure.
    #[cfg(feature = "redis")]
    pub async fn dedupe(&self, prefix: &str) -> tower_wechatpay::dedupe::Dedupe {
        tower_wechatpay::dedupe::Dedupe::new(self.store(prefix).await).store_timeout(STORE_TIMEOUT)
    }

    /// Kills the server at once (SIGKILL): what a crash or a network cut looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, or with what it had if durable.
    pub fn restart(&mut self) {
        self.kill();
        match spawn_redis(self.port, &self.dir, self.durable) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!(
                "redis-server did not restart on port {} (taken meanwhile?):\n{log}",
                self.port
            ),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child's log, line by line: read to its end on a thread (so the child never blocks on a
/// full pipe), each line sent on the returned channel, which disconnects when the log ends
/// (every process writing it exited). Lines nobody receives are dropped.
pub fn log_lines(log: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            // Once nobody listens, keep draining.
            let _ = lines.send(line);
        }
    });
    receiver
}

/// What a server's log said while it started.
pub enum Started {
    /// A line contained the readiness message; the log so far.
    Ready(String),
    /// The log ended first (the server exited); the whole log.
    Exited(String),
    /// No line for [`READY_WITHIN`]; the log so far.
    Silent(String),
}

/// Reads `log` until a line contains `ready`, the log ends, or no line comes for
/// [`READY_WITHIN`].
pub fn wait_ready(log: &mpsc::Receiver<String>, ready: &str) -> Started {
    let mut seen = String::new();
    loop {
        match log.recv_timeout(READY_WITHIN) {
            Ok(line) => {
                let done = line.contains(ready);
                seen.push_str(&line);
                seen.push('\n');
                if done {
                    return Started::Ready(seen);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Started::Exited(seen),
            Err(mpsc::RecvTimeoutError::Timeout) => return Started::Silent(seen),
        }
    }
}

/// Starts `redis-server` on `port` and returns once it is ready, or its log if it exited.
fn spawn_redis(port: u16, dir: &TempDir, durable: bool) -> Result<Child, String> {
    let persistence: &[&str] = if durable {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(persistence)
        .args(["--loglevel", "notice", "--logfile", ""])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start redis-server ({error}): run `.ci/test`, which installs it")
        });
    let log = log_lines(child.stdout.take().unwrap());
    match wait_ready(&log, "Ready to accept connections") {
        Started::Ready(_) => Ok(child),
        Started::Exited(seen) => {
            let _ = child.wait();
            Err(seen)
        }
        Started::Silent(seen) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server was not ready within {READY_WITHIN:?}:\n{seen}");
        }
    }
}
