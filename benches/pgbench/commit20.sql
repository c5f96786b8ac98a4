-- One transaction shaped like the store's commit of one job writing 20
-- keys: lock the revision row, upsert the keys, append the change log,
-- advance the revision. Every writer queues on the one revision row.
BEGIN;
SELECT revision FROM rev WHERE id = 1 FOR UPDATE;
INSERT INTO kv (key, value)
SELECT convert_to(:client_id || '/' || g || '/' || random(), 'UTF8'), convert_to(repeat('x', 200), 'UTF8')
FROM generate_series(1, 20) g
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO changes (revision, writes)
SELECT revision + 1, convert_to(repeat('x', 4400), 'UTF8') FROM rev WHERE id = 1;
UPDATE rev SET revision = revision + 1 WHERE id = 1;
COMMIT;
