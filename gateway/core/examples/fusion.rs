//! Prints the fusion evaluation: the error of the fused estimate against
//! each source alone, in a scripted multi-source session (see
//! `emotion_core::analyzer::fusion_eval`).
//!
//!     cargo run --release -p emotion-core --example fusion [-- SEEDS]

use emotion_core::analyzer::FusionConfig;
use emotion_core::analyzer::fusion_eval::evaluate;

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let cfg = FusionConfig::default();
    let runs: Vec<_> = (1..=seeds).map(|s| evaluate(&cfg, s)).collect();
    let mean = |f: &dyn Fn(&emotion_core::analyzer::fusion_eval::Evaluation) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
    };
    println!(
        "fusion evaluation: {seeds} sessions of 10 minutes, {} scored moments each (mean RMSE)",
        runs.first().map_or(0, |r| r.samples)
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9}",
        "estimate", "valence", "arousal", "both"
    );
    if let Some(first) = runs.first() {
        for (k, (source, _)) in first.single.iter().enumerate() {
            println!(
                "{:<20} {:>9.4} {:>9.4} {:>9.4}",
                format!("{source} alone"),
                mean(&|r| r.single[k].1.valence_rmse),
                mean(&|r| r.single[k].1.arousal_rmse),
                mean(&|r| r.single[k].1.rmse),
            );
        }
    }
    let fused = mean(&|r| r.fused.rmse);
    println!(
        "{:<20} {:>9.4} {:>9.4} {:>9.4}",
        "fused",
        mean(&|r| r.fused.valence_rmse),
        mean(&|r| r.fused.arousal_rmse),
        fused
    );
    let best = mean(&|r| r.best_single().map_or(f64::NAN, |b| b.1.rmse));
    let wins = runs
        .iter()
        .filter(|r| r.best_single().is_some_and(|b| r.fused.rmse < b.1.rmse))
        .count();
    println!(
        "fused / best single source: {:.3} (fused lower in {wins} of {seeds} sessions)",
        fused / best
    );
}
