-- What functions wrote (stdout, stderr) and what the runtime said about each
-- invocation (START, END, REPORT), per app: one row per app per write of the
-- log writer, its lines a JSON array, oldest rows trimmed once an app's rows
-- pass its retention (`functions.log_retention_bytes`).
CREATE TABLE function_logs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    app      TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX function_logs_by_app ON function_logs (app, seq);
