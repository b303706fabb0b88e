//! The voice prosody payload: which features a voice front end may send, and
//! under which names. The gateway's reading validation (`emotion-core`,
//! wire bounds) and the voice plugin (plausibility ranges) both read it from
//! here.

/// Prosody features of an utterance, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prosody {
    /// Mean fundamental frequency, Hz.
    pub f0_mean_hz: Option<f64>,
    /// Range of the fundamental frequency, Hz.
    pub f0_range_hz: Option<f64>,
    /// dB.
    pub loudness_db: Option<f64>,
    /// Syllables per second.
    pub speech_rate: Option<f64>,
    /// A fraction: 0.01 = 1 %.
    pub jitter: Option<f64>,
    /// A fraction: 0.05 = 5 %.
    pub shimmer: Option<f64>,
    /// Harmonics-to-noise ratio, dB.
    pub hnr_db: Option<f64>,
}

impl Prosody {
    /// The features' names on the wire (JSON keys), in declaration order.
    pub const FIELDS: [&'static str; 7] = [
        "f0_mean_hz",
        "f0_range_hz",
        "loudness_db",
        "speech_rate",
        "jitter",
        "shimmer",
        "hnr_db",
    ];

    /// The slot of the feature named `name`, if it is one.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut Option<f64>> {
        Some(match name {
            "f0_mean_hz" => &mut self.f0_mean_hz,
            "f0_range_hz" => &mut self.f0_range_hz,
            "loudness_db" => &mut self.loudness_db,
            "speech_rate" => &mut self.speech_rate,
            "jitter" => &mut self.jitter,
            "shimmer" => &mut self.shimmer,
            "hnr_db" => &mut self.hnr_db,
            _ => return None,
        })
    }

    /// Every feature with its name, in [`Prosody::FIELDS`] order.
    pub fn fields(&self) -> [(&'static str, Option<f64>); 7] {
        [
            ("f0_mean_hz", self.f0_mean_hz),
            ("f0_range_hz", self.f0_range_hz),
            ("loudness_db", self.loudness_db),
            ("speech_rate", self.speech_rate),
            ("jitter", self.jitter),
            ("shimmer", self.shimmer),
            ("hnr_db", self.hnr_db),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_slots_agree() {
        let mut p = Prosody::default();
        for (i, name) in Prosody::FIELDS.into_iter().enumerate() {
            *p.field_mut(name).expect("a field") = Some(i as f64);
        }
        for (i, (name, value)) in p.fields().into_iter().enumerate() {
            assert_eq!(name, Prosody::FIELDS[i]);
            assert_eq!(value, Some(i as f64));
        }
        assert!(p.field_mut("pitch").is_none());
    }
}
