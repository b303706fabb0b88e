//! The embedded broker's listeners and device connections.
//!
//! rumqttd's own listeners acknowledge a QoS 1 PUBLISH as soon as the router
//! has it, and the router forwards messages without saying who published
//! them, so neither "acknowledge once durable" nor "a device publishes only
//! under its own topics" can be had from them. The gateway therefore serves
//! devices itself, with rumqttd's MQTT 3.1.1 and 5 codecs:
//!
//! - CONNECT: username = device_id, password = token, checked against
//!   `[[mqtt.devices]]` (constant time); anything else is refused with
//!   "bad user name or password".
//! - PUBLISH: checked against the device's topics ([`super::topics`]), then
//!   decoded, validated and stored; PUBACK (QoS 1) or PUBREC (QoS 2) goes out
//!   only once the event is durable, in the order the messages came. A
//!   message refused by the rules gets PUBACK with reason "not authorized"
//!   (MQTT 5) or a plain PUBACK (3.1.1 has no negative acknowledgement) and
//!   an error on the device's errors topic; the connection stays up.
//! - SUBSCRIBE: only the device's own result topics (exact); the allowed ones
//!   go to rumqttd's router through a local link, which delivers what the
//!   gateway publishes (QoS 1 included, persistent sessions too).
//! - At most `max_in_flight_per_connection` messages are in flight per
//!   connection; beyond that the socket is not read (TCP back-pressure).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use emotion_tls::ReloadingTls;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use hashbrown::HashMap;
use parking_lot::Mutex;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    Login, Packet, PingResp, Protocol as _, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, UnsubAckReason, v4::V4,
    v5::V5,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::broker::{LinkId, Links};
use super::frame::{self, Frame, PublishMeta};
use super::inbound::{Origin, Shared, Ticket, Verdict};
use super::rejection::Rejection;
use super::stats::{DeviceStats, RejectKind};
use crate::config::{DeviceCredential, Protocol};

/// Room for the topic and properties of a PUBLISH beyond its payload.
const PACKET_OVERHEAD: usize = 65_536 + 16;
/// A device that does not read its socket for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What every listener shares.
#[derive(Debug)]
pub struct ServerCtx {
    pub shared: Arc<Shared>,
    pub links: Links,
    pub devices: HashMap<String, DeviceCredential>,
    pub permits: Arc<Semaphore>,
    pub token: CancellationToken,
    pub tracker: TaskTracker,
    sessions: Mutex<HashMap<String, Live>>,
    next_conn: AtomicU64,
}

/// A live connection, for session takeover.
#[derive(Debug, Clone)]
struct Live {
    conn: u64,
    stop: CancellationToken,
    finished: CancellationToken,
}

