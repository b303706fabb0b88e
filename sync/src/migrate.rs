//! Versioned schema migrations, embedded in the binary.
//!
//! All pending migrations are applied in one transaction that first takes a
//! transaction-level advisory lock ([`MIGRATION_LOCK`]), so two gateways
//! starting at once apply them exactly once: the second waits, then finds
//! them recorded in `schema_migrations`. Each record keeps the MD5 of the
//! migration text; a compiled-in migration that differs from the applied one
//! is an error (migrations are append-only).

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Result, SyncError};

/// One migration: a version, a name, and SQL run as one batch.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Append only: never edit an applied one.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "functions",
        sql: include_str!("../migrations/0002_functions.sql"),
    },
    Migration {
        version: 3,
        name: "audit_log",
        sql: include_str!("../migrations/0003_audit_log.sql"),
    },
    Migration {
        version: 4,
        name: "combined_summaries",
        sql: include_str!("../migrations/0004_combined_summaries.sql"),
    },
];

/// Advisory lock keys (one namespace, so they are easy to find in `pg_locks`).
pub const MIGRATION_LOCK: i64 = 7_236_001;
/// Taken by `ensure_emotional_event_partitions()` (the value is in its SQL).
pub const PARTITION_LOCK: i64 = 7_236_002;
/// Shared by writers, exclusive for an erasure (see `SyncClient::apply_erasure`).
pub const ERASURE_LOCK: i64 = 7_236_003;

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
    /// Versions recorded in the database that this binary does not know (a
    /// newer gateway migrated it); not an error, the schema only grows.
    pub unknown: Vec<i32>,
    /// Monthly partitions created ahead by this run.
    pub partitions_created: i32,
}

const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Apply every pending migration, then make sure the partitions of this month
/// and the next `months_ahead` exist.
pub(crate) async fn run(client: &mut Client, months_ahead: u32) -> Result<MigrationReport> {
    let mut report = MigrationReport::default();
    let tx = client
        .transaction()
        .await
        .map_err(|e| SyncError::db("migrate: begin", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| SyncError::db("migrate: advisory lock", e))?;
    tx.batch_execute(BOOTSTRAP)
        .await
        .map_err(|e| SyncError::db("migrate: create schema_migrations", e))?;
    let rows = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|e| SyncError::db("migrate: read schema_migrations", e))?;
    let applied: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    for m in MIGRATIONS {
        let expected: String = tx
            .query_one("SELECT md5($1::text)", &[&m.sql])
            .await
            .map_err(|e| SyncError::db("migrate: checksum", e))?
            .get(0);
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum == expected => report.already_applied.push(m.version),
            Some((_, sum)) => {
                return Err(SyncError::MigrationChanged {
                    version: m.version,
                    name: m.name,
                    applied: sum.clone(),
                    expected,
                });
            }
            None => {
                tx.batch_execute(m.sql)
                    .await
                    .map_err(|e| SyncError::db("migrate: apply", e))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &expected],
                )
                .await
                .map_err(|e| SyncError::db("migrate: record", e))?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
                report.applied.push(m.version);
            }
        }
    }
    report.unknown = applied
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| !MIGRATIONS.iter().any(|m| m.version == *v))
        .collect();
    if !report.unknown.is_empty() {
        tracing::warn!(versions = ?report.unknown, "database has migrations this binary does not know");
    }
    tx.commit()
        .await
        .map_err(|e| SyncError::db("migrate: commit", e))?;

    // Partitions ahead, in their own short transaction: the function holds
    // its advisory lock until commit.
    let months = i32::try_from(months_ahead).unwrap_or(i32::MAX);
    report.partitions_created = client
        .query_one(
            "SELECT ensure_emotional_event_partitions(now(), now() + make_interval(months => $1))",
            &[&months],
        )
        .await
        .map_err(|e| SyncError::db("migrate: create partitions ahead", e))?
        .get(0);
    Ok(report)
}
