//! HTTPS and WSS through the real listener with a rustls client: the right
//! CA, a wrong CA, plain text to the TLS port, a certificate rotated while
//! connected clients keep working, and mutual TLS (a client certificate
//! bound to a user, accepted and refused).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use emotion_tls::tokio_rustls::TlsConnector;
use emotion_tls::tokio_rustls::client::TlsStream;
use emotion_tls::tokio_rustls::rustls::pki_types::ServerName;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A CA that signs certificates into files of `dir`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("self-signed");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).expect("write");
        Ca {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// A leaf for `name`, written as `<file>.pem` and `<file>.key`; returns
    /// (cert path, key path, SHA-256 fingerprint as hex).
    fn leaf(
        &self,
        dir: &Path,
        file: &str,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf, String) {
        let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("signed");
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        let fp = emotion_tls::fingerprint(cert.der())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        (c, k, fp)
    }
}

/// Connect over TLS trusting `ca`, presenting `client` (cert, key) if given.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let cfg = emotion_tls::client_config("test.ca", Some(ca), client.map(|(c, k)| ("test", c, k)))
        .map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// `GET /health` over `stream`: the status code.
async fn health<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> u16 {
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn tls_env(cert: &Path, key: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP__TLS__CERT", cert.display().to_string()),
        ("HTTP__TLS__KEY", key.display().to_string()),
        ("HTTP__TLS__RELOAD_INTERVAL", "100ms".into()),
    ]
}

