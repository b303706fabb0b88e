//! The writer: one connection to the central database, reconnected on demand.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use emotion_core::EmotionEvent;
use emotion_core::credit::CreditSummary;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement, Transaction};
use uuid::Uuid;

use crate::config::SyncConfig;
use crate::error::{Result, SyncError};
use crate::migrate::{self, ERASURE_LOCK, MigrationReport};
use crate::rows::{
    AuditRow, Consent, ConsentOutcome, Cursor, ErasureOutcome, GatewaySyncState, SummaryOutcome,
    WriteOutcome,
};

/// Connection settings of a [`SyncClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Give up an operation (statement or whole transaction) after this long;
    /// the connection is then dropped, so the transaction rolls back.
    pub operation_timeout: Duration,
    /// `migrate()` makes sure the partitions of this month and of this many
    /// months ahead exist.
    pub partitions_ahead_months: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(60),
            partitions_ahead_months: 3,
        }
    }
}

impl ClientOptions {
    pub fn from_config(cfg: &SyncConfig) -> Self {
        ClientOptions {
            connect_timeout: cfg.connect_timeout,
            operation_timeout: cfg.operation_timeout,
            ..Default::default()
        }
    }
}

/// Columns of `emotional_events` as written, in COPY order.
const EVENT_COLUMNS: &str = "user_id, event_id, session_id, source, emotion_label, valence, \
    arousal, confidence, context, raw_payload, biometrics, location, device_info, \"timestamp\", \
    ingested_at, gateway_id, producer";

/// Their types, for the binary COPY.
const EVENT_TYPES: [Type; 17] = [
    Type::TEXT,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
];

