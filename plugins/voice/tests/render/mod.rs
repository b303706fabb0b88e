//! Real synthesized speech for the voice plugin's tests and quality report:
//! espeak-ng renders a sentence in a speaking style (SSML `<prosody>` plus
//! its own pitch, speed and amplitude options), sox converts it to mono
//! signed 16-bit PCM at the wanted rate.
//!
//! The tools are Debian packages installed by
//! `scripts/install-voice-test-deps.sh`; nothing here installs anything, and
//! a missing tool is a loud failure naming that script, never a skip.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// How to install the tools.
pub const INSTALL_HINT: &str = "run scripts/install-voice-test-deps.sh \
(apt-get install -y espeak-ng sox) to install them";

/// Sentences rendered in every style (English, 9–14 words, no exclamation or
/// question marks so that punctuation does not change the intonation).
pub const SENTENCES: [&str; 16] = [
    "The weather report says it will rain again tomorrow afternoon.",
    "I cannot believe we finally finished the whole project on time.",
    "Please put the red folder back on the shelf next to the window.",
    "My brother is driving down from the mountains this weekend.",
    "We should meet at the station at half past seven.",
    "She told me the package would arrive before the end of the month.",
    "Nobody answered the phone when I called the office this morning.",
    "The children played in the garden until it got dark.",
    "They are opening a new bakery on the corner of our street.",
    "I left my keys in the car and had to walk back.",
    "The train was late again so we missed the first part of the concert.",
    "Our team won the final match in the last minute of the game.",
    "He has been working on that old motorcycle for three years.",
    "You can see the lake from the top of the hill.",
    "The results of the test will be ready on Thursday.",
    "My grandmother still writes letters to all of her friends.",
];

/// espeak-ng voices used: a male and a female variant of American English.
pub const VOICES: [&str; 3] = ["en-us", "en-us+f3", "en-gb+m3"];

/// A speaking style: SSML prosody attributes and espeak-ng options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub name: &'static str,
    /// Attributes of `<prosody>` (empty: none).
    pub prosody: &'static str,
    /// `-p` pitch (0–99), `-s` speed (words per minute), `-a` amplitude (0–200).
    pub pitch: u32,
    pub speed: u32,
    pub amplitude: u32,
}

/// Low pitch, narrow range, slow, soft.
pub const CALM: Style = Style {
    name: "calm",
    prosody: r#"range="x-low" pitch="low" rate="slow" volume="soft""#,
    pitch: 30,
    speed: 135,
    amplitude: 60,
};

/// espeak-ng's defaults.
pub const NEUTRAL: Style = Style {
    name: "neutral",
    prosody: "",
    pitch: 50,
    speed: 175,
    amplitude: 100,
};

/// High pitch, wide range, fast, loud. (Raising `-p` alone narrows the F0
/// range: the range comes from SSML.)
pub const EXCITED: Style = Style {
    name: "excited",
    prosody: r#"range="x-high" pitch="high" rate="fast" volume="loud""#,
    pitch: 70,
    speed: 220,
    amplitude: 180,
};

/// Fail loudly unless espeak-ng and sox are installed.
pub fn require_tools() {
    for (tool, arg) in [("espeak-ng", "--version"), ("sox", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "`{tool}` is not installed: the voice plugin's speech tests need espeak-ng and sox; {INSTALL_HINT}"
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render `sentence` in `style` with espeak-ng `voice`, as mono 16-bit PCM at
/// `rate` Hz. Files go to `dir`.
pub fn render(dir: &Path, sentence: &str, style: &Style, voice: &str, rate: u32) -> Vec<i16> {
    let body = escape(sentence);
    let ssml = if style.prosody.is_empty() {
        format!("<speak>{body}</speak>")
    } else {
        format!("<speak><prosody {}>{body}</prosody></speak>", style.prosody)
    };
    let stem = format!(
        "{:016x}",
        ssml.bytes()
            .chain(voice.bytes())
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b))
                .wrapping_mul(0x100000001b3))
            ^ u64::from(style.pitch) << 40
            ^ u64::from(style.speed) << 20
            ^ u64::from(style.amplitude)
    );
    let wav = dir.join(format!("{stem}.wav"));
    let raw = dir.join(format!("{stem}-{rate}.raw"));
    let out = Command::new("espeak-ng")
        .args(["-m", "-v", voice])
        .args(["-p", &style.pitch.to_string()])
        .args(["-s", &style.speed.to_string()])
        .args(["-a", &style.amplitude.to_string()])
        .arg("-w")
        .arg(&wav)
        .arg(&ssml)
        .output()
        .unwrap_or_else(|e| panic!("cannot run espeak-ng ({e}); {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -G: guard against clipping in the rate conversion (gain drops instead).
    let out = Command::new("sox")
        .arg("-G")
        .arg(&wav)
        .args([
            "-r",
            &rate.to_string(),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
        ])
        .args(["-t", "raw", "-L"])
        .arg(&raw)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sox ({e}); {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&raw).expect("sox output");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}
