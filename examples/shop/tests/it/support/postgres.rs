//! A throwaway PostgreSQL server for the tests: its own data directory and loopback port,
//! stopped (and removed) on drop. Uses the Debian `postgresql` package's binaries, which
//! `.ci/test` installs.
//!
//! Nothing here sleeps: the server is ready when its log says "database system is ready to
//! accept connections" (it then accepts logins too, not only TCP), a server that could not
//! take its port says so by exiting, which ends its log (then another port is tried), and
//! it has shut down when its log ends. Every wait is bounded by `READY_WITHIN`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use example_support::harness::{READY_WITHIN, Started, TempDir, free_port, log_lines, wait_ready};

pub struct Postgres {
    child: Child,
    pub port: u16,
    /// The server's log after it was ready; it disconnects once every server process exited.
    log: mpsc::Receiver<String>,
    _dir: TempDir,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|dir| dir.join("postgres").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found: run `.ci/test` (it installs the `postgresql` package)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// PostgreSQL refuses to run as root: drop to the `postgres` user (setpriv execs, so the
/// child we hold is the server itself).
fn command(program: PathBuf) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = TempDir::new("postgres");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let output = command(bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(&bin, &data, port, dir.path()) {
                Ok((child, log)) => {
                    return Self {
                        child,
                        port,
                        log,
                        _dir: dir,
                    };
                }
                // It exited before it was ready; its log says why ("Address already in use").
                Err(log) => last = log,
            }
        }
        panic!("postgres did not start on any of 5 free ports; last log:\n{last}");
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::{Connection, Executor};
        // The server said it accepts connections (`start`): logins included.
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|error| panic!("cannot connect to postgres: {error}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        self.url(name)
    }
}

impl Postgres {
    /// Crashes the server: SIGQUIT, an immediate shutdown without a checkpoint (the next
    /// start runs crash recovery).
    #[allow(dead_code)] // used by the queue tests only
    pub fn crash(&mut self) {
        self.stop("-QUIT");
    }

    /// Starts the server again on the same port and data (after [`Postgres::crash`]; a
    /// running server is crashed first).
    #[allow(dead_code)] // used by the queue tests only
    pub fn restart(&mut self) {
        self.stop("-QUIT");
        let data = self._dir.path().join("data");
        match spawn(&bin_dir(), &data, self.port, self._dir.path()) {
            Ok((child, log)) => {
                self.child = child;
                self.log = log;
            }
            Err(log) => panic!(
                "postgres did not restart on port {} (taken meanwhile?):\n{log}",
                self.port
            ),
        }
    }

    /// Signals the server and waits for every one of its processes to exit (they all
    /// write the log, so it ends when the last one exited).
    fn stop(&mut self, signal: &str) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return; // already down (crashed before)
        }
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        loop {
            match self.log.recv_timeout(READY_WITHIN) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                // Not down in time: no more patience.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    break;
                }
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown, which also ends its worker processes.
        self.stop("-INT");
    }
}

/// Starts the server on `port` and returns it with its log once it is ready, or its log if
/// it exited first.
fn spawn(
    bin: &Path,
    data: &Path,
    port: u16,
    socket_dir: &Path,
) -> Result<(Child, mpsc::Receiver<String>), String> {
    let mut child = command(bin.join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(socket_dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = log_lines(child.stderr.take().unwrap());
    match wait_ready(&log, "database system is ready to accept connections") {
        Started::Ready(_) => Ok((child, log)),
        Started::Exited(seen) => {
            let _ = child.wait();
            Err(seen)
        }
        Started::Silent(seen) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("postgres was not ready within {READY_WITHIN:?}:\n{seen}");
        }
    }
}
