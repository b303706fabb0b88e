//! Plugin signatures: ed25519 over the component's bytes, in a detached
//! `NAME.wasm.sig` file beside `NAME.wasm`.
//!
//! File formats (text, one base64 value on its first non-comment line, so the
//! files are easy to inspect, paste into a configuration and produce with
//! other tools — e.g. `openssl pkeyutl -sign -rawin` makes the same signature):
//!
//! | file | content |
//! |---|---|
//! | `KEY.key` (mode 0600) | `ed25519-secret:` and the 32-byte ed25519 seed |
//! | `KEY.pub` | the 32-byte public key; this string goes into `trusted_keys` |
//! | `NAME.wasm.sig` | the 64-byte signature of the exact bytes of `NAME.wasm` |

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Errors of [`keygen`], [`sign_file`] and key parsing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("no randomness available to generate a key: {0}")]
    Random(String),
    #[error("key name `{0}` must be letters, digits, `-`, `_` or `.`")]
    BadName(String),
}

/// Why a component's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned: no {0} beside it")]
    Missing(String),
    #[error("signature file {file} is malformed: {message}")]
    Malformed { file: String, message: String },
    #[error("signature does not verify against any trusted key ({trusted} configured)")]
    NotTrusted { trusted: usize },
}

/// A public key the host trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    key: VerifyingKey,
    /// Short fingerprint: the first 8 bytes of SHA-256 of the key, in hex.
    pub id: String,
}

impl TrustedKey {
    /// Parse a base64 public key (optionally prefixed `ed25519:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text.strip_prefix("ed25519:").unwrap_or(text);
        let bytes = decode_exact::<32>(text)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("not a valid ed25519 public key: {e}"))?;
        Ok(TrustedKey {
            key,
            id: fingerprint(&bytes),
        })
    }
}

fn fingerprint(public: &[u8; 32]) -> String {
    Sha256::digest(public)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_exact<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("expected {N} bytes, got {}", bytes.len()))
}

/// The first line that is neither empty nor a `#` comment.
fn payload_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
}

/// The detached signature path of a component: `NAME.wasm.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut s = component.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Check `signature` (the text of a `.sig` file) over `component` against the
/// trusted keys; returns the key that signed it.
pub fn verify<'k>(
    component: &[u8],
    signature: &str,
    signature_file: &str,
    trusted: &'k [TrustedKey],
) -> Result<&'k TrustedKey, SignatureError> {
    let bytes = decode_exact::<64>(payload_line(signature)).map_err(|message| {
        SignatureError::Malformed {
            file: signature_file.to_owned(),
            message,
        }
    })?;
    let sig = Signature::from_bytes(&bytes);
    trusted
        .iter()
        // verify_strict also refuses weak keys and malleable signatures.
        .find(|k| k.key.verify_strict(component, &sig).is_ok())
        .ok_or(SignatureError::NotTrusted {
            trusted: trusted.len(),
        })
}

/// Marks the secret key line, so a public key file passed by mistake is
/// refused instead of silently signing with the wrong key.
const SECRET_PREFIX: &str = "ed25519-secret:";

/// Files written by [`keygen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub secret_key_file: PathBuf,
    pub public_key_file: PathBuf,
    /// The public key, base64: the value for `trusted_keys`.
    pub public_key: String,
    pub fingerprint: String,
}

