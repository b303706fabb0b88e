//! TLS for the MQTT listeners and the upstream connection (rustls with the
//! ring provider; no process-wide default provider is installed, so nothing
//! else in the process is affected).

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read `{path}`: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: `{path}` holds no {what} in PEM form")]
    Empty {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
    #[error("no trusted root certificates (set mqtt.upstream.ca_file)")]
    NoRoots,
}

fn open(key: &'static str, path: &str) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(Path::new(path))
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

fn certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut r = open(key, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut r)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut r = open(key, path)?;
    rustls_pemfile::private_key(&mut r)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            key,
            path: path.to_owned(),
            what: "private key",
        })
}

/// The acceptor of the TLS listeners.
pub fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    let chain = certs("mqtt.tls.cert", cert)?;
    let key = private_key("mqtt.tls.key", key)?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client configuration of the upstream connection.
pub fn client_config(
    ca_file: &str,
    client_cert: &str,
    client_key: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "reading a system root certificate");
        }
        roots.add_parsable_certificates(native.certs);
    } else {
        for c in certs("mqtt.upstream.ca_file", ca_file)? {
            roots.add(c)?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = if client_cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_auth_cert(
            certs("mqtt.upstream.client_cert", client_cert)?,
            private_key("mqtt.upstream.client_key", client_key)?,
        )?
    };
    Ok(Arc::new(config))
}
