//! Checkpoints of the analyzer, and idle users moved out of RAM.
//!
//! # Why
//!
//! The analyzer's state is a pure function of the events fed into it, so the
//! daemon can always rebuild it by replaying its event buffer — but that takes
//! tens of seconds for millions of events. A checkpoint lets a restart resume
//! from saved state and replay only the events after it. And since every user
//! ever seen keeps a baseline window, counters and a credit history, users who
//! went quiet can be *evicted*: their state is handed to the caller to store,
//! and brought back when they return.
//!
//! # What a checkpoint holds
//!
//! [`Analyzer::checkpoint`] saves everything [`Analyzer::ingest`] and the
//! summaries depend on: every resident user (baseline window with its running
//! sums, totals and label counts, recent anomalies, high-anomaly flags, latest
//! event, first/last seen, 30-day credit history), every live session (window,
//! totals, first/last seen), the record of each evicted user (id, checksum of
//! the state handed out, last credit activity — not the state itself), the
//! latest cutoff of [`Analyzer::evict_sessions_idle_since`], and the
//! global metrics state (totals, label and source counts, the last minute's
//! rate, the hashed session ids and the keys of that hash). Floats are stored
//! bit for bit, so a restored analyzer computes exactly what the original
//! would have, event for event.
//!
//! It also holds the parts of the [`AnalyzerConfig`] the state depends on
//! (window sizes, anomaly rule, number of recent anomalies): a checkpoint is
//! only restored under the same configuration, otherwise
//! [`CheckpointError::ConfigMismatch`] tells the caller to replay from scratch.
//!
//! # Encoding
//!
//! As the daemon's buffer records: one format-version byte
//! ([`CHECKPOINT_VERSION`]), the CRC-32 of the body (little endian), then the
//! postcard body: what it is (a whole analyzer or one user), the config stamp,
//! the state. Every decoding failure — short input, other version, checksum
//! mismatch, undecodable or inconsistent body, trailing bytes — is a
//! [`CheckpointError`], never a panic. The checksum detects damage, not
//! tampering.
//!
//! # Evicted users
//!
//! [`Analyzer::evict_users_idle_since`] removes users (and their live
//! sessions) and returns each one's encoded state; the analyzer keeps only a
//! record per evicted user, so that global metrics still count them, and the
//! checksum of the state it handed out, so that [`Analyzer::restore_user`]
//! accepts only that very state (not an older copy). A restored user continues
//! exactly as if they had never left. The caller must restore a user *before*
//! ingesting their next event: an event for an evicted user who was not
//! restored starts them afresh and the stored state is abandoned.
//!
//! While evicted, a user has no [`Analyzer::user_summary`] or
//! [`Analyzer::credit_summaries`] (use [`Analyzer::user_summary_from_encoded`],
//! [`Analyzer::credit_summaries_from_encoded`] and
//! [`Analyzer::all_credit_summaries_with_evicted`]), is not in
//! [`Analyzer::user_ids`] (but in [`Analyzer::evicted_user_ids`]), and their
//! sessions have no [`Analyzer::session_summary`] until they are restored.
//! Global metrics count them as before.
//!
//! # Use (for the daemon)
//!
//! - **Save** `checkpoint()` together with the buffer position of the last
//!   event ingested, in one atomic write. The bytes are self-checking.
//! - **Start**: `from_checkpoint(cfg, bytes)`, then replay the events after the
//!   saved position. On any error (damage, other version, other
//!   configuration…) log it, start from `Analyzer::new(cfg)`, replay the whole
//!   buffer, and delete the stored evicted states: they belong to the refused
//!   checkpoint.
//! - **Evict** with a cutoff older than the session idle time, and store the
//!   returned states in the same atomic write as a checkpoint taken right
//!   after, replacing older states of the same users. A checkpoint's evicted
//!   records name the exact states they expect (by checksum), so states and
//!   checkpoint must not drift apart; a restore need not delete the stored
//!   state (the next eviction replaces it).
//! - **Ingest** (and replay): if `is_evicted(user)`, load the stored state and
//!   `restore_user` first. If that fails, the user starts afresh at the event
//!   (their earlier history is lost until a full replay): log it, or rebuild
//!   everything by replay.
//! - **Erase**: `erase_user` forgets an evicted user too (it returns `true`);
//!   delete their stored state.
//!
//! Sizes (test `checkpoint_size_per_typical_user`, default configuration, 30
//! days of 8 events a day): about 3.4 kB per resident user with a live
//! session, 3.2 kB per evicted user's state, and in the checkpoint about 24
//! bytes per evicted user plus 8 bytes per session id ever seen.

