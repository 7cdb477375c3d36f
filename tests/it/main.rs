//! The integration tests, one binary (link time on 2 cores): a module per topic. The tests
//! that drive the command-line examples live with them, in the workspace members.

mod support;

mod alerts;
mod answers;
mod axum_extractor;
mod config;
mod deadline;
mod debug_redaction;
mod dedupe;
mod dedupe_keys;
mod events;
mod fuzz_corpus;
mod handler_logs;
mod handlers;
mod hyper_server;
mod key_refresh;
mod key_ring;
#[cfg(feature = "metrics")]
mod metrics;
mod properties;
mod readiness;
mod schema_drift;
mod secrets;
mod slow_clients;
mod stranger_logs;
mod tampering;
#[cfg(feature = "v2")]
mod v2_layer;
mod vectors;
#[cfg(feature = "v2")]
mod vectors_v2;
