-- `/ready` proves the store still takes writes by updating this one row.
CREATE TABLE store_heartbeat (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    beat_at INTEGER NOT NULL
);

-- A deploy in progress beats here (its process renews it); an app left
-- DEPLOYED whose deploy stopped beating lost its process (crash, kill -9)
-- and is settled by whoever takes it.
ALTER TABLE apps ADD COLUMN deploy_heartbeat_at INTEGER;
