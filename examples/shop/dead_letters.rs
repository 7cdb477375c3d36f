//! The durable queue's dead letters: notifications whose job failed every attempt.
//!
//! ```text
//! cargo run -p tower-wechatpay-shop --example dead-letters -- --queue URL list
//! cargo run -p tower-wechatpay-shop --example dead-letters -- --queue URL requeue ID
//! cargo run -p tower-wechatpay-shop --example dead-letters -- --queue URL depth
//! ```
//!
//! `list` prints one line per dead job (id, event type, event key, attempts, when it was
//! received, the last error); `requeue ID` gives the job fresh attempts (exit 1 if no dead
//! job has that id); `depth` prints how many jobs wait or run. A bad flag or an unreachable
//! queue exits 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tower_wechatpay::queue::Queue;

/// List and requeue the dead letters of the shop's queue (`shop --queue URL`).
#[derive(Parser, Debug)]
#[command(name = "dead-letters")]
struct Cli {
    /// The queue: `sqlite:PATH`, `postgres://…` or `redis://…`.
    #[arg(long, value_name = "URL")]
    queue: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One line per dead job.
    List,
    /// Gives the dead job ID fresh attempts.
    Requeue {
        /// The job id, as `list` prints it.
        id: String,
    },
    /// How many jobs wait or run.
    Depth,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let queue = match Queue::connect(&cli.queue).await {
        Ok(queue) => queue,
        Err(error) => {
            eprintln!("dead-letters: cannot open the queue {}: {error}", cli.queue);
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::List => match queue.dead_letters().await {
            Ok(letters) => {
                for letter in &letters {
                    println!(
                        "{}\t{}\t{}\tattempts={}\treceived={}\t{}",
                        letter.id,
                        letter.event_type,
                        letter.key,
                        letter.attempts,
                        letter.received_unix,
                        letter.last_error
                    );
                }
                eprintln!("{} dead letter(s)", letters.len());
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Requeue { id } => match queue.requeue(&id).await {
            Ok(true) => {
                println!("requeued {id}");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("dead-letters: no dead job {id}");
                ExitCode::FAILURE
            }
            Err(error) => fail(&error),
        },
        Command::Depth => match queue.depth().await {
            Ok(depth) => {
                println!("{depth}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
    }
}

fn fail(error: &tower_wechatpay::queue::QueueError) -> ExitCode {
    eprintln!("dead-letters: {error}");
    ExitCode::from(2)
}
