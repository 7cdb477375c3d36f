//! `wechatpay-sim`: a local WeChat Pay. It sends genuine notifications to any endpoint on
//! WeChat Pay's retry schedule, audits a receiver against forgeries and retries, stands in
//! for the merchant API, and explains why a captured notification fails to verify.
//!
//! The binary is the product (see `sim/README.md`); the library is its parts, public so
//! the tests (and anyone embedding the simulator) can drive them in-process.

pub mod audit;
pub mod cli;
pub mod deliver;
pub mod diagnose;
pub mod error;
pub mod keys;
pub mod notify;
pub mod resource;
pub mod send;
pub mod serve;
pub mod transport;
pub mod v2;

pub use error::SimError;
