-- Lambda Invoke API calls with `X-Amz-Invocation-Type: Event`: queued
-- durably, run by a process that serves functions, retried twice on failure
-- (as Lambda retries asynchronous invocations), leased while they run.
CREATE TABLE async_invocations (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    qualifier   TEXT,
    payload     BYTEA NOT NULL,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    due_at      BIGINT NOT NULL,
    lease_until BIGINT,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX async_invocations_due ON async_invocations (status, due_at);
