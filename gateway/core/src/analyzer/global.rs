//! Gateway-wide metrics: totals, rate, distinct users and sessions, averages,
//! dominant emotion and source distribution.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, Utc};
use hashbrown::HashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use super::window::Point;
use crate::label::{EmotionLabel, LabelCounts};
use crate::num::round3;
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

/// Serialized as a sequence (serde has no impls for arrays of 60).
impl Serialize for MinuteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.slots.iter())
    }
}

impl<'de> Deserialize<'de> for MinuteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<(i64, u64)>::deserialize(d)?;
        let n = v.len();
        let slots = v
            .try_into()
            .map_err(|_| D::Error::custom(format_args!("{n} rate slots, expected 60")))?;
        Ok(MinuteRate { slots })
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

/// The keys of the 64-bit session-id hashes.
///
/// The hashes are kept across checkpoints, so their function must be stable:
/// SipHash-2-4 (std's `SipHasher`, a fixed, documented algorithm) over the
/// id's bytes, keyed with random keys chosen when the analyzer is created and
/// saved in its checkpoint, so that nobody can choose colliding session ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SessionKeys(u64, u64);

impl Default for SessionKeys {
    fn default() -> Self {
        // hashbrown's default hasher is randomly seeded per instance.
        let random = hashbrown::DefaultHashBuilder::default();
        SessionKeys(random.hash_one(0x5e55_u64), random.hash_one(0x1d5_u64))
    }
}

impl SessionKeys {
    #[allow(deprecated)] // SipHasher: deprecated in favour of an unspecified algorithm
    fn hash(&self, id: &str) -> u64 {
        let mut h = std::hash::SipHasher::new_with_keys(self.0, self.1);
        h.write(id.as_bytes());
        h.finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct GlobalState {
    total: u64,
    sum_v: f64,
    sum_a: f64,
    labels: LabelCounts,
    sources: [u64; 8],
    rate: MinuteRate,
    /// 64-bit hashes of session ids: exact enough for a count, 8 bytes each,
    /// and it survives the eviction of idle sessions' live state.
    #[serde(with = "super::codec::u64_set")]
    sessions: HashSet<u64>,
    keys: SessionKeys,
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
        self.sessions.insert(self.keys.hash(session_id));
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
