//! The simulator's tests: in-process against the layer, and the binary over HTTP against
//! real and deliberately broken receivers. One binary, a module per command.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod audit;
mod client;
mod diagnose;
mod keys;
mod query_example;
mod refresh;
mod send;
mod serve;
mod support;
mod v2;
