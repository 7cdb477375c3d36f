//! The `shop` example as users run it, over real HTTP on SQLite and PostgreSQL; and the
//! multi-instance storm (the shop's exactly-once write behind the Redis dedupe guard). One
//! binary: `cargo test` builds this package's examples (with the same features) before it.

mod alerts;
mod confirm;
mod dedupe_storm;
mod queue;
mod shop;
mod support;
