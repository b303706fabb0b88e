//! The reader end to end over a real pty: firmware-sim's strap writes
//! frames, the reader turns them into readings whose heart rate and RR
//! intervals are exactly what was sent; injected junk is counted and costs
//! nothing else; an unplugged port is reopened and reading resumes, with a
//! gap marker for what was lost; an unbound port forwards no readings.

use std::time::Duration;

use emotion_core::reading::ReadingPayload;
use emotion_serial::{PortConfig, SerialEvent, SerialReader};
use firmware_sim::devices::{Script, SerialDevice, StepData};
use firmware_sim::journey::Journey;
use firmware_sim::serial::{self, PtyPort, SerialProgress, SerialRunOptions, SerialStats};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Outcome {
    events: Vec<SerialEvent>,
    sent_rr: Vec<f64>,
    sent_hr: Vec<u16>,
    sim: SerialStats,
    reader: SerialReader,
}

async fn run(user: Option<&str>, opts: SerialRunOptions, tag: &str) -> Outcome {
    let dir = std::env::temp_dir().join(format!("emotion-serial-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("strap");
    let port = PtyPort::open(Some(&link)).expect("pty");
    let reader = SerialReader::new(PortConfig {
        user_id: user.map(str::to_owned),
        device_id: Some("strap-1".into()),
        reopen_initial: Duration::from_millis(5),
        reopen_max: Duration::from_millis(20),
        ..PortConfig::new(&link)
    });
    let (tx, mut rx) = mpsc::channel(100_000);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (r, c) = (reader.clone(), cancel.clone());
        async move { r.run(c, tx).await }
    });
    // Wait until the reader has the port.
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("opens")
        .expect("event");
    assert!(matches!(first, SerialEvent::PortOpened { .. }), "{first:?}");

    let mut device = SerialDevice::strap(
        1,
        Script::new(Journey::CalmStressRecovery, Duration::from_secs(60)),
        9,
    );
    let (mut sent_rr, mut sent_hr) = (Vec::new(), Vec::new());
    let (sim, port) =
        serial::run_device(&mut device, port, &opts, &CancellationToken::new(), |p| {
            if let SerialProgress::Step(StepData::Heart(h)) = p {
                for s in h {
                    sent_hr.push(s.heart_rate_bpm);
                    sent_rr.extend(s.rr_intervals_ms.iter().copied());
                }
            }
        })
        .await
        .expect("device runs");
    // Wait until the reader has taken in everything the device made: frames
    // read plus frames its sequence numbers say were lost (dropped while
    // unplugged, or discarded with a closed pty) account for every frame,
    // and the junk is counted. The gap behind a loss shows only once a
    // later frame is read, so this holds only after the last frame.
    let made = sim.frames_sent + sim.frames_dropped;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = reader.stats();
        if s.frames + s.missed >= made && s.corrupt >= sim.corrupt_injected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader never caught up: {s:?} of {sim:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    task.await.expect("reader stops");
    drop(port);
    let _ = std::fs::remove_dir_all(&dir);
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    Outcome {
        events,
        sent_rr,
        sent_hr,
        sim,
        reader,
    }
}

fn readings(events: &[SerialEvent]) -> (Vec<f64>, Vec<f64>) {
    let (mut hr, mut rr) = (Vec::new(), Vec::new());
    for ev in events {
        if let SerialEvent::Reading(r) = ev {
            assert_eq!(r.user_id, "42");
            assert_eq!(r.device_id.as_deref(), Some("strap-1"));
            let ReadingPayload::Physiological(p) = &r.payload else {
                panic!("physiological")
            };
            hr.extend(p.heart_rate);
            rr.extend(p.rr_intervals_ms.iter().copied());
        }
    }
    (hr, rr)
}

#[tokio::test]
async fn heart_rate_and_rr_arrive_exactly_as_sent() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 300.0,
            duration_s: 60.0,
            ..SerialRunOptions::default()
        },
        "exact",
    )
    .await;
    let (hr, rr) = readings(&o.events);
    assert_eq!(rr, o.sent_rr);
    assert_eq!(
        hr,
        o.sent_hr.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()
    );
    let s = o.reader.stats();
    assert_eq!((s.corrupt, s.gaps, s.duplicates), (0, 0, 0));
    assert!(
        o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Hello { .. }))
    );
    assert!(
        o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Battery { .. }))
    );
    assert_eq!(s.frames, o.sim.frames_sent);
}

#[tokio::test]
async fn corrupt_bytes_are_counted_and_nothing_else_is_lost() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 300.0,
            duration_s: 60.0,
            corrupt_every: Some(5),
            ..SerialRunOptions::default()
        },
        "corrupt",
    )
    .await;
    let (_, rr) = readings(&o.events);
    assert_eq!(rr, o.sent_rr, "no real frame lost");
    let s = o.reader.stats();
    assert!(o.sim.corrupt_injected >= 10);
    assert_eq!(s.corrupt, o.sim.corrupt_injected);
    assert_eq!(s.gaps, 0);
}

#[tokio::test]
async fn an_unplugged_port_is_reopened_and_gaps_are_marked() {
    let o = run(
        Some("42"),
        SerialRunOptions {
            speed: 100.0,
            duration_s: 60.0,
            unplug: Some((20.0, Duration::from_millis(80))),
            ..SerialRunOptions::default()
        },
        "unplug",
    )
    .await;
    let s = o.reader.stats();
    assert_eq!(o.sim.unplugs, 2);
    assert!(s.losses >= 2 && s.opens >= 3, "{s:?}");
    let gaps: u32 = o
        .events
        .iter()
        .filter_map(|e| match e {
            SerialEvent::Gap { missed, .. } => Some(*missed),
            _ => None,
        })
        .sum();
    assert!(
        gaps as u64 >= o.sim.frames_dropped,
        "gap markers cover the loss"
    );
    assert_eq!(u64::from(gaps), s.missed);
    let (_, rr) = readings(&o.events);
    assert!(!rr.is_empty());
    // Reading resumed: the last RR sent is the last received.
    assert_eq!(rr.last(), o.sent_rr.last());
}

#[tokio::test]
async fn an_unbound_port_forwards_no_readings() {
    let o = run(
        None,
        SerialRunOptions {
            speed: 300.0,
            duration_s: 20.0,
            ..SerialRunOptions::default()
        },
        "unbound",
    )
    .await;
    assert!(
        !o.events
            .iter()
            .any(|e| matches!(e, SerialEvent::Reading(_)))
    );
    assert!(o.reader.stats().unbound_dropped > 10);
}
