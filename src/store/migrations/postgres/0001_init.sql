-- The PostgreSQL schema: the SQLite one (migrations/sqlite/0001..0003) in
-- one step, with the same table and column names. Times are milliseconds
-- since the epoch (BIGINT), JSON is kept as the text it arrived as (TEXT:
-- payloads are stored exactly as received), app code is BYTEA so every
-- replica can fetch it. Keys use the "C" collation: they compare and sort
-- byte by byte, as SQLite's BINARY collation does, whatever the database's
-- locale.

-- The event inbox: every accepted event, before it is acknowledged.
CREATE TABLE events (
    -- Insertion order, for listing newest first (SQLite's rowid).
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    id              TEXT COLLATE "C" PRIMARY KEY,
    event_type      TEXT NOT NULL,
    source          TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'received',
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    note            TEXT,
    received_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT
);
CREATE UNIQUE INDEX events_seq ON events (seq);
-- Only unfinished events are indexed for claiming, so the index stays as
-- small as the backlog however long the inbox history grows.
CREATE INDEX events_due ON events (next_attempt_at) WHERE status IN ('received', 'processing');
CREATE INDEX events_status ON events (status, seq) WHERE status IN ('failed', 'dead');

CREATE TABLE tenants (
    id                TEXT COLLATE "C" PRIMARY KEY,
    state             TEXT NOT NULL,
    tier              TEXT,
    current_job_id    TEXT,
    last_error        TEXT,
    job_output        TEXT NOT NULL DEFAULT '{}',
    params            TEXT NOT NULL DEFAULT '{}',
    callback_secret   TEXT,
    callback_context  TEXT,
    callback_event_id TEXT,
    version           BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX tenants_updated ON tenants (updated_at DESC, id);

CREATE TABLE jobs (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    job_identifier TEXT NOT NULL,
    backend        TEXT NOT NULL,
    status         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    params         TEXT NOT NULL,
    external_id    TEXT,
    attempt        BIGINT NOT NULL DEFAULT 0,
    exit_code      BIGINT,
    output         TEXT,
    log_tail       TEXT,
    error          TEXT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT,
    -- Running jobs carry a lease their process renews; a job whose lease
    -- ended lost its process (crash, kill -9) and is re-run by whoever takes it.
    lease_until    BIGINT
);
CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at);
CREATE INDEX jobs_external ON jobs (external_id);
CREATE INDEX jobs_status ON jobs (status, backend);

-- Mini-apps and every version of their code (kept in the store, so any
-- replica can run an app and rollbacks stay possible).
CREATE TABLE apps (
    name            TEXT COLLATE "C" PRIMARY KEY,
    status          TEXT NOT NULL,
    current_version BIGINT NOT NULL,
    config          TEXT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE app_versions (
    name        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    config      TEXT NOT NULL,
    code        BYTEA NOT NULL,
    code_size   BIGINT NOT NULL,
    code_sha256 TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
