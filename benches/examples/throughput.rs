//! How many notifications one core verifies, decrypts and answers through the full layer
//! path: request in → verified, decrypted, typed notification handed to a trivial inner
//! service → answer out. Single thread, pre-signed notifications.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-benches --example throughput                    # the crate's test signer
//! cargo run --release -p tower-wechatpay-benches --example throughput -- --fixtures DIR  # ../shared/tools/gen_fixtures.py output
//! cargo run --release -p tower-wechatpay-benches --no-default-features --features rustcrypto --example throughput
//! ```
//!
//! Options: `--seconds S` (default 5, split into 5 passes; the median pass is reported),
//! `--count N` (test-signer notifications, default 1000), `--export DIR` (write the signed
//! requests for a load generator and exit), `--v2` (also APIv2 XML notifications through
//! the same layer, made by the crate's v2 test signer: payments signed MD5, payments signed
//! HMAC-SHA256, refunds; each kind gets its own S seconds, in passes interleaved with the
//! v3 ones, and a line `v2 payment MD5: N notifications/s, X µs per notification` before
//! the last), `--metrics` (the v3 notifications again with a `metrics-exporter-prometheus`
//! recorder installed, in passes interleaved with the ones without, and a line
//! `metrics overhead: X µs per notification (Y %)`). The last line is
//! `layer: N notifications/s, X µs per notification` (v3, no recorder).

use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::{Service, ServiceExt};
use tower_wechatpay::test_util::{
    SignType, SignedNotification, TEST_V2_KEY, TestSigner, V2TestSigner, sample_payment,
    sample_v2_payment, sample_v2_refund,
};
use tower_wechatpay::{BufferedBody, Event, Notification, WechatPayLayer};

const PASSES: u32 = 5;

/// One pre-signed notification and the amount its handler must see.
#[derive(Clone)]
struct Case {
    headers: HeaderMap,
    body: Bytes,
    total: i64,
}

fn from_signer(count: usize) -> Result<(WechatPayLayer, Vec<Case>), String> {
    let signer = TestSigner::public_key_mode();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut cases = Vec::with_capacity(count);
    for i in 0..count {
        let total = 100 + (i as i64 * 37) % 100_000;
        let mut resource = sample_payment();
        resource["out_trade_no"] = format!("2025112811200060{i:06}").into();
        resource["transaction_id"] = format!("42008301661318609{i:011}").into();
        resource["amount"]["total"] = total.into();
        resource["amount"]["payer_total"] = total.into();
        let SignedNotification { headers, body } = signer
            .notification("TRANSACTION.SUCCESS", &resource)
            .timestamp(now)
            .build()
            .map_err(|e| e.to_string())?;
        cases.push(Case {
            headers,
            body,
            total,
        });
    }
    Ok((signer.layer().map_err(|e| e.to_string())?, cases))
}

/// One kind of notification measured: its label and its pre-signed cases.
struct Group {
    label: &'static str,
    cases: Vec<Case>,
    // Measured with a Prometheus recorder installed (`--metrics`).
    metrics: bool,
}

/// `count` v2 notifications of each kind (payment MD5, payment HMAC-SHA256, refund), as
/// WeChat Pay's v2 sends them, under [`TEST_V2_KEY`]: XML bodies, `text/xml`, no headers
/// of WeChat Pay's own.
fn v2_groups(count: usize) -> Vec<Group> {
    let signer = V2TestSigner::new(TEST_V2_KEY);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    let case = |body: String, total: i64| Case {
        headers: headers.clone(),
        body: Bytes::from(body),
        total,
    };
    let payments = |sign_type: SignType| {
        (0..count)
            .map(|i| {
                let total = 100 + (i as i64 * 37) % 100_000;
                let mut fields = sample_v2_payment();
                fields.insert("out_trade_no".into(), format!("2025112811200060{i:06}"));
                fields.insert("transaction_id".into(), format!("42008301661318609{i:011}"));
                fields.insert("nonce_str".into(), format!("5K8264ILTKCH16CQ2502SI{i:010}"));
                fields.insert("total_fee".into(), total.to_string());
                fields.insert("cash_fee".into(), total.to_string());
                case(signer.payment_xml(fields, sign_type, false), total)
            })
            .collect()
    };
    let refunds = (0..count)
        .map(|i| {
            let refund = 100 + (i as i64 * 37) % 100_000;
            let (mut outer, mut inner) = sample_v2_refund();
            outer.insert("nonce_str".into(), format!("0b9f35f484df17a732e537{i:010}"));
            inner.insert("out_refund_no".into(), format!("R2025112811200060{i:06}"));
            inner.insert("out_trade_no".into(), format!("2025112811200060{i:06}"));
            for field in ["refund_fee", "cash_refund_fee", "settlement_refund_fee"] {
                inner.insert(field.into(), refund.to_string());
            }
            for field in ["total_fee", "settlement_total_fee"] {
                inner.insert(field.into(), "100000".into());
            }
            case(signer.refund_xml(outer, inner), refund)
        })
        .collect();
    vec![
        Group {
            label: "v2 payment MD5",
            cases: payments(SignType::Md5),
            metrics: false,
        },
        Group {
            label: "v2 payment HMAC-SHA256",
            cases: payments(SignType::HmacSha256),
            metrics: false,
        },
        Group {
            label: "v2 refund",
            cases: refunds,
            metrics: false,
        },
    ]
}

