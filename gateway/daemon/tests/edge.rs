//! The network edge through the real listener (`app::serve_api` on
//! 127.0.0.1:0): limits before authentication, identity bound to tokens,
//! rate limits. TLS has its own file (`tls.rs`).

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A token bound to user 42, with a rate limit of its own, and one
/// written hashed (sha256 of "hashed-token-0123456789"), bound to 7 and 8.
const BOUND: &str = "bound-token-0123456789";
const HASHED: &str = "hashed-token-0123456789";

fn event(user: &str) -> Value {
    json!({"user_id": user, "source": "voice", "emotion_label": "calm", "valence": 0.3,
           "arousal": 0.2, "confidence": 0.8})
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bound_tokens(per_second: f64, burst: f64) -> (&'static str, String) {
    (
        "AUTH__TOKENS",
        format!(
            r#"[{{name = "test", token = "{TOKEN}", scopes = ["ingest", "read", "admin"]}},
                {{name = "strap-42", token = "{BOUND}", scopes = ["ingest", "read"], user_ids = ["42"],
                  rate = {{per_second = {per_second:.1}, burst = {burst:.1}}}}},
                {{name = "hashed", token_sha256 = "{}", scopes = ["ingest"], user_ids = ["7", "8"]}}]"#,
            sha256_hex(HASHED),
        ),
    )
}

