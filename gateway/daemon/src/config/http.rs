//! `[http]`: the HTTP/WebSocket listener, its TLS and the limits applied to
//! every connection before it authenticates (run by [`crate::edge`]).

use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// Listen off loopback without TLS anyway (tokens and events then travel
    /// in clear); refused at start otherwise.
    pub allow_plaintext: bool,
    pub metrics_interval: Dur,
    pub max_message_bytes: usize,
    pub max_in_flight_per_connection: usize,
    pub tls: HttpTlsConfig,
    pub limits: HttpLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM certificate chain and key; both empty: plain HTTP.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CAs of client certificates (mutual TLS); empty: none asked for.
    pub client_ca: PathBuf,
    pub require_client_cert: bool,
    /// How often the files are checked for a change; "0s": never.
    pub reload_interval: Dur,
}

impl HttpTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() || !self.key.as_os_str().is_empty()
    }

    /// The files for [`emotion_tls::ReloadingTls`], when TLS is on.
    pub fn files(&self) -> Option<emotion_tls::ServerFiles> {
        self.enabled().then(|| emotion_tls::ServerFiles {
            prefix: "http.tls",
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: (!self.client_ca.as_os_str().is_empty()).then(|| self.client_ca.clone()),
            require_client_cert: self.require_client_cert,
            // HTTP/1.1 only: WebSockets upgrade over it.
            alpn: vec![b"http/1.1".to_vec()],
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub overflow_connections: usize,
    pub header_read_timeout: Dur,
    pub tls_handshake_timeout: Dur,
    pub ws_ping_interval: Dur,
    pub ws_idle_timeout: Dur,
}

impl HttpConfig {
    /// Every problem of this section (the listen address is checked by the caller).
    pub fn problems(&self, off_loopback: bool) -> Vec<String> {
        let mut p = Vec::new();
        let t = &self.tls;
        if t.enabled() && (t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty()) {
            p.push("http.tls.cert and http.tls.key must be set together".into());
        }
        if !t.client_ca.as_os_str().is_empty() && !t.enabled() {
            p.push("http.tls.client_ca needs http.tls.cert and http.tls.key".into());
        }
        if t.require_client_cert && t.client_ca.as_os_str().is_empty() {
            p.push("http.tls.require_client_cert needs http.tls.client_ca".into());
        }
        if off_loopback && !t.enabled() && !self.allow_plaintext {
            p.push(format!(
                "http.listen {} is not a loopback address and [http.tls] is not set: tokens and \
                 events would travel in clear. Set http.tls.cert and http.tls.key, or \
                 http.allow_plaintext = true (for example behind a TLS proxy on this host)",
                self.listen
            ));
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            p.push("http.limits.max_connections must be at least 1".into());
        }
        if l.max_connections_per_source == 0 || l.max_connections_per_source > l.max_connections {
            p.push(format!(
                "http.limits.max_connections_per_source must be between 1 and max_connections ({}), got {}",
                l.max_connections, l.max_connections_per_source
            ));
        }
        for (name, d) in [
            ("header_read_timeout", l.header_read_timeout),
            ("tls_handshake_timeout", l.tls_handshake_timeout),
            ("ws_ping_interval", l.ws_ping_interval),
        ] {
            if d.0.is_zero() {
                p.push(format!("http.limits.{name} must be longer than 0s"));
            }
        }
        if l.ws_idle_timeout.0 <= l.ws_ping_interval.0 {
            p.push(format!(
                "http.limits.ws_idle_timeout ({:?}) must be longer than ws_ping_interval ({:?}), \
                 or a healthy client would be closed between two pings",
                l.ws_idle_timeout.0, l.ws_ping_interval.0
            ));
        }
        p
    }
}
