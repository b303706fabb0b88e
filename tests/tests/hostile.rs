//! Hostile neighbours on the LAN, against the real binary on its default
//! limits (loopback only, bounded in time and count): 5,000 half-open and
//! idle connections, some of them upgraded WebSockets that never read,
//! opened from 40 other source addresses while a legitimate client streams.
//! `/health` must answer within 100 ms throughout, every event of the
//! legitimate client must be acknowledged, and the gateway's RSS must stay
//! bounded (printed).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use emotion_tests::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const HOSTILE: usize = 5_000;
const SOURCES: u8 = 40;
const EVENTS: usize = 3_000;
/// The phase lasts at least this long, whatever the client's speed.
const MIN_PHASE: Duration = Duration::from_secs(5);

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One hostile connection from 127.0.0.`2 + i % SOURCES`: idle, half-open
/// (headers never finished), or a WebSocket that never reads.
async fn hostile(addr: SocketAddr, i: usize) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES as usize) as u8);
    socket.bind(SocketAddr::from((src, 0)))?;
    let mut tcp = socket.connect(addr).await?;
    match i % 5 {
        0 | 1 => {}
        2 | 3 => {
            tcp.write_all(b"GET /api/sources HTTP/1.1\r\nhost: gateway\r\nx-slow: ")
                .await?
        }
        _ => {
            tcp.write_all(
                format!(
                    "GET /ws/emotions?token={TOKEN} HTTP/1.1\r\nhost: gateway\r\nupgrade: websocket\r\n\
                     connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     sec-websocket-version: 13\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?
        }
    }
    Ok(tcp)
}

/// `GET /health` on a new connection; its latency.
async fn probe(addr: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    if !out.starts_with(b"HTTP/1.1 200") {
        bail!("/health answered {:?}", String::from_utf8_lossy(&out));
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_a_streaming_client_survive_5000_hostile_connections() -> Result<()> {
    // Our side holds 5,000 sockets too.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < 8_192 {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let data = data_dir()?;
    let gw = Gateway::start(data.path(), &GatewayOptions::default())?;
    let addr = gw.addr;
    let pid = gw.pid();
    let rss_before = rss_mb(pid);

    let (mut ws, _) = gw.stream("1").await?;
    let started = Instant::now();

    // The attack: 250 connections every 50 ms (5,000 a second), all held
    // to the end.
    let t0 = Instant::now();
    let attack = tokio::spawn(async move {
        let mut held = Vec::with_capacity(HOSTILE);
        let mut failed = 0usize;
        for batch in (0..HOSTILE).collect::<Vec<_>>().chunks(250) {
            let opened =
                futures_util::future::join_all(batch.iter().map(|&i| hostile(addr, i))).await;
            for c in opened {
                match c {
                    Ok(tcp) => held.push(tcp),
                    Err(_) => failed += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (held, failed, t0.elapsed())
    });

    // /health every 20 ms, and the gateway's RSS, until told to stop.
    let stop = flag::Stop::default();
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut worst, mut probes, mut rss_max) = (Duration::ZERO, 0u32, 0f64);
            while !stop.is_set() {
                let took = probe(addr).await?;
                worst = worst.max(took);
                probes += 1;
                rss_max = rss_max.max(rss_mb(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, anyhow::Error>((worst, probes, rss_max))
        })
    };

    // The legitimate client streams, 32 events in flight, from before the
    // attack until MIN_PHASE after every hostile connection is open; every
    // event must be answered `processed`.
    let ev = json!({"source": "voice", "emotion_label": "calm", "valence": 0.2, "arousal": 0.3, "confidence": 0.8});
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut attack = Some(attack);
    let mut opened: Option<(Vec<TcpStream>, usize, Duration, Instant)> = None;
    loop {
        if let Some(a) = attack.as_ref()
            && a.is_finished()
            && let Some(a) = attack.take()
        {
            let (held, failed, took) = a.await?;
            opened = Some((held, failed, took, Instant::now()));
        }
        let done = opened
            .as_ref()
            .is_some_and(|o| o.3.elapsed() >= MIN_PHASE && acked >= EVENTS);
        if done && sent == acked {
            break;
        }
        while !done && sent - acked < 32 {
            ws.send(Message::Text(ev.to_string().into())).await?;
            sent += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("the legitimate client's reply did not come")?
            .context("the legitimate client's connection closed")??;
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["status"] != "processed" {
                bail!("an event of the legitimate client was refused: {v}");
            }
            acked += 1;
        }
    }
    let (held, failed, open_took, _) = opened.context("the attack did not finish")?;
    let rss_full = rss_mb(pid);
    stop.set();
    let (worst, probes, rss_max) = prober.await??;
    println!(
        "hostile connections held: {} of {HOSTILE} ({failed} failed to open), opened in {:.2} s from {SOURCES} addresses; \
         legitimate client: {acked} events acknowledged, none refused, over {:.1} s; /health: {probes} probes, slowest {:.1} ms; \
         gateway RSS: {rss_before:.1} MB before, {rss_full:.1} MB with every connection held, {rss_max:.1} MB at most",
        held.len(),
        open_took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        worst.as_secs_f64() * 1e3,
    );
    assert_eq!(
        failed, 0,
        "the gateway must accept every connection below its limits"
    );
    assert!(probes >= 20, "too few probes: {probes}");
    assert!(
        worst < Duration::from_millis(100),
        "/health took {worst:?} under the attack"
    );
    assert!(
        rss_max - rss_before < 256.0,
        "RSS grew from {rss_before:.1} to {rss_max:.1} MB"
    );
    drop(held);
    Ok(())
}

/// A one-way flag (the tests crate has no tokio-util).
mod flag {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug, Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn set(&self) {
            self.0.store(true, Ordering::Release);
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }
}
