//! Guest SDK for emotion gateway plugins.
//!
//! A plugin is a WebAssembly component that turns raw readings (facial action
//! units, voice prosody, text, physiological samples, survey answers, …) into
//! emotions on the circumplex model. This crate hides the component-model
//! plumbing behind one trait and one macro:
//!
//! ```no_run
//! use emotion_plugin_sdk::{Emotion, Info, Outcome, Payload, Plugin, Reading, Source};
//!
//! struct Shouty;
//!
//! impl Plugin for Shouty {
//!     fn info() -> Info {
//!         Info::new("shouty", env!("CARGO_PKG_VERSION"), [Source::Text])
//!     }
//!
//!     fn normalize_one(reading: Reading) -> Outcome {
//!         match reading.payload {
//!             Payload::Text(t) if t.content.ends_with('!') => {
//!                 Outcome::Emotion(Emotion::new(0.3, 0.8, 0.6))
//!             }
//!             Payload::Text(_) => Outcome::None,
//!             _ => Outcome::error("expected a text payload"),
//!         }
//!     }
//! }
//!
//! emotion_plugin_sdk::export_plugin!(Shouty);
//! ```
//!
//! Build it for `wasm32-unknown-unknown` and turn it into a component with
//! `scripts/build-plugins.sh` (see this crate's README). The ABI is defined by
//! `wit/plugin.wit` (package [`WIT_PACKAGE`]); [`export_plugin!`] stamps
//! [`ABI_VERSION`] into a custom section the host reads before it instantiates
//! anything.

pub mod bindings {
    //! The raw bindings generated from `wit/plugin.wit`. Plugins normally use
    //! the re-exports at the crate root instead.
    #![allow(missing_docs, missing_debug_implementations, unsafe_code)]
    #![allow(clippy::all)]

    wit_bindgen::generate!({
        path: "wit",
        world: "emotion-plugin",
        pub_export_macro: true,
        default_bindings_module: "emotion_plugin_sdk::bindings",
    });
}

pub mod json;
pub mod num;

/// Definitions shared with the gateway: source names, the prosody schema,
/// the SplitMix64 generator for synthetic data.
pub use emotion_common as common;

use bindings::emotion::plugin::host;

pub use bindings::emotion::plugin::host::LogLevel;
pub use bindings::emotion::plugin::types::{
    ActionUnit, AuValue, Emotion, Facial, HeadPose, Label, NormalizeResult as Outcome, Payload,
    Pcm, Physiological, PluginInfo, Point, Prosody, Reading, Source, Text, Voice,
};

/// The ABI version this SDK speaks. It moves with the WIT package version:
/// `emotion:plugin@0.2.0` is ABI 2 (ABI 1, `emotion:plugin@0.1.0`, is frozen
/// in `wit-abi1/`; the gateway still loads plugins built for it).
pub const ABI_VERSION: u32 = 2;

/// The WIT package this SDK was generated from.
pub const WIT_PACKAGE: &str = "emotion:plugin@0.2.0";

/// Name of the custom section holding the ABI version (4 bytes, little-endian
/// `u32`). The host reads it from the component before instantiating it, so a
/// plugin built against another ABI is refused with a clear reason instead of
/// failing somewhere inside the component-model type checks.
pub const ABI_SECTION: &str = "emotion-plugin-abi";

/// Name of the custom section holding the plugin's declared memory need (8
/// bytes, little-endian `u64`: bytes of linear memory), written by
/// `export_plugin!(P, memory = "…")`. The host makes it the plugin's memory
/// limit unless the operator configured one (see the crate README). Not part
/// of the WIT contract: declaring it does not change [`ABI_VERSION`].
pub const MEMORY_SECTION: &str = "emotion-plugin-memory";

/// The WIT text, for tools that want to show or check it.
pub const WIT_SOURCE: &str = include_str!("../wit/plugin.wit");

/// What a plugin says about itself; the SDK adds the ABI version.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub sources: Vec<Source>,
    /// JSON Schema of the plugin's settings, as text.
    pub settings_schema: String,
}

