//! The network edge of the HTTP/WebSocket API: the accept loop that
//! `axum::serve` would be, plus what a listener on a shared LAN needs before
//! any request is authenticated:
//!
//! - TLS (with optional client certificates), reloaded when its files change;
//! - a cap on connections in all and per source address, with a small
//!   overflow lane beyond it so `/health` keeps answering under a flood;
//! - a header-read timeout (hyper's), which also closes idle keep-alive and
//!   half-open connections, and a TLS handshake timeout;
//! - the identity of the connection ([`ConnInfo`]: peer address and client
//!   certificate) put on every request for the API's authorization.
//!
//! HTTP/1.1 only: every client of the API (browsers, the original WebSocket
//! clients, curl) speaks it, and WebSockets upgrade over it.

mod slots;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use emotion_tls::ReloadingTls;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use slots::{Full, Lane, Slot, Slots};

use crate::config::HttpLimits;

/// How long an overflow connection may take to send its request.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown lets open connections finish their responses.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept for everything but API connections (the buffer,
/// plugins, MQTT, sync, logs).
const RESERVED_FDS: u64 = 512;

/// Who is on the other end of a request's connection; an extension of every
/// request the edge serves (absent in in-process tests).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// SHA-256 of the verified client certificate (mutual TLS), if any.
    pub client_cert: Option<[u8; 32]>,
    /// The connection's slot: a WebSocket session holds a clone, so an
    /// upgraded connection keeps counting against the limits.
    pub slot: Arc<Slot>,
}

/// What the accept loop needs; built by [`crate::app::start`].
#[derive(Debug)]
pub struct Edge {
    pub limits: HttpLimits,
    pub tls: Option<Arc<ReloadingTls>>,
    /// How often the TLS files are checked for a change.
    pub tls_reload: Duration,
    pub slots: Arc<Slots>,
}

impl Edge {
    /// The edge for `limits`, capped to what the open-files limit allows.
    pub fn new(
        mut limits: HttpLimits,
        tls: Option<Arc<ReloadingTls>>,
        tls_reload: Duration,
    ) -> Self {
        let fds = raise_open_files_limit();
        let room = fds.saturating_sub(RESERVED_FDS) as usize;
        let wanted = limits.max_connections + limits.overflow_connections;
        if wanted > room {
            let total = room.saturating_sub(limits.overflow_connections).max(1);
            tracing::warn!(
                open_files_limit = fds,
                configured = limits.max_connections,
                lowered_to = total,
                "the open-files limit is too low for http.limits.max_connections; raise it (ulimit -n, LimitNOFILE=)"
            );
            limits.max_connections = total;
            limits.max_connections_per_source = limits.max_connections_per_source.min(total);
        }
        let slots = Slots::new(
            limits.max_connections,
            limits.max_connections_per_source,
            limits.overflow_connections,
        );
        Edge {
            limits,
            tls,
            tls_reload,
            slots,
        }
    }
}

/// Connections the kernel may hold for the accept loop (capped by
/// `net.core.somaxconn`). A burst of connects beyond the queue has its SYNs
/// dropped and retried a second later, /health probes included; the
/// default of 128 was seen to overflow under a flood.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind the API's listener with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted gateway binds again while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raise the soft open-files limit to the hard one, where allowed; returns
/// the soft limit in force afterwards.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                return hard;
            }
            Err(e) => tracing::debug!(error = %e, "could not raise the open-files limit"),
        }
    }
    soft
}

/// Accept connections on `listener` and serve `app` on them until
/// `shutdown`; then let open connections finish (bounded) and return.
pub async fn serve(listener: TcpListener, app: Router, edge: Edge, shutdown: CancellationToken) {
    let edge = Arc::new(edge);
    let conns = TaskTracker::new();
    if let Some(tls) = &edge.tls {
        conns.spawn(tls.clone().watch(edge.tls_reload, shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let lane = match edge.slots.admit(peer.ip()) {
            Ok(lane) => lane,
            Err(full) => {
                metrics::counter!("emotion_http_connections_refused_total", "limit" => full.as_str())
                    .increment(1);
                tracing::debug!(%peer, limit = full.as_str(), "HTTP connection refused");
                continue;
            }
        };
        // Replies are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let (app, edge, token) = (app.clone(), edge.clone(), shutdown.clone());
        conns.spawn(async move { connection(tcp, peer, lane, app, edge, token).await });
    }
    conns.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conns.wait()).await;
}

/// One connection: the TLS handshake if configured, then HTTP/1.1.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    lane: Lane,
    app: Router,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) {
    let Some(tls) = &edge.tls else {
        return http(tcp, peer, None, lane, app, &edge.limits, shutdown).await;
    };
    let handshake = tokio::time::timeout(
        edge.limits.tls_handshake_timeout.0,
        tls.acceptor().accept(tcp),
    );
    match handshake.await {
        Ok(Ok(stream)) => {
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(emotion_tls::fingerprint);
            http(stream, peer, cert, lane, app, &edge.limits, shutdown).await;
        }
        Ok(Err(e)) => {
            metrics::counter!("emotion_http_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("emotion_http_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

async fn http<IO>(
    io: IO,
    peer: SocketAddr,
    client_cert: Option<[u8; 32]>,
    lane: Lane,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (slot, overflow) = match lane {
        Lane::Normal(s) => (s, false),
        Lane::Overflow(s) => (s, true),
    };
    let info = ConnInfo {
        peer,
        client_cert,
        slot: Arc::new(slot),
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let app = app.clone();
        async move {
            if overflow && req.uri().path() != "/health" {
                return Ok::<_, Infallible>(busy());
            }
            app.oneshot(req.map(Body::new)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(if overflow {
            OVERFLOW_HEADER_TIMEOUT.min(limits.header_read_timeout.0)
        } else {
            limits.header_read_timeout.0
        })
        .keep_alive(!overflow);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

/// The answer of the overflow lane to anything but `/health`.
fn busy() -> Response<Body> {
    metrics::counter!("emotion_http_overflow_refusals_total").increment(1);
    let body =
        r#"{"error":"busy","message":"the gateway is at its connection limit; retry shortly"}"#;
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::RETRY_AFTER, "1")
        .header(header::CONNECTION, "close")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