impl ServerCtx {
    pub fn new(
        shared: Arc<Shared>,
        links: Links,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let devices = shared
            .cfg
            .devices
            .iter()
            .map(|d| (d.device_id.clone(), d.clone()))
            .collect();
        let permits = Arc::new(Semaphore::new(shared.cfg.limits.max_connections));
        ServerCtx {
            shared,
            links,
            devices,
            permits,
            token,
            tracker,
            sessions: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    fn max_packet(&self) -> usize {
        self.shared.cfg.limits.max_payload_bytes + PACKET_OVERHEAD
    }
}

/// Accept connections on `listener` until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    tls: Option<Arc<ReloadingTls>>,
    ctx: Arc<ServerCtx>,
) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.token.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Acknowledgements are small and latency matters.
                let _ = tcp.set_nodelay(true);
                let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
                    ctx.shared
                        .stats
                        .refused_busy
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "MQTT connection refused: mqtt.limits.max_connections reached");
                    continue;
                };
                let c = ctx.clone();
                let tls = tls.as_ref().map(|t| t.acceptor());
                ctx.tracker.spawn(async move {
                    match tls {
                        None => serve(tcp, peer, protocol, c, permit).await,
                        Some(acceptor) => {
                            let t = c.shared.cfg.limits.connect_timeout.0;
                            match tokio::time::timeout(t, acceptor.accept(tcp)).await {
                                Ok(Ok(s)) => serve(s, peer, protocol, c, permit).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    c.shared
                                        .stats
                                        .protocol_errors
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The protocol codec of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    V4,
    V5,
}

impl Codec {
    /// Decode one packet (the caller made sure it is complete). rumqttd's
    /// decoder has `unreachable!`s; a hostile packet must not take the task
    /// down with a panic, so one is turned into an error.
    fn read(self, buf: &mut BytesMut, max: usize) -> Result<Packet, String> {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| match self {
            Codec::V4 => V4.read_mut(buf, max),
            Codec::V5 => V5.read_mut(buf, max),
        }));
        match r {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("malformed packet".into()),
        }
    }

    fn write(self, packet: Packet, out: &mut BytesMut) {
        let packet = match (self, packet) {
            // MQTT 3.1.1 has no properties (the v4 encoder refuses them).
            (Codec::V4, Packet::Publish(p, _)) => Packet::Publish(p, None),
            (Codec::V4, Packet::PubRel(p, _)) => Packet::PubRel(p, None),
            (_, p) => p,
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| match self {
            Codec::V4 => V4.write(packet, out),
            Codec::V5 => V5.write(packet, out),
        }));
        if !matches!(r, Ok(Ok(_))) {
            tracing::warn!("an MQTT packet could not be encoded; it was not sent");
        }
    }
}

/// One step of reading the input buffer.
enum Step {
    Packet(Box<Packet>, Option<PublishMeta>),
    /// A PUBLISH larger than the limit: its header was read, the rest is
    /// skipped without being buffered.
    Oversize {
        meta: PublishMeta,
        topic: String,
        total: usize,
    },
    NeedMore,
    Bad(String),
}

/// Which packets a device may send after CONNECT.
fn allowed_from_device(packet_type: u8) -> bool {
    matches!(packet_type, 3..=8 | 10 | 12 | 14)
}

struct Input {
    buf: BytesMut,
    /// Bytes of an oversized packet still to skip.
    discard: usize,
    max_packet: usize,
    codec: Codec,
}

impl Input {
    fn next(&mut self) -> Step {
        if self.discard > 0 {
            let n = self.discard.min(self.buf.len());
            self.buf.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return Step::NeedMore;
            }
        }
        let (packet_type, header_len, remaining) = match frame::frame(&self.buf) {
            Frame::Incomplete => return Step::NeedMore,
            Frame::Malformed => return Step::Bad("malformed remaining length".into()),
            Frame::Packet {
                packet_type,
                header_len,
                remaining,
            } => (packet_type, header_len, remaining),
        };
        if !allowed_from_device(packet_type) {
            return Step::Bad(format!("unexpected packet type {packet_type}"));
        }
        let total = header_len + remaining;
        if total > self.max_packet {
            if packet_type != frame::PUBLISH {
                return Step::Bad(format!("packet of {total} bytes is too large"));
            }
            match PublishMeta::needed(&self.buf, header_len) {
                Some(n) if n <= total && n <= self.buf.len() => {}
                Some(n) if n > total => return Step::Bad("malformed PUBLISH".into()),
                _ => return Step::NeedMore,
            }
            let Some(meta) = frame::publish_meta(&self.buf, header_len) else {
                return Step::Bad("malformed PUBLISH".into());
            };
            let topic = String::from_utf8_lossy(
                &self.buf[meta.topic_start..meta.topic_start + meta.topic_len],
            )
            .into_owned();
            let have = self.buf.len().min(total);
            self.buf.advance(have);
            self.discard = total - have;
            return Step::Oversize { meta, topic, total };
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Step::NeedMore;
        }
        let meta = if packet_type == frame::PUBLISH {
            match frame::publish_meta(&self.buf, header_len) {
                Some(m) => Some(m),
                None => return Step::Bad("malformed PUBLISH".into()),
            }
        } else {
            None
        };
        match self.codec.read(&mut self.buf, total + 1) {
            Ok(p) => Step::Packet(Box::new(p), meta),
            Err(e) => Step::Bad(e),
        }
    }
}

