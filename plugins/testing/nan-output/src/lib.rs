//! Broken on purpose: answers NaN valence. The host must refuse the batch.
use emotion_plugin_sdk::{Emotion, Info, Outcome, Plugin, Reading, Source};

pub struct NanOutput;

impl Plugin for NanOutput {
    fn info() -> Info {
        Info::new("nan-output", "0.1.0", [Source::Biometric])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        Outcome::Emotion(Emotion::new(f64::NAN, 0.5, 0.9))
    }
}

emotion_plugin_sdk::export_plugin!(NanOutput);
