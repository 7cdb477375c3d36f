//! End to end: the `inspect` example as users run it, driven over real HTTP.
//!
//! `cargo test` builds the examples next to the test binaries; this test runs the one
//! built with the same features.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_PUBLIC_KEY_ID,
    TEST_PUBLIC_KEY_PEM, TestSigner, sample_payment, sample_refund,
};

fn example_binary() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(format!("inspect{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples",
        path.display()
    );
    path
}

struct Inspect {
    child: Child,
    addr: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Inspect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Inspect {
    std::fs::write(dir.join("apiv3.txt"), format!("{TEST_APIV3_KEY}\n")).unwrap();
    std::fs::write(dir.join("pub.pem"), TEST_PUBLIC_KEY_PEM).unwrap();
    std::fs::write(dir.join("cert.pem"), TEST_CERTIFICATE_PEM).unwrap();
    let mut child = Command::new(example_binary())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--apiv3-key-file")
        .arg(dir.join("apiv3.txt"))
        .arg("--public-key")
        .arg(format!(
            "{TEST_PUBLIC_KEY_ID}={}",
            dir.join("pub.pem").display()
        ))
        .arg("--certificate")
        .arg(dir.join("cert.pem"))
        .arg("--tolerance-secs")
        .arg("300")
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
            .expect("inspect printed `listening on ADDR`")
            .unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Inspect {
        child,
        addr,
        stdout,
    }
}

async fn send(addr: &str, signed: SignedNotification) -> StatusCode {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::post(format!("http://{addr}/any/path"));
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let response = client
        .request(request.body(Full::new(signed.body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn inspect_prints_each_accepted_notification_as_one_json_line() {
    let dir = std::env::temp_dir().join(format!("inspect-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut inspect = start(&dir);

    let payment = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now())
        .build()
        .unwrap();
    let refund = TestSigner::certificate_mode()
        .notification("REFUND.SUCCESS", &sample_refund())
        .timestamp(now())
        .build()
        .unwrap();
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now())
        .build()
        .unwrap();

    assert_eq!(send(&inspect.addr, forged).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&inspect.addr, payment.clone().into_probe()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&inspect.addr, payment).await, StatusCode::NO_CONTENT);
    assert_eq!(send(&inspect.addr, refund).await, StatusCode::NO_CONTENT);

    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        inspect.stdout.read_line(&mut line).unwrap();
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(lines[0]["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(lines[0]["resource"], sample_payment());
    assert!(lines[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(lines[1]["event_type"], "REFUND.SUCCESS");
    assert_eq!(lines[1]["resource"], sample_refund());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_refuses_bad_flags_with_exit_code_2() {
    for args in [
        vec!["--listen", "127.0.0.1:0"],
        vec![
            "--listen",
            "nowhere",
            "--apiv3-key-file",
            "x",
            "--certificate",
            "c.pem",
        ],
        vec!["--listen", "127.0.0.1:0", "--apiv3-key-file", "x"],
        vec!["--bogus"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--apiv3-key-file",
            "/nonexistent",
            "--certificate",
            "c.pem",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--apiv3-key-file",
            "k",
            "--public-key",
            "no-equals-sign",
        ],
    ] {
        let output = Command::new(example_binary()).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("inspect: "), "{args:?}: {stderr}");
    }
}