/// Per-session staging table. `ON COMMIT DELETE ROWS`: each transaction starts
/// with it empty, and a rolled-back COPY leaves nothing behind. Temporary
/// tables are not WAL-logged, which is what makes COPY-then-INSERT cheap.
const CREATE_STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS sync_staging \
    (LIKE emotional_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";

/// Statements a writer uses, prepared once per connection.
struct Prepared {
    lock_shared: Statement,
    lock_exclusive: Statement,
    /// Into the partitioned table (a batch that spans months).
    insert_from_staging: Statement,
    /// Straight into one month's partition (the usual batch): PostgreSQL 15
    /// routes each row of a partitioned-table INSERT anew, which costs about a
    /// quarter of the insert; the writer knows the month already.
    insert_by_month: HashMap<Month, Statement>,
    advance_cursor: Statement,
    read_cursor: Statement,
    upsert_summaries: Statement,
    count_summaries: Statement,
    upsert_consents: Statement,
    ensure_partitions: Statement,
    write_audit: Statement,
}

/// Move the staged rows into `target`. The anti-join is the no-resurrection
/// rule: an event of a user erased at or after the event's ingestion is never
/// stored again. `ON CONFLICT DO NOTHING` makes a re-sent event a no-op.
///
/// The rows go in in the order they were staged, which `stage` makes the
/// primary key's (see there); no `ORDER BY`, so the server does not sort.
fn insert_sql(target: &str) -> String {
    format!(
        "INSERT INTO {target} ({EVENT_COLUMNS}) \
         SELECT {EVENT_COLUMNS} FROM sync_staging s \
         WHERE NOT EXISTS (SELECT 1 FROM erasure_requests r \
                           WHERE r.user_id = s.user_id AND r.requested_at >= s.ingested_at) \
         ON CONFLICT DO NOTHING"
    )
}

/// The partition `ensure_emotional_event_partitions()` creates for a month.
fn partition_name((y, m): Month) -> String {
    format!("emotional_events_p{y:04}_{m:02}")
}

impl Prepared {
    /// The insert for a batch within `month`: into its partition when that
    /// exists under the expected name, else through the parent table.
    async fn insert_for(&mut self, c: &Client, month: Option<Month>) -> Statement {
        let Some(m) = month else {
            return self.insert_from_staging.clone();
        };
        if let Some(st) = self.insert_by_month.get(&m) {
            return st.clone();
        }
        let st = match c.prepare(&insert_sql(&partition_name(m))).await {
            Ok(st) => st,
            // No such partition (created by hand under another name, say):
            // the parent routes the rows itself.
            Err(_) => self.insert_from_staging.clone(),
        };
        self.insert_by_month.insert(m, st.clone());
        st
    }

    async fn new(c: &Client) -> std::result::Result<Self, tokio_postgres::Error> {
        Ok(Prepared {
            lock_shared: c.prepare("SELECT pg_advisory_xact_lock_shared($1)").await?,
            lock_exclusive: c.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            insert_from_staging: c.prepare(&insert_sql("emotional_events")).await?,
            insert_by_month: HashMap::new(),
            // Forward only: a cursor at or behind the stored one changes nothing,
            // not even the counters, so a re-sent batch leaves no trace.
            advance_cursor: c
                .prepare(
                    "INSERT INTO gateway_sync_state AS g \
                       (gateway_id, cursor_batch, cursor_index, last_sync_at, events_synced, batches_synced) \
                     VALUES ($1, $2, $3, now(), $4, 1) \
                     ON CONFLICT (gateway_id) DO UPDATE SET \
                       cursor_batch = excluded.cursor_batch, cursor_index = excluded.cursor_index, \
                       last_sync_at = excluded.last_sync_at, \
                       events_synced = g.events_synced + excluded.events_synced, \
                       batches_synced = g.batches_synced + 1 \
                     WHERE g.cursor_batch IS NULL \
                        OR (g.cursor_batch, g.cursor_index) < (excluded.cursor_batch, excluded.cursor_index) \
                     RETURNING 1",
                )
                .await?,
            read_cursor: c
                .prepare(
                    "SELECT gateway_id, cursor_batch, cursor_index, last_sync_at, events_synced, \
                            batches_synced, summaries_synced, last_summary_at \
                     FROM gateway_sync_state WHERE gateway_id = $1",
                )
                .await?,
            upsert_summaries: c
                .prepare(
                    "WITH s AS ( \
                       SELECT * FROM unnest($2::text[], $3::int4[], $4::int8[], $5::float8[], $6::float8[], \
                                            $7::float8[], $8::float8[], $9::text[], $10::float8[], $11::float8[], \
                                            $12::text[], $13::jsonb[], $14::timestamptz[]) \
                         AS s(user_id, window_days, event_count, avg_valence, avg_arousal, stability_score, \
                              avg_stress_level, patterns, risk_score, pct, action, reasons, computed_at)) \
                     INSERT INTO credit_risk_summaries AS c \
                       (user_id, window_days, gateway_id, event_count, avg_valence, avg_arousal, \
                        stability_score, avg_stress_level, patterns, risk_score, \
                        risk_premium_adjustment_pct, action, reasons, computed_at) \
                     SELECT s.user_id, s.window_days, $1, s.event_count, s.avg_valence, s.avg_arousal, \
                            s.stability_score, s.avg_stress_level, \
                            CASE WHEN s.patterns = '' THEN '{}'::text[] ELSE string_to_array(s.patterns, ',') END, \
                            s.risk_score, s.pct, s.action, s.reasons, s.computed_at \
                     FROM s \
                     WHERE EXISTS (SELECT 1 FROM consents k \
                                   WHERE k.user_id = s.user_id AND k.purpose = 'credit' AND k.granted) \
                       AND NOT EXISTS (SELECT 1 FROM erasure_requests r \
                                       WHERE r.user_id = s.user_id AND r.requested_at >= s.computed_at) \
                     ORDER BY s.user_id, s.window_days \
                     ON CONFLICT (user_id, window_days, gateway_id) DO UPDATE SET \
                       event_count = excluded.event_count, avg_valence = excluded.avg_valence, \
                       avg_arousal = excluded.avg_arousal, stability_score = excluded.stability_score, \
                       avg_stress_level = excluded.avg_stress_level, patterns = excluded.patterns, \
                       risk_score = excluded.risk_score, \
                       risk_premium_adjustment_pct = excluded.risk_premium_adjustment_pct, \
                       action = excluded.action, reasons = excluded.reasons, \
                       computed_at = excluded.computed_at, synced_at = now() \
                     WHERE excluded.computed_at > c.computed_at",
                )
                .await?,
            count_summaries: c
                .prepare(
                    "INSERT INTO gateway_sync_state AS g (gateway_id, summaries_synced, last_summary_at) \
                     VALUES ($1, $2, now()) \
                     ON CONFLICT (gateway_id) DO UPDATE SET \
                       summaries_synced = g.summaries_synced + excluded.summaries_synced, \
                       last_summary_at = excluded.last_summary_at",
                )
                .await?,
            write_audit: c
                .prepare(
                    "INSERT INTO audit_log (user_id, gateway_id, audit_id, at, principal, action, outcome) \
                     SELECT s.user_id, $1, s.audit_id, s.at, s.principal, s.action, s.outcome \
                     FROM unnest($2::text[], $3::uuid[], $4::timestamptz[], $5::text[], $6::text[], $7::text[]) \
                       AS s(user_id, audit_id, at, principal, action, outcome) \
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            // Withdrawing the credit consent also removes the user's summaries
            // (the credit system must not use them any more).
            upsert_consents: c
                .prepare(
                    "WITH s AS ( \
                       SELECT * FROM unnest($2::text[], $3::text[], $4::bool[], $5::timestamptz[]) \
                         AS s(user_id, purpose, granted, updated_at)), \
                     up AS ( \
                       INSERT INTO consents AS c (user_id, purpose, granted, updated_at, gateway_id) \
                       SELECT s.user_id, s.purpose, s.granted, s.updated_at, $1 FROM s \
                       WHERE NOT EXISTS (SELECT 1 FROM erasure_requests r \
                                         WHERE r.user_id = s.user_id AND r.requested_at >= s.updated_at) \
                       ORDER BY s.user_id, s.purpose \
                       ON CONFLICT (user_id, purpose) DO UPDATE SET \
                         granted = excluded.granted, updated_at = excluded.updated_at, \
                         gateway_id = excluded.gateway_id \
                       WHERE excluded.updated_at > c.updated_at \
                       RETURNING c.user_id, c.purpose, c.granted), \
                     revoked AS ( \
                       DELETE FROM credit_risk_summaries d USING up \
                       WHERE d.user_id = up.user_id AND up.purpose = 'credit' AND NOT up.granted \
                       RETURNING 1) \
                     SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM revoked)",
                )
                .await?,
            ensure_partitions: c
                .prepare("SELECT ensure_emotional_event_partitions($1, $2)")
                .await?,
        })
    }
}

struct Conn {
    client: Client,
    task: JoinHandle<()>,
    prepared: Option<Prepared>,
    staging: bool,
}

/// A month, as (year, month), UTC.
type Month = (i32, u32);

fn month_of(t: DateTime<Utc>) -> Month {
    (t.year(), t.month())
}

fn month_start((y, m): Month) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()
}

/// The central-database writer of one gateway.
///
/// Holds one connection, opened on first use and again after it breaks, so a
/// caller can simply retry a failed call (see [`crate::retry`]). Methods take
/// `&mut self`: one writer is one sequential stream of transactions.
pub struct SyncClient {
    config: tokio_postgres::Config,
    options: ClientOptions,
    conn: Option<Conn>,
    /// A second connection, opened only by [`SyncClient::write_event_batches`].
    aux: Option<Conn>,
    /// Months whose partition is known to exist (saves a round trip per batch).
    partitions: HashSet<Month>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("connected", &self.is_connected())
            .field("options", &self.options)
            .finish()
    }
}

