//! Broken on purpose: stamps ABI version 99, which no host speaks. The host
//! must refuse it before instantiating it.
use emotion_plugin_sdk::{Info, Outcome, Plugin, Reading, Source};

pub struct WrongAbi;

impl Plugin for WrongAbi {
    fn info() -> Info {
        Info::new("wrong-abi", "0.1.0", [Source::Text])
    }

    fn normalize_one(_reading: Reading) -> Outcome {
        Outcome::None
    }
}

emotion_plugin_sdk::export_plugin!(@abi 99, WrongAbi);
