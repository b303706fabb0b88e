//! TLS for the gateway's listeners (HTTP/WebSocket and MQTT) and its
//! upstream MQTT client, with rustls and the ring provider. No process-wide
//! default provider is installed, so nothing else in the process is affected.
//!
//! A listener holds a [`ReloadingTls`]: the certificate, key and (for mutual
//! TLS) client CA files are read at start, and again whenever one of them
//! changes, so a renewed certificate is served to new connections without a
//! restart while connections already open keep theirs. A file that fails to
//! load on reload leaves the previous configuration in place.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

pub use tokio_rustls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read `{path}`: {source}")]
    Read {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: `{path}` holds no {what} in PEM form")]
    Empty {
        key: String,
        path: String,
        what: &'static str,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
    #[error("{key}: client certificate verification: {reason}")]
    Verifier { key: String, reason: String },
    #[error("no trusted root certificates (set {0})")]
    NoRoots(&'static str),
}

fn open(key: &str, path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key: key.to_owned(),
            path: path.display().to_string(),
            source,
        })
}

/// Every certificate of the PEM file at `path`; `key` names the setting in
/// errors. An empty file is an error.
pub fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut r = open(key, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut r)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            key: key.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key: key.to_owned(),
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key of the PEM file at `path`.
pub fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut r = open(key, path)?;
    rustls_pemfile::private_key(&mut r)
        .map_err(|source| TlsError::Read {
            key: key.to_owned(),
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            key: key.to_owned(),
            path: path.display().to_string(),
            what: "private key",
        })
}

/// The SHA-256 of a certificate's DER bytes: how a client certificate is
/// named in the configuration (`openssl x509 -noout -fingerprint -sha256`
/// prints the same bytes).
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// Parse a SHA-256 fingerprint written as 64 hex digits, with or without
/// `:` separators, in either case.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The files of a TLS listener, and the configuration prefix that names them
/// in errors (`http.tls`, `mqtt.tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub prefix: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs whose client certificates are accepted (mutual TLS); `None`: no
    /// client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse a handshake without a client certificate
    /// (otherwise one is asked for but optional).
    pub require_client_cert: bool,
    /// ALPN protocols offered (`http/1.1` for the HTTP listener; none for
    /// MQTT, whose clients may offer names of their own).
    pub alpn: Vec<Vec<u8>>,
}

impl ServerFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }

    /// Build the server configuration from the files as they are now.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = certs(&format!("{}.cert", self.prefix), &self.cert)?;
        let key = private_key(&format!("{}.key", self.prefix), &self.key)?;
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = match &self.client_ca {
            None => builder.with_no_client_auth().with_single_cert(chain, key)?,
            Some(ca) => {
                let ca_key = format!("{}.client_ca", self.prefix);
                let mut roots = RootCertStore::empty();
                for c in certs(&ca_key, ca)? {
                    roots.add(c)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|e| TlsError::Verifier {
                    key: ca_key,
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)?
            }
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }

    /// Modification time and length of each file (a rotation by rename
    /// changes at least one), `None` for a file that cannot be read now.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// A listener's TLS configuration, replaced when its files change.
#[derive(Debug)]
pub struct ReloadingTls {
    files: ServerFiles,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ReloadingTls {
    /// Load the files now; an error here stops the start.
    pub fn load(files: ServerFiles) -> Result<Self, TlsError> {
        let stamps = files.stamps();
        let config = files.load()?;
        Ok(ReloadingTls {
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })
    }

    /// The acceptor for a new connection, with the configuration of now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reload if a file changed since the last load. `Ok(true)`: the new
    /// configuration is in use; an error keeps the old one (and the change
    /// is tried again at the next call, in case the files were caught
    /// half-written).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.files.stamps();
        if *self.stamps.lock() == now {
            return Ok(false);
        }
        let config = self.files.load()?;
        *self.current.write() = Arc::new(config);
        *self.stamps.lock() = now;
        Ok(true)
    }

    /// Check the files every `every` until `shutdown`, logging reloads and
    /// failures.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(
                    listener = self.files.prefix,
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    listener = self.files.prefix,
                    error = %e,
                    "TLS files changed but do not load; still serving the previous certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    }
}

/// A client configuration trusting `ca_file` (or, when `None`, the system's
/// roots), presenting `client` (certificate, key) if given. `ca_key` names
/// the CA setting in errors.
pub fn client_config(
    ca_key: &'static str,
    ca_file: Option<&Path>,
    client: Option<(&str, &Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading a system root certificate");
            }
            roots.add_parsable_certificates(native.certs);
        }
        Some(ca) => {
            for c in certs(ca_key, ca)? {
                roots.add(c)?;
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots(ca_key));
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((prefix, cert, key)) => builder.with_client_auth_cert(
            certs(&format!("{prefix}.client_cert"), cert)?,
            private_key(&format!("{prefix}.client_key"), key)?,
        )?,
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).expect("write");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write");
        (cert, key, c.cert.der().clone())
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let fp = [0xabu8; 32];
        let plain = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&plain), Some(fp));
        assert_eq!(parse_fingerprint(&colons), Some(fp));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn missing_and_empty_files_name_their_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let files = ServerFiles {
            prefix: "http.tls",
            cert: empty.clone(),
            key: dir.path().join("missing.key"),
            client_ca: None,
            require_client_cert: false,
            alpn: vec![],
        };
        let e = files.load().expect_err("empty cert").to_string();
        assert!(
            e.contains("http.tls.cert") && e.contains("no certificate"),
            "{e}"
        );
        let (cert, _, _) = write_cert(dir.path(), "a.example");
        let files = ServerFiles { cert, ..files };
        let e = files.load().expect_err("missing key").to_string();
        assert!(
            e.contains("http.tls.key") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn reload_follows_changed_files_and_keeps_the_old_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, _) = write_cert(dir.path(), "a.example");
        let tls = ReloadingTls::load(ServerFiles {
            prefix: "http.tls",
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
            require_client_cert: false,
            alpn: vec![],
        })
        .expect("load");
        let served = |t: &ReloadingTls| {
            let cfg = t.current.read().clone();
            Arc::as_ptr(&cfg) as usize
        };
        let before = served(&tls);
        assert!(!tls.reload_if_changed().expect("unchanged"));
        assert_eq!(served(&tls), before);
        // A broken certificate file: the old configuration stays.
        std::fs::write(&cert, "not a certificate").expect("write");
        assert!(tls.reload_if_changed().is_err());
        assert_eq!(served(&tls), before);
        // A new certificate and key: loaded.
        let (c2, k2, _) = write_cert(dir.path(), "b.example");
        std::fs::rename(c2, &cert).expect("rename");
        std::fs::rename(k2, &key).expect("rename");
        assert!(tls.reload_if_changed().expect("reload"));
        assert_ne!(served(&tls), before);
    }
}
