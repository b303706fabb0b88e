//! The device manager against the simulated adapter: scan, pair, readings
//! for the bound user, reconnect with a gap marker (after a drop on demand,
//! scripted or periodic drops), no backlog after a drop, unbound devices
//! dropped, the connection limit, back-off, persisted pairings.

use std::sync::Arc;
use std::time::Duration;

use emotion_ble::sim::{SteadyEda, SteadyHeartRate};
use emotion_ble::{
    Address, BleError, BleEvent, BleTransport, DeviceManager, JourneyPeripheral, LinkDrop,
    LinkEvent, LinkState, ManagerConfig, MemoryPairingStore, Pairing, PairingStore, PeriodicDrop,
    SimAdapter, SimPeripheral, uuids,
};
use emotion_common::journey::{Journey, Script};
use emotion_core::Source;
use emotion_core::reading::{PhysiologicalPayload, RawReading, ReadingPayload};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const STRAP: &str = "AA:BB:CC:00:00:01";
const BAND: &str = "AA:BB:CC:00:00:02";

fn addr(s: &str) -> Address {
    Address::parse(s).expect("valid address")
}

fn fast() -> ManagerConfig {
    ManagerConfig {
        max_connections: 4,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(160),
        backoff_jitter: 0.0,
        connect_timeout: Duration::from_secs(2),
        retry_check: Duration::from_millis(10),
        ..ManagerConfig::default()
    }
}

struct Running {
    sim: SimAdapter,
    manager: DeviceManager<SimAdapter>,
    rx: mpsc::Receiver<BleEvent>,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), BleError>>,
}

