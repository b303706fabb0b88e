//! A minimal HTTP/1.1 GET for the gateway's JSON status endpoints
//! (`/health`, `/api/mqtt`): plain TCP, one request per connection. The
//! load tool reads them a few times per run, so a client library would buy
//! nothing but build time.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bodies beyond this are not status documents.
const MAX_RESPONSE: u64 = 8 << 20;

/// `host:port` of a gateway given as `ws://host:port`, `http://host:port`
/// or `host:port` (paths dropped). `None` for TLS (`wss://`, `https://`),
/// which this client does not speak.
pub fn http_authority(gateway: &str) -> Option<String> {
    let g = gateway.trim();
    if g.starts_with("wss://") || g.starts_with("https://") {
        return None;
    }
    let rest = g
        .strip_prefix("ws://")
        .or_else(|| g.strip_prefix("http://"))
        .unwrap_or(g);
    let authority = rest.split('/').next().unwrap_or(rest);
    (!authority.is_empty()).then(|| authority.to_owned())
}

/// GET `path` from `authority` with `token` (sent as `x-auth-token`),
/// parsed as JSON. Errors name the URL.
pub async fn get_json(
    authority: &str,
    path: &str,
    token: &str,
    timeout: Duration,
) -> Result<Value, String> {
    get_json_up_to(authority, path, token, timeout, MAX_RESPONSE).await
}

/// [`get_json`] for responses of up to `max_bytes` (a user's events, say);
/// a longer one is an error, not a truncated document.
pub async fn get_json_up_to(
    authority: &str,
    path: &str,
    token: &str,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Value, String> {
    let url = format!("http://{authority}{path}");
    tokio::time::timeout(timeout, get(authority, path, token, max_bytes))
        .await
        .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
        .map_err(|e| format!("GET {url}: {e}"))
}

async fn get(authority: &str, path: &str, token: &str, max_bytes: u64) -> Result<Value, String> {
    let mut tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nx-auth-token: {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // One byte over the limit tells a long response from one of exactly it.
    tcp.take(max_bytes.saturating_add(1))
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    if raw.len() as u64 > max_bytes {
        return Err(format!("a response over {max_bytes} bytes"));
    }
    let (status, body) = parse_response(&raw)?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

/// The status code and the body (chunked transfer decoded) of a complete
/// response.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a truncated chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = rest.get(..size).ok_or("a truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            http_authority("ws://127.0.0.1:8080/").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(http_authority("http://gw:1/x").as_deref(), Some("gw:1"));
        assert_eq!(http_authority("gw:2").as_deref(), Some("gw:2"));
        assert_eq!(http_authority("wss://gw:3"), None);
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Ok((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok((401, b"{\"a\":1}".to_vec())));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
