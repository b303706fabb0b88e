//! A fleet of gateway processes syncing into one PostgreSQL database (issue
//! 15, item 3): lean per-gateway settings, starting many at once, waiting
//! until all have shipped everything, and what their logs say about
//! serialization failures and deadlocks. Used by `tests/fleet.rs` and
//! `benches/fleet.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Gateway, GatewayOptions};

/// Gateways of the fleet test when `EMOTION_FLEET_GATEWAYS` is unset (CI);
/// the README's full run sets it to 20 or more.
pub const CI_GATEWAYS: usize = 6;

/// `EMOTION_FLEET_GATEWAYS`, or `default`; at least 2 (a fleet).
pub fn fleet_size(default: usize) -> usize {
    std::env::var("EMOTION_FLEET_GATEWAYS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(default)
        .max(2)
}

/// The gateway id of fleet member `i`.
pub fn gateway_id(i: usize) -> String {
    format!("site-{i:02}")
}

/// Options for one member: its own `gateway_id`, syncing to `database_url`,
/// and a small footprint so that 20 or more share two cores: no MQTT broker,
/// no Bluetooth, a 4 MiB page cache, a smaller duplicate window and ingest
/// queue, no background scrub. `extra` overrides or adds settings.
pub fn member_options(
    database_url: &str,
    gateway_id: &str,
    extra: &[(&str, &str)],
) -> GatewayOptions {
    let mut env: Vec<(String, String)> = [
        ("EMOTION_GATEWAY__GATEWAY_ID", gateway_id),
        ("EMOTION_GATEWAY__SYNC__ENABLED", "true"),
        ("EMOTION_GATEWAY__SYNC__DATABASE_URL", database_url),
        ("EMOTION_GATEWAY__SYNC__RETRY__INITIAL", "50ms"),
        ("EMOTION_GATEWAY__SYNC__RETRY__MAX", "1s"),
        ("EMOTION_GATEWAY__MQTT__ENABLED", "false"),
        ("EMOTION_GATEWAY__BLE__ENABLED", "false"),
        ("EMOTION_GATEWAY__STORAGE__CACHE_MB", "4"),
        ("EMOTION_GATEWAY__STORAGE__DEDUP_WINDOW", "65536"),
        ("EMOTION_GATEWAY__STORAGE__QUEUE_CAPACITY", "8192"),
        ("EMOTION_GATEWAY__STORAGE__SCRUB_INTERVAL", "0s"),
        // JSON lines: levels and SQLSTATEs are read without terminal colours.
        ("EMOTION_GATEWAY__LOG__FORMAT", "json"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    GatewayOptions { env, config: None }
}

/// Start `n` members at once (each its own data directory under `root`,
/// gateway id and free port), all syncing to `database_url`.
pub fn start_fleet(
    root: &Path,
    n: usize,
    database_url: &str,
    extra: &[(&str, &str)],
) -> Result<Vec<Gateway>> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let dir = root.join(gateway_id(i));
            let opts = member_options(database_url, &gateway_id(i), extra);
            std::thread::spawn(move || {
                std::fs::create_dir_all(&dir)?;
                Gateway::start(&dir, &opts)
            })
        })
        .collect();
    let mut fleet = Vec::with_capacity(n);
    for (i, h) in handles.into_iter().enumerate() {
        let gw = h
            .join()
            .map_err(|_| anyhow::anyhow!("starting {} panicked", gateway_id(i)))?
            .with_context(|| format!("starting {}", gateway_id(i)))?;
        fleet.push(gw);
    }
    Ok(fleet)
}

/// Poll every member's `GET /api/sync` until each is connected with nothing
/// left to ship, or fail at `within` naming the members still behind.
pub async fn wait_all_synced(fleet: &[Gateway], within: Duration) -> Result<Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let mut states = Vec::with_capacity(fleet.len());
        let mut behind = Vec::new();
        for (i, gw) in fleet.iter().enumerate() {
            let s = gw.get_json("/api/sync").await.unwrap_or_default();
            if !(s["connected"] == true && s["lag_events"] == 0) {
                behind.push(format!("{}: {s}", gateway_id(i)));
            }
            states.push(s);
        }
        if behind.is_empty() {
            return Ok(states);
        }
        if Instant::now() > deadline {
            bail!(
                "not synced within {within:?}: {} of {} behind:\n{}",
                behind.len(),
                fleet.len(),
                behind.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log lines of a member that mention a serialization failure (SQLSTATE
/// 40001) or a deadlock (40P01), and its ERROR lines.
#[derive(Debug, Default, Clone)]
pub struct LogFindings {
    pub conflicts: Vec<String>,
    pub errors: Vec<String>,
}

pub fn log_findings(logs: &str) -> LogFindings {
    let mut f = LogFindings::default();
    for line in logs.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.contains("40001")
            || lower.contains("40p01")
            || lower.contains("deadlock")
            || lower.contains("could not serialize")
        {
            f.conflicts.push(line.to_owned());
        }
        if line.contains("\"level\":\"ERROR\"") {
            f.errors.push(line.to_owned());
        }
    }
    f
}
