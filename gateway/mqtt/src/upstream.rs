//! Upstream mode: consume from an external broker (rumqttc).
//!
//! - A fixed client id and `clean_session = false`: the broker keeps the
//!   subscriptions and queues QoS 1 messages while the gateway is down.
//! - Manual acknowledgements: a message is acknowledged only once its event
//!   is durable in the buffer (or it was rejected for good), in the order the
//!   messages came. A crash before the acknowledgement means the broker
//!   delivers it again; its event id is derived from the message
//!   ([`super::ids`]), so the copy is recognized and stored once.
//! - An acknowledgement belongs to the connection that delivered the message:
//!   after a reconnect the broker resends what was unacknowledged, so acks
//!   for the old connection are skipped (rumqttc drops them too).
//! - Reconnects with exponential back-off and jitter; TLS and credentials
//!   from `[mqtt.upstream]`.
//! - Results (analysis, alerts, errors) go out on a second connection
//!   (`{client_id}-results`, clean session, QoS 0), so that publishing can
//!   never hold up acknowledgements on the consuming connection.
//!
//! One task polls the consuming connection and does nothing else (rumqttc
//! sends acknowledgements only while polled); another decodes, stores and
//! acknowledges. The channel between them is bounded by
//! `mqtt.upstream.max_in_flight`; acknowledgements use `try_ack` on a request
//! queue with room for every message in flight, so the two can never wait
//! on each other.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::inbound::{Origin, Shared, Ticket, Verdict};
use super::rejection::Rejection;
use super::stats::{RejectKind, UpstreamState};
use super::tls::{TlsError, client_config};
use crate::config::{MqttConfig, UpstreamConfig};

/// The largest packet accepted from the upstream broker. Deliberately the
/// MQTT maximum: a packet over rumqttc's limit breaks the connection, and the
/// broker would redeliver it forever. The gateway's own payload limit is
/// applied afterwards, as a rejection.
const MAX_INCOMING_PACKET: usize = 256 << 20;

/// The consuming and the results connection, not yet running.
pub struct Clients {
    pub consumer: AsyncClient,
    consumer_loop: EventLoop,
    /// Present when results are published upstream.
    pub results: Option<AsyncClient>,
    results_loop: Option<EventLoop>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("results", &self.results.is_some())
            .finish_non_exhaustive()
    }
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn options(
    u: &UpstreamConfig,
    client_id: &str,
    persistent: bool,
    manual_acks: bool,
    request_capacity: usize,
    tls: Option<&TlsConfiguration>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, u.host.clone(), u.port);
    // Validated: 1 s to 65535 s; rumqttc wants whole seconds.
    o.set_keep_alive(Duration::from_secs(
        u.keep_alive.0.as_secs().clamp(1, 65_535),
    ));
    // An empty client id cannot keep a session (rumqttc would panic): the
    // configuration check requires one for a persistent session.
    o.set_clean_session(!persistent || client_id.is_empty());
    o.set_manual_acks(manual_acks);
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET);
    o.set_request_channel_capacity(request_capacity);
    if !u.username.is_empty() {
        o.set_credentials(u.username.clone(), u.password.clone());
    }
    if let Some(t) = tls {
        o.set_transport(Transport::Tls(t.clone()));
    }
    o
}

/// Create the clients (nothing connects until `spawn`).
pub fn clients(cfg: &MqttConfig) -> Result<Clients, TlsError> {
    let u = &cfg.upstream;
    let tls = if u.tls {
        Some(TlsConfiguration::Rustls(client_config(
            &u.ca_file,
            &u.client_cert,
            &u.client_key,
        )?))
    } else {
        None
    };
    // Room for an acknowledgement of every message in flight, plus the
    // subscriptions: `try_ack` then never finds the queue full.
    let capacity = u.max_in_flight * 2 + 64;
    let consumer_opts = options(
        u,
        &u.client_id,
        u.persistent_session,
        true,
        capacity,
        tls.as_ref(),
    );
    let (consumer, consumer_loop) = AsyncClient::new(consumer_opts, capacity);
    let (results, results_loop) = if u.publish_results {
        let id = if u.client_id.is_empty() {
            String::new()
        } else {
            format!("{}-results", u.client_id)
        };
        let o = options(
            u,
            &id,
            false,
            false,
            cfg.limits.outbox_capacity,
            tls.as_ref(),
        );
        let (c, l) = AsyncClient::new(o, cfg.limits.outbox_capacity);
        (Some(c), Some(l))
    } else {
        (None, None)
    };
    Ok(Clients {
        consumer,
        consumer_loop,
        results,
        results_loop,
    })
}

