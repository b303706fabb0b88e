//! The text-encoder plugin through the host gives what the same code gives
//! natively. Through the host its int8 products run as WebAssembly relaxed
//! SIMD (`i32x4.relaxed_dot_i8x16_i7x16_add_s`, one `vpdpbusd` on a CPU with
//! VNNI through the gateway's patched Cranelift glue); natively, as a plain
//! loop. The integer sums are exact either way, so a kernel or lowering that
//! got an operand's sign or a lane wrong shows here.

mod common;
// EmoBank's reader and Pearson r, shared with the plugin's examples and host bench.
#[path = "../../../plugins/text-encoder/examples/common/mod.rs"]
#[allow(dead_code)]
mod emobank;

use std::time::Duration;

use common::{built_plugins, config, target_dir, text};
use emotion_plugin_host::{Dur, PluginHost};
use emotion_plugin_text_encoder::{Settings, analyze_many};

/// A host serving the built text-encoder component alone (in `dir`).
fn text_encoder_host(dir: &tempfile::TempDir) -> PluginHost {
    built_plugins();
    let component = target_dir().join("optional-plugins/text-encoder.wasm");
    std::fs::copy(&component, dir.path().join("text-encoder.wasm")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/build-plugins.sh builds it)",
            component.display()
        )
    });
    let mut cfg = config(dir.path());
    cfg.deadline = Dur(Duration::from_secs(30));
    PluginHost::new(cfg, "gw-test").expect("host starts")
}

#[test]
fn the_text_encoder_reads_through_the_host_as_natively() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = text_encoder_host(&dir);

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

#[test]
fn the_text_encoder_meets_its_emobank_dev_targets_through_the_host() {
    // Issue 16's targets on EmoBank's dev split (nothing was fitted on it;
    // the head's method was chosen with it in view, see the plugin's
    // README): Pearson r >= 0.70 for valence and >= 0.54 for arousal, read from
    // the gateway's events (calibrated to the circumplex) as the host bench
    // reads them. Measured 0.716 / 0.548; a refitted head, a changed kernel
    // or a broken merge of the adapters that loses accuracy fails here.
    // EmoBank as the plugin's quality examples and host bench read it
    // (`$EMOBANK_CSV`, else `../shared/data` beside the repository; a
    // missing file ends the test binary with the path it looked at).
    let (_, all) = emobank::load_emobank();
    let rows: Vec<&emobank::Row> = all.iter().filter(|r| r.split == "dev").collect();
    assert_eq!(rows.len(), 1000, "EmoBank's dev split");

    let dir = tempfile::tempdir().expect("tempdir");
    let host = text_encoder_host(&dir);
    let (mut pv, mut pa, mut yv, mut ya) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for chunk in rows.chunks(100) {
        let out = host.normalize(chunk.iter().map(|r| text("u1", &r.text)).collect());
        for (res, row) in out.iter().zip(chunk) {
            // A sentence with nothing to read ("..") counts as neutral.
            let (ev, ea) = match res
                .as_ref()
                .unwrap_or_else(|e| panic!("{:?}: {e}", row.text))
            {
                Some(e) => (e.valence, e.arousal),
                None => (0.0, 0.5),
            };
            pv.push(ev);
            pa.push(ea);
            yv.push(row.v);
            ya.push(row.a);
        }
    }
    let (rv, ra) = (emobank::pearson(&pv, &yv), emobank::pearson(&pa, &ya));
    assert!(
        rv >= 0.70 && ra >= 0.54,
        "EmoBank dev through the host: valence r {rv:.3} (target 0.70), arousal r {ra:.3} (target 0.54)"
    );
}
