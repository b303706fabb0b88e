//! Broken on purpose: allocates without bound in a non-empty `normalize`. The
//! host's memory limit must stop it.
use emotion_plugin_sdk::{Info, Outcome, Plugin, Reading, Source};

pub struct MemoryHog;

impl Plugin for MemoryHog {
    fn info() -> Info {
        Info::new("memory-hog", "0.1.0", [Source::Facial])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really committed.
            hoard.push(vec![0xAB; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

emotion_plugin_sdk::export_plugin!(MemoryHog);
