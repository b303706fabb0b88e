//! Broken on purpose: every third non-empty `normalize` call of an instance
//! panics, which traps. Calls one and two answer normally, so the host's
//! restart (a fresh instance starts counting again) is visible.
use std::sync::atomic::{AtomicU32, Ordering};

use emotion_plugin_sdk::{Emotion, Info, Label, Outcome, Plugin, Reading, Source};

pub struct TrapThird;

static CALLS: AtomicU32 = AtomicU32::new(0);

impl Plugin for TrapThird {
    fn info() -> Info {
        Info::new("trap-third", "0.1.0", [Source::Physiological])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        Outcome::Emotion(Emotion::labelled(Label::Calm, -0.1, 0.3, 0.9))
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        if !readings.is_empty() {
            let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            if call.is_multiple_of(3) {
                panic!("deliberate trap on call {call}");
            }
        }
        readings.into_iter().map(Self::normalize_one).collect()
    }
}

emotion_plugin_sdk::export_plugin!(TrapThird);
