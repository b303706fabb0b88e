//! Broken on purpose: answers arousal 1.5 (the scale is 0..1). The host must
//! refuse the batch rather than clamp.
use emotion_plugin_sdk::{Emotion, Info, Outcome, Plugin, Reading, Source};

pub struct OutOfRange;

impl Plugin for OutOfRange {
    fn info() -> Info {
        Info::new("out-of-range", "0.1.0", [Source::Contextual])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        Outcome::Emotion(Emotion::new(0.2, 1.5, 0.5))
    }
}

emotion_plugin_sdk::export_plugin!(OutOfRange);
