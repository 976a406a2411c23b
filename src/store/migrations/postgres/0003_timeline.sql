-- A tenant's history, in order: each processing attempt of an event about it
-- and each change of its state (with the event that caused it). Jobs are read
-- from `jobs`.
CREATE TABLE tenant_timeline (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX tenant_timeline_by_tenant ON tenant_timeline (tenant_id, seq);
