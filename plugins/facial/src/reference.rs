//! The prototype configurations of `shared/data/facs/PROTOTYPES.md`, written
//! out as that file gives them, for the tests and the quality report. They
//! are the *checks*; the scoring table the plugin uses is [`crate::facs::VARIANTS`].

use emotion_plugin_sdk::{ActionUnit, AuValue, Facial, HeadPose};

/// One configuration: the emotion (gateway label), the units as written
/// (`+`-separated, optional `R`/`L` side prefix and `A`–`E` intensity suffix),
/// and the source.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub emotion: &'static str,
    pub units: &'static str,
    pub source: &'static str,
}

const fn c(emotion: &'static str, units: &'static str, source: &'static str) -> Config {
    Config {
        emotion,
        units,
        source,
    }
}

const EMFACS: &str = "EMFACS-7";
const IG: &str = "FACS 2002 IG";
const DU: &str = "Du et al. 2014";

/// Every configuration named in PROTOTYPES.md (Du et al.: the six basic
/// emotions' units seen in more than 70 % of subjects).
pub const PROTOTYPES: &[Config] = &[
    c("joy", "6+12", EMFACS),
    c("sadness", "1+4+15", EMFACS),
    c("surprise", "1+2+5B+26", EMFACS),
    c("fear", "1+2+4+5+7+20+26", EMFACS),
    c("anger", "4+5+7+23", EMFACS),
    c("disgust", "9+15+16", EMFACS),
    c("contempt", "R12A+R14A", EMFACS),
    c("surprise", "1+2+5+26", IG),
    c("surprise", "1+2+5+27", IG),
    c("fear", "1+2+4+5+20+25", IG),
    c("fear", "1+2+4+5+20+26", IG),
    c("fear", "1+2+4+5+20+27", IG),
    c("joy", "6+12", IG),
    c("sadness", "1+4+15", IG),
    c("sadness", "1+4+11+15", IG),
    c("sadness", "6+15", IG),
    c("disgust", "9", IG),
    c("disgust", "9+16", IG),
    c("disgust", "9+17", IG),
    c("disgust", "10", IG),
    c("disgust", "10+16", IG),
    c("disgust", "10+17", IG),
    c("anger", "4+5+7+23", IG),
    c("anger", "4+5+7+10+22+23+25", IG),
    c("anger", "4+5+7+10+22+23+26", IG),
    c("anger", "4+5+7+17+23", IG),
    c("anger", "4+5+7+17+24", IG),
    c("joy", "12+25", DU),
    c("sadness", "4+15", DU),
    c("fear", "1+4+20+25", DU),
    c("anger", "4+7+24", DU),
    c("surprise", "1+2+25+26", DU),
    c("disgust", "9+10+17", DU),
];

/// Units a near-miss may add: every unit of the table, plus eye closure and
/// blink (43, 45), minus the unit's own configuration.
pub const EXTRA_POOL: &[u8] = &[
    1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 20, 22, 23, 24, 25, 26, 27, 43, 45,
];

/// Parse `"R12A+R14A"` into (unit, intensity given by a letter if any).
pub fn parse_units(text: &str) -> Result<Vec<(u8, Option<f64>)>, String> {
    text.split('+')
        .map(|part| {
            let part = part.trim().trim_start_matches(['R', 'L', 'U']);
            let (digits, letter) = match part.char_indices().find(|(_, ch)| !ch.is_ascii_digit()) {
                Some((i, _)) => part.split_at(i),
                None => (part, ""),
            };
            let unit: u8 = digits
                .parse()
                .map_err(|_| format!("`{part}` is not an action unit"))?;
            let intensity = match letter {
                "" => None,
                "A" => Some(1.0),
                "B" => Some(2.0),
                "C" => Some(3.0),
                "D" => Some(4.0),
                "E" => Some(5.0),
                other => return Err(format!("`{other}` is not an intensity letter A–E")),
            };
            Ok((unit, intensity))
        })
        .collect()
}

/// How a configuration is encoded in a test frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    /// Presence booleans (detectors without intensities).
    Presence,
    /// This intensity for every unit without a letter; letters (`5B`,
    /// `R12A`) keep theirs.
    Intensity(f64),
}

impl Encoding {
    /// The encodings the checks run: presence, FACS level C, level E.
    pub const ALL: [Encoding; 3] = [
        Encoding::Presence,
        Encoding::Intensity(3.0),
        Encoding::Intensity(5.0),
    ];

    pub fn name(self) -> String {
        match self {
            Encoding::Presence => "presence".into(),
            Encoding::Intensity(x) => format!("intensity {x}"),
        }
    }
}

