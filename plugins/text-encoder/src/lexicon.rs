//! The `text` (lexicon) plugin's reading of a message, as extra inputs of the
//! head: its valence and arousal on EmoBank's scales (VADER plus its word
//! table fitted on EmoBank train). Its errors differ from the encoder's, so
//! the head gains from both (dev r 0.668 → 0.686 for valence; VADER's dense
//! features beside them added nothing, see README.md).
//!
//! The code and data are the `text` plugin's own files (`plugins/text/src`,
//! its `data/model.tsv` and VADER lexicon), compiled into this crate rather
//! than linked as a crate dependency: both crates are plugins, and a wasm32
//! build linking one plugin crate into another would define the component's
//! exports twice (`scripts/build-plugins.sh` builds both in one invocation,
//! so a cargo feature to turn the exports off would be unified away).

#[path = "../../text/src/emoji.rs"]
pub mod emoji;
#[path = "../../text/src/features.rs"]
pub mod features;
#[path = "../../text/src/fxhash.rs"]
pub mod fxhash;
#[path = "../../text/src/model.rs"]
pub mod model;
#[path = "../../text/src/vader.rs"]
pub mod vader;

use model::Model;

/// Values [`read`] gives per message: the `text` plugin's valence and arousal.
pub const LEXICON_FEATURES: usize = 2;

/// The lexicon's inputs for the head, with the `text` plugin's shipped model.
pub fn read(text: &str) -> Result<[f32; LEXICON_FEATURES], &'static str> {
    Ok(read_with(Model::shipped()?, text))
}

/// [`read`] with a given word-table model (the fit's cross-fitted ones).
pub fn read_with(model: &Model, text: &str) -> [f32; LEXICON_FEATURES] {
    let s = model.predict(&features::extract(text)).scores;
    [s.valence as f32, s.arousal as f32]
}
