//! The original producer's scenarios, the WebSocket runner and the summary.
//!
//! | scenario | users | simulated length | journeys |
//! |---|---|---|---|
//! | `single-user` | 1 | 3 min | calm → stress → recovery |
//! | `multi-user` | 5 | 5 min | calm-stress-recovery, stable, volatile, recovery, crisis |
//! | `scenarios` | 1, then 1 | 4 min each | recovery, then crisis |
//! | `stress` | 10 | 10 min | all five, in turn |
//! | `all` | | | each of the above, one after the other |
//!
//! User ids differ per scenario (1001…, 2001…, 3001…, 4001…) so their
//! analyses do not mix. Each user sends one event every `event_interval`
//! simulated seconds and waits for its reply before the next.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::devices::Script;
use crate::journey::Journey;
use crate::mqtt::{ErrorReports, MqttVersion};
use crate::ws::{EventGen, Reply, WsClient, WsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    SingleUser,
    MultiUser,
    Scenarios,
    Stress,
    All,
}

/// One user's part in a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPlan {
    pub user_id: String,
    pub journey: Journey,
    pub duration: Duration,
}

/// Users that run together.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioPlan {
    pub name: String,
    pub users: Vec<UserPlan>,
}

/// Command-line overrides of the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub users: Option<usize>,
    pub duration: Option<Duration>,
}

fn plan(
    name: &str,
    id_base: u32,
    users: usize,
    minutes: u64,
    journeys: &[Journey],
    o: Overrides,
) -> ScenarioPlan {
    let n = o.users.unwrap_or(users).max(1);
    let duration = o.duration.unwrap_or(Duration::from_secs(minutes * 60));
    ScenarioPlan {
        name: name.into(),
        users: (0..n)
            .map(|i| UserPlan {
                user_id: (id_base + i as u32).to_string(),
                journey: journeys[i % journeys.len()],
                duration,
            })
            .collect(),
    }
}

/// The plans of a scenario, run one after the other.
pub fn plans(kind: ScenarioKind, o: Overrides) -> Vec<ScenarioPlan> {
    use Journey::*;
    match kind {
        ScenarioKind::SingleUser => vec![plan("single-user", 1001, 1, 3, &[CalmStressRecovery], o)],
        ScenarioKind::MultiUser => vec![plan(
            "multi-user",
            2001,
            5,
            5,
            &[CalmStressRecovery, Stable, Volatile, Recovery, Crisis],
            o,
        )],
        ScenarioKind::Scenarios => vec![
            plan("scenarios/recovery", 3001, 1, 4, &[Recovery], o),
            plan("scenarios/crisis", 3101, 1, 4, &[Crisis], o),
        ],
        ScenarioKind::Stress => vec![plan("stress", 4001, 10, 10, &Journey::ALL, o)],
        ScenarioKind::All => [
            ScenarioKind::SingleUser,
            ScenarioKind::MultiUser,
            ScenarioKind::Scenarios,
            ScenarioKind::Stress,
        ]
        .into_iter()
        .flat_map(|k| plans(k, o))
        .collect(),
    }
}

/// Counts for one transport, updated as events go.
#[derive(Debug, Default)]
pub struct Counter {
    pub sent: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Neither acknowledged nor refused: no answer (connection lost,
    /// timeout).
    pub failed: AtomicU64,
    /// Acknowledged as duplicates (a resend after a reconnect).
    pub duplicates: AtomicU64,
    /// Refused by the gateway, by reason (a rejection reply, a negative
    /// PUBACK, a report on an MQTT device's errors topic).
    refused: Mutex<BTreeMap<String, u64>>,
}

/// A snapshot of a [`Counter`]. `sent` = `acknowledged` + `refused` +
/// `failed` once every answer is in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acknowledged: u64,
    /// Refused by the gateway (not acknowledged).
    pub refused: u64,
    /// The refusals by reason (the gateway's error kind, or an MQTT 5 reason
    /// code, e.g. `not authorized (0x87)`).
    pub refused_reasons: BTreeMap<String, u64>,
    /// No answer.
    pub failed: u64,
    pub duplicates: u64,
}

impl Counter {
    /// Count a refusal for `reason`.
    pub fn refuse(&self, reason: &str, n: u64) {
        if n > 0 {
            *self.refused().entry(reason.to_owned()).or_default() += n;
        }
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // The counts stay usable after a panic elsewhere.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Counts {
        let refused_reasons = self.refused().clone();
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            refused: refused_reasons.values().sum(),
            refused_reasons,
            failed: self.failed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }
}

impl Counts {
    /// Events that were answered: acknowledged, refused or given up on.
    pub fn done(&self) -> u64 {
        self.acknowledged + self.refused + self.failed
    }
}

