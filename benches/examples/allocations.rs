//! Heap traffic of one notification through the full layer path, counted by an
//! instrumented global allocator: allocations and bytes per notification, and bytes still
//! held after the answer (0 means nothing accumulates per request).
//!
//! ```text
//! cargo run --release -p tower-wechatpay-benches --example allocations
//! ```

use std::alloc::System;
use std::convert::Infallible;

use http::{Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceExt};
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{BufferedBody, Notification};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const COUNT: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let signer = TestSigner::public_key_mode();
    let layer = signer.layer()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut signed = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let mut resource = sample_payment();
        resource["transaction_id"] = format!("4200830166131860{i:012}").into();
        signed.push(
            signer
                .notification("TRANSACTION.SUCCESS", &resource)
                .timestamp(now)
                .build()?,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let mut service = tower::ServiceBuilder::new().layer(layer).service_fn(
            |request: Request<BufferedBody>| async move {
                let paid = request
                    .extensions()
                    .get::<Notification>()
                    .and_then(Notification::payment)
                    .is_some();
                assert!(paid, "the handler sees a typed payment");
                Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
            },
        );
        // Warm up (lazy statics, the runtime's first timers), then count.
        let warm_up: Vec<_> = signed
            .iter()
            .take(10)
            .cloned()
            .map(|s| s.into_request())
            .collect();
        run(&mut service, warm_up).await;
        let requests: Vec<_> = signed.iter().cloned().map(|s| s.into_request()).collect();
        let region = Region::new(GLOBAL);
        run(&mut service, requests).await;
        let stats = region.change();
        // Net growth: requests made, served and dropped inside the region must leave nothing.
        let region = Region::new(GLOBAL);
        for signed in &signed {
            run(&mut service, vec![signed.clone().into_request()]).await;
        }
        let net = region.change();
        let per = |n: usize| n as f64 / COUNT as f64;
        println!(
            "backend {}, {COUNT} notifications through the full layer path",
            tower_wechatpay::CRYPTO_BACKEND
        );
        println!(
            "allocations per notification: {:.1}",
            per(stats.allocations + stats.reallocations)
        );
        println!(
            "bytes allocated per notification: {:.0}",
            per(stats.bytes_allocated) + stats.bytes_reallocated as f64 / COUNT as f64
        );
        println!(
            "bytes still held after {COUNT} more requests were made, served and dropped: {}",
            net.bytes_allocated as i64 + net.bytes_reallocated as i64
                - net.bytes_deallocated as i64
        );
    });
    Ok(())
}

async fn run<S>(service: &mut S, requests: Vec<Request<BufferedBody>>)
where
    S: Service<Request<BufferedBody>, Response = Response<BufferedBody>, Error = Infallible>,
{
    for request in requests {
        let Ok(ready) = ServiceExt::<Request<BufferedBody>>::ready(&mut *service).await;
        let Ok(response) = ready.call(request).await;
        assert!(response.status().is_success());
    }
}
