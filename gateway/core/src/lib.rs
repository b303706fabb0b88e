//! The pure core of the emotion gateway: the event model, the label table, the
//! incremental analyzer and credit/risk summaries.
//!
//! Nothing here does I/O or reads a clock: callers pass `now` in. That keeps
//! every function deterministic, easy to test and to fuzz.

pub mod analyzer;
pub mod credit;
pub mod event;
pub mod json;
pub mod label;
mod num;
pub mod reading;
pub mod rfc3339;
pub mod source;
pub mod units;

pub use analyzer::{Analyzer, AnalyzerConfig};
pub use event::{EmotionEvent, FieldError, IngestContext, ValidationError};
pub use json::{Json, TextError};
pub use label::{Coordinates, EmotionLabel};
pub use source::Source;
