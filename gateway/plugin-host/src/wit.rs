//! Host bindings generated from `sdk-plugin/wit/plugin.wit`, the same file the
//! guest SDK is generated from: the ABI has one source of truth.

#![allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]

wasmtime::component::bindgen!({
    path: "../../sdk-plugin/wit",
    world: "emotion-plugin",
});

pub use emotion::plugin::host::LogLevel;
pub use emotion::plugin::types::{
    ActionUnit, AuValue, Emotion, Facial, HeadPose, NormalizeResult, Payload, Pcm, Physiological,
    PluginInfo, Point, Prosody, Reading, Source, Text, Voice,
};

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
