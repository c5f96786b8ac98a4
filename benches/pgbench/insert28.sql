-- One transaction of a self-service USER_ADD's size: 28 rows of about
-- 200 bytes in one multi-row INSERT.
INSERT INTO ev (subject, payload)
SELECT 's' || (random() * 1000)::INT, repeat('x', 200) FROM generate_series(1, 28);
