//! The schema on a live server: migrations (idempotent, concurrent, append
//! only), the Citus key property read from the catalog, and partitions.

mod common;

use chrono::{Datelike, TimeZone, Utc};
use common::{event_at, fresh, scalar};
use emotion_sync::testing::TestDatabase;
use emotion_sync::{Cursor, MIGRATIONS, SyncClient, SyncError};

#[tokio::test]
async fn migrations_are_idempotent() {
    let (_db, mut client) = fresh().await;
    let again = client.migrate().await.expect("second run");
    assert!(again.applied.is_empty(), "{again:?}");
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(again.already_applied, all);
    assert_eq!(
        again.partitions_created, 0,
        "partitions ahead exist already"
    );
    assert_eq!(
        scalar(&mut client, "SELECT count(*) FROM schema_migrations").await,
        MIGRATIONS.len() as i64
    );
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let db = TestDatabase::create().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(SyncClient::connect(db.url()).await.expect("connect"));
    }
    let [a, b, c, d] = &mut clients[..] else {
        panic!("four clients")
    };
    let (ra, rb, rc, rd) = tokio::join!(a.migrate(), b.migrate(), c.migrate(), d.migrate());
    let reports = [ra, rb, rc, rd].map(|r| r.expect("every migrator succeeds"));
    let applied: Vec<i32> = reports.iter().flat_map(|r| r.applied.clone()).collect();
    let mut sorted = applied.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>(),
        "each version applied by exactly one of them: {reports:?}"
    );
    assert_eq!(
        reports.iter().filter(|r| !r.applied.is_empty()).count(),
        1,
        "one transaction applies them all"
    );
    assert_eq!(
        scalar(a, "SELECT count(*) FROM schema_migrations").await,
        MIGRATIONS.len() as i64
    );
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let (_db, mut client) = fresh().await;
    scalar(
        &mut client,
        "WITH u AS (UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1 RETURNING 1) SELECT count(*) FROM u",
    )
    .await;
    let err = client.migrate().await.expect_err("must refuse");
    assert!(
        matches!(err, SyncError::MigrationChanged { version: 1, .. }),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("must never change"), "{err}");
}

/// Citus can distribute a table by user_id only if every unique key contains
/// it; we require it to lead. Read from the catalog of the live schema, so a
/// future migration that breaks the rule fails here.
#[tokio::test]
async fn every_unique_key_starts_with_user_id() {
    let (_db, mut client) = fresh().await;
    // Tables that are not per-user, by design: one row per gateway (a Citus
    // reference table) and the migration log (coordinator-local).
    const EXCEPTIONS: [&str; 2] = ["gateway_sync_state", "schema_migrations"];
    let rows = client
        .client()
        .await
        .expect("connection")
        .query(
            "SELECT t.relname::text, i.relname::text, a.attname::text
             FROM pg_index x
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
             WHERE n.nspname = current_schema() AND x.indisunique AND t.relkind IN ('r', 'p')
             ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("catalog");
    let mut checked = std::collections::BTreeSet::new();
    for r in &rows {
        let (table, index, first): (String, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2));
        if EXCEPTIONS.contains(&table.as_str()) {
            continue;
        }
        assert_eq!(
            first.as_deref(),
            Some("user_id"),
            "unique index {index} of {table} must start with user_id"
        );
        checked.insert(table);
    }
    for t in [
        "emotional_events",
        "emotional_events_default",
        "credit_risk_summaries",
        "erasure_requests",
        "consents",
    ] {
        assert!(checked.contains(t), "{t} was not checked: {checked:?}");
    }
    // Every other table is per-user: it has a user_id column.
    let without_user: Vec<String> = client
        .client()
        .await
        .expect("connection")
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped)
             ORDER BY 1",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        without_user, EXCEPTIONS,
        "only the documented exceptions lack user_id"
    );
}

/// Per-user tables, distributed by `user_id` on Citus; every other table is
/// one of [`NOT_PER_USER`].
const PER_USER: [&str; 5] = [
    "emotional_events",
    "credit_risk_summaries",
    "consents",
    "erasure_requests",
    "audit_log",
];
/// `gateway_sync_state`: a reference table; `schema_migrations`: local to the
/// coordinator.
const NOT_PER_USER: [&str; 2] = ["gateway_sync_state", "schema_migrations"];

