//! For the examples' tests: running an example as users do, a child process on a free
//! port driven over HTTP; and a throwaway Redis server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{name} exited before `listening on ADDR`"))
            .unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stderr (the child's log) so it never blocks on a full pipe; echo it
    // for the test output when asked.
    let echo = std::env::var_os("EXAMPLE_LOGS").is_some();
    let tag = name.to_owned();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("[{tag}] {line}");
            }
        }
    });
    Running {
        child,
        addr,
        stdout,
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
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Redis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            child: None,
            port,
            dir: TempDir::new("redis"),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL): what a crash or a network cut looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty: no persistence.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): run `.ci/test`, which installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