type Op = &'static str;

impl SyncClient {
    /// Connect with default options; fails if the server is unreachable.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Self> {
        let mut c = Self::new(url, options)?;
        c.ensure_connected().await?;
        Ok(c)
    }

    /// A client that connects on first use (so a gateway can start while
    /// the central database is down).
    pub fn new(url: &str, options: ClientOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(SyncError::InvalidUrl)?;
        if config.get_application_name().is_none() {
            config.application_name("emotion-sync");
        }
        config
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        Ok(SyncClient {
            config,
            options,
            conn: None,
            aux: None,
            partitions: HashSet::new(),
        })
    }

    /// A lazy client from the `[sync]` configuration.
    pub fn from_config(cfg: &SyncConfig) -> Result<Self> {
        Self::new(&cfg.database_url, ClientOptions::from_config(cfg))
    }

    /// True while a connection is open (it may still break on next use).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.client.is_closed())
    }

    /// Drop the connections (the next call opens a new one).
    pub fn disconnect(&mut self) {
        for slot in [&mut self.conn, &mut self.aux] {
            if let Some(c) = slot.take() {
                c.task.abort();
            }
        }
    }

    /// Drop whichever connection broke.
    fn drop_broken(&mut self) {
        for slot in [&mut self.conn, &mut self.aux] {
            if slot.as_ref().is_some_and(|c| c.client.is_closed())
                && let Some(c) = slot.take()
            {
                c.task.abort();
            }
        }
    }

    /// Open the connection if there is none or it broke.
    pub async fn ensure_connected(&mut self) -> Result<()> {
        self.conn().await.map(|_| ())
    }

    async fn conn(&mut self) -> Result<&mut Conn> {
        slot_conn(&mut self.conn, &self.config, &self.options).await
    }

    /// The main connection, ready for the writer's statements.
    async fn ready(&mut self) -> Result<(&mut Client, &mut Prepared)> {
        slot_ready(&mut self.conn, &self.config, &self.options).await
    }

    /// Run `fut` under the operation timeout; on a timeout or a broken
    /// connection, drop the connection so the next call starts clean.
    async fn guarded<T>(
        &mut self,
        op: Op,
        fut: impl AsyncFnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let timeout = self.options.operation_timeout;
        let out = tokio::time::timeout(timeout, fut(self)).await;
        match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.drop_broken();
                Err(e)
            }
            Err(_) => {
                self.disconnect();
                Err(SyncError::Timeout { op, timeout })
            }
        }
    }

    /// A direct handle on the connection, for queries this API does not
    /// cover (tests, diagnostics).
    pub async fn client(&mut self) -> Result<&Client> {
        Ok(&self.conn().await?.client)
    }

    /// Apply pending migrations (under an advisory lock; safe to run from
    /// many gateways at once) and create partitions ahead.
    pub async fn migrate(&mut self) -> Result<MigrationReport> {
        let ahead = self.options.partitions_ahead_months;
        self.guarded("migrate", async move |s: &mut Self| {
            // Statements prepared before a migration may no longer match.
            if let Some(aux) = s.aux.as_mut() {
                aux.prepared = None;
            }
            let conn = s.conn().await?;
            conn.prepared = None;
            migrate::run(&mut conn.client, ahead).await
        })
        .await
    }

    /// Make sure the monthly partitions covering `[from, to]` exist; returns
    /// how many were created.
    pub async fn ensure_partitions(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i32> {
        self.guarded("ensure partitions", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let n: i32 = client
                .query_one(&p.ensure_partitions, &[&from, &to])
                .await
                .map_err(|e| SyncError::db("ensure partitions", e))?
                .get(0);
            Ok(n)
        })
        .await
    }

    /// Partitions for every month the events touch, unless already known.
    /// Returns the month when all events are in one.
    async fn ensure_partitions_for(&mut self, events: &[EmotionEvent]) -> Result<Option<Month>> {
        let mut missing: Vec<Month> = Vec::new();
        let mut months = 0usize;
        let mut last: Option<Month> = None;
        for e in events {
            let m = month_of(e.ingested_at);
            if last != Some(m) {
                if last.is_some() {
                    months += 1;
                }
                last = Some(m);
                if !self.partitions.contains(&m) && !missing.contains(&m) {
                    missing.push(m);
                }
            }
        }
        for m in missing {
            // A month start always exists; skip defensively if not.
            if let Some(t) = month_start(m) {
                let (client, p) = self.ready().await?;
                client
                    .query_one(&p.ensure_partitions, &[&t, &t])
                    .await
                    .map_err(|e| SyncError::db("ensure partitions", e))?;
            }
            self.partitions.insert(m);
        }
        Ok(if months == 0 { last } else { None })
    }

    /// The gateway's cursor as committed centrally; `None` before its first batch.
    pub async fn read_cursor(&mut self, gateway_id: &str) -> Result<Option<Cursor>> {
        Ok(self.sync_state(gateway_id).await?.and_then(|s| s.cursor))
    }

    /// The gateway's row of `gateway_sync_state`.
    pub async fn sync_state(&mut self, gateway_id: &str) -> Result<Option<GatewaySyncState>> {
        let gateway_id = gateway_id.to_owned();
        self.guarded("read sync state", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let row = client
                .query_opt(&p.read_cursor, &[&gateway_id])
                .await
                .map_err(|e| SyncError::db("read sync state", e))?;
            let Some(r) = row else { return Ok(None) };
            let cursor = match (r.get::<_, Option<i64>>(1), r.get::<_, Option<i64>>(2)) {
                (Some(b), Some(i)) => Some(Cursor::from_db(b, i)?),
                _ => None,
            };
            Ok(Some(GatewaySyncState {
                gateway_id: r.get(0),
                cursor,
                last_sync_at: r.get(3),
                events_synced: r.get(4),
                batches_synced: r.get(5),
                summaries_synced: r.get(6),
                last_summary_at: r.get(7),
            }))
        })
        .await
    }

    /// Write a batch of events and advance the gateway's cursor to
    /// `new_cursor`, all in one transaction:
    ///
    /// 1. binary COPY of the events into the session's staging table;
    /// 2. `INSERT … SELECT … ON CONFLICT DO NOTHING` into `emotional_events`,
    ///    leaving out events of users erased at or after their ingestion;
    /// 3. the cursor moves to `new_cursor` only if that is further ahead.
    ///
    /// Re-sending a committed batch therefore changes nothing. An empty
    /// `events` just advances the cursor (e.g. a batch whose events all
    /// lacked consent). Events of any gateway may be written; `gateway_id`
    /// names the cursor.
    pub async fn write_events(
        &mut self,
        gateway_id: &str,
        events: &[EmotionEvent],
        new_cursor: Cursor,
    ) -> Result<WriteOutcome> {
        let cursor = new_cursor.to_db()?;
        self.guarded("write events", async move |s: &mut Self| {
            let month = s.ensure_partitions_for(events).await?;
            let (client, p) = s.ready().await?;
            let insert = p.insert_for(client, month).await;
            let (tx, inserted) = stage(client, p, &insert, events.iter()).await?;
            let advanced = finish(tx, p, gateway_id, cursor, inserted).await?;
            let submitted = events.len() as u64;
            Ok(WriteOutcome {
                submitted,
                inserted,
                skipped: submitted.saturating_sub(inserted),
                cursor_advanced: advanced,
            })
        })
        .await
    }

    /// Write several consecutive batches, each exactly as
    /// [`write_events`](Self::write_events) would (one transaction per batch,
    /// cursor in it), but two at a time on two connections: both batches are
    /// copied and inserted concurrently, then committed in order, the first
    /// before the second. That uses two server processes (and cores) for a
    /// backlog, e.g. after an outage.
    ///
    /// Only a prefix of `batches` is ever committed (a batch never commits
    /// unless the one before it did); on error, [`read_cursor`](Self::read_cursor)
    /// says where to resume, as after a crash. An event that appears in both
    /// batches of a pair is copied with the first only: two open transactions
    /// inserting one key would wait on each other.
    pub async fn write_event_batches(
        &mut self,
        gateway_id: &str,
        batches: &[(&[EmotionEvent], Cursor)],
    ) -> Result<WriteOutcome> {
        let cursors = batches
            .iter()
            .map(|(_, c)| c.to_db())
            .collect::<Result<Vec<_>>>()?;
        let mut total = WriteOutcome {
            submitted: 0,
            inserted: 0,
            skipped: 0,
            cursor_advanced: false,
        };
        for (pair, cur) in batches.chunks(2).zip(cursors.chunks(2)) {
            let out = match (pair, cur) {
                ([(a, _), (b, _)], [ca, cb]) => self.write_pair(gateway_id, a, *ca, b, *cb).await?,
                _ => {
                    let mut one = WriteOutcome {
                        submitted: 0,
                        inserted: 0,
                        skipped: 0,
                        cursor_advanced: false,
                    };
                    for (events, c) in pair {
                        one = self.write_events(gateway_id, events, *c).await?;
                    }
                    one
                }
            };
            total.submitted += out.submitted;
            total.inserted += out.inserted;
            total.skipped += out.skipped;
            total.cursor_advanced |= out.cursor_advanced;
        }
        Ok(total)
    }

    async fn write_pair(
        &mut self,
        gateway_id: &str,
        a: &[EmotionEvent],
        ca: (i64, i64),
        b: &[EmotionEvent],
        cb: (i64, i64),
    ) -> Result<WriteOutcome> {
        self.guarded("write event batches", async move |s: &mut Self| {
            let month_a = s.ensure_partitions_for(a).await?;
            let month_b = s.ensure_partitions_for(b).await?;
            // The second batch without events of the first (see above).
            let keys: HashSet<(&str, Uuid, DateTime<Utc>)> = a
                .iter()
                .map(|e| (e.user_id.as_str(), e.event_id, e.ingested_at))
                .collect();
            let b_only: Vec<&EmotionEvent> = b
                .iter()
                .filter(|e| !keys.contains(&(e.user_id.as_str(), e.event_id, e.ingested_at)))
                .collect();
            let (config, options) = (&s.config, &s.options);
            let (ready_a, ready_b) = tokio::join!(
                slot_ready(&mut s.conn, config, options),
                slot_ready(&mut s.aux, config, options)
            );
            let ((client_a, pa), (client_b, pb)) = (ready_a?, ready_b?);
            let insert_a = pa.insert_for(client_a, month_a).await;
            let insert_b = pb.insert_for(client_b, month_b).await;
            let (staged_a, staged_b) = tokio::join!(
                stage(client_a, pa, &insert_a, a.iter()),
                stage(client_b, pb, &insert_b, b_only.iter().copied())
            );
            // Any failure rolls back both (dropping a transaction rolls it
            // back); the caller retries the pair.
            let ((tx_a, ins_a), (tx_b, ins_b)) = (staged_a?, staged_b?);
            let adv_a = finish(tx_a, pa, gateway_id, ca, ins_a).await?;
            let adv_b = finish(tx_b, pb, gateway_id, cb, ins_b).await?;
            let submitted = (a.len() + b.len()) as u64;
            let inserted = ins_a + ins_b;
            Ok(WriteOutcome {
                submitted,
                inserted,
                skipped: submitted.saturating_sub(inserted),
                cursor_advanced: adv_a || adv_b,
            })
        })
        .await
    }

    /// Insert or replace summaries; a stored summary is replaced only by a
    /// newer one (`computed_at`). Summaries of users without a standing
    /// consent to the `credit` purpose, or erased after the summary was
    /// computed, are not stored (the gateway should not send them in the
    /// first place; this is the central safety net).
    pub async fn upsert_summaries(
        &mut self,
        gateway_id: &str,
        summaries: &[CreditSummary],
    ) -> Result<SummaryOutcome> {
        // One row per (user, window): the newest (ON CONFLICT DO UPDATE may
        // not touch a row twice in one statement).
        let mut newest: HashMap<(&str, u32), &CreditSummary> = HashMap::new();
        for s in summaries {
            let slot = newest
                .entry((s.user_id.as_str(), s.window_days))
                .or_insert(s);
            if s.computed_at > slot.computed_at {
                *slot = s;
            }
        }
        // In key order, as the statement inserts them: gateways that touch
        // the same rows then lock them in the same order and cannot deadlock.
        let mut rows: Vec<&CreditSummary> = newest.into_values().collect();
        rows.sort_unstable_by(|a, b| {
            (a.user_id.as_bytes(), a.window_days).cmp(&(b.user_id.as_bytes(), b.window_days))
        });
        let n = rows.len();
        let mut user = Vec::with_capacity(n);
        let mut window = Vec::with_capacity(n);
        let mut count = Vec::with_capacity(n);
        let mut avg_v = Vec::with_capacity(n);
        let mut avg_a = Vec::with_capacity(n);
        let mut stab = Vec::with_capacity(n);
        let mut stress = Vec::with_capacity(n);
        let mut patterns = Vec::with_capacity(n);
        let mut risk = Vec::with_capacity(n);
        let mut pct = Vec::with_capacity(n);
        let mut action = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut computed = Vec::with_capacity(n);
        for s in &rows {
            user.push(s.user_id.as_str());
            window.push(
                i32::try_from(s.window_days).map_err(|_| SyncError::OutOfRange {
                    what: "window_days",
                    value: s.window_days.to_string(),
                    why: "larger than the integer column",
                })?,
            );
            count.push(i64::try_from(s.event_count).unwrap_or(i64::MAX));
            avg_v.push(s.avg_valence);
            avg_a.push(s.avg_arousal);
            stab.push(s.stability_score);
            stress.push(s.avg_stress_level);
            patterns.push(
                s.patterns
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            risk.push(s.risk_score);
            pct.push(s.risk_premium_adjustment_pct);
            action.push(s.action.as_str());
            reasons.push(Value::from(s.reasons.clone()));
            computed.push(s.computed_at);
        }
        let gateway_id = gateway_id.to_owned();
        let submitted = summaries.len() as u64;
        self.guarded("upsert summaries", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| SyncError::db("upsert summaries: begin", e))?;
            tx.execute(&p.lock_shared, &[&ERASURE_LOCK])
                .await
                .map_err(|e| SyncError::db("upsert summaries: erasure lock", e))?;
            let written = tx
                .execute(
                    &p.upsert_summaries,
                    &[
                        &gateway_id,
                        &user,
                        &window,
                        &count,
                        &avg_v,
                        &avg_a,
                        &stab,
                        &stress,
                        &patterns,
                        &risk,
                        &pct,
                        &action,
                        &reasons,
                        &computed,
                    ],
                )
                .await
                .map_err(|e| SyncError::db("upsert summaries", e))?;
            let counted = i64::try_from(written).unwrap_or(i64::MAX);
            tx.execute(&p.count_summaries, &[&gateway_id, &counted])
                .await
                .map_err(|e| SyncError::db("upsert summaries: count", e))?;
            tx.commit()
                .await
                .map_err(|e| SyncError::db("upsert summaries: commit", e))?;
            Ok(SummaryOutcome {
                submitted,
                written,
                skipped: submitted.saturating_sub(written),
            })
        })
        .await
    }

    /// Insert or replace consents; the newest `updated_at` per (user,
    /// purpose) wins. Withdrawing the `credit` consent deletes the user's
    /// summaries in the same transaction. Consents dated at or before an
    /// erasure of their user are ignored.
    pub async fn upsert_consents(
        &mut self,
        gateway_id: &str,
        consents: &[Consent],
    ) -> Result<ConsentOutcome> {
        let mut newest: HashMap<(&str, &str), &Consent> = HashMap::new();
        for c in consents {
            let slot = newest
                .entry((c.user_id.as_str(), c.purpose.as_str()))
                .or_insert(c);
            if c.updated_at > slot.updated_at {
                *slot = c;
            }
        }
        // In key order (the statement inserts in it too): two gateways
        // upserting consents of the same users (people who move between
        // sites) lock the rows in one order instead of deadlocking.
        let mut rows: Vec<&Consent> = newest.into_values().collect();
        rows.sort_unstable_by(|a, b| {
            (a.user_id.as_bytes(), a.purpose.as_str())
                .cmp(&(b.user_id.as_bytes(), b.purpose.as_str()))
        });
        let user: Vec<&str> = rows.iter().map(|c| c.user_id.as_str()).collect();
        let purpose: Vec<&str> = rows.iter().map(|c| c.purpose.as_str()).collect();
        let granted: Vec<bool> = rows.iter().map(|c| c.granted).collect();
        let updated: Vec<DateTime<Utc>> = rows.iter().map(|c| c.updated_at).collect();
        let gateway_id = gateway_id.to_owned();
        let submitted = consents.len() as u64;
        self.guarded("upsert consents", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| SyncError::db("upsert consents: begin", e))?;
            tx.execute(&p.lock_shared, &[&ERASURE_LOCK])
                .await
                .map_err(|e| SyncError::db("upsert consents: erasure lock", e))?;
            let row = tx
                .query_one(
                    &p.upsert_consents,
                    &[&gateway_id, &user, &purpose, &granted, &updated],
                )
                .await
                .map_err(|e| SyncError::db("upsert consents", e))?;
            tx.commit()
                .await
                .map_err(|e| SyncError::db("upsert consents: commit", e))?;
            let (written, deleted): (i64, i64) = (row.get(0), row.get(1));
            Ok(ConsentOutcome {
                submitted,
                written: u64::try_from(written).unwrap_or(0),
                summaries_deleted: u64::try_from(deleted).unwrap_or(0),
            })
        })
        .await
    }

    /// Write a page of the gateway's audit trail; returns the rows that are
    /// new (a page re-sent after a lost answer writes nothing twice).
    pub async fn write_audit(&mut self, gateway_id: &str, rows: &[AuditRow]) -> Result<u64> {
        let user: Vec<&str> = rows
            .iter()
            .map(|r| r.user_id.as_deref().unwrap_or(""))
            .collect();
        let id: Vec<Uuid> = rows.iter().map(|r| r.audit_id).collect();
        let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
        let principal: Vec<&str> = rows.iter().map(|r| r.principal.as_str()).collect();
        let action: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        let outcome: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
        let gateway_id = gateway_id.to_owned();
        self.guarded("write audit", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let n = client
                .execute(
                    &p.write_audit,
                    &[&gateway_id, &user, &id, &at, &principal, &action, &outcome],
                )
                .await
                .map_err(|e| SyncError::db("write audit", e))?;
            Ok(n)
        })
        .await
    }

    /// Apply an erasure request: in one transaction, record it (the
    /// tombstone) and delete the user's events ingested, summaries computed
    /// and consents given at or before `requested_at`, from every table.
    ///
    /// Idempotent: a request id seen before keeps its original
    /// `requested_at`. The transaction holds the erasure lock exclusively, so
    /// it waits for writes in flight and no write overlaps it: every write
    /// either committed before (and its rows are deleted here) or starts
    /// after and sees the tombstone (and leaves the user's older rows out).
    pub async fn apply_erasure(
        &mut self,
        gateway_id: &str,
        user_id: &str,
        request_id: Uuid,
        requested_at: DateTime<Utc>,
    ) -> Result<ErasureOutcome> {
        let gateway_id = gateway_id.to_owned();
        let user_id = user_id.to_owned();
        self.guarded("apply erasure", async move |s: &mut Self| {
            let (client, p) = s.ready().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| SyncError::db("apply erasure: begin", e))?;
            let op = |what: &'static str| move |e| SyncError::db(what, e);
            tx.execute(&p.lock_exclusive, &[&ERASURE_LOCK])
                .await
                .map_err(op("apply erasure: lock"))?;
            let fresh = tx
                .query_opt(
                    "INSERT INTO erasure_requests (user_id, request_id, requested_at, gateway_id) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, request_id) DO NOTHING \
                     RETURNING requested_at",
                    &[&user_id, &request_id, &requested_at, &gateway_id],
                )
                .await
                .map_err(op("apply erasure: record"))?;
            let (newly_recorded, at): (bool, DateTime<Utc>) = match fresh {
                Some(r) => (true, r.get(0)),
                None => (
                    false,
                    tx.query_one(
                        "SELECT requested_at FROM erasure_requests \
                         WHERE user_id = $1 AND request_id = $2",
                        &[&user_id, &request_id],
                    )
                    .await
                    .map_err(op("apply erasure: read request"))?
                    .get(0),
                ),
            };
            let events = tx
                .execute(
                    "DELETE FROM emotional_events WHERE user_id = $1 AND ingested_at <= $2",
                    &[&user_id, &at],
                )
                .await
                .map_err(op("apply erasure: delete events"))?;
            let summaries = tx
                .execute(
                    "DELETE FROM credit_risk_summaries WHERE user_id = $1 AND computed_at <= $2",
                    &[&user_id, &at],
                )
                .await
                .map_err(op("apply erasure: delete summaries"))?;
            let consents = tx
                .execute(
                    "DELETE FROM consents WHERE user_id = $1 AND updated_at <= $2",
                    &[&user_id, &at],
                )
                .await
                .map_err(op("apply erasure: delete consents"))?;
            let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE erasure_requests SET applied_at = now(), \
                   events_deleted = events_deleted + $3, summaries_deleted = summaries_deleted + $4, \
                   consents_deleted = consents_deleted + $5 \
                 WHERE user_id = $1 AND request_id = $2",
                &[
                    &user_id,
                    &request_id,
                    &as_i64(events),
                    &as_i64(summaries),
                    &as_i64(consents),
                ],
            )
            .await
            .map_err(op("apply erasure: update request"))?;
            tx.commit().await.map_err(op("apply erasure: commit"))?;
            Ok(ErasureOutcome {
                newly_recorded,
                requested_at: at,
                events_deleted: events,
                summaries_deleted: summaries,
                consents_deleted: consents,
            })
        })
        .await
    }
}

