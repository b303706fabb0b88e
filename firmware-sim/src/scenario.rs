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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::devices::Script;
use crate::journey::Journey;
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
    pub failed: AtomicU64,
    /// Acknowledged as duplicates (a resend after a reconnect).
    pub duplicates: AtomicU64,
}

/// A snapshot of a [`Counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub duplicates: u64,
}

impl Counter {
    pub fn snapshot(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }
}

/// The closing summary: counts by transport.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub transports: BTreeMap<String, Counts>,
    pub elapsed_s: f64,
}

impl Summary {
    pub fn failed(&self) -> u64 {
        self.transports.values().map(|c| c.failed).sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<12} {:>10} {:>13} {:>8} {:>11}",
            "transport", "sent", "acknowledged", "failed", "duplicates"
        )?;
        let mut total = Counts::default();
        for (name, c) in &self.transports {
            writeln!(
                f,
                "{:<12} {:>10} {:>13} {:>8} {:>11}",
                name, c.sent, c.acknowledged, c.failed, c.duplicates
            )?;
            total.sent += c.sent;
            total.acknowledged += c.acknowledged;
            total.failed += c.failed;
            total.duplicates += c.duplicates;
        }
        writeln!(
            f,
            "{:<12} {:>10} {:>13} {:>8} {:>11}",
            "total", total.sent, total.acknowledged, total.failed, total.duplicates
        )?;
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
/// reply, or is rejected, counts as failed.
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
                counter.failed.fetch_add(1, Ordering::Relaxed);
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
}

/// MQTT devices beside the WebSocket users: per user of each plan one device
/// (facial camera, voice front end or chat app, in turn) publishing a raw
/// reading to `sensors/{device_id}/{source}` every event interval, QoS 1.
/// The device id is `sim-{source}-{user}`, or the MQTT username when one is
/// given (the gateway's embedded broker allows a device only its own topics).
pub async fn run_mqtt(
    plans: &[ScenarioPlan],
    opts: &WsOptions,
    target: &MqttTarget,
    counter: Arc<Counter>,
    cancel: &CancellationToken,
) {
    use crate::mqtt::{MqttDevice, MqttKind, MqttPublisher, Publisher};
    for (i, plan) in plans.iter().enumerate() {
        if cancel.is_cancelled() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (j, user) in plan.users.iter().enumerate() {
            let kind = [MqttKind::Facial, MqttKind::Voice, MqttKind::Text][j % 3];
            let device_id = format!("sim-{}-{}", kind.source().as_str(), user.user_id);
            let seed = opts
                .seed
                .wrapping_mul(7_919)
                .wrapping_add((i * 1000 + j) as u64);
            let (user, opts, target, counter, cancel) = (
                user.clone(),
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
                for k in 0..n {
                    let t_s = k as f64 * opts.event_interval_s;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(crate::secs(t_s / speed).saturating_sub(start.elapsed())) => {}
                    }
                    let payload = device.reading_at(t_s).to_string().into_bytes();
                    counter.sent.fetch_add(1, Ordering::Relaxed);
                    match publisher.publish(&topic, payload).await {
                        Ok(()) => {
                            counter.acknowledged.fetch_add(1, Ordering::Relaxed);
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
}