impl Info {
    /// An info with no settings (`settings_schema` = `{}`).
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        sources: impl IntoIterator<Item = Source>,
    ) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            sources: sources.into_iter().collect(),
            settings_schema: "{}".to_owned(),
        }
    }

    /// Declare the JSON Schema of the settings the plugin reads.
    pub fn with_settings_schema(mut self, schema: impl Into<String>) -> Self {
        self.settings_schema = schema.into();
        self
    }
}

/// A plugin: implement this and pass the type to [`export_plugin!`].
///
/// Functions take no `self`: a plugin instance is a WebAssembly instance, and
/// state that must survive between calls lives in `static`s (the host may drop
/// an instance and create a fresh one at any time, e.g. after a failure, so
/// such state is a cache, never the truth).
pub trait Plugin {
    /// Name, version, handled sources and settings schema.
    fn info() -> Info;

    /// Normalize one reading. Return [`Outcome::None`] when the reading carries
    /// no emotion (no face found, empty text) and [`Outcome::Error`] when it
    /// cannot be read; both are answers, not failures.
    fn normalize_one(reading: Reading) -> Outcome;

    /// Normalize a batch. The default maps [`Plugin::normalize_one`] over it;
    /// override it to share work across a batch. Must return exactly one
    /// result per reading, in order (the host fails the whole batch otherwise).
    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        readings.into_iter().map(Self::normalize_one).collect()
    }
}

impl Label {
    /// Every label, in the WIT enum's order (the gateway's order).
    pub const ALL: [Label; 23] = [
        Label::Joy,
        Label::Sadness,
        Label::Anger,
        Label::Fear,
        Label::Trust,
        Label::Disgust,
        Label::Surprise,
        Label::Anticipation,
        Label::Optimism,
        Label::Disappointment,
        Label::Contempt,
        Label::Anxiety,
        Label::Love,
        Label::Remorse,
        Label::Awe,
        Label::Aggressiveness,
        Label::Neutral,
        Label::Unknown,
        Label::Calm,
        Label::Excitement,
        Label::Boredom,
        Label::Contentment,
        Label::Stress,
    ];

    /// The label's name as the gateway spells it (`"joy"`, `"calm"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::Joy => "joy",
            Label::Sadness => "sadness",
            Label::Anger => "anger",
            Label::Fear => "fear",
            Label::Trust => "trust",
            Label::Disgust => "disgust",
            Label::Surprise => "surprise",
            Label::Anticipation => "anticipation",
            Label::Optimism => "optimism",
            Label::Disappointment => "disappointment",
            Label::Contempt => "contempt",
            Label::Anxiety => "anxiety",
            Label::Love => "love",
            Label::Remorse => "remorse",
            Label::Awe => "awe",
            Label::Aggressiveness => "aggressiveness",
            Label::Neutral => "neutral",
            Label::Unknown => "unknown",
            Label::Calm => "calm",
            Label::Excitement => "excitement",
            Label::Boredom => "boredom",
            Label::Contentment => "contentment",
            Label::Stress => "stress",
        }
    }

    /// The label with this name, read as the gateway reads one (surrounding
    /// spaces and letter case ignored); `None` for a name it does not know.
    pub fn from_name(name: &str) -> Option<Label> {
        // The exact spelling first (a plugin's own label names), then as the
        // gateway reads one.
        let exact = Label::ALL.into_iter().find(|l| l.as_str() == name);
        exact.or_else(|| {
            let name = name.trim();
            Label::ALL
                .into_iter()
                .find(|l| l.as_str().eq_ignore_ascii_case(name))
        })
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Emotion {
    /// An emotion without a label: the host picks the label nearest to
    /// (valence, arousal).
    pub fn new(valence: f64, arousal: f64, confidence: f64) -> Self {
        Emotion {
            label: None,
            valence,
            arousal,
            confidence,
            extra: String::new(),
        }
    }

    /// An emotion with one of the gateway's labels.
    pub fn labelled(label: Label, valence: f64, arousal: f64, confidence: f64) -> Self {
        Emotion {
            label: Some(label),
            ..Emotion::new(valence, arousal, confidence)
        }
    }

    /// Attach an extra field; `json` must be valid JSON text (`"\"text\""`,
    /// `"3.5"`, `"{\"a\":1}"`), the host refuses the reading otherwise.
    /// The fields go into one JSON object text ([`Emotion::extra`]), which the
    /// host checks once and keeps as text.
    pub fn with_extra(mut self, key: impl AsRef<str>, json: impl AsRef<str>) -> Self {
        self.push_extra(key.as_ref(), json.as_ref());
        self
    }

    /// [`Emotion::with_extra`] in place.
    pub fn push_extra(&mut self, key: &str, json: &str) {
        self.push_extra_with(key, |out| out.push_str(json));
    }

    /// Attach an extra field whose JSON text `write` appends to the object
    /// text itself (no string of its own for the value), e.g. with
    /// [`json::push_fixed`]: `e.push_extra_with("score", |o| json::push_fixed(o, x, 3))`.
    pub fn push_extra_with(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        let text = &mut self.extra;
        // The text stays a complete object after every field: `{"a":1}` ->
        // `{"a":1,"b":2}`.
        if text.ends_with('}') {
            text.pop();
            text.push(',');
        } else {
            text.clear();
            // Room for a few fields at once: growing from empty took five
            // or six reallocations for a typical extra text of 100-200 bytes.
            text.reserve(128);
            text.push('{');
        }
        json::push_string(text, key);
        text.push(':');
        write(text);
        text.push('}');
    }
}

impl Outcome {
    /// An error answer for one reading.
    pub fn error(message: impl Into<String>) -> Self {
        Outcome::Error(message.into())
    }
}

impl Source {
    /// The source's name as the gateway spells it (`"text"`, `"facial"`, …),
    /// from the one table in `emotion-common`.
    pub fn as_str(self) -> &'static str {
        common::Source::from(self).as_str()
    }
}

