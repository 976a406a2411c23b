//! The embedded default store: one SQLite file in WAL mode, `synchronous =
//! FULL` so an acknowledged event survives a crash or power loss.
//!
//! The statements are the shared ones ([`crate::store::sql`]); what is
//! SQLite's own is here: the connection settings, event ingestion on a
//! thread and connection of its own ([`writer`]: group commits of prepared
//! single-row inserts, without the pool's per-query hops), and the check
//! that the files written are still the ones a restart reads ([`guard`]).

mod guard;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;

use super::sql::{self, Dialect, SqlStore};
use super::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// Every connection's settings: the durability README promises, waiting
/// (not failing) on a busy file, and foreign keys.
const CONNECTION_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

/// Opens the SQLite store.
pub struct SqliteStore;

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`) and applies migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        let path = Path::new(options.get_filename()).to_owned();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Other(e.into()))?;
            }
        }
        // Created if missing; the settings above for every connection.
        let url = match url.contains('?') {
            true => format!("{url}&mode=rwc"),
            false => format!("{url}?mode=rwc"),
        };
        let pool = sql::pool(&url, 4, Duration::from_secs(5), Some(CONNECTION_SETUP)).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
        // The pool keeps the WAL the migrations created open, and the
        // writer's connection keeps it from here on.
        let files = Arc::new(guard::FileGuard::record(&path)?);
        let writer = writer::EventWriter::open(&path, files.clone())?;
        Ok(SqlStore::new(
            pool,
            Dialect::Sqlite,
            &MIGRATOR,
            Arc::new(writer),
            Some(files),
        ))
    }
}
