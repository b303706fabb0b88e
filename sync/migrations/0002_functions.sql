-- emotion-sync migration 2: partition maintenance and the credit system's function.

-- Create the monthly partitions of emotional_events (UTC months) covering
-- [p_from, p_to]; returns how many were created. Idempotent. Rows that already
-- sit in the default partition for a new month are moved into it (otherwise
-- PostgreSQL refuses to create the partition). Creators are serialized with a
-- transaction-level advisory lock (key 7236002), since two concurrent
-- CREATE ... PARTITION OF for one month would collide.
CREATE FUNCTION ensure_emotional_event_partitions(p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    month_start timestamptz;
    month_end   timestamptz;
    part        text;
    created     integer := 0;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to < p_from THEN
        RAISE EXCEPTION 'ensure_emotional_event_partitions: invalid range [%, %]', p_from, p_to;
    END IF;
    IF p_to - p_from > interval '10 years' THEN
        RAISE EXCEPTION 'ensure_emotional_event_partitions: range [%, %] spans more than 10 years', p_from, p_to;
    END IF;
    PERFORM pg_advisory_xact_lock(7236002);
    month_start := date_trunc('month', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE month_start <= p_to LOOP
        month_end := (date_trunc('month', month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part := format('emotional_events_p%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
        IF NOT EXISTS (
            SELECT 1 FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = part AND n.oid = (
                SELECT p.relnamespace FROM pg_class p WHERE p.oid = 'emotional_events'::regclass)
        ) THEN
            IF EXISTS (SELECT 1 FROM emotional_events_default
                       WHERE ingested_at >= month_start AND ingested_at < month_end) THEN
                EXECUTE format('CREATE TABLE %I (LIKE emotional_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format(
                    'WITH moved AS (DELETE FROM emotional_events_default WHERE ingested_at >= %L AND ingested_at < %L RETURNING *) '
                    'INSERT INTO %I SELECT * FROM moved', month_start, month_end, part);
                EXECUTE format('ALTER TABLE emotional_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               part, month_start, month_end);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF emotional_events FOR VALUES FROM (%L) TO (%L)',
                               part, month_start, month_end);
            END IF;
            created := created + 1;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END
$fn$;

-- For the credit system: the current risk-premium adjustment of a user, with
-- its action and reasons, from the newest summary per window (over every
-- gateway that reported one), and only while the user's consent to the
-- `credit` purpose stands. No row: no consent, or no summary yet.
CREATE FUNCTION credit_emotion_adjustment(p_user_id text, p_window_days integer DEFAULT NULL)
RETURNS TABLE (
    user_id                     text,
    window_days                 integer,
    risk_premium_adjustment_pct double precision,
    action                      text,
    reasons                     jsonb,
    patterns                    text[],
    risk_score                  double precision,
    event_count                 bigint,
    computed_at                 timestamptz,
    gateway_id                  text
)
LANGUAGE sql
STABLE
AS $fn$
    SELECT DISTINCT ON (s.window_days)
           s.user_id, s.window_days, s.risk_premium_adjustment_pct, s.action, s.reasons,
           s.patterns, s.risk_score, s.event_count, s.computed_at, s.gateway_id
    FROM credit_risk_summaries s
    WHERE s.user_id = p_user_id
      AND (p_window_days IS NULL OR s.window_days = p_window_days)
      AND EXISTS (SELECT 1 FROM consents c
                  WHERE c.user_id = s.user_id AND c.purpose = 'credit' AND c.granted)
    ORDER BY s.window_days, s.computed_at DESC, s.gateway_id
$fn$;
