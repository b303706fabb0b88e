//! Quality report of the physiological plugin:
//!
//!     cargo run --release -p emotion-plugin-physiological --example physiological_quality [SEED_OFFSET]
//!
//! 1. HRV: the `hrv_example` of shared/data/ble/hrm_0x2a37_vectors.json
//!    (mean NN, SDNN, RMSSD, pNN50), by the HRV module and through the
//!    plugin; every vector's decoded heart rate and RR intervals through the
//!    plugin. The data directory is `../shared/data` beside the repository,
//!    or `$EMOTION_SHARED_DATA`.
//! 2. SCR detection on synthetic skin conductance with known responses:
//!    precision, recall, F1 (a detection matches a true response within
//!    ±2 s of its peak), exact-count accuracy; 400 windows of 120 s at 4, 8,
//!    16 and 32 Hz, with drift and sub-threshold ripples, at two noise levels.
//! 3. SCR count per response amplitude (0.02–1 µS) on wrist-sensor traces
//!    with drift, white and quantization noise and motion spikes: detected
//!    over true count, precision, recall, F1, and the count by sample rate;
//!    then false responses on the same traces without responses.
//! 4. Stress ranking from skin conductance alone at small amplitudes: the
//!    AUC of the stress index, stress-phase windows against calm ones.
//! 5. A scripted session (5 min calm, 5 min stress, 5 min recovery, 15-s
//!    windows) over 20 seeds: phase means of arousal and the stress index,
//!    and how often they rise and fall in order.
//! 6. The same physiology read against two wearers' own baselines.
//! 7. Native speed, µs per reading.

use std::path::PathBuf;
use std::time::Instant;

use emotion_plugin_physiological::synth::{self, Phase, Rng, State};
use emotion_plugin_physiological::{Engine, Settings, eda, hrv};
use emotion_plugin_sdk::{Outcome, Payload, Physiological, Reading, Source};
use serde_json::Value;

const T0: i64 = 1_723_732_200_000;