/// Counts a connection while it lives.
struct ConnGuard {
    ctx: Arc<ServerCtx>,
    device: Option<Arc<DeviceStats>>,
    _permit: OwnedSemaphorePermit,
    /// The connection in the gateway's Prometheus gauge.
    _open: emotion_pipeline::telemetry::OpenGuard,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.ctx
            .shared
            .stats
            .connected
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(d) = &self.device {
            d.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What an acknowledgement future resolves to.
struct AckDue {
    qos: u8,
    pkid: u16,
    verdict: Verdict,
}

type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = AckDue> + Send>>;

/// One device connection's socket halves and buffers.
struct Conn<R, W> {
    rd: R,
    wr: W,
    input: Input,
    out: BytesMut,
    codec: Codec,
    peer: SocketAddr,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// Refuse the CONNECT with `code` and send the answer.
    async fn refuse(&mut self, code: ConnectReturnCode) {
        connack(&mut self.out, self.codec, false, code, None);
        let _ = write_out(&mut self.wr, &mut self.out).await;
    }
}

/// Serve one device connection, in named steps: read and authenticate its
/// CONNECT, name its router session, take over an earlier connection with
/// the same client id, resume a persistent session, answer CONNACK, then
/// pump messages until the connection ends, and say goodbye.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    protocol: Protocol,
    ctx: Arc<ServerCtx>,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let codec = match protocol {
        Protocol::V4 => Codec::V4,
        Protocol::V5 => Codec::V5,
    };
    let mut conn = Conn {
        rd,
        wr,
        input: Input {
            buf: BytesMut::with_capacity(8192),
            discard: 0,
            max_packet: ctx.max_packet(),
            codec,
        },
        out: BytesMut::with_capacity(1024),
        codec,
        peer,
    };
    ctx.shared.stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut guard = ConnGuard {
        ctx: ctx.clone(),
        device: None,
        _permit: permit,
        _open: ctx.shared.handles.counters.mqtt_connection(),
    };

    let Some((connect, device)) = connect_and_authenticate(&ctx, &mut conn).await else {
        return;
    };
    let Some((client_id, assigned)) = client_id(&connect) else {
        // A persistent session needs a name to be found again.
        conn.refuse(ConnectReturnCode::ClientIdentifierNotValid)
            .await;
        return;
    };
    let router_id = router_id(&device.device_id, &client_id);

    let dstats = ctx.shared.stats.device(&device.device_id);
    dstats.connected.fetch_add(1, Ordering::Relaxed);
    guard.device = Some(dstats.clone());
    ctx.shared
        .stats
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);

    // Unregisters on every way out, and tells a successor this connection
    // (and its router link) is gone.
    let (me, _registration) = take_over(&ctx, &router_id).await;

    let mut session = Session::new(
        ctx.clone(),
        codec,
        device,
        router_id,
        connect.clean_session,
        dstats,
    );
    let Some(session_present) = resume(&mut session, &mut conn).await else {
        return;
    };
    let max_in_flight = ctx.shared.cfg.limits.max_in_flight_per_connection;
    connack(
        &mut conn.out,
        codec,
        session_present,
        ConnectReturnCode::Success,
        Some(connack_properties(&ctx, max_in_flight, assigned)),
    );
    if write_out(&mut conn.wr, &mut conn.out).await.is_err() {
        session.close().await;
        return;
    }
    tracing::debug!(device = %session.device_id, %peer, ?protocol, "MQTT device connected");

    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive)) * 3 / 2;
    let reason = pump(
        &ctx,
        &mut conn,
        &mut session,
        &me,
        keep_alive,
        max_in_flight,
    )
    .await;
    say_goodbye(&mut conn, reason).await;
    session.close().await;
    tracing::debug!(device = %session.device_id, %peer, "MQTT device disconnected");
}

/// Whether `presented` is the device's token, in time independent of where
/// they differ and of their lengths: both are hashed first, since comparing
/// the strings themselves returns early on unequal lengths.
/// The device's token may be configured in clear or as its SHA-256.
fn token_matches(device: &DeviceCredential, presented: &str) -> bool {
    let Some(expected) = device.token_digest() else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    bool::from(expected.ct_eq(&presented))
}

/// Read the CONNECT (within `mqtt.limits.connect_timeout`) and check its
/// credentials: username = device_id, password = token. A refusal is
/// answered here; `None` ends the connection.
async fn connect_and_authenticate<R, W>(
    ctx: &ServerCtx,
    conn: &mut Conn<R, W>,
) -> Option<(Connect, DeviceCredential)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = conn.peer;
    let connect = tokio::time::timeout(
        ctx.shared.cfg.limits.connect_timeout.0,
        read_connect(&mut conn.rd, &mut conn.input, &mut conn.out, conn.codec),
    )
    .await;
    let (connect, login) = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => {
            tracing::debug!(%peer, reason, "MQTT connection refused before CONNECT completed");
            let _ = write_out(&mut conn.wr, &mut conn.out).await;
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no MQTT CONNECT within mqtt.limits.connect_timeout");
            return None;
        }
    };
    let device = login.as_ref().and_then(|l| {
        let d = ctx.devices.get(&l.username)?;
        token_matches(d, &l.password).then_some(d)
    });
    let Some(device) = device else {
        ctx.shared
            .stats
            .refused_auth
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, username = login.as_ref().map(|l| l.username.as_str()).unwrap_or(""), "MQTT connection refused: bad device credentials");
        conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
        return None;
    };
    Some((connect, device.clone()))
}

