//! A throwaway Redis server for the tests, on a free loopback port: killed and restarted
//! at will, stopped on drop. Uses Debian's `redis-server`, which `.ci/test` installs.
//!
//! Nothing here sleeps: a server is ready when it says so on its log ("Ready to accept
//! connections"), and a server that could not take its port says so by exiting, which ends
//! its log. Waiting on the log is bounded by [`READY_WITHIN`], a limit that only a broken
//! `redis-server` reaches, not a slow machine.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tower_wechatpay::dedupe::{Dedupe, RedisStore};

use super::example::TempDir;

/// How long a starting server may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Budgets for the tests' Redis connections and store operations: far above anything a
/// loaded machine needs, so that only a dead server (refused, reset) fails an operation.
/// The library's own 1 s defaults are for production, where slow means unavailable; in a
/// test they turn a CPU-starved `redis-server` into a spurious 500.
pub const PATIENT: Duration = Duration::from_secs(60);

/// The store timeout of the tests' guards: the longest one the default lease (30 s) and a
/// 5 s answer deadline allow with room to spare.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(4);

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Redis {
    /// A server on a free port. A port that another process takes between our probe and
    /// the server's bind makes the server exit: then another port is tried.
    pub fn start() -> Self {
        let dir = TempDir::new("redis");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, &dir) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
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
    pub async fn store(&self, prefix: &str) -> RedisStore {
        let client = redis::Client::open(self.url()).unwrap();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PATIENT))
            .set_response_timeout(Some(PATIENT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        RedisStore::new(connection).prefix(prefix)
    }

    /// [`Redis::store`] as a guard whose store timeout is [`STORE_TIMEOUT`]: as long as
    /// the answer deadline allows, so a loaded machine does not turn a slow round trip
    /// into a store failure.
    pub async fn dedupe(&self, prefix: &str) -> Dedupe {
        Dedupe::new(self.store(prefix).await).store_timeout(STORE_TIMEOUT)
    }

    /// Kills the server at once (SIGKILL): what a crash or a network cut looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty: no persistence.
    pub fn restart(&mut self) {
        self.kill();
        match spawn(self.port, &self.dir) {
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

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `redis-server` on `port` and returns once it is ready, or its log if it exited.
fn spawn(port: u16, dir: &TempDir) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--loglevel", "notice", "--logfile", ""])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start redis-server ({error}): run `.ci/test`, which installs it")
        });
    // The log is read on a thread, to its end (so the server never blocks on a full pipe);
    // the lines come here until the server is ready.
    let stdout = child.stdout.take().unwrap();
    let (lines, log) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Nobody listens once the server is ready; keep draining.
            let _ = lines.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        match log.recv_timeout(READY_WITHIN) {
            Ok(line) => {
                let ready = line.contains("Ready to accept connections");
                seen.push_str(&line);
                seen.push('\n');
                if ready {
                    return Ok(child);
                }
            }
            // The log ended: the server exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return Err(seen);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server was not ready within {READY_WITHIN:?}:\n{seen}");
            }
        }
    }
}