impl From<Source> for common::Source {
    fn from(s: Source) -> Self {
        match s {
            Source::Text => common::Source::Text,
            Source::Voice => common::Source::Voice,
            Source::Facial => common::Source::Facial,
            Source::Physiological => common::Source::Physiological,
            Source::Survey => common::Source::Survey,
            Source::Biometric => common::Source::Biometric,
            Source::Behavioral => common::Source::Behavioral,
            Source::Contextual => common::Source::Contextual,
        }
    }
}

impl Prosody {
    /// The record as the shared prosody schema ([`common::Prosody`], the
    /// one the gateway validates against).
    pub fn features(&self) -> common::Prosody {
        common::Prosody {
            f0_mean_hz: self.f0_mean_hz,
            f0_range_hz: self.f0_range_hz,
            loudness_db: self.loudness_db,
            speech_rate: self.speech_rate,
            jitter: self.jitter,
            shimmer: self.shimmer,
            hnr_db: self.hnr_db,
        }
    }
}

/// The plugin's settings from the gateway configuration, as JSON text (`{}`
/// when none are configured).
pub fn settings() -> String {
    host::settings()
}

/// Write to the gateway's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Log at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`export_plugin!`](crate::export_plugin); not a stable API.
    use super::*;

    /// A panic in a plugin becomes a trap (wasm32 aborts on panic). Without a
    /// hook the host would only see "wasm trap: unreachable"; with it the panic
    /// message reaches the host's log first, and the host quotes it in the
    /// plugin's failure reason.
    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                host::log(LogLevel::Error, &format!("panic: {info}"));
            }));
        });
    }

    pub fn describe<P: Plugin>(abi_version: u32) -> PluginInfo {
        install_panic_hook();
        let info = P::info();
        PluginInfo {
            name: info.name,
            version: info.version,
            abi_version,
            sources: info.sources,
            settings_schema: info.settings_schema,
        }
    }

    pub fn normalize<P: Plugin>(readings: Vec<Reading>) -> Vec<Outcome> {
        install_panic_hook();
        P::normalize(readings)
    }

    /// The content of the ABI custom section.
    pub const fn abi_section(abi_version: u32) -> [u8; 4] {
        abi_version.to_le_bytes()
    }

    /// The content of the memory custom section: `need` parsed by
    /// [`memory_bytes`](crate::memory_bytes), which fails the build on a bad
    /// size (this runs at compile time).
    pub const fn memory_section(need: &str) -> [u8; 8] {
        crate::memory_bytes(need).to_le_bytes()
    }
}

