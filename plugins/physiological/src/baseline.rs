//! Each wearer's own rolling baseline, shrunk towards population norms while
//! it warms up.
//!
//! Per channel, the baseline is an exponentially weighted mean and variance
//! of the wearer's past values, weighted by the seconds of signal each
//! reading covers and forgotten with a half-life (default 30 min of wear;
//! a gap between readings counts as at most 10 min, so a wearer who comes
//! back the next day still has a baseline). While little is known, the
//! personal statistics are combined with a population prior worth
//! [`PRIOR_SECONDS`] of data:
//!
//! ```text
//! mean = (S_w·mean_personal + n0·mean_population) / (S_w + n0)
//! var  = (S_w·var_personal  + n0·sd_population²)  / (S_w + n0)
//! ```
//!
//! and `warmth = S_w / (S_w + n0)` tells how personal it is (0 = population
//! norms only). Updates are robust: a value far from the baseline (|z| > 2)
//! is clipped to 2.5 SD and counts with a small weight, so a stress episode
//! moves the baseline only slowly — stress shows as a departure from one's
//! own baseline, and must not become it within minutes.

/// Seconds of data the population prior is worth.
pub const PRIOR_SECONDS: f64 = 60.0;
/// Longest gap counted as forgetting time, s.
pub const MAX_GAP_S: f64 = 600.0;

/// The channels that have baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    HeartRate,
    LnRmssd,
    LnScl,
    ScrRate,
    Breathing,
    SkinTemp,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::HeartRate,
        Channel::LnRmssd,
        Channel::LnScl,
        Channel::ScrRate,
        Channel::Breathing,
        Channel::SkinTemp,
    ];
    pub const COUNT: usize = 6;

    pub fn name(self) -> &'static str {
        match self {
            Channel::HeartRate => "heart_rate",
            Channel::LnRmssd => "ln_rmssd",
            Channel::LnScl => "ln_scl",
            Channel::ScrRate => "scr_rate",
            Channel::Breathing => "breathing_rate",
            Channel::SkinTemp => "skin_temperature",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Population norms for healthy adults at rest, and the smallest SD
    /// the baseline may have (a very steady wearer must not turn every
    /// small change into a large z):
    ///
    /// * heart rate 72 ± 12 bpm (RR 926 ± 90 ms in Nunan et al. 2010 is
    ///   65 bpm; the clinical resting range 60–100 is about ±2.3 SD);
    /// * ln RMSSD: RMSSD 42 ± 15 ms across studies (Nunan, Sandercock and
    ///   Brodie, *A quantitative systematic review of normal values for
    ///   short-term heart rate variability in healthy adults*, PACE
    ///   33:1407–1417, 2010): ln 3.74, with an SD of 0.55 because
    ///   individuals (and ages) spread wider than study means;
    /// * ln SCL: about 4 µS, ln 1.4 ± 0.8 (Boucsein 2012: 2–20 µS at the
    ///   fingers, less at the wrist — the prior is weak on purpose);
    /// * non-specific SCRs 2 ± 1.5 per minute at rest (Boucsein 2012; Dawson
    ///   et al. 2007: 1–3 per minute);
    /// * breathing 15 ± 3 per minute (adult resting range 12–20);
    /// * skin temperature 33 ± 1.5 °C (wrist and finger; sites differ).
    pub fn prior(self) -> Prior {
        let (mean, sd, floor_sd, informative) = match self {
            Channel::HeartRate => (72.0, 12.0, 3.0, 0.7),
            Channel::LnRmssd => (3.74, 0.55, 0.12, 0.5),
            Channel::LnScl => (1.4, 0.8, 0.08, 0.2),
            Channel::ScrRate => (2.0, 1.5, 0.8, 0.6),
            Channel::Breathing => (15.0, 3.0, 1.0, 0.8),
            Channel::SkinTemp => (33.0, 1.5, 0.25, 0.3),
        };
        Prior {
            mean,
            sd,
            floor_sd,
            informative,
        }
    }
}

/// A population prior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub mean: f64,
    pub sd: f64,
    pub floor_sd: f64,
    /// How much a departure from the *population* says, 0–1: it scales the
    /// channel's weight while the baseline is cold (SCL and skin temperature
    /// differ so much between people and sensor sites that only one's own
    /// baseline makes them meaningful).
    pub informative: f64,
}

/// Exponentially weighted sums of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    sw: f64,
    swx: f64,
    swxx: f64,
}

/// A channel's baseline at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub mean: f64,
    pub sd: f64,
    /// 0 (population) … 1 (personal).
    pub warmth: f64,
}

impl Baseline {
    /// z-score of `x`, clipped to ±4.
    pub fn z(&self, x: f64) -> f64 {
        ((x - self.mean) / self.sd).clamp(-4.0, 4.0)
    }
}

impl Stat {
    /// Forget by `factor` (0–1).
    pub fn decay(&mut self, factor: f64) {
        self.sw *= factor;
        self.swx *= factor;
        self.swxx *= factor;
    }

    pub fn baseline(&self, prior: &Prior) -> Baseline {
        let n0 = PRIOR_SECONDS;
        let (m_p, v_p) = if self.sw > 1e-9 {
            let m = self.swx / self.sw;
            (m, (self.swxx / self.sw - m * m).max(0.0))
        } else {
            (prior.mean, prior.sd * prior.sd)
        };
        let total = self.sw + n0;
        let mean = (self.sw * m_p + n0 * prior.mean) / total;
        let var = (self.sw * v_p + n0 * prior.sd * prior.sd) / total;
        Baseline {
            mean,
            sd: var.sqrt().max(prior.floor_sd),
            warmth: self.sw / total,
        }
    }

    /// Add `x` observed over `seconds`, robustly against `baseline`.
    pub fn update(&mut self, x: f64, seconds: f64, baseline: &Baseline) {
        let z = (x - baseline.mean) / baseline.sd;
        let (x, w) = if z.abs() > 2.0 {
            let clipped = baseline.mean + z.signum() * 2.5_f64.min(z.abs()) * baseline.sd;
            (clipped, seconds * 0.2)
        } else {
            (x, seconds)
        };
        self.sw += w;
        self.swx += w * x;
        self.swxx += w * x * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_baseline_is_the_population_and_warms_to_the_person() {
        let prior = Channel::HeartRate.prior();
        let mut s = Stat::default();
        let b = s.baseline(&prior);
        assert_eq!((b.mean, b.sd, b.warmth), (72.0, 12.0, 0.0));
        for i in 0..60 {
            let b = s.baseline(&prior);
            s.update(55.0 + (i % 3) as f64, 10.0, &b);
        }
        let b = s.baseline(&prior);
        assert!(b.warmth > 0.8 && (b.mean - 57.0).abs() < 3.0, "{b:?}");
        assert!(b.sd >= prior.floor_sd);
    }

    #[test]
    fn outliers_move_the_baseline_slowly() {
        let prior = Channel::HeartRate.prior();
        let mut s = Stat::default();
        for _ in 0..30 {
            let b = s.baseline(&prior);
            s.update(60.0, 10.0, &b);
        }
        let before = s.baseline(&prior).mean;
        for _ in 0..30 {
            let b = s.baseline(&prior);
            s.update(95.0, 10.0, &b);
        }
        let after = s.baseline(&prior).mean;
        assert!(after - before < 10.0, "{before} -> {after}");
    }
}