impl Running {
    fn start(sim: SimAdapter, store: Arc<dyn PairingStore>, config: ManagerConfig) -> Self {
        let manager =
            DeviceManager::new(Arc::new(sim.clone()), store, config).expect("manager starts");
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (m, c) = (manager.clone(), cancel.clone());
            async move { m.run(c, tx).await }
        });
        Self {
            sim,
            manager,
            rx,
            cancel,
            task,
        }
    }

    /// The next event that `pick` accepts, skipping others; panics after 5 s.
    async fn next<R>(&mut self, what: &str, mut pick: impl FnMut(&BleEvent) -> Option<R>) -> R {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(r) = pick(&ev) {
                        return r;
                    }
                }
                Ok(None) => panic!("channel closed waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn connected(&mut self, address: &Address) -> Vec<uuid::Uuid> {
        let a = address.clone();
        self.next("connected", |ev| match ev {
            BleEvent::Link(LinkEvent::Connected {
                address,
                subscribed,
                ..
            }) if *address == a => Some(subscribed.clone()),
            _ => None,
        })
        .await
    }

    async fn reading(&mut self) -> RawReading {
        self.next("a reading", |ev| match ev {
            BleEvent::Reading(r) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Events already sent, without waiting for more.
    fn queued(&mut self) -> Vec<BleEvent> {
        let mut out = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            out.push(ev);
        }
        out
    }

    /// Readings of `n` notifications of `address`, sent after this call.
    /// The manager plans its connections at the top of every turn of its
    /// loop and handles one notification per turn, so once the second
    /// reading is here it has planned at least once since this call: a
    /// positive marker for "it had its chance to connect something".
    async fn turns_after_now(&mut self, address: &Address) {
        for _ in 0..2 {
            assert_eq!(self.sim.tick(address), 1, "one notification");
            let a = address.to_string();
            self.next("a reading of the ticked device", |ev| match ev {
                BleEvent::Reading(r) if r.device_id.as_deref() == Some(a.as_str()) => Some(()),
                _ => None,
            })
            .await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run stops")
            .expect("run does not panic");
        assert_eq!(r, Ok(()));
        assert_eq!(self.sim.connected_count(), 0, "everything disconnected");
    }
}

fn physio(r: &RawReading) -> &PhysiologicalPayload {
    match &r.payload {
        ReadingPayload::Physiological(p) => p,
        other => panic!("physiological payload expected, got {other:?}"),
    }
}

fn strap_and_band() -> SimAdapter {
    SimAdapter::with_peripherals([
        SimPeripheral::heart_rate_strap(addr(STRAP), SteadyHeartRate::manual(75)),
        SimPeripheral::eda_band(addr(BAND), SteadyEda::manual(4.2)),
    ])
}

#[tokio::test]
async fn scan_finds_the_strap_and_lists_it() {
    let sim = strap_and_band();
    let manager = DeviceManager::new(
        Arc::new(sim.clone()),
        Arc::new(MemoryPairingStore::new()),
        fast(),
    )
    .expect("manager");
    assert!(manager.devices().await.expect("devices").is_empty());
    let found = manager.scan(Duration::from_millis(20)).await.expect("scan");
    let strap = found
        .iter()
        .find(|d| d.address == addr(STRAP))
        .expect("strap found");
    assert_eq!(strap.name.as_deref(), Some("EmoStrap HR-1"));
    assert!(strap.services.contains(&uuids::HEART_RATE_SERVICE));
    assert!(strap.rssi.is_some_and(|r| r < 0));
    assert!(strap.last_seen.is_some());
    assert_eq!(strap.user_id, None);
    assert!(found.iter().any(|d| d.address == addr(BAND)));

    // A scan for the heart-rate service alone does not return the band.
    let hr_only = sim
        .scan(Duration::ZERO, &[uuids::HEART_RATE_SERVICE])
        .await
        .expect("scan");
    assert_eq!(hr_only.len(), 1);

    manager.pair(addr(STRAP), "42").expect("pair");
    let listed = manager.devices().await.expect("devices");
    assert_eq!(listed.len(), 2);
    let strap = listed
        .iter()
        .find(|d| d.address == addr(STRAP))
        .expect("listed");
    assert_eq!(strap.user_id.as_deref(), Some("42"));
    assert_eq!(strap.link, Some(LinkState::Idle));
    // The JSON the pairing API can return as is.
    let json = serde_json::to_value(strap).expect("serializes");
    assert_eq!(json["address"], STRAP);
    assert_eq!(json["user_id"], "42");
    assert_eq!(json["link"]["state"], "idle");
    assert_eq!(json["services"][0], "0000180d-0000-1000-8000-00805f9b34fb");
}

#[tokio::test]
async fn pairing_binds_and_notifications_become_readings_for_the_user() {
    let store = Arc::new(MemoryPairingStore::new());
    let mut run = Running::start(strap_and_band(), store.clone(), fast());
    let strap = addr(STRAP);
    run.manager.pair(strap.clone(), "42").expect("pair");
    assert_eq!(store.load().expect("load").len(), 1, "persisted");

    let subscribed = run.connected(&strap).await;
    assert!(subscribed.contains(&uuids::HEART_RATE_MEASUREMENT));
    let battery = run
        .next("battery", |ev| match ev {
            BleEvent::Battery {
                percent, user_id, ..
            } => Some((*percent, user_id.clone())),
            _ => None,
        })
        .await;
    assert_eq!(battery, (90, "42".to_owned()));

    assert_eq!(run.sim.tick(&strap), 1);
    let r = run.reading().await;
    assert_eq!(r.user_id, "42");
    assert_eq!(r.device_id.as_deref(), Some(STRAP));
    assert_eq!(r.source, Source::Physiological);
    assert!(r.timestamp.is_some());
    let p = physio(&r);
    assert_eq!(p.heart_rate, Some(75.0));
    assert_eq!(p.rr_intervals_ms.len(), 1);
    assert!((p.rr_intervals_ms[0] - 800.0).abs() < 1.0, "{p:?}");
    // The pipeline accepts it as is.
    assert_eq!(RawReading::from_json(&r.to_json(), None).expect("valid"), r);

    let views = run.manager.devices().await.expect("devices");
    let view = views.iter().find(|d| d.address == strap).expect("listed");
    assert!(matches!(view.link, Some(LinkState::Connected { .. })));
    assert_eq!(view.battery_percent, Some(90));
    assert_eq!(run.manager.stats().readings, 1);
    run.stop().await;
}

#[tokio::test]
async fn a_dropped_link_reconnects_resubscribes_and_marks_a_gap() {
    let mut run = Running::start(
        strap_and_band(),
        Arc::new(MemoryPairingStore::new()),
        fast(),
    );
    let strap = addr(STRAP);
    run.manager.pair(strap.clone(), "7").expect("pair");
    run.connected(&strap).await;
    run.sim.tick(&strap);
    let before = run.reading().await;

    assert!(run.sim.drop_link(&strap, Duration::from_millis(100)));
    run.next("dropped", |ev| {
        matches!(ev, BleEvent::Link(LinkEvent::Dropped { .. })).then_some(())
    })
    .await;
    // Out of reach for 100 ms: some connects fail and back off first.
    let subscribed = run.connected(&strap).await;
    assert!(subscribed.contains(&uuids::HEART_RATE_MEASUREMENT));
    assert_eq!(run.sim.connects(&strap), 2);
    assert!(
        run.sim
            .subscriptions(&strap)
            .contains(&uuids::HEART_RATE_MEASUREMENT)
    );
    let gap = run
        .next("gap", |ev| match ev {
            BleEvent::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .await;
    assert_eq!(gap.user_id, "7");
    assert_eq!(gap.device_id, STRAP);
    assert!(gap.from <= gap.to);
    assert!(before.timestamp.is_some_and(|t| gap.from >= t));
    assert!(gap.failed_attempts >= 1, "{gap:?}");
    assert!((gap.to - gap.from).num_milliseconds() >= 90, "{gap:?}");

    run.sim.tick(&strap);
    let after = run.reading().await;
    assert_eq!(after.user_id, "7");
    assert!(after.timestamp >= Some(gap.to));
    let stats = run.manager.stats();
    assert_eq!((stats.link_drops, stats.gaps, stats.readings), (1, 1, 2));
    run.stop().await;
}

#[tokio::test]
async fn scripted_drops_with_live_pacing() {
    // A strap ticking every 10 ms that drops its link after its 5th and
    // 12th notification, for 50 ms each time.
    let strap = addr(STRAP);
    let sim = SimAdapter::with_peripherals([SimPeripheral::heart_rate_strap(
        strap.clone(),
        SteadyHeartRate {
            interval: Some(Duration::from_millis(10)),
            ..SteadyHeartRate::new(120)
        },
    )
    .with_link_drops([
        LinkDrop {
            after_notifications: 5,
            down_for: Duration::from_millis(50),
        },
        LinkDrop {
            after_notifications: 12,
            down_for: Duration::from_millis(50),
        },
    ])]);
    let mut run = Running::start(sim, Arc::new(MemoryPairingStore::new()), fast());
    run.manager.pair(strap.clone(), "9").expect("pair");
    let mut readings = 0;
    let mut gaps = 0;
    while gaps < 2 || readings < 15 {
        match run
            .next("reading or gap", |ev| match ev {
                BleEvent::Reading(_) | BleEvent::Gap(_) => Some(ev.clone()),
                _ => None,
            })
            .await
        {
            BleEvent::Reading(r) => {
                assert_eq!(physio(&r).heart_rate, Some(120.0));
                readings += 1;
            }
            _ => gaps += 1,
        }
    }
    assert_eq!(run.sim.connects(&strap), 3);
    run.stop().await;
}

#[tokio::test]
async fn periodic_drops_reconnect_resubscribe_and_mark_a_gap_each_time() {
    // A strap ticking every 10 ms whose every link drops 80 ms after it
    // was made, then stays out of reach for 40 ms.
    let strap = addr(STRAP);
    let sim = SimAdapter::with_peripherals([SimPeripheral::heart_rate_strap(
        strap.clone(),
        SteadyHeartRate {
            interval: Some(Duration::from_millis(10)),
            ..SteadyHeartRate::new(64)
        },
    )
    .with_periodic_drops(PeriodicDrop {
        every: Duration::from_millis(80),
        down_for: Duration::from_millis(40),
    })]);
    let mut run = Running::start(sim, Arc::new(MemoryPairingStore::new()), fast());
    run.manager.pair(strap.clone(), "12").expect("pair");
    let mut gaps = Vec::new();
    let mut readings_after_last_gap = 0;
    while gaps.len() < 2 || readings_after_last_gap < 2 {
        match run
            .next("reading or gap", |ev| match ev {
                BleEvent::Reading(_) | BleEvent::Gap(_) => Some(ev.clone()),
                _ => None,
            })
            .await
        {
            BleEvent::Reading(r) => {
                if let Some(g) = gaps.last() {
                    let g: &emotion_ble::Gap = g;
                    assert!(r.timestamp >= Some(g.to), "a reading inside the gap");
                }
                readings_after_last_gap += 1;
            }
            BleEvent::Gap(g) => {
                assert_eq!(g.user_id, "12");
                assert!((g.to - g.from).num_milliseconds() >= 35, "{g:?}");
                gaps.push(g);
                readings_after_last_gap = 0;
            }
            _ => {}
        }
    }
    assert!(run.sim.link_drops(&strap) >= 2);
    assert!(run.sim.connects(&strap) >= 3);
    // Notifications resumed, so the strap was subscribed again; the
    // manager's view of a connected link says so too (polled: the link
    // drops again every 80 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let subscribed = loop {
        let views = run.manager.devices().await.expect("devices");
        let view = views.iter().find(|d| d.address == strap).expect("listed");
        if let Some(LinkState::Connected { subscribed, .. }) = &view.link {
            break subscribed.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(subscribed.contains(&uuids::HEART_RATE_MEASUREMENT));
    assert!(run.manager.stats().gaps >= 2);
    run.stop().await;
}

#[tokio::test]
async fn a_journey_strap_sends_no_backlog_after_a_drop() {
    // 50 simulated seconds per real second, one tick a simulated second.
    let strap = addr(STRAP);
    let script = Script::new(Journey::Stable, Duration::from_secs(600));
    let sim = SimAdapter::with_peripherals([SimPeripheral::heart_rate_strap(
        strap.clone(),
        JourneyPeripheral::strap(script, 7, 50.0),
    )]);
    let mut run = Running::start(sim, Arc::new(MemoryPairingStore::new()), fast());
    run.manager.pair(strap.clone(), "13").expect("pair");
    run.connected(&strap).await;
    let first = run.reading().await;
    assert!(physio(&first).heart_rate.is_some());

    // A second out of reach: 50 simulated seconds the wearer lives through.
    assert!(run.sim.drop_link(&strap, Duration::from_secs(1)));
    let gap = run
        .next("gap", |ev| match ev {
            BleEvent::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .await;
    // The readings after the gap carry the beats of the time since the
    // link came back, not the 50 s missed (a real strap keeps no backlog):
    // at most the simulated time between the reconnect and their arrival,
    // plus a beat in progress and the time the connect took (slack).
    let mut covered_s = 0.0;
    for _ in 0..5 {
        let r = run.reading().await;
        covered_s += physio(&r).rr_intervals_ms.iter().sum::<f64>() / 1000.0;
        let since_back = r
            .timestamp
            .map_or(0.0, |t| (t - gap.to).num_milliseconds() as f64 / 1000.0);
        assert!(
            covered_s <= since_back * 50.0 + 5.0,
            "{covered_s:.1} s of beats {since_back:.3} s after the link came back"
        );
    }
    run.stop().await;
}

#[tokio::test]
async fn readings_of_unbound_devices_are_never_forwarded() {
    let mut run = Running::start(
        strap_and_band(),
        Arc::new(MemoryPairingStore::new()),
        fast(),
    );
    let (strap, band) = (addr(STRAP), addr(BAND));
    run.manager.pair(strap.clone(), "42").expect("pair");
    run.connected(&strap).await;

    // Another central (or a stale link) has the band subscribed: its
    // notifications reach the manager's event stream.
    run.sim.connect(&band).await.expect("connect band");
    run.sim
        .subscribe(&band, uuids::EDA_MEASUREMENT)
        .await
        .expect("subscribe");
    for _ in 0..3 {
        assert_eq!(run.sim.tick(&band), 1);
    }
    run.sim.tick(&strap);
    let r = run.reading().await;
    assert_eq!(
        r.device_id.as_deref(),
        Some(STRAP),
        "only the strap's readings"
    );
    // The transport's events are handled in order: the band's three
    // notifications came before the strap's reading, so whatever they
    // caused is already queued (a band reading would also have been taken
    // for `r` above).
    let rest = run.queued();
    assert!(
        !rest.iter().any(|e| matches!(e, BleEvent::Reading(_))),
        "{rest:?}"
    );
    assert_eq!(run.manager.stats().unbound_dropped, 3);

    // Unpairing releases the strap, and its notifications stop counting.
    let old = run.manager.unpair(&strap).expect("unpair");
    assert_eq!(old.map(|p| p.user_id), Some("42".to_owned()));
    run.next("released", |ev| {
        matches!(ev, BleEvent::Link(LinkEvent::Released { .. })).then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while run.sim.is_connected(&strap) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the strap was never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!run.sim.is_connected(&strap));
    assert_eq!(run.manager.unpair(&strap).expect("unpair again"), None);
    run.sim.disconnect(&band).await.expect("disconnect band");
    run.stop().await;
}

#[tokio::test]
async fn the_connection_limit_holds() {
    let addrs: Vec<Address> = (1..=3)
        .map(|i| addr(&format!("AA:BB:CC:00:01:0{i}")))
        .collect();
    let sim = SimAdapter::with_peripherals(
        addrs
            .iter()
            .map(|a| SimPeripheral::heart_rate_strap(a.clone(), SteadyHeartRate::manual(60))),
    );
    let mut run = Running::start(
        sim,
        Arc::new(MemoryPairingStore::new()),
        ManagerConfig {
            max_connections: 2,
            ..fast()
        },
    );
    for (i, a) in addrs.iter().enumerate() {
        run.manager
            .pair(a.clone(), &format!("user{i}"))
            .expect("pair");
        // Distinct pairing times give a deterministic order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    run.connected(&addrs[0]).await;
    run.connected(&addrs[1]).await;
    // The third waits for a slot (polled until it says so) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let third = loop {
        let views = run.manager.devices().await.expect("devices");
        let third = views
            .into_iter()
            .find(|d| d.address == addrs[2])
            .expect("listed");
        if third.link == Some(LinkState::WaitingForSlot) || tokio::time::Instant::now() > deadline {
            break third;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(third.link, Some(LinkState::WaitingForSlot));
    // ... and does not connect, however often the manager plans.
    run.turns_after_now(&addrs[1]).await;
    let views = run.manager.devices().await.expect("devices");
    let third = views
        .iter()
        .find(|d| d.address == addrs[2])
        .expect("listed");
    assert_eq!(third.link, Some(LinkState::WaitingForSlot));
    assert_eq!(run.sim.connected_count(), 2);
    assert_eq!(run.sim.peak_connected(), 2);

    // A slot frees up: the waiting device gets it.
    run.manager.unpair(&addrs[0]).expect("unpair");
    run.connected(&addrs[2]).await;
    // No third connection alongside, however often the manager plans.
    run.turns_after_now(&addrs[2]).await;
    assert_eq!(run.sim.connected_count(), 2);
    assert_eq!(run.sim.peak_connected(), 2);
    run.stop().await;
}

#[tokio::test]
async fn failed_connects_back_off_exponentially() {
    let sim = strap_and_band();
    let strap = addr(STRAP);
    sim.set_in_range(&strap, false);
    let mut run = Running::start(sim, Arc::new(MemoryPairingStore::new()), fast());
    run.manager.pair(strap.clone(), "1").expect("pair");
    let mut delays = Vec::new();
    while delays.len() < 5 {
        let d = run
            .next("connect failure", |ev| match ev {
                BleEvent::Link(LinkEvent::ConnectFailed {
                    retry_in, attempt, ..
                }) => Some((*attempt, *retry_in)),
                _ => None,
            })
            .await;
        delays.push(d);
    }
    let ms: Vec<(u32, u128)> = delays.iter().map(|(a, d)| (*a, d.as_millis())).collect();
    assert_eq!(ms, vec![(1, 20), (2, 40), (3, 80), (4, 160), (5, 160)]);
    run.sim.set_in_range(&strap, true);
    run.connected(&strap).await;
    run.stop().await;
}

#[tokio::test]
async fn pairings_survive_a_restart() {
    let store = Arc::new(MemoryPairingStore::new());
    let strap = addr(STRAP);
    store
        .save(&Pairing {
            address: strap.clone(),
            user_id: "55".into(),
            paired_at: chrono::Utc::now(),
        })
        .expect("save");
    let mut run = Running::start(strap_and_band(), store, fast());
    assert_eq!(run.manager.pairings().len(), 1);
    run.connected(&strap).await;
    run.sim.tick(&strap);
    assert_eq!(run.reading().await.user_id, "55");
    // Only one run at a time.
    let (tx, _rx) = mpsc::channel(1);
    let second = run.manager.run(CancellationToken::new(), tx).await;
    assert!(second.is_err());
    run.stop().await;
}

#[tokio::test]
async fn without_a_radio_opening_one_is_a_clean_error() {
    // No D-Bus, no BlueZ or no feature here: Unavailable, never a panic.
    match emotion_ble::open_radio().await {
        Err(BleError::Unavailable(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => eprintln!("this machine has a Bluetooth adapter"),
    }
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    let manager = DeviceManager::new(
        Arc::new(SimAdapter::new()),
        Arc::new(MemoryPairingStore::new()),
        fast(),
    )
    .expect("manager");
    assert!(matches!(
        manager.pair(addr(STRAP), "not ok!"),
        Err(BleError::InvalidUser(_))
    ));
    assert!(Address::parse("strap").is_err());
    // A store that fails: the pairing is refused, not half-made.
    struct Broken;
    impl PairingStore for Broken {
        fn load(&self) -> Result<Vec<Pairing>, emotion_ble::StoreError> {
            Ok(Vec::new())
        }
        fn save(&self, _: &Pairing) -> Result<(), emotion_ble::StoreError> {
            Err("disk full".into())
        }
        fn remove(&self, _: &Address) -> Result<(), emotion_ble::StoreError> {
            Err("disk full".into())
        }
    }
    let manager =
        DeviceManager::new(Arc::new(SimAdapter::new()), Arc::new(Broken), fast()).expect("manager");
    assert!(matches!(
        manager.pair(addr(STRAP), "1"),
        Err(BleError::Store(_))
    ));
    assert!(manager.pairings().is_empty());
    // The manager is usable behind a trait object too.
    let dynamic: Arc<dyn BleTransport> = Arc::new(SimAdapter::new());
    let m =
        DeviceManager::new(dynamic, Arc::new(MemoryPairingStore::new()), fast()).expect("manager");
    assert!(m.devices().await.expect("devices").is_empty());
}
