//! Broken on purpose: plugin `echo` 3.0.0-faulty, a replacement for `echo`
//! that loads and passes its self-check but misbehaves on some live
//! readings, for the host's canary tests. A text whose content contains
//! * `boom`: the whole batch traps (a panic);
//! * `oops`: that reading gets an error answer;
//! * `slow`: the batch never returns (the host's deadline interrupts it).
//!
//! Everything else is answered exactly as `echo` does.
#[path = "../../echo/src/echo.rs"]
mod echo;

use emotion_plugin_sdk::{Info, Outcome, Payload, Plugin, Reading};

pub use echo::Echo;

pub struct EchoFaulty;

fn contains(reading: &Reading, marker: &str) -> bool {
    matches!(&reading.payload, Payload::Text(t) if t.content.contains(marker))
}

impl Plugin for EchoFaulty {
    fn info() -> Info {
        Echo::info()
    }

    fn normalize_one(reading: Reading) -> Outcome {
        if contains(&reading, "oops") {
            return Outcome::error("oops: this version cannot read that");
        }
        Echo::normalize_one(reading)
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        if readings.iter().any(|r| contains(r, "boom")) {
            panic!("deliberate trap on a reading that says boom");
        }
        if readings.iter().any(|r| contains(r, "slow")) {
            let mut n: u64 = 0;
            loop {
                // black_box keeps the optimizer from reasoning the loop away.
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        readings.into_iter().map(Self::normalize_one).collect()
    }
}

emotion_plugin_sdk::export_plugin!(EchoFaulty);