/// A frame with these units, a frontal pose and detection quality 0.95.
pub fn frame(units: &[(u8, Option<f64>)], encoding: Encoding) -> Facial {
    Facial {
        action_units: units
            .iter()
            .map(|&(number, letter)| ActionUnit {
                number,
                value: match (encoding, letter) {
                    (Encoding::Presence, _) => AuValue::Presence(true),
                    (Encoding::Intensity(_), Some(x)) => AuValue::Intensity(x),
                    (Encoding::Intensity(x), None) => AuValue::Intensity(x),
                },
            })
            .collect(),
        landmarks: Vec::new(),
        head_pose: Some(HeadPose {
            pitch: 0.0,
            yaw: 0.0,
            roll: 0.0,
        }),
        detection_quality: Some(0.95),
    }
}

/// One check: a configuration and the emotion it should give.
#[derive(Debug, Clone)]
pub struct Case {
    pub emotion: &'static str,
    pub units: Vec<(u8, Option<f64>)>,
    /// e.g. `"fear 1+2+4+5+20+25 (FACS 2002 IG) without AU4"`.
    pub description: String,
    /// Other emotions whose own prototype is this configuration, or one unit
    /// away from it: the configuration is ambiguous by construction.
    pub ambiguous_with: Vec<&'static str>,
}

fn unit_set(units: &[(u8, Option<f64>)]) -> Vec<u8> {
    let mut s: Vec<u8> = units.iter().map(|u| u.0).collect();
    s.sort_unstable();
    s.dedup();
    s
}

fn parsed(cfg: &Config) -> Vec<(u8, Option<f64>)> {
    parse_units(cfg.units).unwrap_or_default()
}

/// Emotions other than `emotion` with a prototype at most one unit away
/// from `set`.
fn ambiguity(emotion: &str, set: &[u8]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in PROTOTYPES {
        if p.emotion == emotion || out.contains(&p.emotion) {
            continue;
        }
        let other = unit_set(&parsed(p));
        let diff = set.iter().filter(|u| !other.contains(u)).count()
            + other.iter().filter(|u| !set.contains(u)).count();
        if diff <= 1 {
            out.push(p.emotion);
        }
    }
    out
}

/// Every configuration of PROTOTYPES.md (duplicates removed).
pub fn prototype_cases() -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    for p in PROTOTYPES {
        let units = parsed(p);
        if out
            .iter()
            .any(|c| c.emotion == p.emotion && c.units == units)
        {
            continue;
        }
        out.push(Case {
            emotion: p.emotion,
            ambiguous_with: ambiguity(p.emotion, &unit_set(&units)),
            description: format!("{} {} ({})", p.emotion, p.units, p.source),
            units,
        });
    }
    out
}

/// Near-misses: each prototype with one unit left out (when one remains),
/// and with one unit of [`EXTRA_POOL`] added (at the configuration's own
/// intensity). Duplicates (same emotion, same units) are removed.
pub fn near_miss_cases() -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    let mut push = |emotion: &'static str, units: Vec<(u8, Option<f64>)>, description: String| {
        let set = unit_set(&units);
        if out
            .iter()
            .any(|c: &Case| c.emotion == emotion && unit_set(&c.units) == set)
        {
            return;
        }
        out.push(Case {
            emotion,
            ambiguous_with: ambiguity(emotion, &set),
            description,
            units,
        });
    };
    for p in PROTOTYPES {
        let units = parsed(p);
        if units.len() >= 2 {
            for (i, (u, _)) in units.iter().enumerate() {
                let mut fewer = units.clone();
                fewer.remove(i);
                push(
                    p.emotion,
                    fewer,
                    format!("{} {} ({}) without AU{u}", p.emotion, p.units, p.source),
                );
            }
        }
        for &x in EXTRA_POOL {
            if units.iter().any(|(u, _)| *u == x) {
                continue;
            }
            let mut more = units.clone();
            // The added unit takes the configuration's letter if all share one.
            let letter = units
                .first()
                .and_then(|u| u.1)
                .filter(|l| units.iter().all(|u| u.1 == Some(*l)));
            more.push((x, letter));
            push(
                p.emotion,
                more,
                format!("{} {} ({}) with AU{x}", p.emotion, p.units, p.source),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_parses() {
        for cfg in PROTOTYPES {
            let units = parse_units(cfg.units).expect(cfg.units);
            assert!(!units.is_empty());
        }
        assert_eq!(
            parse_units("R12A+R14A"),
            Ok(vec![(12, Some(1.0)), (14, Some(1.0))])
        );
        assert_eq!(parse_units("1+5B"), Ok(vec![(1, None), (5, Some(2.0))]));
    }
}
