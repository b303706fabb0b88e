//! Gateway-wide metrics: totals, rate, distinct users and sessions, averages,
//! dominant emotion and source distribution.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use hashbrown::HashSet;
use serde::Serialize;

use super::window::Point;
use super::{LabelCounts, round3};
use crate::label::EmotionLabel;
use crate::source::Source;

/// Events per second for the last 60 seconds, in a ring of one-second buckets.
#[derive(Debug, Clone)]
struct MinuteRate {
    /// (unix second, count) per slot `second % 60`.
    slots: [(i64, u64); 60],
}

impl Default for MinuteRate {
    fn default() -> Self {
        MinuteRate {
            slots: [(i64::MIN, 0); 60],
        }
    }
}

impl MinuteRate {
    fn add(&mut self, at: DateTime<Utc>) {
        let sec = at.timestamp();
        let slot = &mut self.slots[sec.rem_euclid(60) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += 1;
    }

    /// Events whose second lies in (now − 60 s, now].
    fn last_minute(&self, now: DateTime<Utc>) -> u64 {
        let now = now.timestamp();
        self.slots
            .iter()
            .filter(|(s, _)| *s > now - 60 && *s <= now)
            .map(|(_, c)| c)
            .sum()
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct GlobalState {
    total: u64,
    sum_v: f64,
    sum_a: f64,
    labels: LabelCounts,
    sources: [u64; 8],
    rate: MinuteRate,
    /// 64-bit hashes of session ids: exact enough for a count, 8 bytes each,
    /// and it survives the eviction of idle sessions' live state.
    sessions: HashSet<u64>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// The `metrics` object of the `/ws/emotions/metrics` stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalMetrics {
    pub total_events: u64,
    /// Events ingested in the last 60 seconds.
    pub events_per_minute: u64,
    pub unique_users: usize,
    pub unique_sessions: usize,
    pub avg_valence: f64,
    pub avg_arousal: f64,
    pub dominant_emotion: Option<EmotionLabel>,
    pub source_distribution: BTreeMap<&'static str, u64>,
}

impl GlobalState {
    pub(super) fn add(
        &mut self,
        p: &Point,
        source: Source,
        session_id: &str,
        ingested_at: DateTime<Utc>,
    ) {
        self.total += 1;
        self.sum_v += p.valence;
        self.sum_a += p.arousal;
        self.labels.add(p.label);
        self.sources[source.index()] += 1;
        self.rate.add(ingested_at);
        self.sessions.insert(self.hasher.hash_one(session_id));
    }

    pub(super) fn snapshot(&self, now: DateTime<Utc>, unique_users: usize) -> GlobalMetrics {
        let avg = |s: f64| {
            if self.total == 0 {
                0.0
            } else {
                round3(s / self.total as f64)
            }
        };
        GlobalMetrics {
            total_events: self.total,
            events_per_minute: self.rate.last_minute(now),
            unique_users,
            unique_sessions: self.sessions.len(),
            avg_valence: avg(self.sum_v),
            avg_arousal: avg(self.sum_a),
            dominant_emotion: self.labels.dominant(),
            source_distribution: Source::ALL
                .into_iter()
                .filter(|s| self.sources[s.index()] > 0)
                .map(|s| (s.as_str(), self.sources[s.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rate_counts_only_the_last_minute() {
        let t0 = Utc.timestamp_opt(1_000_000, 0).single().expect("valid");
        let mut r = MinuteRate::default();
        for s in 0..120 {
            r.add(t0 + chrono::Duration::seconds(s));
            r.add(t0 + chrono::Duration::seconds(s));
        }
        let now = t0 + chrono::Duration::seconds(119);
        assert_eq!(r.last_minute(now), 120);
        assert_eq!(r.last_minute(now + chrono::Duration::seconds(30)), 60);
        assert_eq!(r.last_minute(now + chrono::Duration::seconds(600)), 0);
    }
}
