-- The event inbox: every accepted event, before it is acknowledged.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    event_type      TEXT NOT NULL,
    source          TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'received',
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    note            TEXT,
    received_at     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER
);
-- Only unfinished events are indexed for claiming, so the index stays as
-- small as the backlog however long the inbox history grows.
CREATE INDEX events_due ON events (status, next_attempt_at) WHERE status IN ('received', 'processing');
CREATE INDEX events_status ON events (status) WHERE status IN ('failed', 'dead');

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    state             TEXT NOT NULL,
    tier              TEXT,
    current_job_id    TEXT,
    last_error        TEXT,
    job_output        TEXT NOT NULL DEFAULT '{}',
    params            TEXT NOT NULL DEFAULT '{}',
    callback_secret   TEXT,
    callback_context  TEXT,
    callback_event_id TEXT,
    version           INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    job_identifier TEXT NOT NULL,
    backend        TEXT NOT NULL,
    status         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    params         TEXT NOT NULL,
    external_id    TEXT,
    attempt        INTEGER NOT NULL DEFAULT 0,
    exit_code      INTEGER,
    output         TEXT,
    log_tail       TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER
);
CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at);
CREATE INDEX jobs_external ON jobs (external_id);
CREATE INDEX jobs_status ON jobs (status, backend);