#[tokio::test]
async fn https_with_the_right_ca_only_and_no_plain_text() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "site-ca");
    let other = Ca::new(dir.path(), "other-ca");
    let (cert, key, _) = ca.leaf(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let h = Harness::with(&tls_env(&cert, &key)).await.serve().await;
    let addr = h.addr.expect("served");

    let s = tls_connect(addr, &ca.pem, None).await.expect("right CA");
    assert_eq!(health(s).await, 200);
    let e = tls_connect(addr, &other.pem, None)
        .await
        .expect_err("a wrong CA must fail the handshake");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(health(plain).await, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_clients_while_old_ones_keep_working() {
    let dir = tempfile::tempdir().expect("tmp");
    let old_ca = Ca::new(dir.path(), "old-ca");
    let new_ca = Ca::new(dir.path(), "new-ca");
    let (cert, key, _) = old_ca.leaf(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let h = Harness::with(&tls_env(&cert, &key)).await.serve().await;
    let addr = h.addr.expect("served");

    // A WebSocket over TLS, opened with the old certificate.
    let s = tls_connect(addr, &old_ca.pem, None).await.expect("old CA");
    let url = format!("wss://localhost/ws/emotions/stream?user_id=5&token={TOKEN}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, s)
        .await
        .expect("upgrade");
    let welcome = next_json_any(&mut ws).await;
    assert_eq!(welcome["status"], "connected");

    // Rotate: write the new pair beside, then rename over (as certbot does).
    let (c2, k2, _) = new_ca.leaf(
        dir.path(),
        "server-new",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::rename(&k2, &key).expect("rename key");
    std::fs::rename(&c2, &cert).expect("rename cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = tls_connect(addr, &new_ca.pem, None).await {
            assert_eq!(health(s).await, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New clients trusting only the old CA are refused now...
    assert!(tls_connect(addr, &old_ca.pem, None).await.is_err());
    // ...and the connection opened before the rotation still works.
    use futures_util::SinkExt;
    let ev = json!({"source": "voice", "emotion_label": "calm", "valence": 0.3, "arousal": 0.2, "confidence": 0.8});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        ev.to_string().into(),
    ))
    .await
    .expect("send");
    assert_eq!(next_json_any(&mut ws).await["status"], "processed");
    h.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_client_certificates_authenticate_and_bind_to_their_user() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "site-ca");
    let devices = Ca::new(dir.path(), "device-ca");
    let rogue = Ca::new(dir.path(), "rogue-ca");
    let (cert, key, _) = ca.leaf(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (dc, dk, fp) = devices.leaf(
        dir.path(),
        "strap-42",
        "strap-42",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (uc, uk, _) = devices.leaf(
        dir.path(),
        "unlisted",
        "unlisted",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (rc, rk, _) = rogue.leaf(
        dir.path(),
        "rogue",
        "rogue",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let mut env = tls_env(&cert, &key);
    env.push(("HTTP__TLS__CLIENT_CA", devices.pem.display().to_string()));
    env.push((
        "AUTH__CERTIFICATES",
        format!(r#"[{{name = "strap-42", fingerprint_sha256 = "{fp}", scopes = ["ingest"], user_ids = ["42"]}}]"#),
    ));
    let h = Harness::with(&env).await.serve().await;
    let addr = h.addr.expect("served");

    let stream = |user: u32| format!("wss://localhost/ws/emotions/stream?user_id={user}");
    // The listed certificate, no token: its own user is accepted...
    let s = tls_connect(addr, &ca.pem, Some((&dc, &dk)))
        .await
        .expect("mTLS");
    let (mut ws, _) = tokio_tungstenite::client_async(stream(42), s)
        .await
        .expect("upgrade");
    assert_eq!(next_json_any(&mut ws).await["status"], "connected");
    // ...another user is refused with 1008.
    let s = tls_connect(addr, &ca.pem, Some((&dc, &dk)))
        .await
        .expect("mTLS");
    let (mut ws, _) = tokio_tungstenite::client_async(stream(43), s)
        .await
        .expect("upgrade");
    assert_eq!(close_code_any(&mut ws).await, 1008);
    // A valid but unlisted certificate authenticates nothing.
    let s = tls_connect(addr, &ca.pem, Some((&uc, &uk)))
        .await
        .expect("handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(stream(42), s)
        .await
        .expect("upgrade");
    assert_eq!(close_code_any(&mut ws).await, 1008);
    // A certificate of another CA fails the handshake.
    let refused = match tls_connect(addr, &ca.pem, Some((&rc, &rk))).await {
        Err(_) => true,
        // TLS 1.3: the client finishes first; the refusal arrives on read.
        Ok(s) => health(s).await == 0,
    };
    assert!(refused, "a rogue client certificate must be refused");
    // Without a certificate (optional here) a token still works.
    let s = tls_connect(addr, &ca.pem, None)
        .await
        .expect("no client cert");
    assert_eq!(health(s).await, 200);
    h.shutdown().await;

    // require_client_cert: no certificate, no connection.
    env.push(("HTTP__TLS__REQUIRE_CLIENT_CERT", "true".into()));
    let h = Harness::with(&env).await.serve().await;
    let addr = h.addr.expect("served");
    let refused = match tls_connect(addr, &ca.pem, None).await {
        Err(_) => true,
        Ok(s) => health(s).await == 0,
    };
    assert!(
        refused,
        "a handshake without a client certificate must fail"
    );
    let s = tls_connect(addr, &ca.pem, Some((&dc, &dk)))
        .await
        .expect("mTLS");
    assert_eq!(health(s).await, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn listening_off_loopback_without_tls_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    let env = |extra: &[(&str, &str)]| {
        [
            ("EMOTION_GATEWAY__HTTP__LISTEN", "0.0.0.0:0"),
            (
                "EMOTION_GATEWAY__AUTH__TOKENS",
                r#"[{name = "t", token = "a-long-enough-token-123", scopes = ["read"]}]"#,
            ),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
    };
    let e = emotion_gateway::config::Config::load(None, env(&[]))
        .expect_err("plain text off loopback")
        .to_string();
    assert!(
        e.contains("not a loopback address") && e.contains("http.allow_plaintext"),
        "{e}"
    );
    emotion_gateway::config::Config::load(
        None,
        env(&[("EMOTION_GATEWAY__HTTP__ALLOW_PLAINTEXT", "true")]),
    )
    .expect("allowed explicitly");
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key, _) = ca.leaf(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    emotion_gateway::config::Config::load(
        None,
        env(&[
            ("EMOTION_GATEWAY__HTTP__TLS__CERT", &c),
            ("EMOTION_GATEWAY__HTTP__TLS__KEY", &k),
        ]),
    )
    .expect("TLS off loopback");
}

/// `next_json` for a WebSocket over any stream.
async fn next_json_any<S>(ws: &mut WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("message");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// `close_code` for a WebSocket over any stream.
async fn close_code_any<S>(ws: &mut WebSocketStream<S>) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return 0,
            Some(Ok(_)) => continue,
        }
    }
}