use chrono::{DateTime, Utc};
use hashbrown::{HashMap, HashSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::opt_ts;
use super::{
    Analyzer, AnalyzerConfig, EvictedUser, SessionState, UserState, UserSummary, credit_horizon,
    global,
};
use crate::credit::CreditSummary;

/// Format version of checkpoints and evicted users' state. Bump on any change
/// to the encoding or to the meaning of the state.
pub const CHECKPOINT_VERSION: u8 = 1;
const HEADER: usize = 1 + 4;

/// Why encoded analyzer or user state was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("encoded state is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("encoded state has format version {0}, this build reads version {CHECKPOINT_VERSION}")]
    Version(u8),
    #[error("encoded state checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("encoded state does not decode: {0}")]
    Decode(String),
    #[error("expected {expected}, found {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("state was saved under another analyzer configuration ({0})")]
    ConfigMismatch(String),
    #[error("encoded state is inconsistent: {0}")]
    Invalid(String),
    #[error("encoded state is of user {found:?}, not {expected:?}")]
    OtherUser { expected: String, found: String },
    #[error("user {0:?} is already resident")]
    AlreadyResident(String),
    #[error("user {0:?} is not evicted from this analyzer")]
    NotEvicted(String),
    #[error("encoded state of user {0:?} is not the state evicted last (a stale copy?)")]
    Stale(String),
    #[error("no stored state of evicted user {0:?}")]
    Missing(String),
}

/// What an encoded body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Analyzer,
    User,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Analyzer => "an analyzer checkpoint",
            Kind::User => "an evicted user's state",
        }
    }
}

/// The configuration the state depends on; floats as bit patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ConfigStamp {
    session_window: u64,
    trajectory_window: u64,
    baseline_window: u64,
    min_baseline: u64,
    z_threshold: u64,
    high_z: u64,
    min_std: u64,
    recent_anomalies: u64,
}

impl ConfigStamp {
    fn of(c: &AnalyzerConfig) -> Self {
        ConfigStamp {
            session_window: c.session_window as u64,
            trajectory_window: c.trajectory_window as u64,
            baseline_window: c.baseline_window as u64,
            min_baseline: c.anomaly.min_baseline as u64,
            z_threshold: c.anomaly.z_threshold.to_bits(),
            high_z: c.anomaly.high_z.to_bits(),
            min_std: c.anomaly.min_std.to_bits(),
            recent_anomalies: c.recent_anomalies as u64,
        }
    }

    /// `Ok` when equal, else which settings differ.
    fn check(&self, current: &AnalyzerConfig) -> Result<(), CheckpointError> {
        let now = ConfigStamp::of(current);
        let f = f64::from_bits;
        let mut diffs = Vec::new();
        let mut int = |name: &str, saved: u64, cur: u64| {
            if saved != cur {
                diffs.push(format!("{name} {saved} saved, {cur} now"));
            }
        };
        int("session_window", self.session_window, now.session_window);
        int(
            "trajectory_window",
            self.trajectory_window,
            now.trajectory_window,
        );
        int("baseline_window", self.baseline_window, now.baseline_window);
        int("min_baseline", self.min_baseline, now.min_baseline);
        int(
            "recent_anomalies",
            self.recent_anomalies,
            now.recent_anomalies,
        );
        for (name, saved, cur) in [
            ("z_threshold", self.z_threshold, now.z_threshold),
            ("high_z", self.high_z, now.high_z),
            ("min_std", self.min_std, now.min_std),
        ] {
            if saved != cur {
                diffs.push(format!("{name} {} saved, {} now", f(saved), f(cur)));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::ConfigMismatch(diffs.join(", ")))
        }
    }
}

