//! Throw-away PostgreSQL databases for tests: one fresh database per test on
//! the server `ORCHESTRATOR_TEST_PG_URL` names (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at the end. Without a
//! reachable server a test of the `it` binary is skipped ([`crate::require`]:
//! a failure under CI), and every test of the PostgreSQL suite (`tests/pg`) fails.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own on the test server; dropped with the value (or by
/// [`PgTestDb::drop_db`]), even when the test panics.
pub struct PgTestDb {
    /// The URL of this database.
    pub url: String,
    /// The URL the database was created through (the server's `test` database).
    pub admin_url: String,
    /// The database's name: `orch_test_<uuid>`.
    pub name: String,
    dropped: bool,
}

/// Which store a copy of the end-to-end suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// A fresh database when this suite runs on PostgreSQL; `None` on SQLite.
/// The PostgreSQL suite exists to run on a server: without one its tests fail.
pub async fn suite_database() -> Option<PgTestDb> {
    if crate::STORE == StoreKind::Sqlite {
        return None;
    }
    match PgTestDb::connect().await {
        Ok(db) => Some(db),
        Err(why) => panic!(
            "{why}: the PostgreSQL half of the suite needs a server \
             (`cargo test --test it` runs the SQLite half alone)"
        ),
    }
}

impl PgTestDb {
    /// Creates a fresh, empty database; `None` (see [`crate::require`]) when
    /// the server cannot be reached.
    pub async fn create() -> Option<PgTestDb> {
        match Self::connect().await {
            Ok(db) => Some(db),
            Err(why) => {
                crate::require::missing(&why);
                None
            }
        }
    }

    /// Creates a fresh, empty database, or says why the server cannot be reached.
    async fn connect() -> Result<PgTestDb, String> {
        let admin_url = std::env::var("ORCHESTRATOR_TEST_PG_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let mut admin = match admin_connection(&admin_url).await {
            Ok(conn) => conn,
            Err(e @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)) => {
                return Err(format!(
                    "PostgreSQL not reachable at {} ({e}); set ORCHESTRATOR_TEST_PG_URL",
                    redact(&admin_url)
                ));
            }
            // Reachable but refusing (authentication, no such database): say so.
            Err(e) => panic!(
                "PostgreSQL at {} refused the tests: {e}",
                redact(&admin_url)
            ),
        };
        let name = format!("orch_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = reqwest::Url::parse(&admin_url).expect("ORCHESTRATOR_TEST_PG_URL is a URL");
        url.set_path(&format!("/{name}"));
        Ok(PgTestDb {
            url: url.to_string(),
            admin_url,
            name,
            dropped: false,
        })
    }

    /// The server's address (host and port of the URL).
    pub fn server_addr(&self) -> SocketAddr {
        let url = reqwest::Url::parse(&self.url).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1");
        (host, url.port().unwrap_or(5432))
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap()
    }

    /// This database's URL with the server reached at `addr` instead (a
    /// [`crate::gate::TcpGate`], or a port nobody listens on).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = reqwest::Url::parse(&self.url).unwrap();
        url.set_ip_host(addr.ip()).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }

    /// Drops the database, closing whatever connections are still open to it.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&admin_url, &name));
            }
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    {
        let dropped = async {
            let mut admin = admin_connection(admin_url).await?;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await?;
            let _ = admin.close().await;
            Ok::<_, sqlx::Error>(())
        };
        if let Err(e) = dropped.await {
            eprintln!("could not drop test database {name}: {e}");
        }
    }
}

/// Connects to the admin database (`PoolTimedOut` when the server does not
/// answer within 5 s).
async fn admin_connection(url: &str) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
