-- Lambda Invoke API calls with `X-Amz-Invocation-Type: Event`: queued
-- durably, run by a process that serves functions, retried twice on failure
-- (as Lambda retries asynchronous invocations), leased while they run.
CREATE TABLE async_invocations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    qualifier   TEXT,
    payload     BLOB NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL,
    lease_until INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX async_invocations_due ON async_invocations (status, due_at);
