//! Progress lines on stdout, written by a thread of their own: a reader that stops
//! reading (or closes the pipe) never stalls the server, it only loses lines.

use std::io::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Where the server's progress lines go.
#[derive(Debug, Clone)]
pub struct Log {
    sender: Option<SyncSender<String>>,
}

impl Log {
    /// Lines to stdout, each flushed as written.
    pub fn stdout() -> Self {
        let (sender, receiver) = sync_channel::<String>(4096);
        let spawned = std::thread::Builder::new()
            .name("wechatpay-sim-log".to_owned())
            .spawn(move || write_lines(&receiver));
        match spawned {
            Ok(_) => Self {
                sender: Some(sender),
            },
            Err(_) => Self::silent(),
        }
    }

    /// Lines into a channel (tests in-process).
    pub fn channel(capacity: usize) -> (Self, Receiver<String>) {
        let (sender, receiver) = sync_channel(capacity);
        (
            Self {
                sender: Some(sender),
            },
            receiver,
        )
    }

    /// No lines.
    pub fn silent() -> Self {
        Self { sender: None }
    }

    /// Writes one line (dropped if the writer is far behind).
    pub fn line(&self, line: impl Into<String>) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(line.into());
        }
    }
}

fn write_lines(receiver: &Receiver<String>) {
    let stdout = std::io::stdout();
    for line in receiver {
        let mut out = stdout.lock();
        // A closed stdout is not the server's problem: keep draining.
        let _ = writeln!(out, "{}", line.replace(['\n', '\r'], " ")).and_then(|()| out.flush());
    }
}