/// Start consuming. `token` stops it gracefully: no new messages are taken,
/// those in flight finish and are acknowledged, then it disconnects.
pub fn spawn(shared: Arc<Shared>, c: Clients, token: CancellationToken, tracker: &TaskTracker) {
    let cfg = shared.cfg.clone();
    let u = cfg.upstream.clone();
    let filters: Vec<SubscribeFilter> = cfg
        .upstream_filters()
        .into_iter()
        .map(|f| SubscribeFilter::new(f, qos(u.qos)))
        .collect();
    let (tx, rx) = mpsc::channel(u.max_in_flight);
    let generation = Arc::new(AtomicU64::new(0));
    let processed = CancellationToken::new();
    let reconnect = Arc::new(Notify::new());
    shared.stats.upstream.set_state(UpstreamState::Connecting);
    tracing::info!(
        host = %u.host,
        port = u.port,
        client_id = %u.client_id,
        persistent = u.persistent_session,
        filters = ?cfg.upstream_filters(),
        "MQTT upstream: connecting"
    );

    tracker.spawn(drive(
        shared.clone(),
        c.consumer_loop,
        c.consumer.clone(),
        tx,
        generation.clone(),
        filters,
        processed.clone(),
        reconnect.clone(),
    ));
    tracker.spawn(process(
        shared.clone(),
        c.consumer,
        rx,
        generation,
        token.clone(),
        processed,
        reconnect,
    ));
    if let (Some(client), Some(eventloop)) = (c.results, c.results_loop) {
        tracker.spawn(drive_results(shared, eventloop, client, token));
    }
}

/// Exponential back-off with "equal jitter": each delay is drawn from
/// [d/2, d], so that gateways that lost the same broker do not return in
/// lockstep.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Poll the consuming connection: reconnect, subscribe, pass messages on.
#[allow(clippy::too_many_arguments)]
async fn drive(
    shared: Arc<Shared>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<(u64, Publish)>,
    generation: Arc<AtomicU64>,
    filters: Vec<SubscribeFilter>,
    processed: CancellationToken,
    reconnect: Arc<Notify>,
) {
    let u = &shared.cfg.upstream;
    let st = &shared.stats.upstream;
    let mut backoff = Backoff::new(u.reconnect_initial.0, u.reconnect_max.0);
    loop {
        let ev = tokio::select! {
            biased;
            _ = processed.cancelled() => break,
            _ = reconnect.notified() => {
                // Drop the connection: the broker then redelivers whatever
                // was not acknowledged (kept for redelivery on purpose).
                st.forced_reconnects.fetch_add(1, Ordering::Relaxed);
                eventloop.clean();
                st.set_state(UpstreamState::Connecting);
                continue;
            }
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                generation.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                st.connects.fetch_add(1, Ordering::Relaxed);
                if ack.session_present {
                    st.session_present.fetch_add(1, Ordering::Relaxed);
                }
                *st.connected_since.lock() = Some(chrono::Utc::now());
                st.set_state(UpstreamState::Connected);
                tracing::info!(
                    session_present = ack.session_present,
                    "MQTT upstream connected"
                );
                // Subscribing again on a resumed session is harmless and
                // picks up filters changed in the configuration.
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    tracing::warn!(error = %e, "MQTT upstream: could not queue the subscriptions");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                st.received.fetch_add(1, Ordering::Relaxed);
                let g = generation.load(Ordering::Relaxed);
                // Waits while the processor is full (it never waits on us).
                if tx.send((g, p)).await.is_err() {
                    // The processor stopped (shutdown): the message stays
                    // unacknowledged and comes back next time.
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(s))) => {
                let refused = s.return_codes.contains(&SubscribeReasonCode::Failure);
                st.subscribed.store(!refused, Ordering::Relaxed);
                if refused {
                    let msg = format!(
                        "the broker refused subscriptions: {:?} for filters {:?}",
                        s.return_codes,
                        filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>()
                    );
                    tracing::error!("MQTT upstream: {msg}");
                    *st.last_error.lock() = Some(msg);
                }
            }
            Ok(_) => {}
            Err(e) => {
                st.connection_errors.fetch_add(1, Ordering::Relaxed);
                st.subscribed.store(false, Ordering::Relaxed);
                *st.connected_since.lock() = None;
                st.set_state(UpstreamState::BackingOff);
                let d = backoff.delay();
                let msg = describe(&e);
                tracing::warn!(error = %msg, retry_in_ms = d.as_millis() as u64, "MQTT upstream connection failed");
                *st.last_error.lock() = Some(msg);
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = processed.cancelled() => break,
                }
                st.set_state(UpstreamState::Connecting);
            }
        }
    }
    // The processor is done: flush its last acknowledgements, then leave
    // (the session stays on the broker).
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    st.set_state(UpstreamState::Stopped);
    tracing::info!("MQTT upstream disconnected");
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

type Processing =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Publish, Verdict)> + Send>>;

