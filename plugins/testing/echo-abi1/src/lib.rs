//! Test plugin `echo-abi1` 1.0.0: the `echo` test plugin (see
//! `plugins/testing/echo/src/echo.rs`) built for ABI 1 (`emotion:plugin@0.1.0`,
//! `sdk-plugin/wit-abi1/plugin.wit`), so the host's tests prove that a
//! component built for the old contract still loads and answers like the
//! ABI 2 build.
//!
//! A text reading's content decides the answer:
//! * `"V A"` (two numbers): an emotion at (V, A) with no label;
//! * `"LABEL V A"` or `"LABEL"`: that label, passed through unchecked (ABI 1
//!   labels are strings: the host judges unknown ones);
//! * `"none"`: no emotion; `"error MESSAGE"`: an error answer;
//! * `"settings"`: an error answer quoting `host.settings` (and a log line),
//!   which proves the ABI 1 host imports are linked.
//!
//! Every emotion carries the content back as the extra field `echo`.

#![allow(unsafe_code)] // the generated bindings and the ABI section

wit_bindgen::generate!({
    path: "../../../sdk-plugin/wit-abi1",
    world: "emotion-plugin",
});

use emotion::plugin::host;
use emotion::plugin::types::{Emotion, NormalizeResult, Payload, PluginInfo, Reading, Source};

/// The plugin; exported only by WebAssembly builds (see below).
#[derive(Debug)]
pub struct EchoAbi1;

impl exports::emotion::plugin::plugin::Guest for EchoAbi1 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "echo-abi1".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            abi_version: 1,
            sources: vec![Source::Text],
            settings_schema: "{}".into(),
        }
    }

    fn normalize(readings: Vec<Reading>) -> Vec<NormalizeResult> {
        readings.into_iter().map(echo).collect()
    }
}

/// The answer for one reading (see the crate docs).
pub fn echo(reading: Reading) -> NormalizeResult {
    let Payload::Text(text) = reading.payload else {
        return NormalizeResult::Error("echo reads text payloads only".into());
    };
    let content = text.content;
    if content == "none" {
        return NormalizeResult::None;
    }
    if content == "settings" {
        host::log(host::LogLevel::Info, "echo-abi1 reads its settings");
        return NormalizeResult::Error(format!("settings: {}", host::settings()));
    }
    if let Some(message) = content.strip_prefix("error ") {
        return NormalizeResult::Error(message.into());
    }
    let words: Vec<&str> = content.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<f64>().ok());
    let (label, valence, arousal) = match (words.first(), number(0)) {
        (Some(_), Some(v)) => (None, v, number(1).unwrap_or(0.5)),
        (Some(label), None) => (
            Some((*label).to_owned()),
            number(1).unwrap_or(0.0),
            number(2).unwrap_or(0.5),
        ),
        (None, _) => return NormalizeResult::Error("empty text".into()),
    };
    // JSON-quote the content by hand: no JSON dependency.
    let quoted = format!("\"{}\"", content.replace('\\', "\\\\").replace('"', "\\\""));
    NormalizeResult::Emotion(Emotion {
        label,
        valence,
        arousal,
        confidence: 0.7,
        extra: vec![("echo".into(), quoted)],
    })
}

// Only WebAssembly builds export the component's functions (native linkers
// cannot export `name:pkg/iface#func` symbols) and carry the ABI stamp, as
// the SDK's `export_plugin!` does.
#[cfg(target_family = "wasm")]
export!(EchoAbi1);

#[cfg(target_family = "wasm")]
#[unsafe(link_section = "emotion-plugin-abi")]
#[used]
static EMOTION_PLUGIN_ABI: [u8; 4] = 1u32.to_le_bytes();