#[tokio::test]
async fn every_foreign_key_is_led_by_user_id_or_points_at_a_reference_table() {
    let (_db, mut client) = fresh().await;
    let rows = client
        .client()
        .await
        .expect("connection")
        .query(
            "SELECT c.conname::text, t.relname::text, r.relname::text,
                    (SELECT attname::text FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = c.conkey[1]),
                    (SELECT attname::text FROM pg_attribute WHERE attrelid = c.confrelid AND attnum = c.confkey[1])
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_class r ON r.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = current_schema() AND c.contype = 'f'",
            &[],
        )
        .await
        .expect("catalog");
    for r in &rows {
        let (name, table, referenced, from, to): (String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let colocated = from == "user_id" && to == "user_id";
        assert!(
            colocated || referenced == "gateway_sync_state",
            "foreign key {name} of {table} → {referenced} ({from} → {to}) would cross shards on Citus"
        );
    }
    // Every table is classified, so a new one must be thought about.
    let tables: Vec<String> = client
        .client()
        .await
        .expect("connection")
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             ORDER BY 1",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut known: Vec<&str> = PER_USER
        .iter()
        .chain(NOT_PER_USER.iter())
        .copied()
        .collect();
    known.sort_unstable();
    assert_eq!(
        tables, known,
        "a table is neither per-user nor a documented exception"
    );
}

/// Relation name and every condition of each scan in an `EXPLAIN (FORMAT JSON)` plan.
fn scans(plan: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if let Some(rel) = plan["Relation Name"].as_str() {
        let conds: Vec<&str> = ["Index Cond", "Recheck Cond", "Filter"]
            .iter()
            .filter_map(|k| plan[*k].as_str())
            .collect();
        out.push((rel.to_owned(), conds.join(" AND ")));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans(child, out);
    }
}

#[tokio::test]
async fn the_credit_systems_queries_touch_one_user_so_citus_routes_them_to_one_shard() {
    let (_db, mut client) = fresh().await;
    // The documented queries of the credit system (sync/README.md).
    let queries = [
        "SELECT * FROM credit_emotion_adjustment('u-42')",
        "SELECT * FROM credit_emotion_adjustment('u-42', 7)",
        // The summary combined over gateways (migration 4), read directly.
        "SELECT * FROM credit_risk_summaries_combined WHERE user_id = 'u-42'",
        "SELECT event_id, valence, arousal, timestamp FROM emotional_events
         WHERE user_id = 'u-42' AND ingested_at >= now() - interval '30 days' ORDER BY ingested_at",
    ];
    for q in queries {
        let row = client
            .client()
            .await
            .expect("connection")
            .query_one(&format!("EXPLAIN (FORMAT JSON) {q}"), &[])
            .await
            .expect("explain");
        let plan: serde_json::Value = row.get(0);
        let mut found = Vec::new();
        scans(&plan[0]["Plan"], &mut found);
        assert!(!found.is_empty(), "{q}: no scan in {plan}");
        for (rel, conds) in &found {
            assert!(
                conds.contains("user_id = 'u-42'"),
                "{q}: the scan of {rel} is not pinned to one user ({conds})"
            );
        }
        let tables: std::collections::BTreeSet<&str> = found
            .iter()
            .map(|(r, _)| r.split("_p20").next().unwrap_or(r))
            .collect();
        assert!(
            tables
                .iter()
                .all(|t| PER_USER.iter().any(|p| t.starts_with(p))),
            "{q}: reads a table that is not distributed by user: {tables:?}"
        );
    }
    // The function's first argument is the user: a distributed function's
    // distribution argument.
    let arg: String = client
        .client()
        .await
        .expect("connection")
        .query_one(
            "SELECT proargnames[1]::text FROM pg_proc WHERE proname = 'credit_emotion_adjustment'",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(arg, "p_user_id");
}

fn partitions_sql() -> &'static str {
    "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'emotional_events'::regclass AND c.relname <> 'emotional_events_default'"
}

#[tokio::test]
async fn partitions_exist_ahead_and_are_created_for_the_months_a_batch_touches() {
    let (_db, mut client) = fresh().await;
    // This month and three ahead, from migrate().
    let now = Utc::now();
    assert_eq!(scalar(&mut client, partitions_sql()).await, 4);
    let this_month = format!("emotional_events_p{:04}_{:02}", now.year(), now.month());
    assert_eq!(
        scalar(
            &mut client,
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{this_month}'")
        )
        .await,
        1
    );

    // A batch spanning two past months gets both partitions before its COPY.
    let may = Utc
        .with_ymd_and_hms(2025, 5, 31, 23, 59, 59)
        .single()
        .expect("valid");
    let batch = vec![event_at("u1", 0, may), event_at("u1", 2_000, may)];
    client
        .write_events("gw", &batch, Cursor::new(1, 0))
        .await
        .expect("write");
    assert_eq!(scalar(&mut client, partitions_sql()).await, 6);
    assert_eq!(
        scalar(
            &mut client,
            "SELECT count(*) FROM emotional_events_p2025_05"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &mut client,
            "SELECT count(*) FROM emotional_events_p2025_06"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(&mut client, "SELECT count(*) FROM emotional_events_default").await,
        0
    );
}

#[tokio::test]
async fn rows_in_the_default_partition_move_when_their_month_gets_a_partition() {
    let (_db, mut client) = fresh().await;
    // A row routed to the default partition (no partition for 2019-03 yet).
    scalar(
        &mut client,
        "WITH i AS (INSERT INTO emotional_events (user_id, event_id, session_id, source, emotion_label,
                      valence, arousal, \"timestamp\", ingested_at, gateway_id, producer)
                    VALUES ('u', gen_random_uuid(), 's', 'text', 'joy', 0.5, 0.5,
                            '2019-03-10Z', '2019-03-10Z', 'gw', 'client') RETURNING 1)
         SELECT count(*) FROM i",
    )
    .await;
    assert_eq!(
        scalar(&mut client, "SELECT count(*) FROM emotional_events_default").await,
        1
    );
    let at = Utc
        .with_ymd_and_hms(2019, 3, 1, 0, 0, 0)
        .single()
        .expect("valid");
    assert_eq!(client.ensure_partitions(at, at).await.expect("ensure"), 1);
    assert_eq!(
        client.ensure_partitions(at, at).await.expect("again"),
        0,
        "idempotent"
    );
    assert_eq!(
        scalar(&mut client, "SELECT count(*) FROM emotional_events_default").await,
        0
    );
    assert_eq!(
        scalar(
            &mut client,
            "SELECT count(*) FROM emotional_events_p2019_03"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(&mut client, "SELECT count(*) FROM emotional_events").await,
        1
    );
}
