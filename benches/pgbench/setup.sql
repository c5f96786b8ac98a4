-- Tables for the pgbench scripts beside this file (docs/BENCHMARKS.md).
DROP TABLE IF EXISTS ev, kv, rev, changes;
-- The reference workload of the PostgreSQL notes: 20-row inserts.
CREATE TABLE ev (id BIGSERIAL PRIMARY KEY, subject TEXT, payload TEXT,
                 created_at TIMESTAMPTZ DEFAULT now());
CREATE INDEX ON ev (subject);
-- The store's own shape: key space, revision row, change log.
CREATE TABLE kv (key BYTEA PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE rev (id INT PRIMARY KEY, revision BIGINT NOT NULL);
INSERT INTO rev VALUES (1, 0);
CREATE TABLE changes (revision BIGINT PRIMARY KEY, writes BYTEA NOT NULL);
CHECKPOINT;
