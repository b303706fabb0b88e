//! The journey generators behind the simulated BLE adapter: a strap and a
//! band paired to a user produce physiological readings through the device
//! manager, heart rate and RR intervals from the strap, skin conductance and
//! temperature from the band.

use std::sync::Arc;
use std::time::Duration;

use emotion_ble::{
    Address, BleEvent, DeviceManager, ManagerConfig, MemoryPairingStore, SimAdapter, SimPeripheral,
};
use emotion_core::reading::ReadingPayload;
use firmware_sim::devices::{JourneyPeripheral, Script};
use firmware_sim::journey::Journey;
use firmware_sim::physio;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn journey_peripherals_become_readings_for_the_paired_user() {
    let strap = Address::parse("C0:FF:EE:00:00:01").expect("address");
    let band = Address::parse("C0:FF:EE:00:00:02").expect("address");
    let script = Script::new(Journey::CalmStressRecovery, Duration::from_secs(600));
    let sim = SimAdapter::with_peripherals([
        SimPeripheral::heart_rate_strap(
            strap.clone(),
            JourneyPeripheral::strap(script, 1, 1.0).manual(),
        ),
        SimPeripheral::eda_band(
            band.clone(),
            JourneyPeripheral::band(script, 2, 1.0).manual(),
        ),
    ]);
    let manager = DeviceManager::new(
        Arc::new(sim.clone()),
        Arc::new(MemoryPairingStore::new()),
        ManagerConfig {
            retry_check: Duration::from_millis(10),
            backoff_jitter: 0.0,
            ..ManagerConfig::default()
        },
    )
    .expect("manager");
    let found = manager.scan(Duration::from_millis(10)).await.expect("scan");
    assert_eq!(found.len(), 2);
    manager.pair(strap.clone(), "31").expect("pair");
    manager.pair(band.clone(), "31").expect("pair");
    let (tx, mut rx) = mpsc::channel(4096);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (m, c) = (manager.clone(), cancel.clone());
        async move { m.run(c, tx).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(sim.is_connected(&strap) && sim.is_connected(&band))
        || sim.subscriptions(&band).is_empty()
        || sim.subscriptions(&strap).is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "connects");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 10 simulated minutes, one tick per second: calm, stress, recovery.
    for _ in 0..600 {
        sim.tick(&strap);
        sim.tick(&band);
    }
    let mut rr_by_phase = [Vec::new(), Vec::new(), Vec::new()];
    let mut eda_samples = 0;
    let mut strap_readings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while strap_readings < 550 || eda_samples < 2000 {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("readings arrive")
            .expect("open");
        let BleEvent::Reading(r) = ev else { continue };
        assert_eq!(r.user_id, "31");
        let ReadingPayload::Physiological(p) = &r.payload else {
            panic!("physiological expected");
        };
        if r.device_id.as_deref() == Some(strap.as_str()) {
            strap_readings += 1;
            let hr = p.heart_rate.expect("heart rate");
            assert!((45.0..140.0).contains(&hr), "{hr}");
            // Phases by reading count (one per simulated second, or more).
            let phase = match strap_readings {
                0..=170 => 0,
                270..=380 => 1,
                490.. => 2,
                _ => continue,
            };
            rr_by_phase[phase].extend(p.rr_intervals_ms.iter().copied());
        } else {
            assert_eq!(r.device_id.as_deref(), Some(band.as_str()));
            assert_eq!(p.eda_sample_rate_hz, Some(4.0));
            assert!(
                p.skin_temperature
                    .is_some_and(|t| (28.0..36.0).contains(&t))
            );
            eda_samples += p.skin_conductance.len();
        }
    }
    let rmssd: Vec<f64> = rr_by_phase
        .iter()
        .map(|rr| physio::rmssd(rr).expect("beats"))
        .collect();
    assert!(rmssd[0] > 2.0 * rmssd[1], "calm vs stress RMSSD {rmssd:?}");
    assert!(
        rmssd[2] > 1.5 * rmssd[1],
        "recovery vs stress RMSSD {rmssd:?}"
    );
    cancel.cancel();
    task.await.expect("joins").expect("runs");
}