/// Reads `gen_fixtures.py` output: the same notifications the peer harnesses use.
fn from_fixtures(dir: &Path) -> Result<(WechatPayLayer, Vec<Case>), String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let meta: serde_json::Value =
        serde_json::from_str(&read("meta.json")?).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("meta.json has no {name}"))
    };
    let serial = field("serial")?;
    let layer = WechatPayLayer::new(field("apiv3_key")?).map_err(|e| e.to_string())?;
    let layer = if serial.starts_with("PUB_KEY_ID_") {
        layer.add_public_key(&serial, read("platform_public_key.pem")?)
    } else {
        layer.add_certificate(read("platform_cert.pem")?)
    }
    .map_err(|e| e.to_string())?;
    let mut cases = Vec::new();
    let mut timestamps = Vec::new();
    for line in read("notifications.jsonl")?.lines() {
        let record: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in record["headers"].as_object().ok_or("no headers")? {
            let value = value.as_str().ok_or("header is not a string")?;
            headers.insert(
                HeaderName::try_from(name.as_str()).map_err(|e| e.to_string())?,
                HeaderValue::try_from(value).map_err(|e| e.to_string())?,
            );
            if name.eq_ignore_ascii_case("wechatpay-timestamp") {
                timestamps.push(value.parse::<i64>().map_err(|e| e.to_string())?);
            }
        }
        let plaintext: serde_json::Value =
            serde_json::from_str(record["plaintext"].as_str().ok_or("no plaintext")?)
                .map_err(|e| e.to_string())?;
        cases.push(Case {
            headers,
            body: Bytes::from(record["body"].as_str().ok_or("no body")?.to_owned()),
            total: plaintext["amount"]["total"]
                .as_i64()
                .ok_or("no amount.total")?,
        });
    }
    // Fixtures are signed at generation time; judge them by a clock at their own time.
    timestamps.sort_unstable();
    let now = timestamps
        .get(timestamps.len() / 2)
        .copied()
        .ok_or("no notifications")?;
    let span =
        timestamps.last().copied().unwrap_or(now) - timestamps.first().copied().unwrap_or(now);
    let layer = layer
        .clock(move || now)
        .timestamp_tolerance(Duration::from_secs(300 + span.unsigned_abs()))
        .map_err(|e| e.to_string())?;
    Ok((layer, cases))
}

