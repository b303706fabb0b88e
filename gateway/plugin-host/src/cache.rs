//! On-disk cache of precompiled components.
//!
//! Compiling a component takes tens of milliseconds per plugin (more on a
//! small board); loading a precompiled one takes well under one. Entries are
//! keyed by the component's SHA-256 and by the engine's
//! `precompile_compatibility_hash` (wasmtime version, compiler settings, CPU
//! features), so a changed plugin or a changed host never loads stale code.
//!
//! Deserializing precompiled code is `unsafe` in wasmtime: the bytes become
//! native code. So we only deserialize files this host wrote: each entry
//! carries an HMAC-SHA256 made with a random key kept in the cache directory
//! (`cache.key`, mode 0600). A file someone else dropped into the directory,
//! or a truncated one, fails the check and is recompiled and replaced.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"emotion-cwasm-v1";
const TAG_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";

type HmacSha256 = Hmac<Sha256>;

/// Feeds what `Hash` writes into SHA-256: a hash that is stable across runs
/// (std's `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex of the engine's compatibility hash (first 8 bytes of its SHA-256).
pub(crate) fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex(&h.0.finalize()[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; 32],
    engine: String,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Cache,
    Compiled,
}

impl Cache {
    /// Open (creating if needed) a cache directory.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        Ok(Cache {
            dir: dir.to_owned(),
            key,
            engine: engine_fingerprint(engine),
        })
    }

    fn entry_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex(sha256), self.engine))
    }

    fn tag(&self, sha256: &[u8; 32], payload: &[u8]) -> HmacSha256 {
        // `new_from_slice` accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any size"));
        mac.update(sha256);
        mac.update(self.engine.as_bytes());
        mac.update(payload);
        mac
    }

    /// The cached component for these bytes, or a fresh compile (then stored).
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(Component, Origin), wasmtime::Error> {
        let path = self.entry_path(sha256);
        if let Ok(file) = fs::read(&path) {
            match self.load_entry(engine, &file, sha256) {
                Some(c) => return Ok((c, Origin::Cache)),
                None => {
                    tracing::warn!(path = %path.display(), "discarding a cache entry that fails its integrity check");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component, sha256) {
            // A read-only or full disk costs start-up time, not correctness.
            tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin cache");
        }
        Ok((component, Origin::Compiled))
    }

    fn load_entry(&self, engine: &Engine, file: &[u8], sha256: &[u8; 32]) -> Option<Component> {
        let rest = file.strip_prefix(MAGIC.as_slice())?;
        let (tag, payload) = rest.split_at_checked(TAG_LEN)?;
        self.tag(sha256, payload).verify_slice(tag).ok()?;
        deserialize(engine, payload)
    }

    fn store(&self, path: &Path, component: &Component, sha256: &[u8; 32]) -> std::io::Result<()> {
        let payload = component.serialize().map_err(std::io::Error::other)?;
        let tag = self.tag(sha256, &payload).finalize().into_bytes();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&tag)?;
            f.write_all(&payload)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    }

    /// Delete entries made by another engine configuration: nothing can ever
    /// load them again.
    pub(crate) fn prune_foreign(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let suffix = format!("-{}.cwasm", self.engine);
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".cwasm") && !name.ends_with(&suffix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The cache's HMAC key: read it, or create it so that concurrent starters
/// (several gateways, parallel tests) agree on one key: the new key is
/// written to a private temporary file and hard-linked into place, which
/// fails if another process got there first, whose key is then read.
fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    for _ in 0..3 {
        match fs::read(path) {
            Ok(k) => match <[u8; 32]>::try_from(k.as_slice()) {
                Ok(key) => return Ok(key),
                Err(_) => {
                    // Damaged: a new key invalidates every entry (they are
                    // recompiled), never worse than no cache.
                    let _ = fs::remove_file(path);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("key.tmp{}", std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        {
            let mut f = opts.open(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
        }
        match fs::hard_link(&tmp, path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
            }
            // No hard links here (FAT, some network mounts): a rename is
            // good enough; the race only costs a recompilation.
            Err(_) => {
                fs::rename(&tmp, path)?;
                return Ok(key);
            }
        }
    }
    Err(std::io::Error::other("cannot settle on a cache key"))
}

/// Deserialize precompiled code that passed the HMAC check.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> Option<Component> {
    // SAFETY: `payload` is exactly what `Component::serialize` produced in
    // `Cache::store` for this engine configuration: its HMAC, made with the
    // cache's secret key over the component hash, the engine fingerprint and
    // the payload, verified just before this call. wasmtime additionally
    // checks its version and configuration and fails cleanly on a mismatch.
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cache entry does not deserialize");
            None
        }
    }
}
