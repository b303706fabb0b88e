#!/usr/bin/env bash
# Does inserting a batch in primary-key order pay? The experiment behind
# `stage` sorting each batch (sync/README.md, Benchmark):
#
#   sync/benches/key_order.sh     # needs psql and the development server
#
# In a database of its own (dropped at the end), with the real migrations:
# one million events like the Rust bench's (1000 users, time-ordered), moved
# in 200 batches of 5000 from a temporary staging table into the month's
# partition with INSERT … ON CONFLICT DO NOTHING, one transaction per batch:
#   1. in arrival order, and in primary-key order (ORDER BY), twice each;
#   2. on two connections at once (500,000 rows each), both in key order, and
#      with the second in descending key order, twice each.
# EMOTION_SYNC_TEST_DATABASE_URL's server is used if set (its database part
# is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
server="${EMOTION_SYNC_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
server="${server%/*}"
db="key_order_$$"
psql -X -q "$server/postgres" -c "CREATE DATABASE $db"
trap 'psql -X -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db"' EXIT
url="$server/$db"
q() { psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }

q -f migrations/0001_schema.sql -f migrations/0002_functions.sql
q -o /dev/null <<'SQL'
SELECT ensure_emotional_event_partitions('2025-03-01', '2025-03-01');
CREATE TABLE src AS
SELECT 'user-' || (i % 1000) AS user_id,
       ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS event_id,
       'session_' || (i % 1000) || '_' || (i / 200000) AS session_id,
       (ARRAY['text','voice','facial','physiological','survey','biometric','behavioral','contextual'])[1 + i % 8] AS source,
       'joy' AS emotion_label, random() * 2 - 1 AS valence, random() AS arousal,
       0.5 + random() / 2 AS confidence,
       '{"time_period": "morning", "activity": "work"}'::jsonb AS context, NULL::jsonb AS raw_payload,
       CASE WHEN i % 2 = 0 THEN '{"heart_rate": 72.5}'::jsonb END AS biometrics, NULL::jsonb AS location,
       CASE WHEN i % 4 = 0 THEN '{"platform": "Android"}'::jsonb END AS device_info,
       '2025-03-01'::timestamptz + i * interval '250 microseconds' - interval '40 ms' AS "timestamp",
       '2025-03-01'::timestamptz + i * interval '250 microseconds' AS ingested_at,
       'bench-gw' AS gateway_id, 'client' AS producer, i AS n
FROM generate_series(0, 999999) i;
CREATE INDEX ON src (n);
VACUUM ANALYZE src;
-- `batches` batches of 5000 from row `lo`, in arrival order (order = 0),
-- ascending (1) or descending (-1) key order, each batch committed.
CREATE PROCEDURE move(lo int, batches int, ord int) LANGUAGE plpgsql AS $$
DECLARE b int;
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS stg (LIKE emotional_events) ON COMMIT DELETE ROWS;
  FOR b IN 0 .. batches - 1 LOOP
    INSERT INTO stg SELECT user_id, event_id, session_id, source, emotion_label, valence,
        arousal, confidence, context, raw_payload, biometrics, location, device_info,
        "timestamp", ingested_at, gateway_id, producer
      FROM src WHERE n >= lo + b * 5000 AND n < lo + (b + 1) * 5000;
    IF ord = 1 THEN
      INSERT INTO emotional_events_p2025_03 SELECT * FROM stg
        ORDER BY user_id, ingested_at, event_id ON CONFLICT DO NOTHING;
    ELSIF ord = -1 THEN
      INSERT INTO emotional_events_p2025_03 SELECT * FROM stg
        ORDER BY user_id DESC, ingested_at DESC, event_id DESC ON CONFLICT DO NOTHING;
    ELSE
      INSERT INTO emotional_events_p2025_03 SELECT * FROM stg ON CONFLICT DO NOTHING;
    END IF;
    COMMIT;
  END LOOP;
END $$;
SQL

fresh() { q -c "TRUNCATE emotional_events_p2025_03" -c "CHECKPOINT"; }
seconds() {
    local s
    s=$(date +%s.%N)
    "$@"
    awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { print e - s }'
}

echo "one connection, 1,000,000 rows in 200 batches of 5000:"
for run in 1 2; do
    for ord in 0 1; do
        fresh
        t=$(seconds q -c "CALL move(0, 200, $ord)")
        [ "$ord" = 0 ] && what="arrival order" || what="key order    "
        printf '  run %s, %s: %.2f s\n' "$run" "$what" "$t"
    done
done
echo "two connections, 500,000 rows each:"
pair() { q -c "CALL move(0, 100, 1)" & q -c "CALL move(500000, 100, $1)"; wait; }
for run in 1 2; do
    for second in 1 -1; do
        fresh
        t=$(seconds pair "$second")
        [ "$second" = 1 ] && what="both ascending     " || what="second descending  "
        printf '  run %s, %s: %.2f s\n' "$run" "$what" "$t"
    done
done
