//! The integration tests, one binary (link time on 2 cores): a module per topic.

mod support;

mod answers;
mod axum_extractor;
mod config;
mod deadline;
mod debug_redaction;
mod dedupe;
mod dedupe_keys;
mod dedupe_storm;
mod events;
mod fuzz_corpus;
mod handler_logs;
mod handlers;
mod hostile_load;
mod hyper_server;
mod inspect_example;
mod key_refresh;
mod key_ring;
mod properties;
mod readiness;
mod schema_drift;
mod secrets;
mod shop;
mod slow_clients;
mod stranger_logs;
mod tampering;
mod vectors;
