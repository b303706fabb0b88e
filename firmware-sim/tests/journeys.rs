//! The journey generators move heart rate, HRV and skin conductance the way
//! physiology does: RMSSD high when calm and low under stress, heart rate and
//! SCR rate the other way round, and back on recovery.

use std::time::Duration;

use firmware_sim::devices::{BandGen, Script, StrapGen};
use firmware_sim::journey::Journey;
use firmware_sim::physio::{self, count_scrs};

/// Per-window physiology: (mean HR, RMSSD, SCRs per minute, SCL, temperature).
#[derive(Debug, Clone, Copy)]
struct Window {
    hr: f64,
    rmssd: f64,
    scr_per_min: f64,
    scl: f64,
    temp: f64,
}

/// Run a strap and a band along `journey` for `total_s`, and measure the
/// windows `[from, to)` (seconds) from what the devices would send.
fn measure(journey: Journey, total_s: u32, windows: &[(u32, u32)], seed: u64) -> Vec<Window> {
    let script = Script::new(journey, Duration::from_secs(u64::from(total_s)));
    let mut strap = StrapGen::new(script, seed);
    let mut band = BandGen::new(script, seed + 1);
    let mut rr_by_second = Vec::new();
    let mut eda_by_second = Vec::new();
    for _ in 0..total_s {
        let rr: Vec<f64> = strap
            .step(1.0)
            .into_iter()
            .flat_map(|s| s.rr_intervals_ms)
            .collect();
        rr_by_second.push(rr);
        eda_by_second.push(band.step(1.0));
    }
    windows
        .iter()
        .map(|&(from, to)| {
            let (from, to) = (from as usize, to as usize);
            let rr: Vec<f64> = rr_by_second[from..to].iter().flatten().copied().collect();
            let eda: Vec<f64> = eda_by_second[from..to]
                .iter()
                .flat_map(|e| e.samples_us.iter().copied())
                .collect();
            let minutes = (to - from) as f64 / 60.0;
            Window {
                hr: physio::mean_hr(&rr).expect("beats"),
                rmssd: physio::rmssd(&rr).expect("beats"),
                scr_per_min: count_scrs(&eda, 0.05) as f64 / minutes,
                scl: eda.iter().sum::<f64>() / eda.len() as f64,
                temp: eda_by_second[to - 1].skin_temperature_c,
            }
        })
        .collect()
}

#[test]
fn calm_stress_recovery_moves_every_signal_in_order() {
    // 10 minutes: calm 0–180 s, stressed 240–390 s, recovered 480–600 s.
    for seed in [1, 2, 3] {
        let w = measure(
            Journey::CalmStressRecovery,
            600,
            &[(30, 180), (270, 390), (480, 600)],
            seed,
        );
        let (calm, stress, recovery) = (w[0], w[1], w[2]);
        eprintln!("seed {seed}: calm {calm:?}\n  stress {stress:?}\n  recovery {recovery:?}");
        assert!(calm.rmssd > 2.0 * stress.rmssd, "RMSSD calm > stress");
        assert!(recovery.rmssd > 1.5 * stress.rmssd, "RMSSD recovers");
        assert!(
            (30.0..90.0).contains(&calm.rmssd),
            "resting RMSSD plausible: {}",
            calm.rmssd
        );
        assert!(
            (3.0..25.0).contains(&stress.rmssd),
            "stressed RMSSD plausible: {}",
            stress.rmssd
        );
        assert!(stress.hr > calm.hr + 20.0, "HR rises under stress");
        assert!(recovery.hr < stress.hr - 15.0, "HR falls on recovery");
        assert!(
            (55.0..80.0).contains(&calm.hr),
            "resting HR plausible: {}",
            calm.hr
        );
        assert!(
            stress.scr_per_min > 2.0 * calm.scr_per_min,
            "SCRs more frequent under stress"
        );
        assert!(stress.scr_per_min > 5.0 && calm.scr_per_min < 6.0);
        assert!(stress.scl > calm.scl + 3.0, "tonic level rises");
        assert!(stress.temp < calm.temp, "skin cools under stress");
    }
}

#[test]
fn recovery_and_crisis_trend_opposite_ways() {
    let r = measure(Journey::Recovery, 480, &[(0, 120), (360, 480)], 7);
    assert!(r[1].rmssd > r[0].rmssd * 1.5, "{r:?}");
    assert!(r[1].hr < r[0].hr - 15.0, "{r:?}");
    assert!(r[1].scr_per_min < r[0].scr_per_min, "{r:?}");
    let c = measure(Journey::Crisis, 480, &[(0, 120), (360, 480)], 7);
    assert!(c[1].rmssd < c[0].rmssd, "{c:?}");
    assert!(c[1].hr > c[0].hr + 10.0, "{c:?}");
    assert!(c[1].scr_per_min > c[0].scr_per_min, "{c:?}");
}

#[test]
fn volatile_swings_more_than_stable() {
    let windows: Vec<(u32, u32)> = (0..10).map(|i| (i * 60, i * 60 + 60)).collect();
    let spread = |ws: &[Window]| {
        let hrs: Vec<f64> = ws.iter().map(|w| w.hr).collect();
        hrs.iter().copied().fold(f64::MIN, f64::max) - hrs.iter().copied().fold(f64::MAX, f64::min)
    };
    let v = measure(Journey::Volatile, 600, &windows, 11);
    let s = measure(Journey::Stable, 600, &windows, 11);
    assert!(
        spread(&v) > 3.0 * spread(&s),
        "volatile {} stable {}",
        spread(&v),
        spread(&s)
    );
}

#[test]
fn the_same_seed_replays_the_same_signals() {
    let a = measure(Journey::Volatile, 120, &[(0, 120)], 5);
    let b = measure(Journey::Volatile, 120, &[(0, 120)], 5);
    assert_eq!(a[0].rmssd, b[0].rmssd);
    assert_eq!(a[0].scl, b[0].scl);
}