/// Version byte, CRC-32 of the body, then the body: kind, config stamp, payload.
fn encode<T: Serialize>(kind: Kind, cfg: &AnalyzerConfig, payload: &T) -> Vec<u8> {
    let framed = postcard::to_extend(&kind, vec![CHECKPOINT_VERSION, 0, 0, 0, 0])
        .and_then(|out| postcard::to_extend(&ConfigStamp::of(cfg), out))
        .and_then(|out| postcard::to_extend(payload, out));
    // Postcard into a Vec fails only for sequences of unknown length or a
    // value's own serialization error; the state has neither (every sequence
    // is a collection or an exact-size iterator, and anomalies are always of a
    // known kind).
    let mut out = framed.expect("analyzer state always encodes");
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Check the frame and decode. `cfg`: refuse state saved under another
/// configuration. Returns the payload and the body's checksum.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    kind: Kind,
    cfg: Option<&AnalyzerConfig>,
) -> Result<(T, u32), CheckpointError> {
    let (header, body) = match bytes.split_first_chunk::<HEADER>() {
        Some(split) => split,
        None => return Err(CheckpointError::Truncated(bytes.len())),
    };
    let [version, c0, c1, c2, c3] = *header;
    if version != CHECKPOINT_VERSION {
        return Err(CheckpointError::Version(version));
    }
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CheckpointError::Checksum { stored, computed });
    }
    let de = |e: postcard::Error| CheckpointError::Decode(e.to_string());
    let (found, rest) = postcard::take_from_bytes::<Kind>(body).map_err(de)?;
    if found != kind {
        return Err(CheckpointError::WrongKind {
            expected: kind.name(),
            found: found.name(),
        });
    }
    let (stamp, rest) = postcard::take_from_bytes::<ConfigStamp>(rest).map_err(de)?;
    if let Some(cfg) = cfg {
        stamp.check(cfg)?;
    }
    let (payload, rest) = postcard::take_from_bytes::<T>(rest).map_err(de)?;
    if !rest.is_empty() {
        return Err(CheckpointError::Decode(format!(
            "{} bytes after the end of the state",
            rest.len()
        )));
    }
    Ok((payload, computed))
}

/// A whole analyzer, as encoded (maps as sequences of pairs sorted by key).
#[derive(Serialize)]
struct AnalyzerBodyRef<'a> {
    users: Vec<(&'a String, &'a UserState)>,
    sessions: Vec<(&'a String, &'a SessionState)>,
    evicted: Vec<(&'a String, &'a EvictedUser)>,
    #[serde(with = "opt_ts")]
    session_cutoff: &'a Option<DateTime<Utc>>,
    global: &'a global::GlobalState,
}

/// [`AnalyzerBodyRef`], decoded.
#[derive(Deserialize)]
struct AnalyzerBody {
    users: Vec<(String, UserState)>,
    sessions: Vec<(String, SessionState)>,
    evicted: Vec<(String, EvictedUser)>,
    #[serde(with = "opt_ts")]
    session_cutoff: Option<DateTime<Utc>>,
    global: global::GlobalState,
}

/// One evicted user, as encoded.
#[derive(Serialize)]
struct UserBlobRef<'a> {
    user_id: &'a str,
    user: &'a UserState,
    sessions: &'a [(String, SessionState)],
}

/// [`UserBlobRef`], decoded.
#[derive(Deserialize)]
struct UserBlob {
    user_id: String,
    user: UserState,
    sessions: Vec<(String, SessionState)>,
}

fn sorted<V>(m: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

fn into_map<V>(what: &str, pairs: Vec<(String, V)>) -> Result<HashMap<String, V>, CheckpointError> {
    let mut m = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if m.contains_key(&k) {
            return Err(CheckpointError::Invalid(format!("{what} {k:?} twice")));
        }
        m.insert(k, v);
    }
    Ok(m)
}

fn check_user(id: &str, u: &UserState, cfg: &AnalyzerConfig) -> Result<(), CheckpointError> {
    let bounded = |len: usize, cap: usize| cap == 0 || len <= cap;
    let ok = u.baseline.is_consistent_with(cfg.baseline_window)
        && bounded(u.anomalies.len(), cfg.recent_anomalies)
        && bounded(u.high_flags.len(), cfg.trajectory_window)
        && u.credit.is_well_formed();
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::Invalid(format!(
            "state of user {id:?} breaks the analyzer's invariants"
        )))
    }
}

fn check_session(id: &str, s: &SessionState, cfg: &AnalyzerConfig) -> Result<(), CheckpointError> {
    if s.window.is_consistent_with(cfg.session_window) {
        Ok(())
    } else {
        Err(CheckpointError::Invalid(format!(
            "state of session {id:?} breaks the analyzer's invariants"
        )))
    }
}

/// Decode an evicted user's state and check it is `user_id`'s.
fn decode_user(
    bytes: &[u8],
    user_id: &str,
    cfg: Option<&AnalyzerConfig>,
) -> Result<(UserBlob, u32), CheckpointError> {
    let (blob, crc) = decode::<UserBlob>(bytes, Kind::User, cfg)?;
    if blob.user_id != user_id {
        return Err(CheckpointError::OtherUser {
            expected: user_id.to_owned(),
            found: blob.user_id,
        });
    }
    if let Some(cfg) = cfg {
        check_user(user_id, &blob.user, cfg)?;
        for (sid, s) in &blob.sessions {
            check_session(sid, s, cfg)?;
            if s.user_id != user_id {
                return Err(CheckpointError::Invalid(format!(
                    "session {sid:?} of user {:?} in the state of {user_id:?}",
                    s.user_id
                )));
            }
        }
    }
    Ok((blob, crc))
}

