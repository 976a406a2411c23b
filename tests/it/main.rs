//! End-to-end tests: the real service over HTTP on 127.0.0.1:0.

/// The store this copy of the suite runs on (`tests/pg/main.rs` runs it on PostgreSQL).
pub const STORE: pg::StoreKind = pg::StoreKind::Sqlite;

mod common;

mod access;
mod apps;
mod aws;
mod bad_input;
mod callbacks;
mod changes;
mod cli;
mod delivery;
mod functions;
mod gate;
mod hardening;
mod hardening_http;
mod hardening_store;
mod inbox;
mod invoke_api;
mod library;
mod lifecycle;
mod logs;
mod metrics;
mod moto;
mod notifications;
mod openapi;
mod pg;
mod prometheus;
mod recovery;
mod require;
mod runtimes;
mod sbt;
mod store_contract;
mod traces;
mod uploads;
