//! The simulator's one error type: a sentence for the user, and the exit code it means.

use std::fmt;

/// A failure that stops a command before it could judge the endpoint: bad keys, a bad flag,
/// an endpoint that cannot be reached. The binary prints it on one line and exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl SimError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the cause said.
        f.write_str(&self.0.replace(['\n', '\r'], " "))
    }
}

impl std::error::Error for SimError {}

/// Turns any displayable error into a [`SimError`] prefixed with what was being done.
pub(crate) fn context<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> SimError {
    move |error| SimError(format!("{what}: {error}"))
}