fn data_dir() -> PathBuf {
    std::env::var_os("EMOTION_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    )
}

fn check(name: &str, got: f64, expected: f64, tol: f64) -> bool {
    let ok = (got - expected).abs() <= tol;
    println!(
        "   {name:<28} {got:>9.3}  expected {expected:>9.3}  {}",
        if ok { "ok" } else { "MISMATCH" }
    );
    ok
}

fn hrv_section() -> bool {
    let path = data_dir().join("ble/hrm_0x2a37_vectors.json");
    println!("1. HRV check against {}", path.display());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            println!("   cannot read it ({e}); set EMOTION_SHARED_DATA to the data directory");
            return false;
        }
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            println!("   not JSON: {e}");
            return false;
        }
    };
    let ex = &doc["hrv_example"];
    let rr: Vec<f64> = ex["rr_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let num = |k: &str| ex[k].as_f64().unwrap_or(f64::NAN);
    let cleaned = hrv::clean(&rr, &[], false);
    let Some(t) = hrv::time_domain(&cleaned.nn, &cleaned.joined) else {
        println!("   no intervals");
        return false;
    };
    println!(
        "   {} intervals, {} rejected as artefacts; pNN50 convention: |diff| > 50 ms strictly, over the {} successive differences",
        rr.len(),
        cleaned.rejected(),
        t.n_diffs
    );
    // The file gives 3 decimals.
    let mut ok = check("mean NN (ms)", t.mean_nn_ms, num("mean_nn_ms"), 0.0005);
    ok &= check(
        "SDNN, sample n-1 (ms)",
        t.sdnn_ms.unwrap_or(f64::NAN),
        num("sdnn_ms_sample"),
        0.0005,
    );
    ok &= check(
        "RMSSD (ms)",
        t.rmssd_ms.unwrap_or(f64::NAN),
        num("rmssd_ms"),
        0.0005,
    );
    ok &= check(
        "pNN50 (% of differences)",
        t.pnn50_pct.unwrap_or(f64::NAN),
        num("pnn50_pct_of_differences"),
        0.0005,
    );
    // Through the plugin (extra fields, 2 decimals).
    let mut engine = Engine::new(Settings::default());
    let p = Physiological {
        heart_rate_bpm: None,
        rr_intervals_ms: rr,
        skin_conductance_us: Vec::new(),
        eda_sample_rate_hz: None,
        breathing_rate_bpm: None,
        skin_temperature_c: None,
    };
    let through = match engine.process(&reading("hrv", T0, Source::Physiological, p)) {
        Outcome::Emotion(e) => serde_json::from_str::<Value>(&e.extra)
            .ok()
            .and_then(|mut extra| extra.get_mut("hrv").map(Value::take)),
        _ => None,
    };
    let same = through.as_ref().is_some_and(|h| {
        (h["rmssd_ms"].as_f64().unwrap_or(0.0) - num("rmssd_ms")).abs() < 0.005
            && (h["sdnn_ms"].as_f64().unwrap_or(0.0) - num("sdnn_ms_sample")).abs() < 0.005
            && (h["pnn50_pct"].as_f64().unwrap_or(0.0) - num("pnn50_pct_of_differences")).abs()
                < 0.005
    });
    println!(
        "   through the plugin's `hrv` extra field: {}",
        through.map_or("missing".into(), |h| h.to_string())
    );
    ok &= same;
    // Every vector's decoded values through the plugin.
    let vectors = doc["vectors"].as_array().cloned().unwrap_or_default();
    let mut read = 0;
    let mut usable = 0;
    for (i, v) in vectors.iter().enumerate() {
        let hr = v["heart_rate_bpm"].as_f64().unwrap_or(0.0);
        let rr: Vec<f64> = v["rr_intervals_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if hr <= 0.0 && rr.is_empty() {
            continue; // sensor contact lost: the gateway drops it before any plugin
        }
        usable += 1;
        let p = Physiological {
            heart_rate_bpm: (hr > 0.0).then_some(hr),
            rr_intervals_ms: rr,
            skin_conductance_us: Vec::new(),
            eda_sample_rate_hz: None,
            breathing_rate_bpm: None,
            skin_temperature_c: None,
        };
        if matches!(
            Engine::new(Settings::default()).process(&reading(
                &format!("v{i}"),
                T0,
                Source::Physiological,
                p
            )),
            Outcome::Emotion(_)
        ) {
            read += 1;
        }
    }
    println!(
        "   decoded 0x2A37 vectors normalized: {read}/{usable} (the vector with heart rate 0 and no contact is not a reading)"
    );
    ok &= read == usable;
    println!("   HRV check: {}", if ok { "PASS" } else { "FAIL" });
    ok
}

fn reading(user: &str, ts: i64, source: Source, p: Physiological) -> Reading {
    Reading {
        user_id: user.into(),
        session_id: "s".into(),
        device_id: None,
        timestamp_ms: ts,
        source,
        payload: Payload::Physiological(p),
    }
}

fn scr_section(offset: u64) {
    println!(
        "2. SCR detection (threshold {} µS) on synthetic 120-s windows at 4, 8, 16 and 32 Hz (responses of 0.04–1 µS, plus sub-threshold ripples):",
        eda::DEFAULT_MIN_AMPLITUDE_US
    );
    for (name, noise) in [
        ("noise 0.001–0.004 µS (good contact)", (0.001, 0.004)),
        ("noise 0.004–0.010 µS (poor contact)", (0.004, 0.010)),
    ] {
        let rates = [4.0, 8.0, 16.0, 32.0];
        let (mut tp, mut fp, mut fneg, mut exact, mut windows, mut abs_err) =
            (0, 0, 0, 0, 0, 0usize);
        for seed in 0..400u64 {
            let rate = rates[(seed % 4) as usize];
            let trace = synth::random_scr_trace(offset + 1000 + seed, rate, 120.0, noise);
            let f = eda::analyze(&trace.samples, rate, eda::DEFAULT_MIN_AMPLITUDE_US);
            let found: Vec<f64> = f.scrs.iter().map(|s| s.peak as f64 / rate).collect();
            let mut used = vec![false; found.len()];
            let mut hits = 0;
            for &t in &trace.peaks_s {
                let best = found
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| !used[*i] && (**p - t).abs() <= 2.0)
                    .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()));
                if let Some((i, _)) = best {
                    used[i] = true;
                    hits += 1;
                }
            }
            tp += hits;
            fneg += trace.peaks_s.len() - hits;
            fp += found.len() - hits;
            windows += 1;
            if found.len() == trace.peaks_s.len() {
                exact += 1;
            }
            abs_err += found.len().abs_diff(trace.peaks_s.len());
        }
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / (tp + fneg).max(1) as f64;
        println!(
            "   {name}: {windows} windows, {} responses: precision {:.3}  recall {:.3}  F1 {:.3}  exact count {:.1} % of windows  mean |count error| {:.3}",
            tp + fneg,
            precision,
            recall,
            2.0 * precision * recall / (precision + recall),
            100.0 * exact as f64 / windows as f64,
            abs_err as f64 / windows as f64
        );
    }
}

