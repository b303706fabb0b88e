-- emotion-sync migration 4: one summary per user and window across gateways.
--
-- A user who moves between sites has a row from each gateway in
-- credit_risk_summaries (its key is user, window, gateway). Each gateway saw
-- only its own share of the user's events, so no single row is the user's
-- summary, and "the newest row wins" (migration 2) flipped between the sites'
-- verdicts as they synced. The rows stay as they are (each gateway replaces
-- only its own, no cross-gateway write conflicts); this view combines them,
-- and the credit function reads it. The rule (sync/README.md, "Users at
-- several gateways"):
--
-- * Rows computed more than window_days before the user's newest row for that
--   window are left out: their window no longer overlaps the newest one (a
--   site the user left, a gateway retired).
-- * event_count is the sum; avg_valence, avg_arousal and avg_stress_level are
--   event-weighted means, which is exact because every event is ingested (and
--   counted) by exactly one gateway; stability_score and risk_score are
--   event-weighted means too (an approximation: neither is a mean).
-- * patterns: every pattern any site found, in the credit table's order.
-- * The adjustment follows the credit table's precedence: a crisis at any
--   site decides (delay_and_support, 0 %: a crisis is never outweighed by a
--   calm site); otherwise the sites with enough data to judge (action other
--   than insufficient_data) contribute their adjustment weighted by their
--   events, rounded to 0.001 %, and its sign gives the action (premium,
--   discount, standard_rates); no such site: insufficient_data, 0 %.
-- * A single row comes out unchanged (the one-gateway case is as before).
--
-- Everything is grouped by (user_id, window_days) and the window function is
-- partitioned by them, so a condition on user_id is pushed down to the table
-- scan: one user's query stays on one Citus shard.
CREATE VIEW credit_risk_summaries_combined AS
SELECT
    c.user_id,
    c.window_days,
    sum(c.event_count)::bigint AS event_count,
    -- One row: its own values, exactly (no float noise from weighing).
    CASE WHEN count(*) = 1 THEN min(c.avg_valence)
         ELSE sum(c.avg_valence * c.event_count) FILTER (WHERE c.avg_valence IS NOT NULL)
              / nullif(sum(c.event_count) FILTER (WHERE c.avg_valence IS NOT NULL), 0) END AS avg_valence,
    CASE WHEN count(*) = 1 THEN min(c.avg_arousal)
         ELSE sum(c.avg_arousal * c.event_count) FILTER (WHERE c.avg_arousal IS NOT NULL)
              / nullif(sum(c.event_count) FILTER (WHERE c.avg_arousal IS NOT NULL), 0) END AS avg_arousal,
    CASE WHEN count(*) = 1 THEN min(c.stability_score)
         ELSE coalesce(sum(c.stability_score * c.event_count) / nullif(sum(c.event_count), 0),
                       avg(c.stability_score)) END AS stability_score,
    CASE WHEN count(*) = 1 THEN min(c.avg_stress_level)
         ELSE sum(c.avg_stress_level * c.event_count) FILTER (WHERE c.avg_stress_level IS NOT NULL)
              / nullif(sum(c.event_count) FILTER (WHERE c.avg_stress_level IS NOT NULL), 0) END AS avg_stress_level,
    CASE WHEN count(*) = 1 THEN min(c.patterns)
         ELSE ARRAY(SELECT p FROM unnest(array_agg(c.patterns_text)) AS a(list),
                                  unnest(string_to_array(a.list, ',')) AS p
                    GROUP BY p
                    ORDER BY array_position(ARRAY['emotional_crisis', 'chronic_stress',
                                                  'emotional_volatility', 'recovery',
                                                  'high_stability'], p), p) END AS patterns,
    CASE WHEN count(*) = 1 THEN min(c.risk_score)
         ELSE coalesce(sum(c.risk_score * c.event_count) / nullif(sum(c.event_count), 0),
                       avg(c.risk_score)) END AS risk_score,
    CASE
        WHEN count(*) = 1 THEN min(c.risk_premium_adjustment_pct)
        WHEN bool_or(c.action = 'delay_and_support') THEN 0
        WHEN NOT bool_or(c.judged) THEN 0
        ELSE round((sum(c.risk_premium_adjustment_pct * c.event_count) FILTER (WHERE c.judged)
                    / sum(c.event_count) FILTER (WHERE c.judged))::numeric, 3)::double precision
    END AS risk_premium_adjustment_pct,
    CASE
        WHEN count(*) = 1 THEN min(c.action)
        WHEN bool_or(c.action = 'delay_and_support') THEN 'delay_and_support'
        WHEN NOT bool_or(c.judged) THEN 'insufficient_data'
        ELSE CASE sign(round((sum(c.risk_premium_adjustment_pct * c.event_count) FILTER (WHERE c.judged)
                              / sum(c.event_count) FILTER (WHERE c.judged))::numeric, 3))
                 WHEN 1 THEN 'premium' WHEN -1 THEN 'discount' ELSE 'standard_rates' END
    END AS action,
    CASE
        WHEN count(*) = 1 THEN (array_agg(c.reasons))[1]
        ELSE jsonb_build_array(format(
                 'combined over %s gateways (%s): %s',
                 count(*),
                 string_agg(format('%s: %s events, %s', c.gateway_id, c.event_count, c.action), '; '
                            ORDER BY c.gateway_id),
                 CASE
                     WHEN bool_or(c.action = 'delay_and_support')
                         THEN 'a crisis at one site decides (delay and support, never a premium)'
                     WHEN NOT bool_or(c.judged)
                         THEN 'no site has enough events to judge'
                     ELSE 'adjustment = the judging sites'' adjustments weighted by their events'
                 END))
             || (SELECT coalesce(jsonb_agg(e.value ORDER BY g.ord, e.ord), '[]'::jsonb)
                 FROM jsonb_array_elements(jsonb_agg(c.prefixed_reasons ORDER BY c.gateway_id))
                          WITH ORDINALITY AS g(value, ord),
                      jsonb_array_elements(g.value) WITH ORDINALITY AS e(value, ord))
    END AS reasons,
    max(c.computed_at) AS computed_at,
    -- The gateway of the newest row (the one-gateway column of migration 2).
    (array_agg(c.gateway_id ORDER BY c.computed_at DESC, c.gateway_id))[1] AS gateway_id,
    array_agg(c.gateway_id ORDER BY c.gateway_id) AS gateways
FROM (
    SELECT s.*,
           array_to_string(s.patterns, ',') AS patterns_text,
           s.action NOT IN ('insufficient_data', 'delay_and_support') AS judged,
           (SELECT coalesce(jsonb_agg(to_jsonb(s.gateway_id || ': ' || r.value) ORDER BY r.ord), '[]'::jsonb)
            FROM jsonb_array_elements_text(s.reasons) WITH ORDINALITY AS r(value, ord)) AS prefixed_reasons,
           max(s.computed_at) OVER (PARTITION BY s.user_id, s.window_days) AS newest
    FROM credit_risk_summaries s
) c
WHERE c.computed_at >= c.newest - make_interval(days => c.window_days)
GROUP BY c.user_id, c.window_days;

-- The credit system's function now reads the combined summary: one row per
-- window, only while the user's credit consent stands. The result gains
-- `gateways` (every gateway whose row counts); `gateway_id` is the newest
-- one's. The return type changes, hence drop and create.
DROP FUNCTION credit_emotion_adjustment(text, integer);
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
    gateway_id                  text,
    gateways                    text[]
)
LANGUAGE sql
STABLE
AS $fn$
    SELECT c.user_id, c.window_days, c.risk_premium_adjustment_pct, c.action, c.reasons,
           c.patterns, c.risk_score, c.event_count, c.computed_at, c.gateway_id, c.gateways
    FROM credit_risk_summaries_combined c
    WHERE c.user_id = p_user_id
      AND (p_window_days IS NULL OR c.window_days = p_window_days)
      AND EXISTS (SELECT 1 FROM consents k
                  WHERE k.user_id = c.user_id AND k.purpose = 'credit' AND k.granted)
    ORDER BY c.window_days
$fn$;
