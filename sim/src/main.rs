//! `wechatpay-sim`: exit 0 on success, 1 when the endpoint failed (not acknowledged, a check
//! failed, a capture that does not verify), 2 on bad input (keys, flags, an unreachable URL).

use std::process::ExitCode;

use clap::Parser;
use wechatpay_sim::cli::{Cli, Command};
use wechatpay_sim::{SimError, audit, diagnose, keys, send, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fatal(&SimError(format!("starting the runtime: {error}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keys(args) => keys_command(&args),
            Command::Send(args) => send::run(&args).await,
            Command::Audit(args) => audit::run(&args).await,
            Command::Serve(args) => serve::run(&args).await,
            Command::Diagnose(args) => diagnose::run(&args),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => fatal(&error),
    }
}

fn keys_command(args: &wechatpay_sim::cli::KeysArgs) -> Result<bool, SimError> {
    let keys = keys::Keys::generate(&args.out)?;
    keys.write()?;
    print!("{}", keys.receiver_configuration());
    Ok(true)
}

fn fatal(error: &SimError) -> ExitCode {
    eprintln!("wechatpay-sim: {error}");
    ExitCode::from(2)
}
