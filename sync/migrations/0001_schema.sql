-- emotion-sync migration 1: the central schema.
--
-- Every table that holds personal data is keyed by user first: each unique key
-- (and primary key) starts with user_id, so the tables can be distributed by
-- user_id on Citus. gateway_sync_state (one row per gateway, no personal data)
-- is the documented exception: it would be a Citus reference table.

-- One row per emotion event, partitioned by month of ingested_at (UTC): the
-- gateway's clock, so partitions are predictable and retention drops whole
-- months of arrival. A client's own `timestamp` can be anything (late uploads,
-- skewed clocks) and would scatter rows over arbitrary partitions.
--
-- Identifier columns use the "C" collation (byte order): they are ASCII ids,
-- never sorted for people, and comparing them with memcmp instead of the
-- database's locale makes every index insert and lookup on them markedly
-- cheaper (about a third of the write cost, measured).
CREATE TABLE emotional_events (
    user_id       text COLLATE "C" NOT NULL,
    event_id      uuid             NOT NULL,
    session_id    text COLLATE "C" NOT NULL,
    source        text             NOT NULL,
    emotion_label text             NOT NULL,
    valence       double precision NOT NULL CHECK (valence BETWEEN -1 AND 1),
    arousal       double precision NOT NULL CHECK (arousal BETWEEN 0 AND 1),
    confidence    double precision          CHECK (confidence BETWEEN 0 AND 1),
    context       jsonb,
    -- The event's raw_data object, as the original's raw_payload.
    raw_payload   jsonb,
    biometrics    jsonb,
    location      jsonb,
    device_info   jsonb,
    "timestamp"   timestamptz      NOT NULL,
    ingested_at   timestamptz      NOT NULL,
    gateway_id    text             NOT NULL,
    -- plugin-name@version, or `client` for events sent ready-made.
    producer      text             NOT NULL,
    -- The idempotency key. A unique key of a partitioned table must contain the
    -- partition column; leading with (user_id, ingested_at) it is also the
    -- original's user + ingested_at index, so that one is not built twice.
    CONSTRAINT emotional_events_pkey PRIMARY KEY (user_id, ingested_at, event_id)
) PARTITION BY RANGE (ingested_at);

-- Safety net: a row whose month has no partition yet lands here instead of
-- failing; ensure_emotional_event_partitions() moves such rows out when it
-- creates the month's partition.
CREATE TABLE emotional_events_default PARTITION OF emotional_events DEFAULT;

-- The original's other indexes.
CREATE INDEX idx_emotional_events_valence_arousal ON emotional_events (valence, arousal);
CREATE INDEX idx_emotional_events_user_session ON emotional_events (user_id, session_id);

-- Latest credit/risk summary per user, window and gateway (a user seen by
-- two gateways has a row from each; credit_emotion_adjustment() picks the
-- newest).
CREATE TABLE credit_risk_summaries (
    user_id                     text COLLATE "C" NOT NULL,
    window_days                 integer          NOT NULL CHECK (window_days > 0),
    gateway_id                  text             NOT NULL,
    event_count                 bigint           NOT NULL CHECK (event_count >= 0),
    avg_valence                 double precision,
    avg_arousal                 double precision,
    stability_score             double precision NOT NULL,
    avg_stress_level            double precision,
    patterns                    text[]           NOT NULL DEFAULT '{}',
    risk_score                  double precision NOT NULL,
    risk_premium_adjustment_pct double precision NOT NULL,
    action                      text             NOT NULL,
    reasons                     jsonb            NOT NULL DEFAULT '[]',
    computed_at                 timestamptz      NOT NULL,
    synced_at                   timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT credit_risk_summaries_pkey PRIMARY KEY (user_id, window_days, gateway_id)
);

-- Per gateway: how far its buffer has been synced. The cursor is a position
-- (batch, index) in the gateway's buffer, committed in the same transaction as
-- the rows it covers; NULL until the first batch. Citus reference table.
CREATE TABLE gateway_sync_state (
    gateway_id       text COLLATE "C" NOT NULL,
    cursor_batch     bigint      CHECK (cursor_batch >= 0),
    cursor_index     bigint      CHECK (cursor_index >= 0),
    last_sync_at     timestamptz,
    events_synced    bigint      NOT NULL DEFAULT 0,
    batches_synced   bigint      NOT NULL DEFAULT 0,
    summaries_synced bigint      NOT NULL DEFAULT 0,
    last_summary_at  timestamptz,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gateway_sync_state_pkey PRIMARY KEY (gateway_id),
    CHECK ((cursor_batch IS NULL) = (cursor_index IS NULL))
);

-- Applied erasures. The row is the tombstone that keeps late events of the
-- user (ingested at or before requested_at) from coming back; it holds the
-- user id and counts only.
CREATE TABLE erasure_requests (
    user_id           text COLLATE "C" NOT NULL,
    request_id        uuid        NOT NULL,
    requested_at      timestamptz NOT NULL,
    gateway_id        text        NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    events_deleted    bigint      NOT NULL DEFAULT 0,
    summaries_deleted bigint      NOT NULL DEFAULT 0,
    consents_deleted  bigint      NOT NULL DEFAULT 0,
    CONSTRAINT erasure_requests_pkey PRIMARY KEY (user_id, request_id)
);
CREATE INDEX idx_erasure_requests_user_time ON erasure_requests (user_id, requested_at);

-- A user's consent per purpose: `analytics` lets their events leave the
-- gateway, `credit` their summaries. The newest decision wins.
CREATE TABLE consents (
    user_id    text COLLATE "C" NOT NULL,
    purpose    text        NOT NULL CHECK (purpose IN ('analytics', 'credit')),
    granted    boolean     NOT NULL,
    updated_at timestamptz NOT NULL,
    gateway_id text        NOT NULL,
    CONSTRAINT consents_pkey PRIMARY KEY (user_id, purpose)
);
