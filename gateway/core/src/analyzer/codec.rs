//! How analyzer state serializes where serde's own form does not fit: the
//! `#[serde(with = …)]` modules of the state types (here, `global`) and of
//! the checkpoint format. A module of its own so that the state types do not
//! depend on `checkpoint`, which depends on them.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use hashbrown::HashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::anomaly::{Anomaly, STATISTICAL_OUTLIER, Severity};
use super::window::Point;

/// A timestamp as (seconds, nanoseconds): exact, and compact in postcard
/// (chrono's own serde form is an RFC 3339 string).
pub(crate) mod ts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        (t.timestamp(), t.timestamp_subsec_nanos()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        from_parts(secs, nanos)
    }

    pub(super) fn from_parts<E: serde::de::Error>(
        secs: i64,
        nanos: u32,
    ) -> Result<DateTime<Utc>, E> {
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| E::custom("timestamp out of range"))
    }
}

pub(crate) mod opt_ts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        t.map(|t| (t.timestamp(), t.timestamp_subsec_nanos()))
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<(i64, u32)>::deserialize(d)?
            .map(|(s, n)| ts::from_parts(s, n))
            .transpose()
    }
}

/// A user's latest event: the point and its timestamp.
pub(crate) mod last_event {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        e: &Option<(Point, DateTime<Utc>)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        e.map(|(p, t)| (p, (t.timestamp(), t.timestamp_subsec_nanos())))
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(Point, DateTime<Utc>)>, D::Error> {
        Option::<(Point, (i64, u32))>::deserialize(d)?
            .map(|(p, (s, n))| ts::from_parts(s, n).map(|t| (p, t)))
            .transpose()
    }
}

/// Recent anomalies (whose `type` is a `&'static str`, so not deserializable
/// as it is).
pub(crate) mod anomalies {
    use super::*;

    #[derive(Serialize, Deserialize)]
    enum AnomalyKind {
        StatisticalOutlier,
    }

    #[derive(Serialize, Deserialize)]
    struct Repr {
        event_id: Uuid,
        #[serde(with = "ts")]
        timestamp: DateTime<Utc>,
        kind: AnomalyKind,
        valence_zscore: f64,
        arousal_zscore: f64,
        severity: Severity,
    }

    fn repr<E: serde::ser::Error>(a: &Anomaly) -> Result<Repr, E> {
        let kind = match a.kind {
            STATISTICAL_OUTLIER => AnomalyKind::StatisticalOutlier,
            other => return Err(E::custom(format_args!("unknown anomaly type {other}"))),
        };
        Ok(Repr {
            event_id: a.event_id,
            timestamp: a.timestamp,
            kind,
            valence_zscore: a.valence_zscore,
            arousal_zscore: a.arousal_zscore,
            severity: a.severity,
        })
    }

    pub(crate) fn serialize<S: Serializer>(v: &VecDeque<Anomaly>, s: S) -> Result<S::Ok, S::Error> {
        let reprs = v.iter().map(repr).collect::<Result<Vec<_>, S::Error>>()?;
        reprs.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<Anomaly>, D::Error> {
        Ok(Vec::<Repr>::deserialize(d)?
            .into_iter()
            .map(|r| Anomaly {
                event_id: r.event_id,
                timestamp: r.timestamp,
                kind: match r.kind {
                    AnomalyKind::StatisticalOutlier => STATISTICAL_OUTLIER,
                },
                valence_zscore: r.valence_zscore,
                arousal_zscore: r.arousal_zscore,
                severity: r.severity,
            })
            .collect())
    }
}

/// A set of hashes, sorted (so equal sets encode alike) and as one byte
/// string of 8 bytes each (postcard would spend 10 on most random `u64`s);
/// duplicates refused.
pub(crate) mod u64_set {
    use std::fmt;

    use serde::de::Visitor;

    use super::*;

    pub(crate) fn serialize<S: Serializer>(set: &HashSet<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<u64> = set.iter().copied().collect();
        v.sort_unstable();
        let bytes: Vec<u8> = v.iter().flat_map(|h| h.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }

    struct SetVisitor;

    impl Visitor<'_> for SetVisitor {
        type Value = HashSet<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string of 8-byte hashes")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<HashSet<u64>, E> {
            let chunks = bytes.chunks_exact(8);
            if !chunks.remainder().is_empty() {
                return Err(E::custom("session hashes are not a multiple of 8 bytes"));
            }
            let n = chunks.len();
            let set: HashSet<u64> = chunks
                .map(|c| {
                    let mut h = [0; 8];
                    h.copy_from_slice(c);
                    u64::from_le_bytes(h)
                })
                .collect();
            if set.len() == n {
                Ok(set)
            } else {
                Err(E::custom("repeated session hash"))
            }
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashSet<u64>, D::Error> {
        d.deserialize_bytes(SetVisitor)
    }
}