/// Smallest and largest memory need a plugin may declare (the host's bounds
/// on any memory limit; its `max_declared_memory`, 1 GiB by default, may
/// refuse less than the upper one).
pub const MIN_MEMORY_NEED: u64 = 1 << 20;
pub const MAX_MEMORY_NEED: u64 = 4 << 30;

/// Bytes in a size written as the gateway's configuration writes them:
/// a number and an optional unit, `B`, `KiB`/`KB`/`K`, `MiB`/`MB`/`M`,
/// `GiB`/`GB`/`G` (all powers of 1024), e.g. `"256MiB"`. A `const fn` so
/// [`export_plugin!`] checks the need while the plugin compiles: a bad size,
/// or one outside 1 MiB..=4 GiB, is a compile error.
pub const fn memory_bytes(need: &str) -> u64 {
    let b = need.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let start = i;
    let mut n: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = match n.checked_mul(10) {
            Some(x) => match x.checked_add((b[i] - b'0') as u64) {
                Some(y) => y,
                None => panic!("memory need too large"),
            },
            None => panic!("memory need too large"),
        };
        i += 1;
    }
    if i == start {
        panic!("a memory need is a number and a unit, e.g. \"256MiB\"");
    }
    // As the gateway's parser: spaces around the unit are allowed.
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let (_, mut unit) = b.split_at(i);
    while let [rest @ .., b' '] = unit {
        unit = rest;
    }
    let k: u64 = if bytes_eq(unit, b"") || bytes_eq(unit, b"B") {
        1
    } else if bytes_eq(unit, b"KiB") || bytes_eq(unit, b"KB") || bytes_eq(unit, b"K") {
        1 << 10
    } else if bytes_eq(unit, b"MiB") || bytes_eq(unit, b"MB") || bytes_eq(unit, b"M") {
        1 << 20
    } else if bytes_eq(unit, b"GiB") || bytes_eq(unit, b"GB") || bytes_eq(unit, b"G") {
        1 << 30
    } else {
        panic!("unknown unit in memory need (write B, KiB, MiB or GiB)");
    };
    let bytes = match n.checked_mul(k) {
        Some(x) => x,
        None => panic!("memory need too large"),
    };
    if bytes < MIN_MEMORY_NEED || bytes > MAX_MEMORY_NEED {
        panic!("a memory need must be between 1MiB and 4GiB");
    }
    bytes
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Export a type implementing [`Plugin`] as this component's plugin, and stamp
/// the ABI version into the `emotion-plugin-abi` custom section.
///
/// Use it exactly once, in the plugin's `cdylib` crate. A plugin that needs
/// more (or less) linear memory than the gateway's default limit (64 MiB)
/// declares it, and the gateway makes it the plugin's limit unless its
/// configuration sets one for the plugin:
///
/// ```no_run
/// # use emotion_plugin_sdk::{Info, Outcome, Plugin, Reading, Source};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn info() -> Info { Info::new("my-plugin", "1.0.0", [Source::Text]) }
/// #     fn normalize_one(_: Reading) -> Outcome { Outcome::None }
/// # }
/// emotion_plugin_sdk::export_plugin!(MyPlugin, memory = "256MiB");
/// ```
///
/// The size is checked at compile time (see [`memory_bytes`]): this does not
/// build.
///
/// ```compile_fail
/// # use emotion_plugin_sdk::{Info, Outcome, Plugin, Reading, Source};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn info() -> Info { Info::new("my-plugin", "1.0.0", [Source::Text]) }
/// #     fn normalize_one(_: Reading) -> Outcome { Outcome::None }
/// # }
/// emotion_plugin_sdk::export_plugin!(MyPlugin, memory = "5GiB");
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!(@abi $crate::ABI_VERSION, $plugin);
    };
    ($plugin:ty, memory = $need:expr $(,)?) => {
        $crate::export_plugin!(@abi $crate::ABI_VERSION, $plugin);
        $crate::export_plugin!(@memory $need);
    };
    (@memory $need:expr) => {
        #[cfg(target_family = "wasm")]
        #[allow(unsafe_code)]
        const _: () = {
            // Kept by the linker and by wit-component, as the ABI section is.
            #[unsafe(link_section = "emotion-plugin-memory")]
            #[used]
            static __EMOTION_PLUGIN_MEMORY: [u8; 8] = $crate::__private::memory_section($need);
        };
        // Native builds check the size too (a bad one fails every build).
        #[cfg(not(target_family = "wasm"))]
        const _: [u8; 8] = $crate::__private::memory_section($need);
    };
    // Hidden arm: stamp another ABI version. Only the host's tests use it,
    // to build a plugin the host must refuse.
    (@abi $abi:expr, $plugin:ty) => {
        // Only WebAssembly builds export anything: native builds of a plugin
        // crate (its unit tests, or a benchmark calling it in-process) must not
        // define the component's `name:pkg/iface#func` symbols, which native
        // linkers cannot export.
        #[cfg(target_family = "wasm")]
        #[allow(unsafe_code)]
        const _: () = {
            struct __EmotionPluginExport;

            impl $crate::bindings::exports::emotion::plugin::plugin::Guest for __EmotionPluginExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__private::describe::<$plugin>($abi)
                }

                fn normalize(readings: ::std::vec::Vec<$crate::Reading>) -> ::std::vec::Vec<$crate::Outcome> {
                    $crate::__private::normalize::<$plugin>(readings)
                }
            }

            $crate::bindings::export!(__EmotionPluginExport with_types_in $crate::bindings);

            // A data section the linker keeps as a custom section of the core
            // module; wit-component carries it into the component unchanged.
            #[unsafe(link_section = "emotion-plugin-abi")]
            #[used]
            static __EMOTION_PLUGIN_ABI: [u8; 4] = $crate::__private::abi_section($abi);
        };
        // Native builds still check that the type is a plugin.
        #[cfg(not(target_family = "wasm"))]
        const _: fn() = || {
            fn assert_plugin<P: $crate::Plugin>() {}
            assert_plugin::<$plugin>();
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_needs_parse_like_the_gateway_configuration() {
        assert_eq!(memory_bytes("256MiB"), 256 << 20);
        assert_eq!(memory_bytes("1GiB"), 1 << 30);
        assert_eq!(memory_bytes("4G"), 4 << 30);
        assert_eq!(memory_bytes("1048576"), 1 << 20);
        assert_eq!(memory_bytes("2048KiB"), 2 << 20);
        assert_eq!(memory_bytes("256 MiB"), 256 << 20);
        assert_eq!(
            __private::memory_section("96MiB"),
            (96u64 << 20).to_le_bytes()
        );
    }

    #[test]
    fn labels_are_the_wit_enum_in_order() {
        let body = WIT_SOURCE
            .split_once("enum label {")
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(body, _)| body)
            .expect("an `enum label` in plugin.wit");
        let wit: Vec<&str> = body
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .collect();
        let ours: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(ours, wit);
        for (i, l) in Label::ALL.into_iter().enumerate() {
            assert_eq!(l as usize, i, "{l}");
            assert_eq!(Label::from_name(l.as_str()), Some(l));
        }
        assert_eq!(Label::from_name(" Calm "), Some(Label::Calm));
        assert_eq!(Label::from_name("elation"), None);
    }

    #[test]
    fn extra_fields_build_one_object() {
        let mut e = Emotion::new(0.1, 0.2, 0.3);
        assert_eq!(e.extra, "");
        e = e
            .with_extra("n", "3")
            .with_extra(String::from("say \"hi\""), "\"x\"");
        e.push_extra_with("f", |o| json::push_fixed(o, 0.25, 2));
        assert_eq!(e.extra, r#"{"n":3,"say \"hi\"":"x","f":0.25}"#);
    }

    #[test]
    fn bad_memory_needs_are_refused() {
        // At compile time these are build errors; at run time, panics.
        for bad in [
            "",
            "MiB",
            "-1MiB",
            "256PiB",
            "256 Mi B",
            "512KiB",
            "5GiB",
            "99999999999999999999",
        ] {
            let r = std::panic::catch_unwind(|| memory_bytes(bad));
            assert!(r.is_err(), "{bad:?} was accepted");
        }
    }
}