/// The client id, and whether the gateway assigned it (an empty id with a
/// clean session). `None`: an empty id for a persistent session.
fn client_id(connect: &Connect) -> Option<(String, Option<String>)> {
    if !connect.client_id.is_empty() {
        return Some((connect.client_id.clone(), None));
    }
    if !connect.clean_session {
        return None;
    }
    let id = format!("auto-{}", uuid::Uuid::now_v7().simple());
    Some((id.clone(), Some(id)))
}

/// The router's sessions are keyed by client id: prefix the device so that
/// no device can take over another's session. `|` cannot occur in a device
/// id; the router refuses `+$#/` in ids.
fn router_id(device_id: &str, client_id: &str) -> String {
    format!("{device_id}|{client_id}")
        .chars()
        .map(|c| if "+$#/".contains(c) { '_' } else { c })
        .collect()
}

/// Register this connection under `router_id`, stopping an earlier one with
/// the same id and waiting (a bounded time) until it is gone.
async fn take_over(ctx: &Arc<ServerCtx>, router_id: &str) -> (Live, Registration) {
    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    let me = Live {
        conn: conn_id,
        stop: ctx.token.child_token(),
        finished: CancellationToken::new(),
    };
    let previous = ctx.sessions.lock().insert(router_id.to_owned(), me.clone());
    let registration = Registration {
        ctx: ctx.clone(),
        router_id: router_id.to_owned(),
        me: me.clone(),
    };
    if let Some(prev) = previous {
        prev.stop.cancel();
        let _ = tokio::time::timeout(TAKEOVER_WAIT, prev.finished.cancelled()).await;
    }
    (me, registration)
}

/// A persistent session resumes at once (queued results flow). Returns
/// whether the router had the session; `None` (after answering) when it
/// could not be opened.
async fn resume<R, W>(session: &mut Session, conn: &mut Conn<R, W>) -> Option<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if session.clean {
        return Some(false);
    }
    match session.open_link().await {
        Ok(present) => Some(present),
        Err(e) => {
            tracing::warn!(device = %session.device_id, error = %e, "MQTT session could not be opened");
            conn.refuse(ConnectReturnCode::ServiceUnavailable).await;
            None
        }
    }
}

/// What an MQTT 5 client learns from CONNACK about this server's limits.
fn connack_properties(
    ctx: &ServerCtx,
    max_in_flight: usize,
    assigned: Option<String>,
) -> ConnAckProperties {
    ConnAckProperties {
        receive_max: Some(u16::try_from(max_in_flight).unwrap_or(u16::MAX)),
        max_packet_size: u32::try_from(ctx.max_packet()).ok(),
        retain_available: Some(0),
        wildcard_subscription_available: Some(0),
        shared_subscription_available: Some(0),
        assigned_client_identifier: assigned,
        ..ConnAckProperties::default()
    }
}

/// The read/acknowledge loop's state.
struct Pump {
    pending: FuturesOrdered<AckFuture>,
    reading: bool,
    /// Set when a message was left for redelivery: the device must
    /// reconnect to get it sent again.
    retry_close: bool,
    disconnect_reason: Option<DisconnectReasonCode>,
    max_in_flight: usize,
}

impl Pump {
    fn may_read(&self) -> bool {
        self.reading && self.pending.len() < self.max_in_flight
    }

    fn stop_reading(&mut self, reason: Option<DisconnectReasonCode>) {
        self.disconnect_reason = reason;
        self.reading = false;
    }
}

/// Read, store and acknowledge in order until the connection ends (closed,
/// protocol error, keep-alive, takeover, shutdown, or a message left for
/// redelivery). Returns the reason to tell an MQTT 5 client.
async fn pump<R, W>(
    ctx: &ServerCtx,
    conn: &mut Conn<R, W>,
    session: &mut Session,
    me: &Live,
    keep_alive: Duration,
    max_in_flight: usize,
) -> Option<DisconnectReasonCode>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let codec = conn.codec;
    let mut deadline = Instant::now() + keep_alive;
    let mut p = Pump {
        pending: FuturesOrdered::new(),
        reading: true,
        retry_close: false,
        disconnect_reason: None,
        max_in_flight,
    };
    loop {
        take_buffered(ctx, conn, session, &mut p).await;
        if !conn.out.is_empty() && write_out(&mut conn.wr, &mut conn.out).await.is_err() {
            break;
        }
        if !p.reading && p.pending.is_empty() {
            break;
        }
        let may_read = p.may_read();
        tokio::select! {
            biased;
            Some(due) = p.pending.next(), if !p.pending.is_empty() => {
                p.retry_close |= ack(&mut conn.out, codec, &due);
                // Everything else already durable goes out in the same write.
                while let Some(Some(due)) = p.pending.next().now_or_never() {
                    p.retry_close |= ack(&mut conn.out, codec, &due);
                }
                if p.retry_close && p.reading {
                    p.stop_reading(Some(DisconnectReasonCode::ServerBusy));
                }
            }
            n = conn.rd.read_buf(&mut conn.input.buf), if may_read => {
                match n {
                    Ok(0) | Err(_) => p.reading = false,
                    Ok(_) => deadline = Instant::now() + keep_alive,
                }
            }
            n = next_notification(&mut session.link), if session.link.is_some() => {
                if !session.forward(n, &mut conn.out).await {
                    p.stop_reading(Some(DisconnectReasonCode::SessionTakenOver));
                }
            }
            _ = tokio::time::sleep_until(deadline), if p.reading && !keep_alive.is_zero() => {
                tracing::debug!(device = %session.device_id, "MQTT keep-alive expired");
                p.stop_reading(Some(DisconnectReasonCode::KeepAliveTimeout));
            }
            _ = me.stop.cancelled(), if p.reading => {
                p.stop_reading(Some(if ctx.token.is_cancelled() {
                    DisconnectReasonCode::ServerShuttingDown
                } else {
                    DisconnectReasonCode::SessionTakenOver
                }));
            }
        }
    }
    p.disconnect_reason
}

