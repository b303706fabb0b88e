//! Broken on purpose: never returns from a non-empty `normalize`. The host's
//! epoch deadline must interrupt it. (An empty batch, the host's self-check,
//! returns at once, so the plugin loads and fails at run time.)
use emotion_plugin_sdk::{Info, Outcome, Plugin, Reading, Source};

pub struct InfiniteLoop;

impl Plugin for InfiniteLoop {
    fn info() -> Info {
        Info::new("infinite-loop", "0.1.0", [Source::Voice])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the optimizer from reasoning the loop away.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

emotion_plugin_sdk::export_plugin!(InfiniteLoop);
