//! What a person or a monitoring system reads off the gateway, over HTTP and
//! WebSocket without a browser: `/metrics` (Prometheus text format, counters
//! matching what was sent), JSON logs, the OpenAPI document and `/docs`, the
//! dashboard's files and WebSocket authentication, and the export.

use std::time::Duration;

use emotion_tests::{
    Gateway, GatewayOptions, READ_TOKEN, TOKEN, close_code, data_dir, next_json, send_json,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn scrape(gw: &Gateway) -> prometheus_parse::Scrape {
    let resp = client()
        .get(gw.http("/metrics"))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.expect("body");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus exposition format")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |c| c.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_and_match_what_was_sent() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");

    // Unauthenticated scrapes are refused, like every endpoint but /health.
    let resp = client().get(gw.http("/metrics")).send().await.expect("GET");
    assert_eq!(resp.status(), 401);

    let (mut u1, _) = gw.stream("m1").await.expect("connect");
    for i in 0..7 {
        let v = -0.5 + 0.1 * f64::from(i);
        send_json(
            &mut u1,
            &json!({"source": "voice", "valence": v, "arousal": 0.4}),
        )
        .await
        .expect("send");
        assert_eq!(
            next_json(&mut u1).await.expect("reply")["status"],
            "processed"
        );
    }
    // One duplicate (same event_id twice), two invalid events.
    let id = uuid::Uuid::now_v7();
    for _ in 0..2 {
        send_json(
            &mut u1,
            &json!({"event_id": id, "source": "voice", "emotion_label": "calm"}),
        )
        .await
        .expect("send");
        assert_eq!(
            next_json(&mut u1).await.expect("reply")["status"],
            "processed"
        );
    }
    for bad in [
        json!({"source": "voice", "valence": 3.0, "arousal": 0.5}),
        json!({"source": "telepathy", "emotion_label": "joy"}),
    ] {
        send_json(&mut u1, &bad).await.expect("send");
        assert_eq!(
            next_json(&mut u1).await.expect("reply")["error"],
            "validation_error"
        );
    }
    {
        let (mut u2, _) = gw.stream("m2").await.expect("connect");
        for _ in 0..5 {
            send_json(&mut u2, &json!({"source": "text", "emotion_label": "joy"}))
                .await
                .expect("send");
            next_json(&mut u2).await.expect("reply");
        }
        u2.close(None).await.expect("close");
    }
    // Poll until the closed connection is counted out (one stream left open).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = scrape(&gw).await;
        let open = value(
            &s,
            "emotion_gateway_websocket_connections",
            &[("endpoint", "/ws/emotions/stream")],
        );
        if open == Some(1.0) || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = |name: &str, labels: &[(&str, &str)]| value(&s, name, labels);
    let ws = ("transport", "websocket");
    // 7 + the first copy of the duplicate.
    assert_eq!(
        v(
            "emotion_gateway_events_in_total",
            &[ws, ("source", "voice")]
        ),
        Some(8.0)
    );
    assert_eq!(
        v("emotion_gateway_events_in_total", &[ws, ("source", "text")]),
        Some(5.0)
    );
    assert_eq!(
        v(
            "emotion_gateway_events_in_total",
            &[ws, ("source", "survey")]
        ),
        None
    );
    assert_eq!(
        v(
            "emotion_gateway_events_out_total",
            &[ws, ("source", "voice")]
        ),
        Some(8.0)
    );
    assert_eq!(
        v(
            "emotion_gateway_events_out_total",
            &[ws, ("source", "text")]
        ),
        Some(5.0)
    );
    assert_eq!(v("emotion_gateway_events_duplicate_total", &[]), Some(1.0));
    assert_eq!(v("emotion_gateway_events_rejected_total", &[]), Some(2.0));
    assert_eq!(v("emotion_gateway_buffer_events", &[]), Some(13.0));
    assert!(v("emotion_gateway_buffer_flushes_total", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(
        v("emotion_gateway_buffer_flushed_events_total", &[]),
        Some(14.0),
        "13 new + 1 duplicate written"
    );
    // The flush-latency histogram: one observation per flush.
    let flushes = v("emotion_gateway_buffer_flushes_total", &[]);
    let hist = s
        .samples
        .iter()
        .find(|x| x.metric == "emotion_gateway_buffer_flush_duration_seconds")
        .expect("flush histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.len() > 5, "{buckets:?}");
            assert_eq!(buckets.last().map(|b| b.count), flushes);
        }
        other => panic!("flush latency is not a histogram: {other:?}"),
    }
    assert_eq!(
        v(
            "emotion_gateway_websocket_connections",
            &[("endpoint", "/ws/emotions/stream")]
        ),
        Some(1.0),
        "one stream still open"
    );
    assert_eq!(v("emotion_gateway_mqtt_connections", &[]), Some(0.0));
    assert_eq!(v("emotion_gateway_sync_enabled", &[]), Some(0.0));
    assert_eq!(v("emotion_gateway_sync_lag_events", &[]), Some(0.0));
    assert_eq!(v("emotion_gateway_analyzer_users", &[]), Some(2.0));
    // HELP and TYPE lines come from the recorder.
    assert!(
        s.docs.contains_key("emotion_gateway_events_in_total"),
        "described metrics have HELP lines"
    );
    u1.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_when_configured() {
    let dir = data_dir().expect("tmp");
    let opts = GatewayOptions {
        env: vec![("EMOTION_GATEWAY__LOG__FORMAT".into(), "json".into())],
        config: None,
    };
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    // The log thread collects stderr on its own: wait for the start-up line.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !gw.logs().contains("gateway started") {
        assert!(
            std::time::Instant::now() < deadline,
            "no start-up line:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = gw.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut started = false;
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
        if v["fields"]["message"] == "gateway started" {
            started = true;
            assert!(
                v["fields"]["addr"].is_string(),
                "structured fields stay fields: {l}"
            );
        }
    }
    assert!(started, "the start-up line is among the JSON logs:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_docs_and_dashboard_files_are_served() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let c = client();

    let spec: Value = c
        .get(gw.http("/api/openapi.json"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let paths = spec["paths"].as_object().expect("paths");
    for (method, path) in [
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/api/export"),
        ("post", "/api/dashboard/ticket"),
        ("get", "/ws/dashboard"),
        ("get", "/ws/emotions/stream"),
        ("get", "/ws/emotions/metrics"),
        ("get", "/ws/emotions"),
        ("get", "/ws/readings"),
        ("get", "/api/users/{id}/summary"),
        ("delete", "/api/users/{id}/data"),
        ("post", "/api/ble/pair"),
        ("get", "/docs"),
        ("get", "/"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    assert!(spec["components"]["securitySchemes"]["token"].is_object());

    for (path, ct) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/dashboard/vendor/uPlot.LICENSE", "text/plain"),
        ("/docs", "text/html"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/LICENSE", "text/plain"),
    ] {
        let r = c.get(gw.http(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let got = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(got.starts_with(ct), "{path}: {got}");
        if ct == "text/html" {
            let csp = r
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        }
    }
    let r = c
        .get(gw.http("/dashboard/../Cargo.toml"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_socket_opens_with_a_one_time_ticket_or_a_header_token() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let c = client();

    // A ticket needs a read token.
    let r = c
        .post(gw.http("/api/dashboard/ticket"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    let t: Value = c
        .post(gw.http("/api/dashboard/ticket"))
        .header("x-auth-token", READ_TOKEN)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    let ticket = t["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(t["expires_in_seconds"], 30);

    let url = gw.ws_url(&format!("/ws/dashboard?ticket={ticket}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let hello = next_json(&mut ws).await.expect("hello");
    assert_eq!(hello["type"], "hello");
    assert!(
        hello["metrics"]["metrics"]["total_events"].is_number(),
        "{hello}"
    );
    let status = next_json(&mut ws).await.expect("status");
    assert_eq!(status["type"], "status");
    assert!(
        status["plugins"]["plugins"].is_array()
            && status["sync"].is_object()
            && status["devices"].is_object()
    );

    // Events and alerts flow to it.
    let (mut s, _) = gw.stream("dash-1").await.expect("stream");
    for _ in 0..3 {
        send_json(
            &mut s,
            &json!({"source": "voice", "valence": -0.8, "arousal": 0.9}),
        )
        .await
        .expect("send");
        next_json(&mut s).await.expect("reply");
    }
    let (mut saw_events, mut saw_alert, mut saw_risk) = (0, false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (saw_events < 3 || !saw_alert || !saw_risk) && tokio::time::Instant::now() < deadline {
        let m = next_json(&mut ws).await.expect("message");
        match m["type"].as_str() {
            Some("events") => {
                for e in m["events"].as_array().expect("events") {
                    assert_eq!(e["user_id"], "dash-1");
                    assert!(
                        e["risks"]
                            .as_array()
                            .is_some_and(|r| r.contains(&json!("high_stress"))),
                        "{e}"
                    );
                    saw_events += 1;
                }
            }
            Some("alert") => {
                assert_eq!(m["alert"]["kind"], "high_stress");
                assert_eq!(m["alert"]["user_id"], "dash-1");
                saw_alert = true;
            }
            Some("metrics") => {
                saw_risk |= m["risk"]["high_stress"]["users"]
                    .as_array()
                    .is_some_and(|u| u.contains(&json!("dash-1")));
            }
            _ => {}
        }
    }
    assert_eq!(saw_events, 3);
    assert!(
        saw_alert && saw_risk,
        "alert {saw_alert}, risk board {saw_risk}"
    );

    // The ticket was used up.
    let (mut again, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    assert_eq!(close_code(&mut again).await.expect("close"), 1008);
    // A token in the URL is not accepted here (it would be logged) ...
    let (mut q, _) =
        tokio_tungstenite::connect_async(gw.ws_url(&format!("/ws/dashboard?token={READ_TOKEN}")))
            .await
            .expect("connect");
    assert_eq!(close_code(&mut q).await.expect("close"), 1008);
    // ... but in a header it is, for non-browser clients.
    let mut req = gw
        .ws_url("/ws/dashboard")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-auth-token", TOKEN.parse().expect("header"));
    let (mut h, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    match h.next().await {
        Some(Ok(Message::Text(t))) => assert!(t.contains("\"hello\"")),
        other => panic!("expected hello, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_as_csv_and_json_matches_the_events_api() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let (mut s, _) = gw.stream("exp-1").await.expect("stream");
    let notes = ["plain", "with, a comma", "with \"quotes\"", "two\nlines"];
    for (i, note) in notes.iter().enumerate() {
        let body = json!({"source": "survey", "valence": -0.25 * i as f64, "arousal": 0.5,
            "timestamp": format!("2026-03-0{}T10:00:00Z", i + 1), "context": {"note": note}});
        send_json(&mut s, &body).await.expect("send");
        assert_eq!(
            next_json(&mut s).await.expect("reply")["status"],
            "processed"
        );
    }
    let c = client();
    let get = |q: &str| {
        c.get(gw.http(&format!("/api/export?{q}")))
            .header("x-auth-token", READ_TOKEN)
            .send()
    };
    let api = gw
        .get_json("/api/users/exp-1/events?from=2026-03-02T00:00:00Z&to=2026-03-03T23:00:00Z")
        .await
        .expect("events");
    let api_events = api["events"].as_array().expect("events").clone();
    assert_eq!(api_events.len(), 2);

    let r = get("user_id=exp-1&format=csv&from=2026-03-02T00:00:00Z&to=2026-03-03T23:00:00Z")
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let cd = r
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(cd, "attachment; filename=\"emotions-exp-1-events.csv\"");
    let text = r.text().await.expect("body");
    // RFC 4180 by hand: the quoted cells must come back intact.
    let rows = parse_csv(&text);
    assert_eq!(rows[0][0], "event_id");
    assert_eq!(rows.len(), 3, "header + 2 rows:\n{text}");
    let col = |name: &str| rows[0].iter().position(|h| h == name).expect("column");
    for (row, e) in rows[1..].iter().zip(&api_events) {
        assert_eq!(row[col("event_id")], e["event_id"].as_str().expect("id"));
        assert_eq!(row[col("timestamp")], e["timestamp"].as_str().expect("ts"));
        assert_eq!(
            row[col("valence")].parse::<f64>().ok(),
            e["valence"].as_f64()
        );
        let ctx: Value = serde_json::from_str(&row[col("context")]).expect("context JSON");
        assert_eq!(ctx, e["context"]);
    }

    let j: Value = get("user_id=exp-1&format=json")
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(j["count"], 4);
    assert_eq!(j["summary"]["user_id"], "exp-1");
    assert!(j["credit_summaries"].is_array());
    let sums = get("user_id=exp-1&format=csv&kind=summaries")
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        sums.starts_with("action,") || sums.contains("window_days"),
        "{sums}"
    );

    for (q, code) in [
        ("format=csv", 400),
        ("user_id=exp-1&format=xml", 400),
        ("user_id=exp-1&from=yesterday", 400),
        ("user_id=bad%20id", 400),
    ] {
        assert_eq!(get(q).await.expect("GET").status(), code, "{q}");
    }
    let r = c
        .get(gw.http("/api/export?user_id=exp-1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401, "export needs a token");
}

/// RFC 4180 rows (quoted cells may hold commas, doubled quotes, newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}
