//! `profiler = "perfmap"` names a plugin's compiled functions for `perf`, so
//! a vendor's profile shows their own functions instead of JIT addresses.
//! (Its own test binary: the map file is per process.)

mod common;

use common::*;
use emotion_plugin_host::{PluginHost, Profiler};

#[test]
fn perfmap_names_the_plugins_functions() {
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    let _ = std::fs::remove_file(&map);
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = config(dir.path());
    // Compiled code read back from the cache is named too.
    cfg.profiler = Profiler::PerfMap;
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let results = host.normalize(vec![text("u1", "joy 0.8 0.7")]);
    assert!(matches!(results.as_slice(), [Ok(Some(_))]), "{results:?}");

    let names = std::fs::read_to_string(&map).expect("the perf map was written");
    // Each line is `START SIZE NAME`; the export wit-bindgen generates for
    // `normalize` is one of the names.
    assert!(
        names
            .lines()
            .any(|l| l.split_whitespace().count() >= 3 && l.contains("plugin@0.2.0#normalize")),
        "no entry for the plugin's normalize in {}:\n{}",
        map.display(),
        names.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    let _ = std::fs::remove_file(&map);
}