/// The closing summary: counts by transport.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub transports: BTreeMap<String, Counts>,
    pub elapsed_s: f64,
}

impl Summary {
    /// Events not acknowledged: refused or failed (the exit code is 1 when
    /// there are any).
    pub fn not_acknowledged(&self) -> u64 {
        self.transports.values().map(|c| c.refused + c.failed).sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, c: &Counts| {
            writeln!(
                f,
                "{:<12} {:>10} {:>13} {:>8} {:>8} {:>11}",
                name, c.sent, c.acknowledged, c.refused, c.failed, c.duplicates
            )
        };
        writeln!(
            f,
            "{:<12} {:>10} {:>13} {:>8} {:>8} {:>11}",
            "transport", "sent", "acknowledged", "refused", "failed", "duplicates"
        )?;
        let mut total = Counts::default();
        for (name, c) in &self.transports {
            row(f, name, c)?;
            total.sent += c.sent;
            total.acknowledged += c.acknowledged;
            total.refused += c.refused;
            total.failed += c.failed;
            total.duplicates += c.duplicates;
        }
        row(f, "total", &total)?;
        for (name, c) in &self.transports {
            if !c.refused_reasons.is_empty() {
                let reasons: Vec<String> = c
                    .refused_reasons
                    .iter()
                    .map(|(reason, n)| format!("{n} {reason}"))
                    .collect();
                writeln!(f, "refused ({name}): {}", reasons.join(", "))?;
            }
        }
        write!(f, "elapsed {:.1} s", self.elapsed_s)
    }
}

/// How to reach the gateway and pace the events.
#[derive(Debug, Clone)]
pub struct WsOptions {
    pub gateway: String,
    pub token: String,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated seconds between one user's events.
    pub event_interval_s: f64,
    /// Per reply (and per connect).
    pub timeout: Duration,
    pub seed: u64,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            gateway: "ws://127.0.0.1:8080".into(),
            token: "dev-token-change-me".into(),
            speed: 1.0,
            event_interval_s: 3.0,
            timeout: Duration::from_secs(30),
            seed: 1,
        }
    }
}

impl WsOptions {
    /// Events one user of `plan` sends.
    pub fn events_per_user(&self, user: &UserPlan) -> u64 {
        (user.duration.as_secs_f64() / self.event_interval_s.max(0.001)).floor() as u64
    }

    /// Events a list of plans sends in all.
    pub fn total_events(&self, plans: &[ScenarioPlan]) -> u64 {
        plans
            .iter()
            .flat_map(|p| &p.users)
            .map(|u| self.events_per_user(u))
            .sum()
    }
}

