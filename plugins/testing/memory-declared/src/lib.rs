//! Test plugin: declares a memory need of 96 MiB (more than the host's
//! default limit of 64 MiB) and grows its memory by 80 MiB on every reading, so it answers
//! only when the host applies the declared need.
use emotion_plugin_sdk::{Emotion, Info, Outcome, Plugin, Reading, Source};

pub struct MemoryDeclared;

/// What one reading allocates (and touches, so it is really committed).
const USE_BYTES: usize = 80 << 20;

impl Plugin for MemoryDeclared {
    fn info() -> Info {
        Info::new("memory-declared", "0.1.0", [Source::Contextual])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        // Growing the memory is what the limit sees; one write per page is
        // enough to use it, and keeps the call far inside its deadline.
        let mut block: Vec<u8> = Vec::with_capacity(USE_BYTES);
        let spare = block.spare_capacity_mut();
        for i in (0..spare.len()).step_by(64 << 10) {
            spare[i].write(0x5A);
        }
        std::hint::black_box(&mut block);
        Outcome::Emotion(Emotion::new(0.1, 0.4, 0.5))
    }
}

emotion_plugin_sdk::export_plugin!(MemoryDeclared, memory = "96MiB");
