//! The text-encoder plugin through the host gives what the same code gives
//! natively. Through the host its int8 products run as WebAssembly relaxed
//! SIMD (`i32x4.relaxed_dot_i8x16_i7x16_add_s`, one `vpdpbusd` on a CPU with
//! VNNI through the gateway's patched Cranelift glue); natively, as a plain
//! loop. The integer sums are exact either way, so a kernel or lowering that
//! got an operand's sign or a lane wrong shows here.

mod common;

use std::time::Duration;

use common::{built_plugins, config, target_dir, text};
use emotion_plugin_host::{Dur, PluginHost};
use emotion_plugin_text_encoder::{Settings, analyze_many};

#[test]
fn the_text_encoder_reads_through_the_host_as_natively() {
    built_plugins();
    let component = target_dir().join("optional-plugins/text-encoder.wasm");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&component, dir.path().join("text-encoder.wasm")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/build-plugins.sh builds it)",
            component.display()
        )
    });
    let mut cfg = config(dir.path());
    cfg.deadline = Dur(Duration::from_secs(30));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");

    let texts = [
        "We won the match!!! Absolutely amazing.",
        "I am so tired of waiting, this is hopeless.",
        "The meeting is at 10 in room 4.",
        "Café naïve résumé, “quotes” and 123,456.78 — 😍",
        "She screamed in terror as the door burst open.",
    ];
    let through_host = host.normalize(texts.iter().map(|t| text("u1", t)).collect());
    let inputs: Vec<_> = texts.iter().map(|t| Ok((*t, None))).collect();
    let native = analyze_many(&inputs, &Settings::default());
    assert_eq!(through_host.len(), texts.len());
    for ((t, h), n) in texts.iter().zip(&through_host).zip(&native) {
        let h = h
            .as_ref()
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .as_ref()
            .unwrap_or_else(|| panic!("{t}: no emotion"));
        let n = n
            .as_ref()
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .as_ref()
            .unwrap_or_else(|| panic!("{t}: no emotion natively"));
        assert!(
            (h.valence - n.valence).abs() < 1e-6 && (h.arousal - n.arousal).abs() < 1e-6,
            "{t}: host ({}, {}) against native ({}, {})",
            h.valence,
            h.arousal,
            n.valence,
            n.arousal
        );
    }
}
