-- What functions wrote (stdout, stderr) and what the runtime said about each
-- invocation (START, END, REPORT), per app, oldest trimmed once an app's lines
-- pass its retention (`functions.log_retention_bytes`).
CREATE TABLE function_logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    app        TEXT NOT NULL,
    at         INTEGER NOT NULL,
    request_id TEXT,
    stream     TEXT NOT NULL,
    message    TEXT NOT NULL,
    bytes      INTEGER NOT NULL
);
CREATE INDEX function_logs_by_app ON function_logs (app, seq);