/// Run the plans one after the other; every user of a plan concurrently.
pub async fn run_ws(
    plans: &[ScenarioPlan],
    opts: &WsOptions,
    counter: Arc<Counter>,
    cancel: &CancellationToken,
) {
    for (i, plan) in plans.iter().enumerate() {
        if cancel.is_cancelled() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (j, user) in plan.users.iter().enumerate() {
            let seed = opts
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((i * 1000 + j) as u64);
            let (user, opts, counter, cancel) =
                (user.clone(), opts.clone(), counter.clone(), cancel.clone());
            tasks.spawn(async move { run_user(&user, &opts, seed, &counter, &cancel).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// One user: connect, send each event at its time, wait for its reply.
/// A lost connection is re-established and the unanswered event resent
/// (its `event_id` makes that idempotent); an event that still gets no
/// reply counts as failed, one rejected as refused (with the reply's error).
pub async fn run_user(
    user: &UserPlan,
    opts: &WsOptions,
    seed: u64,
    counter: &Counter,
    cancel: &CancellationToken,
) {
    let speed = if opts.speed.is_finite() && opts.speed > 0.0 {
        opts.speed
    } else {
        1.0
    };
    let n = opts.events_per_user(user);
    let mut generator = EventGen::new(
        user.user_id.clone(),
        Script::new(user.journey, user.duration),
        seed,
    );
    let start = Instant::now();
    let mut client: Option<WsClient> = None;
    for k in 0..n {
        let t_s = k as f64 * opts.event_interval_s;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(crate::secs(t_s / speed).saturating_sub(start.elapsed())) => {}
        }
        let event = generator.event_at(t_s);
        counter.sent.fetch_add(1, Ordering::Relaxed);
        let mut outcome: Result<Reply, WsError> = Err(WsError::Closed(String::new()));
        for _attempt in 0..3 {
            if client.is_none() {
                match WsClient::connect(&opts.gateway, &user.user_id, &opts.token, opts.timeout)
                    .await
                {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        outcome = Err(e);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            outcome = c.send(&event, opts.timeout).await;
            match outcome {
                Ok(_) => break,
                // The connection is gone: reconnect and resend.
                Err(_) => client = None,
            }
        }
        match outcome {
            Ok(Reply::Processed { duplicate, .. }) => {
                counter.acknowledged.fetch_add(1, Ordering::Relaxed);
                if duplicate {
                    counter.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Reply::Rejected { error, message }) => {
                counter.refuse(&error, 1);
                eprintln!("user {}: event rejected: {error}: {message}", user.user_id);
            }
            Err(e) => {
                counter.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("user {}: event failed: {e}", user.user_id);
            }
        }
    }
    if let Some(c) = client {
        c.close().await;
    }
}

/// Where MQTT devices publish (`firmware-sim --mqtt`).
#[derive(Debug, Clone)]
pub struct MqttTarget {
    /// `mqtt://HOST:PORT`.
    pub broker: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The protocol version (the gateway's broker has a port for each).
    pub version: MqttVersion,
}

/// How long the MQTT 3.1.1 error reports must have been quiet before the
/// count of refusals is taken (a report may trail its PUBACK a little).
const REPORTS_QUIET: Duration = Duration::from_millis(500);

/// MQTT devices beside the WebSocket users: per user of each plan one device
/// (facial camera, voice front end or chat app, in turn) publishing a raw
/// reading to `sensors/{device_id}/{source}` every event interval, QoS 1.
/// The device id is `sim-{source}-{user}`, or the MQTT username when one is
/// given (the gateway's embedded broker allows a device only its own topics).
///
/// A reading is acknowledged when the gateway PUBACKs it, refused when the
/// PUBACK's MQTT 5 reason code says so; on MQTT 3.1.1 (whose PUBACK cannot
/// refuse) one [`ErrorReports`] per device identity listens on its errors
/// topic, and the refusals reported there are moved from acknowledged to
/// refused at the end.
pub async fn run_mqtt(
    plans: &[ScenarioPlan],
    opts: &WsOptions,
    target: &MqttTarget,
    counter: Arc<Counter>,
    cancel: &CancellationToken,
) {
    use crate::mqtt::{Ack, MqttDevice, MqttKind, MqttPublisher, Publisher};
    let credentials = match (&target.username, &target.password) {
        (Some(u), p) => Some((u.as_str(), p.as_deref().unwrap_or(""))),
        (None, _) => None,
    };
    // MQTT 3.1.1: the error listeners, by device identity.
    let mut listeners: BTreeMap<String, ErrorReports> = BTreeMap::new();
    for (i, plan) in plans.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let devices: Vec<(UserPlan, MqttKind, String)> = plan
            .users
            .iter()
            .enumerate()
            .map(|(j, user)| {
                let kind = [MqttKind::Facial, MqttKind::Voice, MqttKind::Text][j % 3];
                let device_id = format!("sim-{}-{}", kind.source().as_str(), user.user_id);
                (user.clone(), kind, device_id)
            })
            .collect();
        if target.version == MqttVersion::V311 {
            for (_, _, device_id) in &devices {
                // A gateway knows a device by its MQTT username: with
                // credentials every simulated device is that one device.
                let identity = target.username.clone().unwrap_or_else(|| device_id.clone());
                if listeners.contains_key(&identity) {
                    continue;
                }
                match ErrorReports::listen(
                    &target.broker,
                    &format!("{identity}-errors"),
                    credentials,
                    &identity,
                    target.version,
                    opts.timeout,
                )
                .await
                {
                    Ok(l) => {
                        listeners.insert(identity, l);
                    }
                    Err(e) => eprintln!(
                        "MQTT device {identity}: cannot listen for refusals ({e}); \
                         over MQTT 3.1.1 its refused readings count as acknowledged"
                    ),
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (j, (user, kind, device_id)) in devices.into_iter().enumerate() {
            let seed = opts
                .seed
                .wrapping_mul(7_919)
                .wrapping_add((i * 1000 + j) as u64);
            let (opts, target, counter, cancel) = (
                opts.clone(),
                target.clone(),
                counter.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                let n = opts.events_per_user(&user);
                let speed = if opts.speed.is_finite() && opts.speed > 0.0 {
                    opts.speed
                } else {
                    1.0
                };
                let credentials = match (&target.username, &target.password) {
                    (Some(u), p) => Some((u.as_str(), p.as_deref().unwrap_or(""))),
                    (None, _) => None,
                };
                let mut publisher = match MqttPublisher::connect(
                    &target.broker,
                    &device_id,
                    credentials,
                    target.version,
                    opts.timeout,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("MQTT device {device_id}: {e}");
                        counter.sent.fetch_add(n, Ordering::Relaxed);
                        counter.failed.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                };
                // A gateway authenticates a device by its MQTT username and
                // lets it publish only under sensors/{username}/…: with
                // credentials every simulated device speaks as that one
                // device (a hub), each on its own connection (client id).
                let topic_device = target.username.clone().unwrap_or_else(|| device_id.clone());
                let mut device = MqttDevice::new(
                    topic_device,
                    user.user_id.clone(),
                    kind,
                    Script::new(user.journey, user.duration),
                    seed,
                );
                let topic = device.topic();
                let start = Instant::now();
                // Each reason said once per device, not once per message.
                let mut said: Vec<String> = Vec::new();
                for k in 0..n {
                    let t_s = k as f64 * opts.event_interval_s;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(crate::secs(t_s / speed).saturating_sub(start.elapsed())) => {}
                    }
                    let payload = device.reading_at(t_s).to_string().into_bytes();
                    counter.sent.fetch_add(1, Ordering::Relaxed);
                    match publisher.publish(&topic, payload).await {
                        Ok(Ack::Accepted) => {
                            counter.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ack::Refused(reason)) => {
                            counter.refuse(&reason, 1);
                            if !said.contains(&reason) {
                                eprintln!("MQTT device {device_id}: refused by the gateway: {reason}");
                                said.push(reason);
                            }
                        }
                        Err(e) => {
                            counter.failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("MQTT device {device_id}: publish failed: {e}");
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    // MQTT 3.1.1: what was PUBACKed but reported refused is refused.
    for (identity, listener) in listeners {
        let reports = listener
            .settle(REPORTS_QUIET, opts.timeout.max(REPORTS_QUIET))
            .await;
        let reported: u64 = reports.values().sum();
        let acked = counter.acknowledged.load(Ordering::Relaxed);
        if reported > acked {
            eprintln!(
                "MQTT device {identity}: {reported} refusals reported for {acked} acknowledged \
                 readings: something else publishes as this device too"
            );
        }
        counter
            .acknowledged
            .fetch_sub(reported.min(acked), Ordering::Relaxed);
        for (kind, n) in reports {
            counter.refuse(&kind, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_scenarios() {
        let p = plans(ScenarioKind::SingleUser, Overrides::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].users.len(), 1);
        assert_eq!(p[0].users[0].duration, Duration::from_secs(180));
        let p = plans(ScenarioKind::MultiUser, Overrides::default());
        assert_eq!(
            (p[0].users.len(), p[0].users[0].duration.as_secs()),
            (5, 300)
        );
        let p = plans(ScenarioKind::Stress, Overrides::default());
        assert_eq!(
            (p[0].users.len(), p[0].users[0].duration.as_secs()),
            (10, 600)
        );
        let p = plans(ScenarioKind::Scenarios, Overrides::default());
        assert_eq!(p[0].users[0].journey, Journey::Recovery);
        assert_eq!(p[1].users[0].journey, Journey::Crisis);
        assert_eq!(plans(ScenarioKind::All, Overrides::default()).len(), 5);
        let o = Overrides {
            users: Some(2),
            duration: Some(Duration::from_secs(30)),
        };
        let p = plans(ScenarioKind::Stress, o);
        assert_eq!(
            (p[0].users.len(), p[0].users[0].duration.as_secs()),
            (2, 30)
        );
        let opts = WsOptions::default();
        assert_eq!(opts.total_events(&p), 20);
    }

    #[test]
    fn the_summary_shows_refusals_with_their_reasons() {
        let mqtt = Counter::default();
        mqtt.sent.store(60, Ordering::Relaxed);
        mqtt.acknowledged.store(50, Ordering::Relaxed);
        mqtt.refuse("not authorized (0x87)", 8);
        mqtt.refuse("quota exceeded (0x97)", 2);
        mqtt.refuse("quota exceeded (0x97)", 0);
        let c = mqtt.snapshot();
        assert_eq!((c.refused, c.done()), (10, 60));
        let summary = Summary {
            transports: BTreeMap::from([("mqtt".to_owned(), c)]),
            elapsed_s: 1.0,
        };
        assert_eq!(summary.not_acknowledged(), 10);
        let text = summary.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(
            text.contains("refused (mqtt): 8 not authorized (0x87), 2 quota exceeded (0x97)"),
            "{text}"
        );
        let json = serde_json::to_value(&summary).expect("json");
        assert_eq!(json["transports"]["mqtt"]["refused"], 10);
        assert_eq!(
            json["transports"]["mqtt"]["refused_reasons"]["not authorized (0x87)"],
            8
        );
    }
}
