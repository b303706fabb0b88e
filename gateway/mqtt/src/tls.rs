//! TLS for the MQTT listeners and the upstream connection, from the
//! gateway's TLS crate (`emotion-tls`): the listeners' certificate is
//! reloaded when its files change, like the HTTP listener's.

use std::path::Path;
use std::sync::Arc;

use emotion_tls::tokio_rustls::rustls::ClientConfig;
use emotion_tls::{ReloadingTls, ServerFiles};

pub use emotion_tls::TlsError;

/// The reloading configuration of the TLS listeners.
pub fn listeners(cert: &str, key: &str) -> Result<Arc<ReloadingTls>, TlsError> {
    ReloadingTls::load(ServerFiles {
        prefix: "mqtt.tls",
        cert: cert.into(),
        key: key.into(),
        client_ca: None,
        require_client_cert: false,
        alpn: vec![],
    })
    .map(Arc::new)
}

/// The client configuration of the upstream connection; `ca_file` "" uses
/// the system's roots, `client_cert` "" presents no certificate.
pub fn client_config(
    ca_file: &str,
    client_cert: &str,
    client_key: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let client = (!client_cert.is_empty()).then(|| {
        (
            "mqtt.upstream",
            Path::new(client_cert),
            Path::new(client_key),
        )
    });
    emotion_tls::client_config(
        "mqtt.upstream.ca_file",
        (!ca_file.is_empty()).then(|| Path::new(ca_file)),
        client,
    )
}
