-- Mini-apps and every version of their code (kept in the store, so any
-- replica can run an app and rollbacks stay possible).
CREATE TABLE apps (
    name            TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    config          TEXT NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE app_versions (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    config     TEXT NOT NULL,
    code       BLOB NOT NULL,
    code_size  INTEGER NOT NULL,
    code_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
