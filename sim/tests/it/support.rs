//! What the simulator's tests share: fresh key directories, receivers on free ports, and
//! running the `wechatpay-sim` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use example_support::harness::TempDir;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tower_wechatpay::{Handled, Notification, Notified};
use wechatpay_sim::keys::Keys;

/// One key set per test process (RSA key generation is the slow part), copied into a
/// fresh directory for each test that asks.
pub fn keys() -> (TempDir, Keys) {
    static MADE: OnceLock<Keys> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let scratch =
            std::env::temp_dir().join(format!("wechatpay-sim-keys-{}", std::process::id()));
        Keys::generate(&scratch).unwrap()
    });
    let dir = TempDir::new("sim-keys");
    let mut keys = made.clone();
    keys.dir = dir.path().to_owned();
    keys.write().unwrap();
    (dir, keys)
}

/// Serves `app` on a free loopback port until the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// What a receiver's handler saw: one entry (envelope id, event type) per call.
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A correct receiver of `keys` (the layer, `Notified<Notification>`, 204) at `/notify`.
pub async fn healthy_receiver(keys: &Keys) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let layer = keys.receiver_layer().unwrap();
    let log = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Notification>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock()
                        .unwrap()
                        .push((n.id().to_owned(), n.event_type().to_owned()));
                    Handled::Done
                }
            }),
        )
        .route_layer(layer);
    (serve(app).await, seen)
}

/// Runs `wechatpay-sim` with `args` to completion (off the async runtime's threads).
pub async fn sim(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wechatpay-sim"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `path` as a `&str` for command lines.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// What a v2 receiver's handler saw: (`Notification::version()`, the `Event` variant, the
/// notification's fields: a payment's, or a refund's outer and decrypted ones together).
pub type V2Seen = Arc<Mutex<Vec<(u8, &'static str, std::collections::BTreeMap<String, String>)>>>;

/// A correct receiver of `keys` that also takes APIv2 XML (the layer with `.v2_key(…)`,
/// `Notified<Notification>`, `Handled::Done`) at `/notify`; `json_reply` turns every
/// acknowledgement into the v3 JSON `{"code":"SUCCESS","message":"成功"}` (EasyWeChat's
/// default, which WeChat's v2 does not take as one).
pub async fn healthy_v2_receiver(keys: &Keys, json_reply: bool) -> (SocketAddr, V2Seen) {
    let seen = V2Seen::default();
    let layer = keys.receiver_layer().unwrap();
    let log = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Notification>| {
                let log = Arc::clone(&log);
                async move {
                    let entry = match n.event() {
                        tower_wechatpay::Event::V2Payment(p) => {
                            (n.version(), "V2Payment", p.fields().clone())
                        }
                        tower_wechatpay::Event::V2Refund(r) => {
                            (n.version(), "V2Refund", r.fields().clone())
                        }
                        _ => (n.version(), "other", Default::default()),
                    };
                    log.lock().unwrap().push(entry);
                    Handled::Done
                }
            }),
        )
        .route_layer(layer);
    let app = if json_reply {
        app.layer(axum::middleware::map_response(
            |response: axum::response::Response| async move {
                if response.status().is_success() {
                    use axum::response::IntoResponse;
                    (
                        [(http::header::CONTENT_TYPE, "application/json")],
                        r#"{"code":"SUCCESS","message":"成功"}"#,
                    )
                        .into_response()
                } else {
                    response
                }
            },
        ))
    } else {
        app
    };
    (serve(app).await, seen)
}

/// `wechatpay-sim serve` running on a free port; killed when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    lines: UnboundedReceiver<String>,
    printed: Vec<String>,
}

impl Running {
    pub async fn start(keys: &Keys, flags: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wechatpay-sim"))
            .args(["serve", "--keys", arg(&keys.dir), "--listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            lines,
            printed: Vec::new(),
        };
        let first = running
            .wait_for(|line| line.starts_with("listening on "))
            .await;
        running.addr = first
            .strip_prefix("listening on http://")
            .unwrap()
            .parse()
            .unwrap();
        running
    }

    /// The next printed line matching `wanted` (generous limit: the machine may be busy).
    pub async fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no such line; printed so far: {:#?}", self.printed))
                .unwrap_or_else(|| panic!("the server exited; printed: {:#?}", self.printed));
            self.printed.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
