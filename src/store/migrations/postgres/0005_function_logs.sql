-- What functions wrote (stdout, stderr) and what the runtime said about each
-- invocation (START, END, REPORT), per app, from every replica: one row per
-- app per write of a replica's log writer, its lines a JSON array, oldest rows
-- trimmed once an app's rows pass its retention (`functions.log_retention_bytes`).
CREATE TABLE function_logs (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app      TEXT COLLATE "C" NOT NULL,
    first_at BIGINT NOT NULL,
    last_at  BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX function_logs_by_app ON function_logs (app, seq);