/// True responses matched to detections (each used once) within ±2 s of
/// the peak: (hits, false detections, misses).
fn score(found: &[f64], truth: &[f64]) -> (usize, usize, usize) {
    let mut used = vec![false; found.len()];
    let mut hits = 0;
    for &t in truth {
        let best = found
            .iter()
            .enumerate()
            .filter(|(i, p)| !used[*i] && (**p - t).abs() <= 2.0)
            .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()));
        if let Some((i, _)) = best {
            used[i] = true;
            hits += 1;
        }
    }
    (hits, found.len() - hits, truth.len() - hits)
}

fn amplitude_section(offset: u64) {
    let per_amplitude = 240u64;
    println!(
        "3. SCR count per response amplitude, wrist-sensor traces (synth::wrist_scr_trace: {per_amplitude} windows of 120 s per amplitude at 4, 8, 16 and 32 Hz; tonic 1–20 µS drifting, white noise 0.005–0.01 µS, quantization 0.001–0.01 µS, motion spikes; rise 1–3 s, recovery τ 3–10 s):"
    );
    println!(
        "   {:<11} {:>9} {:>7} {:>10} {:>9} {:>7} {:>6}   found/true at 4 | 8 | 16 | 32 Hz",
        "amplitude", "responses", "found", "found/true", "precision", "recall", "F1"
    );
    let rates = [4.0, 8.0, 16.0, 32.0];
    let rows: [(&str, (f64, f64)); 7] = [
        ("0.02 µS", (0.02, 0.02)),
        ("0.03 µS", (0.03, 0.03)),
        ("0.05 µS", (0.05, 0.05)),
        ("0.1 µS", (0.1, 0.1)),
        ("0.3 µS", (0.3, 0.3)),
        ("1 µS", (1.0, 1.0)),
        ("0.02–1 µS", (0.02, 1.0)),
    ];
    for (name, amplitude) in rows {
        let w = synth::Wrist {
            amplitude_us: amplitude,
            ..synth::Wrist::at(amplitude.0)
        };
        let (mut tp, mut fp, mut fneg) = (0, 0, 0);
        let mut by_rate = [(0usize, 0usize); 4];
        for seed in 0..per_amplitude {
            let k = (seed % 4) as usize;
            let rate = rates[k];
            let trace = synth::wrist_scr_trace(offset + 7000 + seed, rate, 120.0, &w);
            let f = eda::analyze(&trace.samples, rate, eda::DEFAULT_MIN_AMPLITUDE_US);
            let found: Vec<f64> = f.scrs.iter().map(|s| s.peak as f64 / rate).collect();
            let (h, f_, m) = score(&found, &trace.peaks_s);
            tp += h;
            fp += f_;
            fneg += m;
            by_rate[k].0 += found.len();
            by_rate[k].1 += trace.peaks_s.len();
        }
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / (tp + fneg).max(1) as f64;
        let ratios: Vec<String> = by_rate
            .iter()
            .map(|(f, t)| format!("{:.2}", *f as f64 / (*t).max(1) as f64))
            .collect();
        println!(
            "   {name:<11} {:>9} {:>7} {:>10.3} {:>9.3} {:>7.3} {:>6.3}   {}",
            tp + fneg,
            tp + fp,
            (tp + fp) as f64 / (tp + fneg).max(1) as f64,
            precision,
            recall,
            2.0 * precision * recall / (precision + recall).max(f64::MIN_POSITIVE),
            ratios.join(" | ")
        );
    }
    // The same wrist traces without responses: what is counted is false.
    for (name, spikes, drift) in [
        ("drift ±0.3 µS/min, 1.5 spikes/min", 1.5, 0.3),
        ("drift ±0.3 µS/min, 6 spikes/min", 6.0, 0.3),
        ("no drift, no spikes", 0.0, 0.0),
    ] {
        let w = synth::Wrist {
            responses_per_min: 0.0,
            spikes_per_min: spikes,
            drift_us_per_min: drift,
            ..synth::Wrist::at(0.1)
        };
        let mut by_rate = [0usize; 4];
        for seed in 0..per_amplitude {
            let k = (seed % 4) as usize;
            let trace = synth::wrist_scr_trace(offset + 8000 + seed, rates[k], 120.0, &w);
            by_rate[k] += eda::analyze(&trace.samples, rates[k], eda::DEFAULT_MIN_AMPLITUDE_US)
                .scrs
                .len();
        }
        let per_window = |count: usize, windows: u64| count as f64 / windows as f64;
        let rates_text: Vec<String> = by_rate
            .iter()
            .map(|c| format!("{:.2}", per_window(*c, per_amplitude / 4)))
            .collect();
        println!(
            "   no responses ({name}): {:.2} false per 2-min window   at 4 | 8 | 16 | 32 Hz: {}",
            per_window(by_rate.iter().sum(), per_amplitude),
            rates_text.join(" | ")
        );
    }
}

