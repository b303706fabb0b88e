//! Shared by `echo` (1.0.0) and `echo-v2` (2.0.0): the same plugin at two
//! versions, for the host's hot-swap tests. The version comes from the
//! building package, so each answer tells which one produced it.
//!
//! A text reading's content decides the answer:
//! * `"V A"` (two numbers): an emotion at (V, A) with no label;
//! * `"LABEL V A"` or `"LABEL"`: that label (passed through unchecked);
//! * `"none"`: no emotion; `"error MESSAGE"`: an error answer.
//!
//! Every emotion carries the content back as the extra field `echo`.
//!
//! Each crate exports it (or a wrapper, as `echo-faulty` does) itself.

use emotion_plugin_sdk::{Emotion, Info, Label, Outcome, Payload, Plugin, Reading, Source};

pub struct Echo;

impl Plugin for Echo {
    fn info() -> Info {
        Info::new("echo", env!("CARGO_PKG_VERSION"), [Source::Text])
    }

    fn normalize_one(reading: Reading) -> Outcome {
        let Payload::Text(text) = reading.payload else {
            return Outcome::error("echo reads text payloads only");
        };
        let content = text.content;
        if content == "none" {
            return Outcome::None;
        }
        if let Some(message) = content.strip_prefix("error ") {
            return Outcome::error(message);
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<f64>().ok());
        let emotion = match (words.first(), number(0)) {
            (Some(_), Some(v)) => Emotion::new(v, number(1).unwrap_or(0.5), 0.7),
            // ABI 2 labels are the gateway's: a name it does not know is
            // this plugin's error answer (under ABI 1 the host judged it;
            // see echo-abi1).
            (Some(label), None) => match Label::from_name(label) {
                Some(l) => {
                    Emotion::labelled(l, number(1).unwrap_or(0.0), number(2).unwrap_or(0.5), 0.7)
                }
                None => return Outcome::error(format!("unknown label `{label}`")),
            },
            (None, _) => return Outcome::error("empty text"),
        };
        // JSON-quote the content by hand: the SDK has no JSON dependency.
        let quoted = format!("\"{}\"", content.replace('\\', "\\\\").replace('"', "\\\""));
        Outcome::Emotion(emotion.with_extra("echo", quoted))
    }
}