/// Read from `tcp` until the server closes it; `Err` if it is still open
/// after `within`.
async fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> Result<(), ()> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET path` over a raw connection: the status line's code.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn an_oversized_message_gets_an_error_reply_then_close_1009() {
    let h = Harness::with(&[("HTTP__MAX_MESSAGE_BYTES", "2048".into())])
        .await
        .serve()
        .await;
    let (mut ws, _) = h.stream("7").await;
    // A normal event first: its reply still comes before the refusal.
    send_json(&mut ws, &event("7")).await;
    let big = json!({"user_id": "7", "source": "text", "text": "x".repeat(4096)});
    send_json(&mut ws, &big).await;
    assert_eq!(next_json(&mut ws).await["status"], "processed");
    let r = next_json(&mut ws).await;
    assert_eq!(r["error"], "message_too_big", "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| m.contains("2048")),
        "{r}"
    );
    assert_eq!(close_code(&mut ws).await, 1009);
    h.shutdown().await;
}

#[tokio::test]
async fn silent_websockets_are_closed_and_responsive_ones_kept() {
    let h = Harness::with(&[
        ("HTTP__LIMITS__WS_PING_INTERVAL", "100ms".into()),
        ("HTTP__LIMITS__WS_IDLE_TIMEOUT", "400ms".into()),
    ])
    .await
    .serve()
    .await;
    // A raw upgrade whose client never reads or answers pings.
    let addr = h.addr.expect("served");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    silent
        .write_all(
            format!(
                "GET /ws/emotions?token={TOKEN} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\
                 connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 sec-websocket-version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("handshake");
    // A client that reads (tungstenite answers pings while reading), for
    // longer than the idle timeout.
    let (mut alive, _) =
        tokio_tungstenite::connect_async(h.ws_url(&format!("/ws/emotions?token={TOKEN}")))
            .await
            .expect("connect");
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while pings < 8 {
            match tokio::time::timeout(Duration::from_secs(5), alive.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                other => panic!("expected pings, got {other:?}"),
            }
        }
        alive
    });
    let started = Instant::now();
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(10))
            .await
            .is_ok(),
        "a silent WebSocket must be closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "closed too early: {took:?}"
    );
    // The responsive one saw 8 pings (800 ms, twice the idle timeout) and is
    // still served.
    let mut alive = reader.await.expect("reader");
    send_json(&mut alive, &event("7")).await;
    assert_eq!(next_json(&mut alive).await["status"], "queued");
    h.shutdown().await;
}

#[tokio::test]
async fn half_open_and_idle_connections_are_closed_after_the_header_timeout() {
    let h = Harness::with(&[("HTTP__LIMITS__HEADER_READ_TIMEOUT", "300ms".into())])
        .await
        .serve()
        .await;
    let addr = h.addr.expect("served");
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    for tcp in [&mut idle, &mut partial] {
        assert!(closed_by_server(tcp, Duration::from_secs(10)).await.is_ok());
    }
    // A keep-alive connection idle after its response is closed too.
    let mut keep = TcpStream::connect(addr).await.expect("connect");
    keep.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_by_server(&mut keep, Duration::from_secs(10))
            .await
            .is_ok()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn beyond_the_connection_caps_health_still_answers_and_the_rest_is_busy() {
    let h = Harness::with(&[
        ("HTTP__LIMITS__MAX_CONNECTIONS", "8".into()),
        ("HTTP__LIMITS__MAX_CONNECTIONS_PER_SOURCE", "4".into()),
        ("HTTP__LIMITS__OVERFLOW_CONNECTIONS", "2".into()),
    ])
    .await
    .serve()
    .await;
    let addr = h.addr.expect("served");
    // Four idle connections fill this source's share.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the edge accept them before the next ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The overflow lane answers /health, and 503 + Retry-After otherwise.
        if raw_get(addr, "/health").await.ok() == Some(200) {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"GET /api/sources HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .expect("write");
            let mut out = Vec::new();
            tcp.read_to_end(&mut out).await.expect("read");
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            if text.starts_with("http/1.1 503") {
                assert!(text.contains("retry-after: 1"), "{text}");
                assert!(text.contains("\"busy\""), "{text}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the overflow lane never answered 503"
        );
        tokio::task::yield_now().await;
    }
    // With the overflow lane full too, new connections are closed at once.
    let mut overflow = Vec::new();
    for _ in 0..2 {
        overflow.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut refused = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_by_server(&mut refused, Duration::from_secs(5))
            .await
            .is_ok()
    );
    // Freed slots are usable again.
    drop(held);
    drop(overflow);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(
            format!(
                "GET /api/sources?token={TOKEN} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_bound_token_writes_and_reads_only_for_its_users() {
    let h = Harness::with(&[bound_tokens(1000.0, 100.0)])
        .await
        .serve()
        .await;
    // The stream endpoint: another user's stream is refused with 1008.
    let (mut ws, _) = tokio_tungstenite::connect_async(
        h.ws_url(&format!("/ws/emotions/stream?user_id=99999&token={BOUND}")),
    )
    .await
    .expect("upgrade");
    assert_eq!(close_code(&mut ws).await, 1008);
    let (mut ws, _) = tokio_tungstenite::connect_async(
        h.ws_url(&format!("/ws/emotions/stream?user_id=42&token={BOUND}")),
    )
    .await
    .expect("upgrade");
    assert_eq!(next_json(&mut ws).await["status"], "connected");
    // The stream binds the user; a body naming another is refused.
    send_json(&mut ws, &event("42")).await;
    assert_eq!(next_json(&mut ws).await["status"], "processed");

    // The legacy endpoint takes the user from the body: checked per message.
    let (mut legacy, _) =
        tokio_tungstenite::connect_async(h.ws_url(&format!("/ws/emotions?token={HASHED}")))
            .await
            .expect("upgrade");
    for (user, ok) in [("7", true), ("8", true), ("42", false)] {
        send_json(&mut legacy, &event(user)).await;
        let r = next_json(&mut legacy).await;
        if ok {
            assert_eq!(r["status"], "queued", "{r}");
        } else {
            assert_eq!(r["error"], "forbidden_user", "{r}");
            assert!(
                r["message"].as_str().is_some_and(|m| m.contains("hashed")),
                "{r}"
            );
        }
    }
    // Readings: the same check, before any plugin sees them; a reading
    // without user_id from a single-user token is that user's.
    let (mut readings, _) =
        tokio_tungstenite::connect_async(h.ws_url(&format!("/ws/readings?token={BOUND}")))
            .await
            .expect("upgrade");
    send_json(
        &mut readings,
        &json!({"user_id": 7, "source": "physiological", "payload": {"heart_rate": 70}}),
    )
    .await;
    let r = next_json(&mut readings).await;
    assert_eq!(r["error"], "validation_error", "{r}");
    let hashed_readings = format!("/ws/readings?token={HASHED}");
    let (mut readings, _) = tokio_tungstenite::connect_async(h.ws_url(&hashed_readings))
        .await
        .expect("upgrade");
    send_json(
        &mut readings,
        &json!({"user_id": 42, "source": "physiological", "payload": {"heart_rate": 70}}),
    )
    .await;
    assert_eq!(next_json(&mut readings).await["error"], "forbidden_user");
    send_json(
        &mut readings,
        &json!({"user_id": 7, "source": "physiological", "payload": {"heart_rate": 70}}),
    )
    .await;
    // Allowed through to the host (no plugin in this harness).
    assert_eq!(next_json(&mut readings).await["error"], "no_plugin");

    // REST: its own user's data, not another's, not every user's.
    let bearer = |path: &str| {
        get(path)
            .header("authorization", format!("Bearer {BOUND}"))
            .body(Body::empty())
            .expect("request")
    };
    for path in ["/api/users/42/summary", "/api/users/42/report?days=7"] {
        let (status, _) = h.call(bearer(path)).await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{path}");
    }
    for path in [
        "/api/users/43/summary",
        "/api/users/43/report",
        "/api/users/7/events",
        "/api/export",
        "/api/risk",
    ] {
        let (status, body) = h.call(bearer(path)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // The unbound back-end token still acts for anyone.
    let (status, _) = h.get("/api/users/43/summary").await;
    assert_ne!(status, StatusCode::FORBIDDEN);
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_hints_and_are_counted() {
    let h = Harness::with(&[bound_tokens(5.0, 5.0)]).await.serve().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(
        h.ws_url(&format!("/ws/emotions/stream?user_id=42&token={BOUND}")),
    )
    .await
    .expect("upgrade");
    next_json(&mut ws).await;
    // A burst of 5 at 5/s: of 20 sent at once, at most a few beyond 5 pass.
    for _ in 0..20 {
        ws.send(Message::Text(event("42").to_string().into()))
            .await
            .expect("send");
    }
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..20 {
        let r = next_json(&mut ws).await;
        match r["status"].as_str() {
            Some("processed") => ok += 1,
            _ => {
                assert_eq!(r["error"], "rate_limited", "{r}");
                assert!(r["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{r}");
                limited += 1;
            }
        }
    }
    assert!((5..=8).contains(&ok), "{ok} accepted");
    assert_eq!(ok + limited, 20);
    // HTTP shares the principal's bucket: 429 with Retry-After.
    let req = get("/api/users/42/summary")
        .header("x-auth-token", BOUND)
        .body(Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(h.router.clone(), req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
    // Counted in /metrics.
    let resp = tower::ServiceExt::oneshot(
        h.router.clone(),
        get("/metrics")
            .header("x-auth-token", TOKEN)
            .body(Body::empty())
            .expect("request"),
    )
    .await
    .expect("infallible");
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        text.lines()
            .any(|l| l.starts_with("emotion_gateway_rate_limited_total{transport=\"websocket\"}")),
        "{text}"
    );
    h.shutdown().await;
}