/// Generate a signing key: writes `DIR/NAME.key` (secret, mode 0600) and
/// `DIR/NAME.pub`. Never overwrites an existing key.
pub fn keygen(dir: &Path, name: &str) -> Result<KeyPair, SignError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(SignError::BadName(name.to_owned()));
    }
    let secret_key_file = dir.join(format!("{name}.key"));
    let public_key_file = dir.join(format!("{name}.pub"));
    for p in [&secret_key_file, &public_key_file] {
        if p.exists() {
            return Err(SignError::Exists { path: p.clone() });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    let public_key = B64.encode(public);
    fs::create_dir_all(dir).map_err(|source| SignError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_new(
        &secret_key_file,
        format!(
            "# emotion gateway plugin signing key (ed25519 seed, base64). Keep it secret.\n{SECRET_PREFIX}{}\n",
            B64.encode(seed)
        )
        .as_bytes(),
        true,
    )?;
    write_new(
        &public_key_file,
        format!(
            "# emotion gateway plugin public key (ed25519, base64): put it in [plugins] trusted_keys\n{public_key}\n"
        )
        .as_bytes(),
        false,
    )?;
    Ok(KeyPair {
        secret_key_file,
        public_key_file,
        public_key,
        fingerprint: fingerprint(&public),
    })
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), SignError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|source| SignError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Read a public key file written by [`keygen`].
pub fn read_public_key(path: &Path) -> Result<TrustedKey, SignError> {
    let text = fs::read_to_string(path).map_err(|source| SignError::Read {
        path: path.to_owned(),
        source,
    })?;
    TrustedKey::parse(payload_line(&text)).map_err(|message| SignError::BadFile {
        path: path.to_owned(),
        message,
    })
}

/// Sign `component` with the secret key in `secret_key_file`; writes and
/// returns `COMPONENT.sig`.
pub fn sign_file(component: &Path, secret_key_file: &Path) -> Result<PathBuf, SignError> {
    let text = fs::read_to_string(secret_key_file).map_err(|source| SignError::Read {
        path: secret_key_file.to_owned(),
        source,
    })?;
    let seed = payload_line(&text)
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("expected a line `{SECRET_PREFIX}…` (is this a public key?)"))
        .and_then(decode_exact::<32>)
        .map_err(|message| SignError::BadFile {
            path: secret_key_file.to_owned(),
            message: format!("not a signing key: {message}"),
        })?;
    let key = SigningKey::from_bytes(&seed);
    let bytes = fs::read(component).map_err(|source| SignError::Read {
        path: component.to_owned(),
        source,
    })?;
    let sig = key.sign(&bytes);
    let path = signature_path(component);
    // Write then rename, so a watching gateway never reads half a signature.
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    fs::write(&tmp, format!("{}\n", B64.encode(sig.to_bytes())))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|source| SignError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_verify_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = keygen(dir.path(), "vendor").expect("keygen");
        assert!(matches!(
            keygen(dir.path(), "vendor"),
            Err(SignError::Exists { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&pair.secret_key_file)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let trusted = read_public_key(&pair.public_key_file).expect("pub");
        assert_eq!(trusted, TrustedKey::parse(&pair.public_key).expect("parse"));
        assert_eq!(trusted.id, pair.fingerprint);

        let component = dir.path().join("p.wasm");
        fs::write(&component, b"\0asm pretend component").expect("write");
        let sig_path = sign_file(&component, &pair.secret_key_file).expect("sign");
        assert_eq!(sig_path, dir.path().join("p.wasm.sig"));
        let sig = fs::read_to_string(&sig_path).expect("sig");
        let keys = [trusted];
        assert_eq!(
            verify(b"\0asm pretend component", &sig, "p.wasm.sig", &keys).map(|k| &k.id),
            Ok(&pair.fingerprint)
        );
        assert_eq!(
            verify(b"\0asm tampered component", &sig, "p.wasm.sig", &keys),
            Err(SignatureError::NotTrusted { trusted: 1 })
        );
        let other = keygen(dir.path(), "other").expect("keygen");
        let other_keys = [TrustedKey::parse(&other.public_key).expect("parse")];
        assert!(verify(b"\0asm pretend component", &sig, "s", &other_keys).is_err());
        assert!(matches!(
            verify(b"x", "garbage", "p.wasm.sig", &keys),
            Err(SignatureError::Malformed { .. })
        ));
        // A public key is not a signing key.
        assert!(matches!(
            sign_file(&component, &pair.public_key_file),
            Err(SignError::BadFile { .. })
        ));
    }

    #[test]
    fn bad_names_and_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["", "../x", ".hidden", "a b"] {
            assert!(matches!(
                keygen(dir.path(), name),
                Err(SignError::BadName(_))
            ));
        }
        assert!(TrustedKey::parse("AAAA").is_err());
        assert!(TrustedKey::parse("not base64").is_err());
    }
}