/// Handle every packet already buffered, as far as the in-flight bound
/// allows.
async fn take_buffered<R, W>(
    ctx: &ServerCtx,
    conn: &mut Conn<R, W>,
    session: &mut Session,
    p: &mut Pump,
) {
    while p.may_read() {
        match conn.input.next() {
            Step::NeedMore => break,
            Step::Bad(reason) => {
                ctx.shared
                    .stats
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = %session.device_id, reason, "MQTT protocol error; closing the connection");
                p.stop_reading(Some(DisconnectReasonCode::MalformedPacket));
            }
            Step::Oversize { meta, topic, total } => {
                let r = Rejection {
                    kind: RejectKind::TooLarge,
                    message: format!(
                        "message of {total} bytes is larger than the limit of {} bytes (mqtt.limits.max_payload_bytes)",
                        ctx.shared.cfg.limits.max_payload_bytes
                    ),
                    fields: None,
                };
                ctx.shared.stats.received.fetch_add(1, Ordering::Relaxed);
                let verdict = ctx.shared.reject(&session.origin, &topic, r);
                p.pending.push_back(ready_ack(meta.qos, meta.pkid, verdict));
            }
            Step::Packet(packet, meta) => {
                match session
                    .handle(*packet, meta, &mut conn.out, &mut p.pending)
                    .await
                {
                    Flow::Continue => {}
                    Flow::Close(reason) => p.stop_reading(reason),
                }
            }
        }
    }
}

/// Tell an MQTT 5 client why it is disconnected, flush, close the socket.
async fn say_goodbye<R, W>(conn: &mut Conn<R, W>, reason: Option<DisconnectReasonCode>)
where
    W: AsyncWrite + Unpin,
{
    if conn.codec == Codec::V5
        && let Some(reason) = reason
    {
        conn.codec.write(
            Packet::Disconnect(
                Disconnect {
                    reason_code: reason,
                },
                None,
            ),
            &mut conn.out,
        );
    }
    let _ = write_out(&mut conn.wr, &mut conn.out).await;
    let _ = conn.wr.shutdown().await;
}

/// A connection's entry in the session table.
struct Registration {
    ctx: Arc<ServerCtx>,
    router_id: String,
    me: Live,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.ctx.sessions.lock();
        if sessions
            .get(&self.router_id)
            .is_some_and(|l| l.conn == self.me.conn)
        {
            sessions.remove(&self.router_id);
        }
        self.me.finished.cancel();
    }
}

/// Read until a complete CONNECT is decoded.
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    input: &mut Input,
    out: &mut BytesMut,
    codec: Codec,
) -> Result<(Connect, Option<Login>), &'static str> {
    loop {
        if let Frame::Packet {
            packet_type,
            header_len,
            remaining,
        } = frame::frame(&input.buf)
        {
            if packet_type != frame::CONNECT {
                return Err("first packet is not CONNECT");
            }
            if header_len + remaining > 65_536 {
                return Err("CONNECT too large");
            }
            if let Some(level) = frame::connect_level(&input.buf, header_len) {
                let expected = if codec == Codec::V4 { 4 } else { 5 };
                if level != expected {
                    // Answer in the client's own version where it is one we
                    // speak, so it can tell what went wrong.
                    let reply = if level == 5 { Codec::V5 } else { Codec::V4 };
                    let code = if reply == Codec::V5 {
                        ConnectReturnCode::UnsupportedProtocolVersion
                    } else {
                        ConnectReturnCode::RefusedProtocolVersion
                    };
                    connack(out, reply, false, code, None);
                    return Err("protocol version of the other listener");
                }
            }
            if input.buf.len() >= header_len + remaining {
                return match input.codec.read(&mut input.buf, header_len + remaining + 1) {
                    Ok(Packet::Connect(c, _, _, _, login)) => Ok((c, login)),
                    Ok(_) => Err("first packet is not CONNECT"),
                    Err(_) => Err("malformed CONNECT"),
                };
            }
        } else if matches!(frame::frame(&input.buf), Frame::Malformed) {
            return Err("malformed CONNECT");
        }
        match rd.read_buf(&mut input.buf).await {
            Ok(0) | Err(_) => return Err("connection closed before CONNECT"),
            Ok(_) => {}
        }
    }
}