impl Analyzer {
    /// The whole analyzer state, encoded (see the [module docs](self)).
    ///
    /// Evicted users' states are not in it, only the record that they were
    /// evicted: a checkpoint goes with the evicted states stored at the time.
    pub fn checkpoint(&self) -> Vec<u8> {
        let body = AnalyzerBodyRef {
            users: sorted(&self.users),
            sessions: sorted(&self.sessions),
            evicted: sorted(&self.evicted),
            session_cutoff: &self.session_cutoff,
            global: &self.global,
        };
        encode(Kind::Analyzer, &self.cfg, &body)
    }

    /// The analyzer saved by [`Analyzer::checkpoint`], provided `cfg` matches
    /// the configuration it was saved under. On any error, rebuild the state
    /// by replaying the events instead.
    pub fn from_checkpoint(cfg: AnalyzerConfig, bytes: &[u8]) -> Result<Analyzer, CheckpointError> {
        let (body, _) = decode::<AnalyzerBody>(bytes, Kind::Analyzer, Some(&cfg))?;
        let users = into_map("user", body.users)?;
        let sessions = into_map("session", body.sessions)?;
        let evicted = into_map("evicted user", body.evicted)?;
        for (id, u) in &users {
            check_user(id, u, &cfg)?;
            if evicted.contains_key(id) {
                return Err(CheckpointError::Invalid(format!(
                    "user {id:?} both resident and evicted"
                )));
            }
        }
        for (id, s) in &sessions {
            check_session(id, s, &cfg)?;
        }
        Ok(Analyzer {
            cfg,
            users,
            sessions,
            evicted,
            session_cutoff: body.session_cutoff,
            global: body.global,
        })
    }

