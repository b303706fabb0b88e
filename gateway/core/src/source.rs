//! The eight kinds of source an emotion event can come from.
//!
//! Declared once in `emotion-common` (the plugin SDK speaks the same names)
//! and re-exported here with its serde form (lowercase names).

pub use emotion_common::source::{Source, UnknownSource};