fn connack(
    out: &mut BytesMut,
    codec: Codec,
    session_present: bool,
    code: ConnectReturnCode,
    props: Option<ConnAckProperties>,
) {
    let code = match (codec, code) {
        // Codes MQTT 3.1.1 lacks, mapped to its nearest.
        (Codec::V4, ConnectReturnCode::UnsupportedProtocolVersion) => {
            ConnectReturnCode::RefusedProtocolVersion
        }
        (Codec::V4, ConnectReturnCode::ServerBusy) => ConnectReturnCode::ServiceUnavailable,
        (Codec::V5, ConnectReturnCode::ServiceUnavailable) => ConnectReturnCode::ServerUnavailable,
        (Codec::V5, ConnectReturnCode::RefusedProtocolVersion) => {
            ConnectReturnCode::UnsupportedProtocolVersion
        }
        (_, c) => c,
    };
    let props = if codec == Codec::V5 { props } else { None };
    codec.write(
        Packet::ConnAck(
            ConnAck {
                session_present,
                code,
            },
            props,
        ),
        out,
    );
}

async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(out)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "device does not read",
        )),
    };
    out.clear();
    r
}

/// The acknowledgement a verdict earns; true when the message was left for
/// redelivery (no acknowledgement: the connection should close).
fn ack(out: &mut BytesMut, codec: Codec, due: &AckDue) -> bool {
    if due.verdict == Verdict::Retry {
        return true;
    }
    if due.qos == 0 {
        return false;
    }
    let reason = match due.verdict {
        Verdict::Stored | Verdict::Duplicate | Verdict::Rejected(RejectKind::NoEmotion) => {
            PubAckReason::Success
        }
        Verdict::Rejected(RejectKind::NotAuthorized) => PubAckReason::NotAuthorized,
        // 0x97: MQTT 5 has no "message rate too high" for PUBACK (0x96 is
        // a DISCONNECT reason); quota exceeded is the one for a publish.
        Verdict::Rejected(RejectKind::RateLimited) => PubAckReason::QuotaExceeded,
        Verdict::Rejected(
            RejectKind::TooLarge
            | RejectKind::InvalidJson
            | RejectKind::ValidationError
            | RejectKind::UnknownSource,
        ) => PubAckReason::PayloadFormatInvalid,
        Verdict::Rejected(_) | Verdict::Retry => PubAckReason::ImplementationSpecificError,
    };
    // MQTT 3.1.1 has no negative acknowledgement: the reason goes to the
    // device's errors topic instead.
    let reason = if codec == Codec::V4 {
        PubAckReason::Success
    } else {
        reason
    };
    if due.qos == 1 {
        codec.write(
            Packet::PubAck(
                PubAck {
                    pkid: due.pkid,
                    reason,
                },
                None,
            ),
            out,
        );
    } else {
        let reason = match reason {
            PubAckReason::Success => PubRecReason::Success,
            PubAckReason::NotAuthorized => PubRecReason::NotAuthorized,
            PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
            PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
            _ => PubRecReason::ImplementationSpecificError,
        };
        codec.write(
            Packet::PubRec(
                PubRec {
                    pkid: due.pkid,
                    reason,
                },
                None,
            ),
            out,
        );
    }
    false
}

fn ready_ack(qos: u8, pkid: u16, verdict: Verdict) -> AckFuture {
    Box::pin(std::future::ready(AckDue { qos, pkid, verdict }))
}

/// The router's next notification for the device; `None` when the router
/// dropped the link. Cancel-safe: the only await is the router's signal.
async fn next_notification(link: &mut Option<(LinkId, LinkRx)>) -> Option<Notification> {
    let Some((_, rx)) = link else {
        return std::future::pending().await;
    };
    loop {
        match rx.next().await {
            Ok(Some(n)) => return Some(n),
            // Signals coalesce: a wake-up may find nothing new.
            Ok(None) => continue,
            Err(_) => return None,
        }
    }
}

