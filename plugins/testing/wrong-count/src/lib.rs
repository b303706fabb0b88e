//! Broken on purpose: answers one result more than it was given readings.
use emotion_plugin_sdk::{Emotion, Info, Outcome, Plugin, Reading, Source};

pub struct WrongCount;

impl Plugin for WrongCount {
    fn info() -> Info {
        Info::new("wrong-count", "0.1.0", [Source::Text])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        Outcome::Emotion(Emotion::new(0.0, 0.5, 0.6))
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        if readings.is_empty() {
            // Pass the host's self-check so the failure shows at run time.
            return Vec::new();
        }
        let mut out: Vec<Outcome> = readings.into_iter().map(Self::normalize_one).collect();
        out.push(Outcome::None);
        out
    }
}

emotion_plugin_sdk::export_plugin!(WrongCount);