/// An optional event object for a json or jsonb column.
fn json(j: &Option<emotion_core::Json>) -> Option<JsonSql<'_>> {
    j.as_ref().map(JsonSql)
}

/// An event object as a json/jsonb parameter, written from its text: a
/// plugin's context arrives as checked JSON text and goes to the database
/// without being parsed (`Option<&Value>`'s `ToSql` needs a parsed value).
#[derive(Debug)]
struct JsonSql<'a>(&'a emotion_core::Json);

impl ToSql for JsonSql<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte (1) and the JSON text.
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.text().as_bytes());
        Ok(IsNull::No)
    }

    tokio_postgres::types::accepts!(JSON, JSONB);
    tokio_postgres::types::to_sql_checked!();
}

/// The connection in `slot`, opened anew if there is none or it broke.
async fn slot_conn<'a>(
    slot: &'a mut Option<Conn>,
    config: &tokio_postgres::Config,
    options: &ClientOptions,
) -> Result<&'a mut Conn> {
    let conn = match slot.take() {
        Some(c) if !c.client.is_closed() => c,
        stale => {
            if let Some(c) = stale {
                c.task.abort();
            }
            open(config, options).await?
        }
    };
    Ok(slot.insert(conn))
}

async fn open(config: &tokio_postgres::Config, options: &ClientOptions) -> Result<Conn> {
    let timeout = options.connect_timeout;
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| SyncError::Timeout {
            op: "connect",
            timeout,
        })?
        .map_err(SyncError::connect)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %crate::error::describe(&e), "central database connection ended");
        }
    });
    // Room for a whole batch in the staging table before it spills to disk;
    // must be set before the session first touches a temporary table.
    if let Err(e) = client.batch_execute("SET temp_buffers = '64MB'").await {
        task.abort();
        return Err(SyncError::db("connect: session settings", e));
    }
    Ok(Conn {
        client,
        task,
        prepared: None,
        staging: false,
    })
}