enum Flow {
    Continue,
    Close(Option<DisconnectReasonCode>),
}

/// One authenticated device connection.
struct Session {
    ctx: Arc<ServerCtx>,
    codec: Codec,
    device_id: String,
    user: Option<String>,
    router_id: String,
    clean: bool,
    link: Option<(LinkId, LinkRx)>,
    origin: Origin,
}

impl Session {
    fn new(
        ctx: Arc<ServerCtx>,
        codec: Codec,
        device: DeviceCredential,
        router_id: String,
        clean: bool,
        stats: Arc<DeviceStats>,
    ) -> Session {
        let origin = Origin {
            device_id: Some(device.device_id.clone()),
            user: device.user_id.clone(),
            scope: format!("device:{}", device.device_id),
            stats: Some(stats),
            rate_limited: true,
        };
        Session {
            ctx,
            codec,
            device_id: device.device_id,
            user: device.user_id,
            router_id,
            clean,
            link: None,
            origin,
        }
    }

    /// Open the router link; returns whether the router had a session.
    async fn open_link(&mut self) -> Result<bool, String> {
        let opened = self
            .ctx
            .links
            .open(self.router_id.clone(), self.clean)
            .await?;
        self.link = Some((opened.link, opened.rx));
        Ok(opened.session_present)
    }

    async fn close(&mut self) {
        if let Some((id, _)) = self.link.take() {
            self.ctx.links.close(id).await;
        }
    }

