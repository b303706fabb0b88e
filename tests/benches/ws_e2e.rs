//! WebSocket end to end, with durability.
//!
//! ```text
//! cargo build --release -p emotion-gateway
//! cargo bench -p emotion-tests --bench ws_e2e
//! ```
//!
//! Prints (1) events acknowledged per second with many connections pipelining
//! (target ≥ 50k/s on 2 cores, load client on the same machine), as a ratio
//! against a reference measured in the same run: the same client against a
//! bare axum WebSocket echo server (no parsing, no storage); and (2) the ack
//! latency percentiles at a paced 10k events/s (target p99 ≤ 5 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::routing::get;
use emotion_tests::{Gateway, GatewayOptions, TOKEN};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

const CONNECTIONS: usize = 32;
const IN_FLIGHT: usize = 256;
const RUN: Duration = Duration::from_secs(6);

fn event_json(user: usize, seq: u64) -> String {
    let v = ((seq % 200) as f64 / 100.0) - 1.0;
    let source = ["text", "voice", "facial", "physiological"][seq as usize % 4];
    let label = ["joy", "calm", "anxiety", "stress"][seq as usize % 4];
    json!({
        "user_id": user + 1,
        "source": source,
        "emotion_label": label,
        "valence": v, "arousal": 0.55, "confidence": 0.8,
        "timestamp": "2024-08-15T14:30:00.123456",
        "context": {"time_period": "afternoon", "day_of_week": "friday", "weather": "sunny", "seq": seq},
        "device_info": {"device_type": "smartwatch", "platform": "iOS", "app_version": "2.3.1"}
    })
    .to_string()
}

/// Result of one load run.
struct Load {
    acked: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

/// Drive `CONNECTIONS` sockets. `rate` = None: as fast as `IN_FLIGHT` allows
/// per connection; Some(r): r events/s in total, evenly paced.
async fn load(url_for: impl Fn(usize) -> String, skip_first: bool, rate: Option<f64>) -> Load {
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<u64>();
    let started = Instant::now();
    let deadline = started + RUN;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let url = url_for(c);
        let lat_tx = lat_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (ws, _) = match tokio_tungstenite::connect_async_with_config(&url, None, true).await
            {
                Ok(ok) => ok,
                Err(e) => panic!("connect {url}: {e}"),
            };
            let (mut tx, mut rx) = ws.split();
            if skip_first {
                let _ = rx.next().await; // welcome
            }
            let permits = Arc::new(Semaphore::new(IN_FLIGHT));
            let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
            let p = permits.clone();
            let writer = tokio::spawn(async move {
                let mut seq = 0u64;
                let period = rate.map(|r| Duration::from_secs_f64(CONNECTIONS as f64 / r));
                let mut next = Instant::now();
                while Instant::now() < deadline {
                    if let Some(period) = period {
                        next += period;
                        tokio::time::sleep_until(next.into()).await;
                    }
                    let Ok(permit) = p.clone().acquire_owned().await else {
                        break;
                    };
                    permit.forget();
                    let _ = sent_tx.send(Instant::now());
                    if tx
                        .send(Message::Text(event_json(c, seq).into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    seq += 1;
                }
            });
            let mut acked = 0u64;
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(_) = msg {
                    let Some(sent) = sent_rx.recv().await else {
                        break;
                    };
                    permits.add_permits(1);
                    let now = Instant::now();
                    if now <= deadline {
                        acked += 1;
                        let _ = lat_tx.send(now.duration_since(sent).as_micros() as u64);
                    }
                    if now > deadline && permits.available_permits() == IN_FLIGHT {
                        break;
                    }
                }
            }
            writer.abort();
            acked
        }));
    }
    drop(lat_tx);
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap_or(0);
    }
    let mut latencies_us = Vec::new();
    while let Ok(l) = lat_rx.try_recv() {
        latencies_us.push(l);
    }
    Load {
        acked,
        elapsed: RUN,
        latencies_us,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn echo_server() -> std::net::SocketAddr {
    let app = Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let AxMessage::Text(t) = msg
                        && socket.send(AxMessage::Text(t)).await.is_err()
                    {
                        break;
                    }
                }
            })
        }),
    );
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let echo = echo_server().await;
        let reference = load(|_| format!("ws://{echo}/ws"), false, None).await;
        let ref_rate = reference.acked as f64 / reference.elapsed.as_secs_f64();

        let dir = emotion_tests::data_dir().unwrap_or_else(|e| panic!("tmp: {e}"));
        let gw = Gateway::start(
            dir.path(),
            &GatewayOptions {
                env: vec![("EMOTION_GATEWAY__LOG__LEVEL".into(), "warn".into())],
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("gateway: {e}"));
        let url = |c: usize| gw.ws_url(&format!("/ws/emotions/stream?user_id={}&token={TOKEN}", c + 1));
        let ours = load(url, true, None).await;
        let rate = ours.acked as f64 / ours.elapsed.as_secs_f64();
        let health = gw.get_json("/health").await.unwrap_or_default();

        let paced = load(url, true, Some(10_000.0)).await;
        let mut lat = paced.latencies_us.clone();
        lat.sort_unstable();

        println!(
            "ws e2e throughput: {:.0} events/s acknowledged after durable group commit \
             ({CONNECTIONS} connections x {IN_FLIGHT} in flight; target >= 50000/s)",
            rate
        );
        println!(
            "reference (same client, bare axum WebSocket echo): {:.0} msg/s; ratio gateway/echo = {:.2}",
            ref_rate,
            rate / ref_rate
        );
        println!(
            "group commit: mean {:.0} events per flush, mean flush {:.2} ms",
            health["ingest"]["mean_batch_events"].as_f64().unwrap_or(f64::NAN),
            health["ingest"]["mean_flush_ms"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "ack latency at a paced 10000 events/s ({} acked): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 5 ms)",
            paced.acked,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    });
}
