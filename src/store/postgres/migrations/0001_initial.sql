-- The key space, exactly as the embedded store keeps it: every record,
-- index entry, uniqueness claim, reference and metadata item is one row.
CREATE TABLE entitlements_kv (
    key BYTEA PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The store's revision. Every write transaction locks this one row first
-- (SELECT ... FOR UPDATE), which serializes writes across replicas.
CREATE TABLE entitlements_revision (
    id INT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO entitlements_revision (id, revision) VALUES (1, 0);

-- Every committed job's writes, by revision: what replicas follow to keep
-- their copy of the key space in step. Old entries are pruned.
CREATE TABLE entitlements_changes (
    revision BIGINT PRIMARY KEY,
    writes BYTEA NOT NULL
);

-- Leases: the replica that runs timed work (expiry, scheduled starts,
-- timeouts, guest lifecycle, retention) and until when.
CREATE TABLE entitlements_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
