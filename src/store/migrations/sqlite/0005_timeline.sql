-- A tenant's history, in order: each processing attempt of an event about it
-- and each change of its state (with the event that caused it). Jobs are read
-- from `jobs`.
CREATE TABLE tenant_timeline (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX tenant_timeline_by_tenant ON tenant_timeline (tenant_id, seq);