    /// Evict every resident user whose last activity (the `ingested_at` of
    /// their latest event) is before `cutoff`, with their live sessions.
    /// Returns each one's encoded state, ordered by user id, for the caller to
    /// store and hand back to [`Analyzer::restore_user`] (replacing any older
    /// stored state of the same user). Global metrics do not change.
    pub fn evict_users_idle_since(&mut self, cutoff: DateTime<Utc>) -> Vec<(String, Vec<u8>)> {
        let mut ids: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.last_seen < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        ids.sort_unstable();
        let leaving: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut sessions: HashMap<String, Vec<(String, SessionState)>> = HashMap::new();
        for (sid, s) in self
            .sessions
            .extract_if(|_, s| leaving.contains(s.user_id.as_str()))
        {
            sessions
                .entry(s.user_id.clone())
                .or_default()
                .push((sid, s));
        }
        drop(leaving);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(user) = self.users.remove(&id) else {
                continue;
            };
            let mut own = sessions.remove(&id).unwrap_or_default();
            own.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let bytes = encode(
                Kind::User,
                &self.cfg,
                &UserBlobRef {
                    user_id: &id,
                    user: &user,
                    sessions: &own,
                },
            );
            let mut crc = [0; 4];
            crc.copy_from_slice(&bytes[1..HEADER]);
            self.evicted.insert(
                id.clone(),
                EvictedUser {
                    crc: u32::from_le_bytes(crc),
                    credit_last_active: user.credit.last_active(),
                },
            );
            out.push((id, bytes));
        }
        out
    }

    /// Bring back a user evicted by [`Analyzer::evict_users_idle_since`] from
    /// the state it returned. Refused, with nothing changed, if the user is
    /// resident, is not evicted, or `bytes` are not exactly the state handed
    /// out at their last eviction (damaged, another user's, another
    /// configuration's, or an older copy).
    ///
    /// The user's sessions come back too, except those that
    /// [`Analyzer::evict_sessions_idle_since`] would have dropped meanwhile
    /// (idle since before its latest cutoff), and any whose id is live again
    /// (the live one is kept).
    pub fn restore_user(&mut self, user_id: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        if self.users.contains_key(user_id) {
            return Err(CheckpointError::AlreadyResident(user_id.to_owned()));
        }
        let Some(record) = self.evicted.get(user_id) else {
            return Err(CheckpointError::NotEvicted(user_id.to_owned()));
        };
        let expected = record.crc;
        let (blob, crc) = decode_user(bytes, user_id, Some(&self.cfg))?;
        if crc != expected {
            return Err(CheckpointError::Stale(user_id.to_owned()));
        }
        self.evicted.remove(user_id);
        self.users.insert(blob.user_id, blob.user);
        let cutoff = self.session_cutoff;
        for (sid, s) in blob.sessions {
            if cutoff.is_none_or(|c| s.last_seen >= c) {
                self.sessions.entry(sid).or_insert(s);
            }
        }
        Ok(())
    }

    /// Whether the user's state is in RAM.
    pub fn is_resident(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    /// Whether the user is evicted: restore them before ingesting their events.
    pub fn is_evicted(&self, user_id: &str) -> bool {
        self.evicted.contains_key(user_id)
    }

    /// Users whose state is in RAM.
    pub fn resident_users(&self) -> usize {
        self.users.len()
    }

    /// Users evicted and not restored.
    pub fn evicted_users(&self) -> usize {
        self.evicted.len()
    }

    /// Ids of the evicted users, in no particular order.
    pub fn evicted_user_ids(&self) -> impl Iterator<Item = &str> {
        self.evicted.keys().map(String::as_str)
    }

    /// The evicted users [`Analyzer::all_credit_summaries`] would include for
    /// `now` were they resident (an event in the 31 days before `now`),
    /// ordered by user id. Their summaries:
    /// [`Analyzer::credit_summaries_from_encoded`]; merged with
    /// `all_credit_summaries` by user id they give the summaries of all users.
    pub fn evicted_credit_candidates(&self, now: DateTime<Utc>) -> Vec<&str> {
        let horizon = credit_horizon(now);
        let mut ids: Vec<&str> = self
            .evicted
            .iter()
            .filter(|(_, e)| e.credit_last_active.is_some_and(|t| t > horizon))
            .map(|(id, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Evicted users whose last active day starts at or after `t` (see
    /// [`Analyzer::risk_sweep_with_evicted`]), ordered by user id.
    pub(super) fn evicted_active_since(&self, t: DateTime<Utc>) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .evicted
            .iter()
            .filter(|(_, e)| e.credit_last_active.is_some_and(|a| a >= t))
            .map(|(id, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// An evicted user's state, decoded and checked against this analyzer's
    /// configuration, without making them resident.
    pub(super) fn decode_evicted_user(
        &self,
        user_id: &str,
        bytes: &[u8],
    ) -> Result<UserState, CheckpointError> {
        Ok(decode_user(bytes, user_id, Some(&self.cfg))?.0.user)
    }

    /// [`Analyzer::all_credit_summaries`] over every user, resident or
    /// evicted, ordered by user id. `load` returns the stored state of an
    /// evicted user (`None`: not found); evicted users whose state is missing
    /// or refused are left out and reported with the error.
    pub fn all_credit_summaries_with_evicted(
        &self,
        now: DateTime<Utc>,
        windows: &[u32],
        mut load: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> (Vec<CreditSummary>, Vec<(String, CheckpointError)>) {
        let mut all = self.all_credit_summaries(now, windows);
        let mut failed = Vec::new();
        for id in self.evicted_credit_candidates(now) {
            let summaries = load(id)
                .ok_or_else(|| CheckpointError::Missing(id.to_owned()))
                .and_then(|bytes| Self::credit_summaries_from_encoded(&bytes, id, now, windows));
            match summaries {
                Ok(s) => all.extend(s),
                Err(e) => failed.push((id.to_owned(), e)),
            }
        }
        // Stable: each user's summaries keep the order of `windows`.
        all.sort_by(|x, y| x.user_id.cmp(&y.user_id));
        (all, failed)
    }

    /// [`Analyzer::credit_summaries`] of an evicted user, from the state
    /// [`Analyzer::evict_users_idle_since`] returned, without making them
    /// resident. Credit summaries do not depend on the configuration, so none
    /// is checked.
    pub fn credit_summaries_from_encoded(
        bytes: &[u8],
        user_id: &str,
        now: DateTime<Utc>,
        windows: &[u32],
    ) -> Result<Vec<CreditSummary>, CheckpointError> {
        let (blob, _) = decode_user(bytes, user_id, None)?;
        if !blob.user.credit.is_well_formed() {
            return Err(CheckpointError::Invalid(format!(
                "credit history of user {user_id:?} is out of order"
            )));
        }
        Ok(blob.user.credit_summaries(user_id, now, windows))
    }

    /// [`Analyzer::user_summary`] of an evicted user, from the state
    /// [`Analyzer::evict_users_idle_since`] returned, without making them
    /// resident. Refused if it was saved under another configuration.
    pub fn user_summary_from_encoded(
        &self,
        user_id: &str,
        bytes: &[u8],
    ) -> Result<UserSummary, CheckpointError> {
        let (blob, _) = decode_user(bytes, user_id, Some(&self.cfg))?;
        Ok(blob.user.summary(user_id, &self.cfg))
    }
}
