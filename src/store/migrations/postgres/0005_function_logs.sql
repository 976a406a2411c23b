-- What functions wrote (stdout, stderr) and what the runtime said about each
-- invocation (START, END, REPORT), per app, from every replica, oldest trimmed
-- once an app's lines pass its retention (`functions.log_retention_bytes`).
CREATE TABLE function_logs (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app        TEXT COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    request_id TEXT,
    stream     TEXT NOT NULL,
    message    TEXT NOT NULL,
    bytes      BIGINT NOT NULL
);
CREATE INDEX function_logs_by_app ON function_logs (app, seq);