/// The connection in `slot` with the writer's statements prepared and the
/// staging table created (both need the schema, hence after `migrate()`).
async fn slot_ready<'a>(
    slot: &'a mut Option<Conn>,
    config: &tokio_postgres::Config,
    options: &ClientOptions,
) -> Result<(&'a mut Client, &'a mut Prepared)> {
    let conn = slot_conn(slot, config, options).await?;
    if !conn.staging {
        conn.client
            .batch_execute(CREATE_STAGING)
            .await
            .map_err(|e| SyncError::db("create staging table (has migrate() run?)", e))?;
        conn.staging = true;
    }
    let prepared = match conn.prepared.take() {
        Some(p) => conn.prepared.insert(p),
        None => {
            let p = Prepared::new(&conn.client)
                .await
                .map_err(|e| SyncError::db("prepare statements (has migrate() run?)", e))?;
            conn.prepared.insert(p)
        }
    };
    Ok((&mut conn.client, prepared))
}

/// First half of a batch's transaction: begin, take the erasure lock shared,
/// COPY the events into the staging table and move them with `insert`.
/// Returns the open transaction and the number of new rows.
///
/// The events are staged in primary-key order (`user_id` bytewise, as its
/// `COLLATE "C"` compares, then `ingested_at`, `event_id`), and a scan of the
/// freshly filled temporary table hands them to the INSERT in that order. A
/// batch interleaves many users; in key order consecutive inserts land on the
/// same leaf pages of the primary key and of `(user_id, session_id)` instead
/// of hopping between them, which saves 11–19 % of the insert
/// (`sync/benches/key_order.sh`).
/// Sorting here rather than with `ORDER BY` keeps that work off the server,
/// usually the busier side. Only speed depends on the order, never the result.
async fn stage<'c, 'e>(
    client: &'c mut Client,
    p: &Prepared,
    insert: &Statement,
    events: impl ExactSizeIterator<Item = &'e EmotionEvent>,
) -> Result<(Transaction<'c>, u64)> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| SyncError::db("write events: begin", e))?;
    tx.execute(&p.lock_shared, &[&ERASURE_LOCK])
        .await
        .map_err(|e| SyncError::db("write events: erasure lock", e))?;
    if events.len() == 0 {
        return Ok((tx, 0));
    }
    let mut events: Vec<&EmotionEvent> = events.collect();
    events.sort_unstable_by(|a, b| {
        (a.user_id.as_bytes(), a.ingested_at, a.event_id).cmp(&(
            b.user_id.as_bytes(),
            b.ingested_at,
            b.event_id,
        ))
    });
    let sink = tx
        .copy_in(&format!(
            "COPY sync_staging ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(|e| SyncError::db("write events: start COPY", e))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &EVENT_TYPES));
    for e in events {
        let (context, raw, bio, loc, dev) = (
            json(&e.context),
            json(&e.raw_data),
            json(&e.biometrics),
            json(&e.location),
            json(&e.device_info),
        );
        let row: [&(dyn ToSql + Sync); 17] = [
            &e.user_id,
            &e.event_id,
            &e.session_id,
            &e.source.as_str(),
            &e.emotion_label.as_str(),
            &e.valence,
            &e.arousal,
            &e.confidence,
            &context,
            &raw,
            &bio,
            &loc,
            &dev,
            &e.timestamp,
            &e.ingested_at,
            &e.gateway_id,
            &e.producer,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(|e| SyncError::db(crate::error::OP_COPY_ROW, e))?;
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| SyncError::db(crate::error::OP_FINISH_COPY, e))?;
    let inserted = tx
        .execute(insert, &[])
        .await
        .map_err(|e| SyncError::db(crate::error::OP_INSERT, e))?;
    Ok((tx, inserted))
}

/// Second half: move the cursor forward (only) and commit. Returns whether
/// the cursor moved.
async fn finish(
    tx: Transaction<'_>,
    p: &Prepared,
    gateway_id: &str,
    (batch, index): (i64, i64),
    inserted: u64,
) -> Result<bool> {
    let counted = i64::try_from(inserted).unwrap_or(i64::MAX);
    let advanced = tx
        .query_opt(&p.advance_cursor, &[&gateway_id, &batch, &index, &counted])
        .await
        .map_err(|e| SyncError::db("write events: advance cursor", e))?
        .is_some();
    tx.commit()
        .await
        .map_err(|e| SyncError::db(crate::error::OP_COMMIT, e))?;
    Ok(advanced)
}
