//! Shared by the host's integration tests: the plugins compiled from this
//! repository (never checked-in binaries), and small helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use emotion_core::reading::RawReading;
use emotion_plugin_host::HostConfig;

/// Every component the tests use, as `scripts/build-plugins.sh` names them.
pub const PLUGINS: [&str; 14] = [
    "template",
    "echo",
    "echo-abi1",
    "echo-v2",
    "echo-faulty",
    "lexicon",
    "infinite-loop",
    "memory-hog",
    "memory-declared",
    "trap-third",
    "wrong-abi",
    "nan-output",
    "out-of-range",
    "wrong-count",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no workspace root above {}", env!("CARGO_MANIFEST_DIR")))
}

/// The target directory this test binary was built into: CARGO_TARGET_DIR,
/// or the `target/` above `target/debug/deps/<test binary>`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("test binary under target/<profile>/deps")
}

/// Build every plugin (once per test process, and one process at a time),
/// and return the directory of the components. Fails loudly: a test that
/// needs a plugin never skips because it could not be built.
pub fn built_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir();
        std::fs::create_dir_all(&target).expect("target dir");
        // Several test binaries (or nextest processes) may get here at once.
        let lock = std::fs::File::create(target.join("build-plugins.lock")).expect("lock file");
        lock.lock().expect("lock");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/build-plugins.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cannot run scripts/build-plugins.sh");
        assert!(
            out.status.success(),
            "scripts/build-plugins.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for p in PLUGINS {
            let f = locate(&target, p);
            assert!(
                f.is_file(),
                "{} missing after scripts/build-plugins.sh",
                f.display()
            );
        }
        eprintln!("plugins built in {:?}", started.elapsed());
        target
    })
}

/// Real plugins are built into `target/plugins`, the test ones into
/// `target/test-plugins`.
fn locate(target: &Path, name: &str) -> PathBuf {
    let real = target.join("plugins").join(format!("{name}.wasm"));
    if real.is_file() {
        real
    } else {
        target.join("test-plugins").join(format!("{name}.wasm"))
    }
}

pub fn component(name: &str) -> PathBuf {
    locate(built_plugins(), name)
}

/// A plugins directory holding copies of the named components (as
/// `file name -> component`).
pub fn plugin_dir(plugins: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, plugin) in plugins {
        std::fs::copy(component(plugin), dir.path().join(format!("{file}.wasm")))
            .expect("copy component");
    }
    dir
}

/// A cache shared by the tests of this binary: compiled code is keyed by
/// content, so sharing only saves time (debug builds compile slowly).
pub fn shared_cache() -> PathBuf {
    target_dir().join("plugin-test-cache")
}

pub fn config(dir: &Path) -> HostConfig {
    HostConfig {
        dir: dir.to_owned(),
        cache_dir: Some(shared_cache()),
        watch_interval: emotion_plugin_host::Dur(Duration::ZERO),
        ..HostConfig::default()
    }
}

pub fn reading(json: &str) -> RawReading {
    RawReading::from_json_str(json, None).unwrap_or_else(|e| panic!("{json}: {e}"))
}

pub fn text(user: &str, content: &str) -> RawReading {
    reading(
        &serde_json::json!({"user_id": user, "source": "text", "payload": {"text": content}})
            .to_string(),
    )
}

pub fn survey(v: u8, a: u8) -> RawReading {
    reading(&format!(
        r#"{{"user_id": "u1", "source": "survey", "payload": {{"json": {{"sam_valence": {v}, "sam_arousal": {a}}}}}}}"#
    ))
}

/// Poll `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
