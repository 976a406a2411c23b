//! The end-to-end suite again, on PostgreSQL: every module of `tests/it`
//! that touches the store, each test on a database of its own, plus the
//! multi-replica tests (real processes sharing one database). Without a
//! reachable server (`ORCHESTRATOR_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) its tests fail, saying so;
//! `cargo test --test it` runs the SQLite half alone.

/// The store this copy of the suite runs on.
pub const STORE: pg::StoreKind = pg::StoreKind::Postgres;

#[path = "../it/apps.rs"]
mod apps;
#[path = "../it/bad_input.rs"]
mod bad_input;
#[path = "../it/callbacks.rs"]
mod callbacks;
#[path = "../it/changes.rs"]
mod changes;
#[path = "../it/cli.rs"]
mod cli;
#[path = "../it/common.rs"]
mod common;
#[path = "../it/delivery.rs"]
mod delivery;
#[path = "../it/gate.rs"]
mod gate;
#[path = "../it/hardening_http.rs"]
mod hardening_http;
#[path = "../it/hardening_store.rs"]
mod hardening_store;
#[path = "../it/inbox.rs"]
mod inbox;
#[path = "../it/library.rs"]
mod library;
#[path = "../it/lifecycle.rs"]
mod lifecycle;
#[path = "../it/logs.rs"]
mod logs;
#[path = "../it/metrics.rs"]
mod metrics;
#[path = "../it/pg.rs"]
mod pg;
#[path = "../it/recovery.rs"]
mod recovery;
#[path = "../it/replicas.rs"]
mod replicas;
#[path = "../it/require.rs"]
mod require;
#[path = "../it/uploads.rs"]
mod uploads;