    async fn handle(
        &mut self,
        packet: Packet,
        meta: Option<PublishMeta>,
        out: &mut BytesMut,
        pending: &mut FuturesOrdered<AckFuture>,
    ) -> Flow {
        match packet {
            Packet::Publish(publish, _props) => {
                let Some(meta) = meta else {
                    return Flow::Close(Some(DisconnectReasonCode::MalformedPacket));
                };
                let shared = &self.ctx.shared;
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return Flow::Close(Some(DisconnectReasonCode::TopicNameInvalid));
                };
                if topic.is_empty() {
                    // A topic alias (MQTT 5); none was granted.
                    return Flow::Close(Some(DisconnectReasonCode::TopicAliasInvalid));
                }
                let verdict_or_ticket = match shared.topics.authorize_publish(
                    topic,
                    &self.device_id,
                    self.user.as_deref(),
                ) {
                    Err(denied) => {
                        shared.stats.received.fetch_add(1, Ordering::Relaxed);
                        Ticket::Ready(shared.reject(
                            &self.origin,
                            topic,
                            Rejection {
                                kind: RejectKind::NotAuthorized,
                                message: denied.message(topic),
                                fields: None,
                            },
                        ))
                    }
                    Ok(inbound) => {
                        shared
                            .submit(
                                &self.origin,
                                inbound,
                                topic,
                                publish.payload.clone(),
                                meta.qos,
                            )
                            .await
                    }
                };
                let (qos, pkid) = (meta.qos, meta.pkid);
                pending.push_back(match verdict_or_ticket {
                    Ticket::Ready(v) => ready_ack(qos, pkid, v),
                    Ticket::Pending(f) => {
                        Box::pin(f.map(move |verdict| AckDue { qos, pkid, verdict }))
                    }
                });
                Flow::Continue
            }
            Packet::Subscribe(sub, props) => {
                self.subscribe(sub, props, out).await;
                Flow::Continue
            }
            Packet::Unsubscribe(unsub, props) => {
                let pkid = unsub.pkid;
                let n = unsub.filters.len();
                if let Some((id, _)) = &self.link {
                    self.ctx
                        .links
                        .send(*id, Packet::Unsubscribe(unsub, props))
                        .await;
                }
                // Answered here: rumqttd answers only filters it had, one
                // UNSUBACK each, which would confuse clients.
                self.codec.write(
                    Packet::UnsubAck(
                        UnsubAck {
                            pkid,
                            reasons: vec![UnsubAckReason::Success; n],
                        },
                        None,
                    ),
                    out,
                );
                Flow::Continue
            }
            // Acknowledgements of what the router delivered to the device.
            p @ (Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubComp(..)) => {
                if let Some((id, _)) = &self.link {
                    self.ctx.links.send(*id, p).await;
                }
                Flow::Continue
            }
            // The second half of a QoS 2 publish from the device: it was
            // stored before PUBREC went out.
            Packet::PubRel(rel, _) => {
                self.codec.write(
                    Packet::PubComp(
                        PubComp {
                            pkid: rel.pkid,
                            reason: PubCompReason::Success,
                        },
                        None,
                    ),
                    out,
                );
                Flow::Continue
            }
            Packet::PingReq(_) => {
                self.codec.write(Packet::PingResp(PingResp), out);
                Flow::Continue
            }
            Packet::Disconnect(..) => Flow::Close(None),
            _ => {
                self.ctx
                    .shared
                    .stats
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                Flow::Close(Some(DisconnectReasonCode::ProtocolError))
            }
        }
    }

    async fn subscribe(
        &mut self,
        sub: Subscribe,
        props: Option<rumqttd::protocol::SubscribeProperties>,
        out: &mut BytesMut,
    ) {
        let shared = self.ctx.shared.clone();
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut allowed = Vec::new();
        for f in &sub.filters {
            match shared
                .topics
                .authorize_subscribe(&f.path, &self.device_id, self.user.as_deref())
            {
                Ok(()) => {
                    codes.push(match f.qos {
                        QoS::AtMostOnce => SubscribeReasonCode::QoS0,
                        QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
                        QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
                    });
                    allowed.push(f.clone());
                }
                Err(denied) => {
                    shared
                        .stats
                        .subscribe_denied
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(device = %self.device_id, filter = %f.path, "MQTT subscription refused");
                    let r = Rejection {
                        kind: RejectKind::NotAuthorized,
                        message: denied.message(&f.path),
                        fields: None,
                    };
                    shared.outbox.device_error(&self.device_id, &f.path, &r);
                    codes.push(if self.codec == Codec::V4 {
                        SubscribeReasonCode::Failure
                    } else {
                        SubscribeReasonCode::NotAuthorized
                    });
                }
            }
        }
        if !allowed.is_empty() {
            if self.link.is_none()
                && let Err(e) = self.open_link().await
            {
                tracing::warn!(device = %self.device_id, error = %e, "MQTT subscription failed");
                for (c, f) in codes.iter_mut().zip(&sub.filters) {
                    if allowed.iter().any(|a| a.path == f.path) {
                        *c = if self.codec == Codec::V4 {
                            SubscribeReasonCode::Failure
                        } else {
                            SubscribeReasonCode::Unspecified
                        };
                    }
                }
                allowed.clear();
            }
            if let Some((id, _)) = &self.link
                && !allowed.is_empty()
            {
                for f in &allowed {
                    self.ctx.links.note_subscription(&f.path);
                    if shared.topics.is_analysis(&f.path) {
                        shared.outbox.want_analysis();
                    }
                }
                let s = Subscribe {
                    pkid: sub.pkid,
                    filters: allowed,
                };
                self.ctx.links.send(*id, Packet::Subscribe(s, props)).await;
            }
        }
        // Answered here (the router's own SUBACK is dropped in `forward`).
        self.codec.write(
            Packet::SubAck(
                SubAck {
                    pkid: sub.pkid,
                    return_codes: codes,
                },
                None,
            ),
            out,
        );
    }

    /// Pass what the router sends to the device; false when the router
    /// dropped the link (the connection should end).
    async fn forward(&mut self, n: Option<Notification>, out: &mut BytesMut) -> bool {
        match n {
            Some(Notification::Forward(f)) => {
                self.codec
                    .write(Packet::Publish(f.publish, f.properties), out);
                true
            }
            Some(Notification::DeviceAck(ack)) => {
                if let p @ Packet::PubRel(..) = Packet::from(ack) {
                    self.codec.write(p, out);
                }
                true
            }
            Some(Notification::Unschedule) => {
                if let Some((_, rx)) = &self.link {
                    let _ = rx.wake().await;
                }
                true
            }
            Some(Notification::Disconnect(..)) => false,
            Some(_) => true,
            None => {
                // The router dropped the link (session taken over elsewhere).
                self.link = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;
    use crate::config::DeviceCredential;

    #[test]
    fn tokens_match_only_exactly_whatever_their_lengths() {
        let token = "token-of-device-a-0123";
        let device = DeviceCredential {
            device_id: "a".into(),
            token: token.into(),
            token_sha256: String::new(),
            user_id: None,
        };
        assert!(token_matches(&device, token));
        assert!(!token_matches(&device, "token-of-device-a-0124"));
        assert!(!token_matches(&device, "token-of-device-a-012"));
        assert!(!token_matches(&device, "token-of-device-a-01234"));
        assert!(!token_matches(&device, ""));
        // The same token written hashed (sha256 of "test").
        let hashed = DeviceCredential {
            token: String::new(),
            token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ..device
        };
        assert!(token_matches(&hashed, "test"));
        assert!(!token_matches(
            &hashed,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        ));
    }
}
