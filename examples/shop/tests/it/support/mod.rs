//! What only the shop's tests need; the rest is `example_support::harness`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;