/// Writes the requests for `benches/load.sh`'s wrk script: one file per request, headers
/// then a blank line then the body.
fn export(dir: &Path, cases: &[Case]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (i, case) in cases.iter().enumerate() {
        let mut file = Vec::new();
        for (name, value) in &case.headers {
            file.extend_from_slice(name.as_str().as_bytes());
            file.extend_from_slice(b": ");
            file.extend_from_slice(value.as_bytes());
            file.extend_from_slice(b"\r\n");
        }
        file.extend_from_slice(b"\r\n");
        file.extend_from_slice(&case.body);
        std::fs::write(dir.join(format!("{i:06}.http")), file).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn request(case: &Case) -> Request<BufferedBody> {
    let mut request = Request::new(BufferedBody::new(case.body.clone()));
    *request.method_mut() = http::Method::POST;
    *request.headers_mut() = case.headers.clone();
    request
}

/// Notifications per second through the full layer path, on one core.
#[derive(Parser, Debug)]
#[command(name = "throughput", args_override_self = true)]
struct Cli {
    /// Measuring time, split into 5 passes; the median pass is reported.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    seconds: f64,
    /// How many test-signer notifications to rotate through (at least 1).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: usize,
    /// Notifications from ../shared/tools/gen_fixtures.py's output directory instead.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Write the signed requests for a load generator to DIR and exit.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// Also measure APIv2 XML notifications (payment MD5, payment HMAC-SHA256, refund)
    /// through the same layer, in the same run.
    #[arg(long)]
    v2: bool,
    /// Also measure the v3 notifications with a Prometheus recorder installed (the
    /// layer's `metrics` feature recording), interleaved with the passes without one.
    #[arg(long)]
    metrics: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (seconds, count) = (cli.seconds, cli.count.max(1));
    let loaded = match &cli.fixtures {
        Some(dir) => from_fixtures(dir),
        None => from_signer(count),
    };
    let (layer, cases) = match loaded {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("throughput: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &cli.export {
        return match export(dir, &cases) {
            Ok(()) => {
                eprintln!("wrote {} requests to {}", cases.len(), dir.display());
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("throughput: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("throughput: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut groups = vec![Group {
        label: "layer",
        cases: cases.clone(),
        metrics: false,
    }];
    if cli.metrics {
        groups.push(Group {
            label: "layer, metrics on",
            cases,
            metrics: true,
        });
    }
    let layer = if cli.v2 {
        groups.extend(v2_groups(count));
        match layer.v2_key(TEST_V2_KEY) {
            Ok(layer) => layer,
            Err(error) => {
                eprintln!("throughput: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        layer
    };
    runtime.block_on(run(layer, groups, seconds))
}

async fn run(layer: WechatPayLayer, groups: Vec<Group>, seconds: f64) -> ExitCode {
    // Installed for this thread during the `metrics` passes only: the runtime is
    // current-thread, so every step of the layer runs here.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    // The inner service touches the typed notification, as a real handler would.
    let mut service = tower::ServiceBuilder::new().layer(layer).service_fn(
        |request: Request<BufferedBody>| async move {
            let total = request
                .extensions()
                .get::<Notification>()
                .map_or(-1, |notification| match notification.event() {
                    Event::Payment(payment) => payment.amount.total,
                    Event::V2Payment(payment) => payment.total_fee,
                    Event::V2Refund(refund) => refund.refund_fee,
                    _ => -1,
                });
            let mut response = Response::new(BufferedBody::empty());
            response.extensions_mut().insert(total);
            Ok::<_, Infallible>(response)
        },
    );

    // Correctness first: every notification is accepted and typed as signed.
    for group in &groups {
        for case in &group.cases {
            let Ok(response) =
                ServiceExt::<Request<BufferedBody>>::oneshot(&mut service, request(case)).await;
            if !response.status().is_success()
                || response.extensions().get::<i64>() != Some(&case.total)
            {
                eprintln!(
                    "throughput: a notification ({}) was not accepted ({})",
                    group.label,
                    response.status()
                );
                return ExitCode::FAILURE;
            }
        }
    }

    // The passes of every group interleaved, so a drift in the machine's speed hits all.
    let mut rates = vec![Vec::new(); groups.len()];
    let pass = Duration::from_secs_f64(seconds / f64::from(PASSES));
    for number in 1..=PASSES {
        for (group, rates) in groups.iter().zip(&mut rates) {
            let _recorder = group
                .metrics
                .then(|| metrics::set_default_local_recorder(&recorder));
            let started = Instant::now();
            let mut done: u64 = 0;
            while started.elapsed() < pass {
                for case in &group.cases {
                    let Ok(ready) = ServiceExt::<Request<BufferedBody>>::ready(&mut service).await;
                    let Ok(response) = ready.call(request(case)).await;
                    std::hint::black_box(response);
                }
                done += group.cases.len() as u64;
            }
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let label = match group.label {
                "layer" => String::new(),
                label => format!(" {label}"),
            };
            println!(
                "pass {number}{label}: {rate:.0} notifications/s, {:.2} µs per notification",
                1e6 / rate
            );
            rates.push(rate);
        }
    }
    let medians: Vec<f64> = rates
        .iter_mut()
        .map(|rates| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        })
        .collect();
    println!(
        "backend {}, {} distinct notifications, median of {PASSES} passes",
        tower_wechatpay::CRYPTO_BACKEND,
        groups[0].cases.len()
    );
    // The v3 line last: scripts read it.
    for (group, median) in groups
        .iter()
        .zip(&medians)
        .skip(1)
        .chain(groups.iter().zip(&medians).take(1))
    {
        println!(
            "{}: {median:.0} notifications/s, {:.2} µs per notification",
            group.label,
            1e6 / median
        );
    }
    if let Some(on) = groups.iter().position(|group| group.metrics) {
        let (off, on) = (1e6 / medians[0], 1e6 / medians[on]);
        let counted = recorder
            .handle()
            .render()
            .lines()
            .filter(|line| line.starts_with("wechatpay_notifications_total{"))
            .count();
        println!(
            "metrics overhead: {:.2} µs per notification ({:+.2} %), {counted} series recorded",
            on - off,
            (on - off) / off * 100.0
        );
    }
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}
