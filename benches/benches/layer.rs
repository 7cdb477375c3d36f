//! Criterion benches of the layer's steps and of the whole path, for the backend this
//! build uses (`cargo bench -p tower-wechatpay-benches`, or with
//! `--no-default-features --features rustcrypto`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Service, ServiceExt};
use tower_wechatpay::test_util::{TestSigner, bench, sample_payment};
use tower_wechatpay::{BufferedBody, CRYPTO_BACKEND, Notification};

fn steps(c: &mut Criterion) {
    let signer = TestSigner::public_key_mode();
    let layer = signer.layer().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed = signer
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now)
        .build()
        .unwrap();
    let plaintext = layer
        .verify(&signed.headers, &signed.body)
        .unwrap()
        .resource_json()
        .to_owned();
    assert!(bench::verify(&layer, &signed.headers, &signed.body));

    let mut group = c.benchmark_group(CRYPTO_BACKEND);
    group.bench_function("headers: checks and key lookup", |b| {
        b.iter(|| bench::check_headers(&layer, black_box(&signed.headers)))
    });
    group.bench_function("verify: headers + RSA-SHA256", |b| {
        b.iter(|| bench::verify(&layer, black_box(&signed.headers), black_box(&signed.body)))
    });
    group.bench_function("parse: envelope", |b| {
        b.iter(|| bench::parse(black_box(&signed.body)))
    });
    group.bench_function("decrypt: envelope + base64 + AES-256-GCM", |b| {
        b.iter(|| bench::decrypt(&layer, black_box(&signed.body)))
    });
    group.bench_function("model: typed payment", |b| {
        b.iter(|| bench::model(black_box(&plaintext)))
    });
    group.bench_function("layer.verify: all of the above", |b| {
        b.iter(|| layer.verify(black_box(&signed.headers), black_box(&signed.body)))
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|request: Request<BufferedBody>| async move {
            let paid = request
                .extensions()
                .get::<Notification>()
                .and_then(Notification::payment)
                .is_some();
            assert!(paid);
            Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
        });
    group.bench_function("full layer: oneshot through the service", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut request = Request::new(BufferedBody::new(signed.body.clone()));
                *request.method_mut() = http::Method::POST;
                *request.headers_mut() = signed.headers.clone();
                let ready = ServiceExt::<Request<BufferedBody>>::ready(&mut service)
                    .await
                    .unwrap();
                black_box(ready.call(request).await.unwrap())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
