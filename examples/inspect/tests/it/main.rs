//! The `inspect` example as users run it, driven over real HTTP; and a short run of the
//! hostile load test against it. One binary: `cargo test` builds this package's examples
//! (with the same features) before it.

mod hostile_load;
mod inspect;
mod v2;
