//! The few statements that differ between SQLite and PostgreSQL; everything
//! else in [`super`] is one statement for both (`$N` parameters, which
//! sqlx's SQLite driver takes too).

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// One process owns the file.
    Sqlite,
    /// Shared by replicas.
    Postgres,
}

impl Dialect {
    /// Leases up to `$3` due events (`$1`: now, `$2`: lease length),
    /// returning them with their insertion order as `seq`. Due: received and
    /// `next_attempt_at` reached, or processing with a lease that ended.
    ///
    /// SQLite has one writer at a time, so a plain `UPDATE … WHERE id IN
    /// (SELECT …)` is atomic. PostgreSQL replicas claim concurrently: `FOR
    /// UPDATE SKIP LOCKED` lets them not wait on each other, and a locked row
    /// is re-checked once its locker commits, so a row another replica just
    /// claimed (lease now in the future) is never handed out twice.
    pub fn claim_events(self, columns: &str) -> String {
        let due = "status IN ('received', 'processing') \
                   AND ((status = 'received' AND next_attempt_at <= $1) \
                    OR (status = 'processing' AND lease_until < $1))";
        let set = "status = 'processing', attempts = attempts + 1, lease_until = $1 + $2, updated_at = $1";
        match self {
            Dialect::Sqlite => format!(
                "UPDATE events SET {set} \
                 WHERE id IN (SELECT id FROM events WHERE {due} ORDER BY next_attempt_at, rowid LIMIT $3) \
                 RETURNING rowid AS seq, {columns}"
            ),
            Dialect::Postgres => format!(
                "WITH due AS MATERIALIZED ( \
                     SELECT id AS due_id FROM events WHERE {due} \
                     ORDER BY next_attempt_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE events SET {set} FROM due WHERE id = due.due_id \
                 RETURNING seq, {columns}"
            ),
        }
    }

    /// Claims due asynchronous invocations (queued and due, or running
    /// with an expired lease), as [`Dialect::claim_events`] claims events.
    pub fn claim_invocations(self, columns: &str) -> String {
        let due =
            "(status = 'queued' AND due_at <= $1) OR (status = 'running' AND lease_until < $1)";
        let set =
            "status = 'running', attempts = attempts + 1, lease_until = $1 + $2, updated_at = $1";
        match self {
            Dialect::Sqlite => format!(
                "UPDATE async_invocations SET {set} \
                 WHERE id IN (SELECT id FROM async_invocations WHERE {due} ORDER BY due_at LIMIT $3) \
                 RETURNING {columns}"
            ),
            Dialect::Postgres => format!(
                "WITH due AS MATERIALIZED ( \
                     SELECT id AS due_id FROM async_invocations WHERE {due} \
                     ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE async_invocations SET {set} FROM due WHERE id = due.due_id \
                 RETURNING {columns}"
            ),
        }
    }

    /// The column that orders events by insertion (newest first when descending).
    pub fn event_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "seq",
        }
    }

    /// Which `processing` events a starting process puts back in the queue
    /// (`$1`: now). SQLite: all of them, since one process owns the file.
    /// PostgreSQL: only those whose lease ended; live replicas hold the
    /// others, and the rows do not say which replica holds them.
    pub fn abandoned_events(self) -> &'static str {
        match self {
            Dialect::Sqlite => "status = 'processing'",
            Dialect::Postgres => "status = 'processing' AND lease_until < $1",
        }
    }

    /// The larger of two values.
    pub fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// How a transaction that reads and then writes an app's versions
    /// begins, with the statement that makes concurrent deploys of one app
    /// take turns (PostgreSQL: a per-app advisory lock held until commit;
    /// SQLite: the write lock taken up front, since a deferred transaction
    /// would fail with `SQLITE_BUSY` instead of waiting).
    pub fn begin_app_write(self) -> (&'static str, Option<&'static str>) {
        match self {
            Dialect::Sqlite => ("BEGIN IMMEDIATE", None),
            Dialect::Postgres => ("BEGIN", Some("SELECT pg_advisory_xact_lock($1, $2)")),
        }
    }
}
