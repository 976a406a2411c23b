//! The store replicas share: PostgreSQL.
//!
//! The statements are the shared ones ([`crate::store::sql`]); what is
//! PostgreSQL's own is here: connecting, migrations under an advisory lock,
//! event ingestion in multi-row statements ([`batch`]) and how its errors
//! are reported.

mod batch;

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;

use super::sql::{self, Dialect, SqlStore};
use super::{ErrorClass, StoreError};

/// Connections per process: the dispatcher's concurrency, the HTTP handlers
/// and the proxy share them.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection (including connecting) before it
/// fails as `Unavailable`, so an unreachable database is reported instead of
/// hanging requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// Opens the PostgreSQL store.
pub struct PgStore;

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`).
    /// Does not touch the schema: see [`SqlStore::migrate`]. Errors are
    /// [`StoreError`]s (`Unavailable` when the server cannot be reached
    /// within the acquire timeout).
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        let url = match url.contains("application_name=") {
            true => url.to_owned(),
            false if url.contains('?') => format!("{url}&application_name=orchestrator"),
            false => format!("{url}?application_name=orchestrator"),
        };
        let pool = sql::pool(&url, MAX_CONNECTIONS, ACQUIRE_TIMEOUT, None).await?;
        let batcher = Arc::new(batch::Batcher::start(pool.clone()));
        Ok(SqlStore::new(
            pool,
            Dialect::Postgres,
            &MIGRATOR,
            batcher,
            None,
        ))
    }
}

/// How a PostgreSQL error is reported, by its SQLSTATE
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub(super) fn classify(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => ErrorClass::Conflict,
        // read_only_sql_transaction (a standby after failover), lock_not_available
        "25006" | "55P03" => ErrorClass::Unavailable,
        // connection exceptions, insufficient resources (too many connections,
        // disk full, out of memory), operator intervention (shutdown,
        // cannot connect now, statement timeout), system errors (I/O)
        code if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || code.starts_with("58") =>
        {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Other,
    }
}
