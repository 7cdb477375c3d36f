//! `wechatpay-sim send`: one notification, delivered as WeChat Pay delivers it.

use std::time::Duration;

use crate::cli::SendArgs;
use crate::deliver::{Outcome, Plan, deliver};
use crate::error::SimError;
use crate::keys::Keys;
use crate::notify::Notification;
use crate::resource;
use crate::transport::HttpTransport;

/// Runs `send`: `Ok(true)` when acknowledged, `Ok(false)` when the schedule ran out, an
/// error for bad input or an endpoint that never answered.
pub async fn run(args: &SendArgs) -> Result<bool, SimError> {
    let keys = Keys::load(&args.keys)?;
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
    let outcome = deliver(&transport, &notification, &plan, |progress| {
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
