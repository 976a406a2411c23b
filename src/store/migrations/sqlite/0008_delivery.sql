-- App delivery. Versions you can route to: an app's aliases (`live`, what its host serves,
-- and any others) as JSON, the newest version it has, and custom domains.
-- `current_version` and `config` stay those of the version `live` points at.
ALTER TABLE apps ADD COLUMN aliases TEXT NOT NULL DEFAULT '{}';
ALTER TABLE apps ADD COLUMN latest_version INTEGER NOT NULL DEFAULT 0;
UPDATE apps SET latest_version =
    COALESCE((SELECT MAX(version) FROM app_versions v WHERE v.name = apps.name), current_version);

-- A domain belongs to one app; a request whose Host is exactly it is served
-- by that app's `live` alias.
CREATE TABLE app_domains (
    domain     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX app_domains_by_app ON app_domains (name);

-- Deploys asked not to wait (`?wait=false`): what became of each. A
-- pending one whose lease ran out (its process stopped) is settled failed.
CREATE TABLE operations (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
CREATE INDEX operations_pending ON operations (status, lease_until);
