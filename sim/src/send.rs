//! `wechatpay-sim send`: one notification, delivered as WeChat Pay delivers it.

use std::time::Duration;

use crate::cli::SendArgs;
use crate::deliver::{Deliverable, Outcome, Plan, deliver};
use crate::error::SimError;
use crate::keys::Keys;
use crate::notify::Notification;
use crate::resource;
use crate::transport::HttpTransport;
use crate::v2::{self, V2Notification};

/// Runs `send`: `Ok(true)` when acknowledged, `Ok(false)` when the schedule ran out, an
/// error for bad input or an endpoint that never answered.
pub async fn run(args: &SendArgs) -> Result<bool, SimError> {
    let keys = Keys::load(&args.keys)?;
    if args.v2 {
        return run_v2(args, &keys).await;
    }
    let transport = HttpTransport::new(&args.to)?;
    let mut resource = resource::resource(&keys, &args.event, args.resource.as_deref())?;
    for assignment in &args.set {
        resource::set(&mut resource, assignment)?;
    }
    let notification = Notification::new(&keys, args.mode, &args.event, &resource)?;
    let plan = Plan {
        gaps: args.schedule.gaps(),
        copies: usize::from(args.copies),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    println!(
        "sending {} ({} mode) to {}",
        args.event,
        match args.mode {
            crate::keys::Mode::PublicKey => "public-key",
            crate::keys::Mode::Certificate => "certificate",
        },
        args.to
    );
    finish(args, &transport, &notification, &plan).await
}

/// `send --v2`: an APIv2 XML payment (or refund, for `REFUND.*` events), the same bytes on
/// every attempt, acknowledged only by an XML SUCCESS body.
async fn run_v2(args: &SendArgs, keys: &Keys) -> Result<bool, SimError> {
    let key = keys.v2_key()?;
    let transport = HttpTransport::new(&args.to)?;
    let explicit = v2::set_names(&args.set);
    let (notification, how) = if args.event.starts_with("REFUND.") {
        let (outer, mut inner) = v2::refund_fields(keys, &args.event);
        for assignment in &args.set {
            v2::set(&mut inner, assignment, &explicit)?;
        }
        (
            V2Notification::refund(key, &outer, &inner)?,
            "req_info encrypted with the APIv2 key".to_owned(),
        )
    } else {
        let mut fields = v2::payment_fields(keys);
        for assignment in &args.set {
            v2::set(&mut fields, assignment, &explicit)?;
        }
        let with = if args.no_sign_type {
            "without sign_type"
        } else {
            "with sign_type"
        };
        (
            V2Notification::payment(key, &fields, args.sign_type, !args.no_sign_type)?,
            format!("{} sign, {with}", args.sign_type.name()),
        )
    };
    let plan = Plan {
        gaps: args.schedule.gaps(),
        copies: usize::from(args.copies),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    println!(
        "sending APIv2 {} ({how}) to {}",
        match notification.kind() {
            v2::Kind::Payment => "payment",
            v2::Kind::Refund => "refund",
        },
        args.to
    );
    finish(args, &transport, &notification, &plan).await
}

async fn finish<N: Deliverable>(
    args: &SendArgs,
    transport: &HttpTransport,
    notification: &N,
    plan: &Plan,
) -> Result<bool, SimError> {
    let outcome = deliver(transport, notification, plan, |progress| {
        println!("{}", progress.line());
    })
    .await?;
    match outcome {
        Outcome::Unreachable(failure) => Err(SimError(format!("{}: {failure}", args.to))),
        outcome => {
            println!("{}", outcome.line());
            Ok(matches!(outcome, Outcome::Acknowledged { .. }))
        }
    }
}
