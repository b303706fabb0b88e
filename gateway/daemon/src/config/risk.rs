//! `[risk_sweep]`: the periodic sweep that flags users by the risk table over
//! their recent history (see `crate::risk`).

use serde::Deserialize;

use super::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSweepConfig {
    /// Run the sweep (the latest result is `GET /api/risk`).
    pub enabled: bool,
    /// Time between sweeps.
    pub interval: Dur,
    /// Only events this recent count, and users seen this recently are swept.
    pub lookback: Dur,
    /// Fewest recent events for a region indicator (high stress, depression
    /// indicators, anxiety pattern).
    pub min_events: usize,
    /// Share of recent events in a region for its indicator, in (0, 1].
    pub min_share: f64,
}

impl RiskSweepConfig {
    /// The analyzer's rule for these settings.
    pub fn rule(&self) -> emotion_core::analyzer::SweepRule {
        emotion_core::analyzer::SweepRule {
            lookback: chrono::Duration::from_std(self.lookback.0)
                .unwrap_or_else(|_| chrono::Duration::days(30)),
            min_events: self.min_events,
            min_share: self.min_share,
        }
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.interval.0 < std::time::Duration::from_secs(1) {
            p.push("risk_sweep.interval must be at least 1s".into());
        }
        let lookback = self.lookback.0;
        if lookback < std::time::Duration::from_secs(60)
            || lookback > std::time::Duration::from_secs(30 * 86_400)
        {
            p.push(format!(
                "risk_sweep.lookback must be between 1m and 30d (the analyzer keeps 30 days), got {}",
                self.lookback
            ));
        }
        if self.min_events == 0 {
            p.push("risk_sweep.min_events must be at least 1".into());
        }
        if !(self.min_share > 0.0 && self.min_share <= 1.0) {
            p.push(format!(
                "risk_sweep.min_share must be in (0, 1], got {}",
                self.min_share
            ));
        }
        p
    }
}