/// Decode, store and acknowledge, in order.
async fn process(
    shared: Arc<Shared>,
    client: AsyncClient,
    mut rx: mpsc::Receiver<(u64, Publish)>,
    generation: Arc<AtomicU64>,
    token: CancellationToken,
    processed: CancellationToken,
    reconnect: Arc<Notify>,
) {
    let max = shared.cfg.upstream.max_in_flight;
    let st = &shared.stats.upstream;
    let mut pending: FuturesOrdered<Processing> = FuturesOrdered::new();
    let mut acks = Acks {
        client,
        generation,
        unsent: VecDeque::new(),
    };
    let mut stopping = false;
    let settle = |(g, p, v): (u64, Publish, Verdict), acks: &mut Acks| {
        if v == Verdict::Retry {
            if p.qos == QoS::AtMostOnce {
                // Nothing will come again; it is counted as left already.
                return;
            }
            st.left_for_redelivery.fetch_add(1, Ordering::Relaxed);
            if !token.is_cancelled() {
                reconnect.notify_one();
            }
            return;
        }
        if p.qos != QoS::AtMostOnce {
            acks.queue(g, p, st);
        }
    };
    loop {
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => {
                settle(done, &mut acks);
                while let Some(Some(done)) = pending.next().now_or_never() {
                    settle(done, &mut acks);
                }
            }
            // The client's queue had no room: try again shortly.
            _ = tokio::time::sleep(ACK_RETRY), if !acks.unsent.is_empty() => acks.flush(st),
            m = rx.recv(), if !stopping && pending.len() < max => match m {
                None => stopping = true,
                Some((g, p)) => {
                    let ticket = submit(&shared, &p).await;
                    pending.push_back(Box::pin(ticket.resolve().map(move |v| (g, p, v))));
                }
            },
            _ = token.cancelled(), if !stopping => {
                stopping = true;
                // What is still queued stays unacknowledged: the broker
                // delivers it again after the restart.
                rx.close();
            }
        }
        if stopping && pending.is_empty() {
            break;
        }
    }
    // The connection is still polled until `processed` is cancelled: give
    // the last acknowledgements a moment to reach the broker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !acks.unsent.is_empty() && tokio::time::Instant::now() < deadline {
        acks.flush(st);
        tokio::time::sleep(ACK_RETRY).await;
    }
    processed.cancel();
}

/// How soon an acknowledgement the client had no room for is tried again.
const ACK_RETRY: Duration = Duration::from_millis(1);

/// Acknowledgements to the broker, in order. rumqttc's event loop takes one
/// request per turn but reads incoming messages in batches, so under a
/// steady inflow its request queue can be full; an acknowledgement that does
/// not fit waits here (topic and payload dropped) instead of being lost,
/// which would leave the broker's in-flight window short until a reconnect.
/// The broker's in-flight limit bounds how many can wait.
struct Acks {
    client: AsyncClient,
    /// Bumped on every CONNACK: an acknowledgement for an older connection
    /// means nothing to the broker (it redelivers those messages).
    generation: Arc<AtomicU64>,
    unsent: VecDeque<(u64, Publish)>,
}

impl Acks {
    fn queue(&mut self, generation: u64, mut p: Publish, st: &super::stats::UpstreamStats) {
        p.topic = String::new();
        p.payload = Default::default();
        self.unsent.push_back((generation, p));
        self.flush(st);
    }

    fn flush(&mut self, st: &super::stats::UpstreamStats) {
        let current = self.generation.load(Ordering::Relaxed);
        while let Some((g, p)) = self.unsent.front() {
            if *g != current {
                st.acks_skipped.fetch_add(1, Ordering::Relaxed);
            } else if self.client.try_ack(p).is_ok() {
                st.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                return;
            }
            self.unsent.pop_front();
        }
    }
}

async fn submit(shared: &Arc<Shared>, p: &Publish) -> Ticket {
    let qos = p.qos as u8;
    let Some(inbound) = shared.topics.parse_inbound(&p.topic) else {
        let origin = Origin {
            device_id: None,
            user: None,
            scope: "upstream".into(),
            stats: None,
            rate_limited: false,
        };
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let r = Rejection {
            kind: RejectKind::NotAuthorized,
            message: format!(
                "`{}` is not a topic the gateway takes messages on (check mqtt.upstream.filters)",
                p.topic
            ),
            fields: None,
        };
        return Ticket::Ready(shared.reject(&origin, &p.topic, r));
    };
    let origin = match inbound {
        super::topics::Inbound::Reading { device_id, .. } => Origin {
            device_id: Some(device_id.to_owned()),
            user: shared.cfg.device(device_id).and_then(|d| d.user_id.clone()),
            scope: "upstream".into(),
            stats: Some(shared.stats.device(device_id)),
            rate_limited: false,
        },
        super::topics::Inbound::Event { .. } => Origin {
            device_id: None,
            user: None,
            scope: "upstream".into(),
            stats: None,
            rate_limited: false,
        },
    };
    shared
        .submit(&origin, inbound, &p.topic, p.payload.clone(), qos)
        .await
}

/// Keep the results connection alive until shutdown.
async fn drive_results(
    shared: Arc<Shared>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    token: CancellationToken,
) {
    let u = &shared.cfg.upstream;
    let mut backoff = Backoff::new(u.reconnect_initial.0, u.reconnect_max.0);
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => backoff.reset(),
            Ok(_) => {}
            Err(e) => {
                let d = backoff.delay();
                tracing::debug!(error = %describe(&e), "MQTT upstream results connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = token.cancelled() => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (i, nominal) in [100u64, 200, 400, 800, 800, 800].into_iter().enumerate() {
            let n = Duration::from_millis(nominal);
            assert!(d[i] >= n / 2 && d[i] <= n, "{i}: {:?} vs {n:?}", d[i]);
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
    }
}