/// Probability that a random `hi` value exceeds a random `lo` value (ties
/// count half): the area under the ROC curve.
fn auc(hi: &[f64], lo: &[f64]) -> f64 {
    let mut wins = 0.0;
    for a in hi {
        for b in lo {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (hi.len() * lo.len()).max(1) as f64
}

fn ranking_section(offset: u64) {
    let seeds = 20u64;
    println!(
        "4. stress ranking from skin conductance alone (synth::wrist_eda_session: 5 min calm, 5 min stress, 5 min recovery, 15-s windows at 4 Hz, responses 1.5 -> 7 per minute, tonic level unchanged but for a slow drift, wrist noise and spikes), {seeds} wearers:"
    );
    println!(
        "   {:<10} {:>16} {:>12} {:>14} {:>10} {:>20} {:>20}",
        "amplitude",
        "AUC stress/calm",
        "(true counts)",
        "(found counts)",
        "found/true",
        "SCR/min calm (true)",
        "SCR/min stress (true)"
    );
    for amplitude in [0.02, 0.03, 0.05, 0.3] {
        let (mut auc_sum, mut oracle_sum, mut found, mut truth) = (0.0, 0.0, 0usize, 0usize);
        let mut counted_sum = 0.0;
        let mut rate = [(0.0f64, 0usize, 0usize); 2]; // found per min, true count, windows
        for seed in 0..seeds {
            let mut engine = Engine::new(Settings::default());
            let (mut calm, mut stress) = (Vec::new(), Vec::new());
            // The same ranking from the true response counts: the best a
            // detector could do with 15-s windows.
            let (mut calm_true, mut stress_true) = (Vec::new(), Vec::new());
            // And from the detector's counts alone (the stress index also
            // reads the tonic level, which undetected responses raise).
            let (mut calm_found, mut stress_found) = (Vec::new(), Vec::new());
            for (phase, ts, p, n_true) in
                synth::wrist_eda_session(offset + 900 + seed, T0, amplitude)
            {
                let Ok(a) = engine.assess("wrist", ts, Source::Physiological, &p) else {
                    continue;
                };
                let n_found = a.eda.as_ref().map_or(0, |f| f.scrs.len());
                found += n_found;
                truth += n_true;
                let i = match phase {
                    Phase::Calm => {
                        calm.push(a.stress_index);
                        calm_true.push(n_true as f64);
                        calm_found.push(n_found as f64);
                        0
                    }
                    Phase::Stress => {
                        stress.push(a.stress_index);
                        stress_true.push(n_true as f64);
                        stress_found.push(n_found as f64);
                        1
                    }
                    Phase::Recovery => continue,
                };
                rate[i].0 += n_found as f64;
                rate[i].1 += n_true;
                rate[i].2 += 1;
            }
            auc_sum += auc(&stress, &calm);
            oracle_sum += auc(&stress_true, &calm_true);
            counted_sum += auc(&stress_found, &calm_found);
        }
        let per_min = |r: (f64, usize, usize)| {
            let minutes = r.2 as f64 * synth::SESSION_WINDOW_S / 60.0;
            (r.0 / minutes, r.1 as f64 / minutes)
        };
        let (cf, ct) = per_min(rate[0]);
        let (sf, st) = per_min(rate[1]);
        println!(
            "   {:<10} {:>16.3} {:>12.3} {:>14.3} {:>10.3} {:>20} {:>20}",
            format!("{amplitude} µS"),
            auc_sum / seeds as f64,
            oracle_sum / seeds as f64,
            counted_sum / seeds as f64,
            found as f64 / truth.max(1) as f64,
            format!("{cf:.2} ({ct:.2})"),
            format!("{sf:.2} ({st:.2})")
        );
    }
}

fn session_section(offset: u64) {
    let seeds = 20;
    let mut in_order = [0usize; 2];
    let mut falls = [0usize; 2];
    let mut sums = [[0.0f64; 3]; 3];
    let mut counts = [0usize; 3];
    let mut labels = std::collections::BTreeMap::<(Phase, &str), usize>::new();
    for seed in 0..seeds {
        let mut engine = Engine::new(Settings::default());
        let mut by_phase: [Vec<(f64, f64, f64)>; 3] = Default::default();
        for (phase, ts, p) in synth::scripted_session(offset + 500 + seed, T0) {
            let Ok(a) = engine.assess("wearer", ts, Source::Physiological, &p) else {
                continue;
            };
            let i = phase as usize;
            by_phase[i].push((a.arousal, a.stress_index, a.valence));
            *labels.entry((phase, a.label.as_str())).or_default() += 1;
        }
        let m = |i: usize, k: usize| {
            let v = &by_phase[i];
            v.iter().map(|x| [x.0, x.1, x.2][k]).sum::<f64>() / v.len().max(1) as f64
        };
        for (i, (row, count)) in sums.iter_mut().zip(counts.iter_mut()).enumerate() {
            for (k, cell) in row.iter_mut().enumerate() {
                *cell += m(i, k);
            }
            *count += 1;
        }
        for k in 0..2 {
            if m(0, k) < m(1, k) && m(2, k) < m(1, k) {
                in_order[k] += 1;
            }
            let rec = &by_phase[2];
            let get = |x: &(f64, f64, f64)| if k == 0 { x.0 } else { x.1 };
            let early = rec[..4].iter().map(get).sum::<f64>() / 4.0;
            let late = rec[rec.len() - 8..].iter().map(get).sum::<f64>() / 8.0;
            if late < early {
                falls[k] += 1;
            }
        }
    }
    println!(
        "5. scripted session (5 min calm -> 5 min stress -> 5 min recovery, 15-s windows), {seeds} seeds:"
    );
    println!(
        "   {:<9} {:>8} {:>13} {:>8}   labels",
        "phase", "arousal", "stress index", "valence"
    );
    for (i, phase) in [Phase::Calm, Phase::Stress, Phase::Recovery]
        .into_iter()
        .enumerate()
    {
        let n = counts[i] as f64;
        let l: Vec<String> = labels
            .iter()
            .filter(|((p, _), _)| *p == phase)
            .map(|((_, l), c)| format!("{l} {c}"))
            .collect();
        println!(
            "   {:<9} {:>8.3} {:>13.3} {:>8.3}   {}",
            phase.name(),
            sums[i][0] / n,
            sums[i][1] / n,
            sums[i][2] / n,
            l.join(", ")
        );
    }
    println!(
        "   calm < stress > recovery: arousal {}/{seeds}, stress index {}/{seeds}; falls during recovery (last 2 min < first minute): arousal {}/{seeds}, stress index {}/{seeds}",
        in_order[0], in_order[1], falls[0], falls[1]
    );
}

fn baseline_section() {
    let alice = State {
        hr_bpm: 58.0,
        rsa_ms: 55.0,
        ..State::CALM
    };
    let bob = State {
        hr_bpm: 84.0,
        rsa_ms: 15.0,
        noise_ms: 8.0,
        ..State::CALM
    };
    let mut engine = Engine::new(Settings::default());
    let mut rng = Rng::new(9);
    for k in 0..40 {
        let t = k as f64 * 15.0;
        let ts = T0 + (t as i64 + 15) * 1000;
        for (user, state) in [("alice", &alice), ("bob", &bob)] {
            let p = synth::window(&mut rng, t, 15.0, state);
            let _ = engine.assess(user, ts, Source::Physiological, &p);
        }
    }
    let p = synth::window(&mut rng, 600.0, 60.0, &bob);
    let ts = T0 + 675_000;
    let a = engine.assess("alice", ts, Source::Physiological, &p);
    let b = engine.assess("bob", ts, Source::Physiological, &p);
    let fresh = Engine::new(Settings::default()).assess("carol", ts, Source::Physiological, &p);
    println!(
        "6. the same minute of physiology (84 bpm, RMSSD ~13 ms) after 10 min of each wearer at rest:"
    );
    for (who, r) in [
        ("alice (rests at 58 bpm)", a),
        ("bob (rests at 84 bpm)", b),
        ("carol (no baseline yet)", fresh),
    ] {
        if let Ok(r) = r {
            println!(
                "   {who:<24} stress index {:.3}  arousal {:.3}  label {:<10} confidence {:.3}  baseline warmth {:.2}",
                r.stress_index,
                r.arousal,
                r.label.as_str(),
                r.confidence,
                r.warmth
            );
        }
    }
}

fn speed_section() {
    let mut rng = Rng::new(77);
    // Windowed wearable readings (15 s of RR, 60 EDA samples at 4 Hz,
    // breathing, temperature) and BLE heart-rate notifications (HR + 1-2 RR).
    let windows: Vec<Reading> = (0..100)
        .map(|i| {
            let p = synth::window(&mut rng, i as f64 * 15.0, 15.0, &State::CALM);
            reading(
                &format!("w{}", i % 20),
                T0 + (i / 20) * 15_000,
                Source::Physiological,
                p,
            )
        })
        .collect();
    let notifications: Vec<Reading> = (0..100)
        .map(|i| {
            let p = Physiological {
                heart_rate_bpm: Some(72.0),
                rr_intervals_ms: if i % 2 == 0 {
                    vec![830.0]
                } else {
                    vec![825.0, 841.0]
                },
                skin_conductance_us: Vec::new(),
                eda_sample_rate_hz: None,
                breathing_rate_bpm: None,
                skin_temperature_c: None,
            };
            reading(
                &format!("strap{}", i % 20),
                T0 + (i / 20),
                Source::Biometric,
                p,
            )
        })
        .collect();
    println!(
        "7. native speed (Engine::process, batch of 100; µs per reading in the fastest batch, median batch in parentheses):"
    );
    for (name, batch) in [
        ("15-s windows (RR + EDA + breathing + temp)", &windows),
        ("BLE notifications (HR + 1-2 RR)", &notifications),
    ] {
        let mut engine = Engine::new(Settings::default());
        let mut ts_shift = 0;
        let mut per_batch = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_millis() < 1500 {
            ts_shift += 15_000;
            let readings: Vec<Reading> = batch
                .iter()
                .map(|r| Reading {
                    timestamp_ms: r.timestamp_ms + ts_shift,
                    ..r.clone()
                })
                .collect();
            let t = Instant::now();
            for r in &readings {
                let out = engine.process(r);
                debug_assert!(matches!(out, Outcome::Emotion(_)));
                std::hint::black_box(out);
            }
            per_batch.push(t.elapsed().as_secs_f64() * 1e6 / readings.len() as f64);
        }
        per_batch.sort_by(f64::total_cmp);
        println!(
            "   {name:<44} {:.2} µs per reading ({:.2})",
            per_batch[0],
            per_batch[per_batch.len() / 2]
        );
    }
}

fn main() {
    println!(
        "physiological plugin quality (emotion-plugin-physiological {})\n",
        env!("CARGO_PKG_VERSION")
    );
    // An optional first argument shifts every seed of the synthetic
    // sections, to check the figures on traces the detector was not tuned on.
    let offset = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(e)) => {
            eprintln!("the argument is a seed offset (a whole number): {e}");
            std::process::exit(2);
        }
    };
    if offset != 0 {
        println!("seed offset {offset} (the synthetic sections' seeds shifted by it)\n");
    }
    let hrv_ok = hrv_section();
    scr_section(offset);
    amplitude_section(offset);
    ranking_section(offset);
    session_section(offset);
    baseline_section();
    speed_section();
    if !hrv_ok {
        std::process::exit(1);
    }
}
