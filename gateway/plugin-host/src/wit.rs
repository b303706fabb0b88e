//! Host bindings generated from `sdk-plugin/wit/plugin.wit` (ABI 2), the same
//! file the guest SDK is generated from: the ABI has one source of truth. The
//! frozen ABI 1 contract (`sdk-plugin/wit-abi1/plugin.wit`) has bindings of
//! its own in [`abi1`], so plugins built for it keep loading.

#![allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]

wasmtime::component::bindgen!({
    path: "../../sdk-plugin/wit",
    world: "emotion-plugin",
});

pub use emotion::plugin::host::LogLevel;
pub use emotion::plugin::types::{
    ActionUnit, AuValue, Emotion, Facial, HeadPose, Label, NormalizeResult, Payload, Pcm,
    Physiological, PluginInfo, Point, Prosody, Reading, Source, Text, Voice,
};

/// ABI 1 (`emotion:plugin@0.1.0`): only what differs from ABI 2 is used, the
/// results (`label: option<string>`, extras as `(key, JSON text)` pairs), the
/// plugin info and the host imports. Its readings are the same records as
/// ABI 2's, so the host hands ABI 2 [`Reading`]s to an ABI 1 component
/// unchanged (the component model checks records by structure, not by Rust
/// type; see `runtime`).
pub mod abi1 {
    wasmtime::component::bindgen!({
        path: "../../sdk-plugin/wit-abi1",
        world: "emotion-plugin",
    });

    pub use emotion::plugin::host::LogLevel;
    pub use emotion::plugin::types::{Emotion, NormalizeResult, PluginInfo};

    /// The interface a plugin exports, as its components name it.
    pub const PLUGIN_INTERFACE: &str = "emotion:plugin/plugin@0.1.0";
}

/// The gateway's label for a WIT label. The WIT enum lists the gateway's 23
/// labels in `EmotionLabel::ALL`'s order (a test reads the WIT text), and a
/// generated enum's discriminant is its case's position, so this is an index.
pub fn label_to_core(l: Label) -> emotion_core::EmotionLabel {
    emotion_core::EmotionLabel::ALL
        .get(l as usize)
        .copied()
        // Unreachable while the orders agree (tested); never a panic.
        .unwrap_or(emotion_core::EmotionLabel::Unknown)
}

/// The WIT source enum and the gateway's are the same eight names.
pub fn source_to_core(s: Source) -> emotion_core::Source {
    use emotion_core::Source as C;
    match s {
        Source::Text => C::Text,
        Source::Voice => C::Voice,
        Source::Facial => C::Facial,
        Source::Physiological => C::Physiological,
        Source::Survey => C::Survey,
        Source::Biometric => C::Biometric,
        Source::Behavioral => C::Behavioral,
        Source::Contextual => C::Contextual,
    }
}

pub fn source_from_core(s: emotion_core::Source) -> Source {
    use emotion_core::Source as C;
    match s {
        C::Text => Source::Text,
        C::Voice => Source::Voice,
        C::Facial => Source::Facial,
        C::Physiological => Source::Physiological,
        C::Survey => Source::Survey,
        C::Biometric => Source::Biometric,
        C::Behavioral => Source::Behavioral,
        C::Contextual => Source::Contextual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The case names of `enum label` in the WIT text, in order.
    fn wit_label_names() -> Vec<String> {
        let wit = include_str!("../../../sdk-plugin/wit/plugin.wit");
        let body = wit
            .split_once("enum label {")
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(body, _)| body)
            .expect("an `enum label` in plugin.wit");
        body.lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn wit_labels_are_the_gateway_labels_in_order() {
        let gateway: Vec<&str> = emotion_core::EmotionLabel::ALL
            .iter()
            .map(|l| l.as_str())
            .collect();
        assert_eq!(wit_label_names(), gateway);
        // And the generated enum's positions follow the WIT text.
        for (l, name) in [
            (Label::Joy, "joy"),
            (Label::Unknown, "unknown"),
            (Label::Calm, "calm"),
            (Label::Stress, "stress"),
        ] {
            assert_eq!(label_to_core(l).as_str(), name);
        }
    }
}
